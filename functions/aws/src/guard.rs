//! What one client may cost, held across Lambda instances in the table (as
//! occupancy's gate is): API Gateway throttles a route for all its callers
//! together, so without this one client could spend the account's quotas
//! and everyone's money. Per connection, per minute: the frames that reach
//! a function and the bytes of the replies they bring back (replays). Per
//! address: new connections per minute, connections open at once, and
//! connections closed over their budget this hour. A connection over its
//! budget is closed (`DeleteConnection`) once, by one instance, and marked
//! closed: the frames already in flight behind it (API Gateway has taken
//! them; a flood has hundreds) are answered without a call to anything but
//! one failed conditional update, or to nothing at all on an instance that
//! saw it closed. An address over its own is refused at `$connect`.
//!
//! Items (each with a `ttl`):
//! - `conn#<id>` / `guard`: the connection's address, the hour it opened,
//!   this minute's spending (`w`, the minute; `ops`; `bytes`), and `closed`
//!   once it is closed (over its budget, or by `$disconnect`).
//! - `ip#<address>` / `m#<minute>`: connections opened in that minute.
//! - `ip#<address>` / `h#<hour>`: connections opened in that hour and still
//!   open (`$disconnect` takes one off; a lost `$disconnect` inflates it
//!   until the item expires, three hours on: API Gateway closes every
//!   connection at two).
//! - `ip#<address>` / `x#<hour>`: its connections closed over a budget in
//!   that hour; at [`STRIKES_PER_HOUR`] the address opens no more until the
//!   hour turns (so a flood that reconnects each time it is closed pays for
//!   a few connections an hour, not sixty a minute).
//!
//! Each check is one conditional update: a window is counted with a
//! condition, and a new window replaces the old one in a second, also
//! conditional, update, so two instances never both pass a full window.
//! Open connections are counted by one conditional `ADD` on this hour's
//! item, its room being the limit less the earlier hours' (which can only
//! fall): two instances never both take the last place. Across the turn
//! of an hour, two instances (one on each side) can each take one.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use hookcast_core::ports::{ConnId, StoreError};

use crate::attr::{condition_failed, fnv1a, get_n, get_s, key, n, s, sdk_err, Item};

/// Per connection, per minute. A page subscribes to its channels once, asks
/// occupancy every 30 s per channel and repairs the odd gap: a few frames a
/// minute. 60 leave room for a page of 30 channels reconnecting.
pub const FRAMES_PER_MINUTE: u64 = 60;
/// Per connection, per minute: replies (replays) of at most this many bytes.
/// A reconnecting page of ten channels, each 100 KB behind, fits.
pub const REPLY_BYTES_PER_MINUTE: u64 = 2 * 1024 * 1024;
/// Per connection, per minute, per channel (hashed into [`SUB_BUCKETS`]
/// buckets): subscribes. A page subscribes to a channel once a connection,
/// and again only to repair a gap; 8 leave room for a page of 30 channels
/// reconnecting (about two to a bucket). A replay is the costliest frame
/// there is: repeating it on one busy channel closes the connection after 8,
/// not after the 60 frames of [`FRAMES_PER_MINUTE`].
pub const SUBSCRIBES_PER_CHANNEL_MINUTE: u64 = 8;
/// The per-channel subscribe counters of a connection (attributes `s0`..).
const SUB_BUCKETS: u64 = 16;
/// Per address, per minute: new connections.
pub const CONNECTS_PER_MINUTE: u64 = 60;
/// Per address: connections open at once (an office behind one NAT address
/// with a hundred people on the site).
pub const OPEN_PER_ADDRESS: u64 = 100;
/// Per address, per hour: connections closed over a budget before the
/// address may open no more that hour. The snippet never comes near a
/// budget; a page that does is a script.
pub const STRIKES_PER_HOUR: u64 = 3;
/// Connections an instance remembers it saw closed (a flood's frames still
/// in flight are answered from memory); past it, the memory starts over.
const REMEMBERED: usize = 10_000;

/// What a check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over a budget: which one. The caller closes the connection (or, at
    /// `$connect`, refuses it).
    Over(&'static str),
    /// The connection is already closed (by another frame over its budget,
    /// or `$disconnect`): answer nothing, close nothing.
    Closed,
}

/// The limits, as one type (tests set their own).
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub frames_per_minute: u64,
    pub reply_bytes_per_minute: u64,
    pub connects_per_minute: u64,
    pub open_per_address: u64,
    pub strikes_per_hour: u64,
    pub subscribes_per_channel_minute: u64,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            frames_per_minute: FRAMES_PER_MINUTE,
            reply_bytes_per_minute: REPLY_BYTES_PER_MINUTE,
            connects_per_minute: CONNECTS_PER_MINUTE,
            open_per_address: OPEN_PER_ADDRESS,
            strikes_per_hour: STRIKES_PER_HOUR,
            subscribes_per_channel_minute: SUBSCRIBES_PER_CHANNEL_MINUTE,
        }
    }
}

/// The budgets of the socket functions' callers.
pub trait Guard: Send + Sync {
    /// A new connection from `address`: within the address's budgets, or refused.
    fn connect(&self, conn: &ConnId, address: &str) -> impl std::future::Future<Output = Result<Verdict, StoreError>> + Send;
    /// The connection ended: its address has one connection fewer.
    fn disconnect(&self, conn: &ConnId) -> impl std::future::Future<Output = ()> + Send;
    /// The connection spends `frames` and `bytes` of this minute's budget,
    /// and one of `subscribed`'s subscribes.
    fn spend(
        &self,
        conn: &ConnId,
        frames: u64,
        bytes: u64,
        subscribed: Option<&str>,
    ) -> impl std::future::Future<Output = Result<Verdict, StoreError>> + Send;
    /// A frame that touches nothing (`ping`) spends the minute's frames as
    /// this instance counts them, with no write: a page's keepalive costs
    /// the table nothing, and a flood of them is closed all the same (each
    /// instance it reaches closes it past the budget).
    fn spend_local(&self, conn: &ConnId) -> impl std::future::Future<Output = Result<Verdict, StoreError>> + Send;
}

/// No budgets (tests of other things).
pub struct Unguarded;

impl Guard for Unguarded {
    async fn connect(&self, _: &ConnId, _: &str) -> Result<Verdict, StoreError> {
        Ok(Verdict::Allowed)
    }
    async fn disconnect(&self, _: &ConnId) {}
    async fn spend(&self, _: &ConnId, _: u64, _: u64, _: Option<&str>) -> Result<Verdict, StoreError> {
        Ok(Verdict::Allowed)
    }
    async fn spend_local(&self, _: &ConnId) -> Result<Verdict, StoreError> {
        Ok(Verdict::Allowed)
    }
}

/// The budgets in the DynamoDB table.
pub struct TableGuard {
    client: Client,
    table: String,
    limits: Budgets,
    /// Epoch seconds (a test moves it).
    clock: fn() -> u64,
    /// Connections this instance saw closed.
    closed: Mutex<HashSet<String>>,
    /// Frames this instance counted per connection, this minute (`spend_local`).
    local: Mutex<(u64, HashMap<String, u64>)>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

type UpdateResult = Result<
    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
    aws_sdk_dynamodb::error::SdkError<UpdateItemError, aws_sdk_dynamodb::config::http::HttpResponse>,
>;

/// The item a failed condition found, or `None` for any other outcome.
fn failed_condition(r: &UpdateResult) -> Option<Option<&Item>> {
    match r {
        Err(e) => match e.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => Some(c.item.as_ref()),
            _ => None,
        },
        Ok(_) => None,
    }
}

/// What counting a window found.
enum Counted {
    Within,
    /// Over a limit.
    Over,
    /// The item is marked closed.
    Closed,
}

impl TableGuard {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            limits: Budgets::default(),
            clock: now_secs,
            closed: Mutex::default(),
            local: Mutex::default(),
        }
    }
    pub fn with_limits(mut self, limits: Budgets) -> Self {
        self.limits = limits;
        self
    }
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    fn remember_closed(&self, conn: &ConnId) {
        let mut set = self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if set.len() >= REMEMBERED {
            set.clear();
        }
        set.insert(conn.0.clone());
    }
    fn seen_closed(&self, conn: &ConnId) -> bool {
        self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&conn.0)
    }

    /// Adds `by` to counters of one item in one window, unless that would
    /// pass `max`, or the item is marked closed: one update, a second only
    /// when the window turns over (which also zeroes the counters named in
    /// `zero` that this call does not spend).
    async fn count(
        &self,
        item: Item,
        window: u64,
        costs: &[(&str, u64, u64)],
        zero: &[&str],
        ttl: u64,
    ) -> Result<Counted, StoreError> {
        if costs.iter().any(|(_, by, max)| by > max) {
            return Ok(Counted::Over);
        }
        for _ in 0..3 {
            // This window: add, if every counter stays within its limit.
            let mut u = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item.clone()))
                .expression_attribute_values(":w", n(window))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            let mut adds = vec![];
            let mut conds = vec!["w = :w".to_owned(), "attribute_not_exists(closed)".to_owned()];
            for (i, (name, by, max)) in costs.iter().enumerate() {
                adds.push(format!("#c{i} :b{i}"));
                conds.push(format!("#c{i} <= :m{i}"));
                u = u
                    .expression_attribute_names(format!("#c{i}"), *name)
                    .expression_attribute_values(format!(":b{i}"), n(by))
                    .expression_attribute_values(format!(":m{i}"), n(max - by));
            }
            let r =
                u.update_expression(format!("ADD {}", adds.join(", "))).condition_expression(conds.join(" AND ")).send().await;
            let Some(old) = failed_condition(&r) else {
                return r.map(|_| Counted::Within).map_err(sdk_err);
            };
            if old.is_some_and(|o| o.contains_key("closed")) {
                return Ok(Counted::Closed);
            }
            if old.and_then(|o| get_n(o, "w")) == Some(window) {
                return Ok(Counted::Over);
            }
            // A new window (or a new item): it starts with this cost,
            // unless another instance started it first (then count again).
            let mut u = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item.clone()))
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":w", n(window))
                .expression_attribute_values(":ttl", n(ttl))
                .condition_expression("(attribute_not_exists(w) OR w <> :w) AND attribute_not_exists(closed)");
            let mut sets = vec!["w = :w".to_owned(), "#ttl = :ttl".to_owned()];
            for (i, (name, by, _)) in costs.iter().enumerate() {
                sets.push(format!("#c{i} = :b{i}"));
                u = u.expression_attribute_names(format!("#c{i}"), *name).expression_attribute_values(format!(":b{i}"), n(by));
            }
            let others: Vec<_> = zero.iter().filter(|z| !costs.iter().any(|(name, _, _)| name == *z)).collect();
            for (i, name) in others.iter().enumerate() {
                sets.push(format!("#z{i} = :zero"));
                u = u.expression_attribute_names(format!("#z{i}"), **name);
            }
            if !others.is_empty() {
                u = u.expression_attribute_values(":zero", n(0));
            }
            let r = u.update_expression(format!("SET {}", sets.join(", "))).send().await;
            if failed_condition(&r).is_none() {
                return r.map(|_| Counted::Within).map_err(sdk_err);
            }
        }
        Ok(Counted::Over)
    }

    /// Marks a connection closed over its budget: `Over(what)` for the one
    /// caller that marked it (which then closes it), with a strike against
    /// its address; `Closed` for every other.
    async fn close_over(&self, conn: &ConnId, what: &'static str) -> Result<Verdict, StoreError> {
        self.remember_closed(conn);
        let now = (self.clock)();
        let Some(old) = self.mark(conn, "closed", now + 3 * 3600).await? else {
            return Ok(Verdict::Closed);
        };
        if let Some(ip) = old.as_ref().and_then(|o| get_s(o, "ip")) {
            self.strike(ip, now / 3600).await;
        }
        Ok(Verdict::Over(what))
    }

    /// Marks a connection's item `closed` (and, for `$disconnect`, `gone`)
    /// unless it already is `flag`: the item as it was for the one caller
    /// that marked it, `None` for every other.
    async fn mark(&self, conn: &ConnId, flag: &str, ttl: u64) -> Result<Option<Option<Item>>, StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("conn#{}", conn.0), "guard")))
            .update_expression(if flag == "closed" {
                "SET closed = :t, #ttl = if_not_exists(#ttl, :ttl)"
            } else {
                "SET closed = :t, #f = :t, #ttl = if_not_exists(#ttl, :ttl)"
            })
            .condition_expression("attribute_not_exists(#f)")
            .expression_attribute_names("#f", flag)
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":ttl", n(ttl))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match r {
            Ok(out) => Ok(Some(out.attributes)),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(sdk_err(e)),
        }
    }

    /// One more of the address's connections closed over a budget this hour.
    async fn strike(&self, address: &str, hour: u64) {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("ip#{address}"), format!("x#{hour}"))))
            .update_expression("ADD n :one SET #ttl = :ttl")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n((hour + 2) * 3600))
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %sdk_err(e), %address, "could not count a connection closed over its budget");
        }
    }
}

impl Guard for TableGuard {
    async fn connect(&self, conn: &ConnId, address: &str) -> Result<Verdict, StoreError> {
        let now = (self.clock)();
        let (minute, hour) = (now / 60, now / 3600);
        let pk = format!("ip#{address}");
        // Open at once: the connections of the last three opening hours;
        // and this hour's strikes.
        let mut keys: Vec<_> = (1..3).map(|h| key(pk.clone(), format!("h#{}", hour.saturating_sub(h)))).collect();
        keys.push(key(pk.clone(), format!("x#{hour}")));
        let got = self
            .client
            .batch_get_item()
            .request_items(
                &self.table,
                KeysAndAttributes::builder().set_keys(Some(keys)).build().map_err(|e| StoreError::unavailable(e.to_string()))?,
            )
            .send()
            .await
            .map_err(sdk_err)?;
        let items = got.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default();
        let live = items.iter().filter(|i| get_n(i, "ttl").is_none_or(|t| t > now));
        let (mut earlier, mut strikes) = (0, 0);
        for i in live {
            match get_s(i, "sk") {
                Some(sk) if sk.starts_with("x#") => strikes += get_n(i, "n").unwrap_or(0),
                _ => earlier += get_n(i, "n").unwrap_or(0),
            }
        }
        if strikes >= self.limits.strikes_per_hour {
            return Ok(Verdict::Over("connections closed over their budget this hour from this address"));
        }
        if earlier >= self.limits.open_per_address {
            return Ok(Verdict::Over("connections open from this address"));
        }
        let fresh = self
            .count(
                key(pk.clone(), format!("m#{minute}")),
                minute,
                &[("n", 1, self.limits.connects_per_minute)],
                &[],
                (minute + 2) * 60,
            )
            .await?;
        if !matches!(fresh, Counted::Within) {
            return Ok(Verdict::Over("new connections a minute from this address"));
        }
        // Counted open in its opening hour, until $disconnect: one
        // conditional ADD, within the room the earlier hours leave.
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, format!("h#{hour}"))))
            .update_expression("ADD n :one SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(n) OR n < :room")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":room", n(self.limits.open_per_address - earlier))
            .expression_attribute_values(":ttl", n((hour + 3) * 3600))
            .send()
            .await;
        match r {
            Ok(_) => {}
            Err(e) if condition_failed(&e) => return Ok(Verdict::Over("connections open from this address")),
            Err(e) => return Err(sdk_err(e)),
        }
        let mut item = key(format!("conn#{}", conn.0), "guard");
        item.insert("ip".into(), s(address));
        item.insert("hour".into(), n(hour));
        item.insert("ttl".into(), n(now + 3 * 3600));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_err)?;
        Ok(Verdict::Allowed)
    }

    async fn disconnect(&self, conn: &ConnId) {
        self.remember_closed(conn);
        // Marked closed, not deleted: a frame still in flight finds it so.
        let old = match self.mark(conn, "gone", (self.clock)() + 3 * 3600).await {
            Ok(Some(old)) => old,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, conn = %conn, "could not close a connection's budget");
                return;
            }
        };
        let Some((ip, hour)) = old.as_ref().and_then(|o| Some((get_s(o, "ip")?.to_owned(), get_n(o, "hour")?))) else {
            return;
        };
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("ip#{ip}"), format!("h#{hour}"))))
            .update_expression("ADD n :less")
            .condition_expression("attribute_exists(n) AND n > :zero")
            .expression_attribute_values(":less", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        if let Err(e) = r {
            if !condition_failed(&e) {
                tracing::warn!(error = %sdk_err(e), "could not count a connection closed");
            }
        }
    }

    async fn spend(&self, conn: &ConnId, frames: u64, bytes: u64, subscribed: Option<&str>) -> Result<Verdict, StoreError> {
        if self.seen_closed(conn) {
            return Ok(Verdict::Closed);
        }
        let now = (self.clock)();
        let minute = now / 60;
        let buckets: Vec<String> = (0..SUB_BUCKETS).map(|b| format!("s{b}")).collect();
        let mut costs =
            vec![("ops", frames, self.limits.frames_per_minute), ("bytes", bytes, self.limits.reply_bytes_per_minute)];
        let bucket = subscribed.map(|channel| &buckets[(fnv1a(channel) as u64 % SUB_BUCKETS) as usize]);
        if let Some(b) = bucket {
            costs.push((b.as_str(), 1, self.limits.subscribes_per_channel_minute));
        }
        let zero: Vec<&str> = buckets.iter().map(String::as_str).collect();
        match self.count(key(format!("conn#{}", conn.0), "guard"), minute, &costs, &zero, now + 3 * 3600).await? {
            Counted::Within => Ok(Verdict::Allowed),
            Counted::Closed => {
                self.remember_closed(conn);
                Ok(Verdict::Closed)
            }
            Counted::Over => {
                let what = match (bucket, frames > 0 && bytes == 0) {
                    (Some(_), _) => "frames or subscribes to one channel a minute",
                    (None, true) => "frames a minute",
                    (None, false) => "reply bytes a minute",
                };
                self.close_over(conn, what).await
            }
        }
    }

    async fn spend_local(&self, conn: &ConnId) -> Result<Verdict, StoreError> {
        if self.seen_closed(conn) {
            return Ok(Verdict::Closed);
        }
        let minute = (self.clock)() / 60;
        let spent = {
            let mut local = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if local.0 != minute || local.1.len() >= REMEMBERED {
                *local = (minute, HashMap::new());
            }
            let c = local.1.entry(conn.0.clone()).or_default();
            *c += 1;
            *c
        };
        if spent <= self.limits.frames_per_minute {
            return Ok(Verdict::Allowed);
        }
        self.close_over(conn, "frames a minute").await
    }
}
