//! What one client may cost, held across Lambda instances in the table (as
//! occupancy's gate is): API Gateway throttles a route for all its callers
//! together, so without this one client could spend the account's quotas
//! and everyone's money. Per connection, per minute: the frames that reach
//! a function and the bytes of the replies they bring back (replays). Per
//! address: new connections per minute, and connections open at once. A
//! connection over its budget is closed (`DeleteConnection`) and forgotten;
//! an address over its own is refused at `$connect`.
//!
//! Items (each with a `ttl`):
//! - `conn#<id>` / `guard`: the connection's address, the hour it opened,
//!   and this minute's spending (`w`, the minute; `ops`; `bytes`).
//! - `ip#<address>` / `m#<minute>`: connections opened in that minute.
//! - `ip#<address>` / `h#<hour>`: connections opened in that hour and still
//!   open (`$disconnect` takes one off; a lost `$disconnect` inflates it
//!   until the item expires, three hours on: API Gateway closes every
//!   connection at two).
//!
//! Each check is one conditional update: a window is counted with a
//! condition, and a new window replaces the old one in a second, also
//! conditional, update, so two instances never both pass a full window.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use hookcast_core::ports::{ConnId, StoreError, StoreErrorKind};

/// Per connection, per minute. A page subscribes to its channels once, asks
/// occupancy every 30 s per channel and repairs the odd gap: a few frames a
/// minute. 60 leave room for a page of 30 channels reconnecting.
pub const FRAMES_PER_MINUTE: u64 = 60;
/// Per connection, per minute: replies (replays) of at most this many bytes.
/// A reconnecting page of ten channels, each 100 KB behind, fits.
pub const REPLY_BYTES_PER_MINUTE: u64 = 2 * 1024 * 1024;
/// Per address, per minute: new connections.
pub const CONNECTS_PER_MINUTE: u64 = 60;
/// Per address: connections open at once (an office behind one NAT address
/// with a hundred people on the site).
pub const OPEN_PER_ADDRESS: u64 = 100;

/// What a check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over a budget: which one.
    Over(&'static str),
}

/// The limits, as one type (tests set their own).
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub frames_per_minute: u64,
    pub reply_bytes_per_minute: u64,
    pub connects_per_minute: u64,
    pub open_per_address: u64,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            frames_per_minute: FRAMES_PER_MINUTE,
            reply_bytes_per_minute: REPLY_BYTES_PER_MINUTE,
            connects_per_minute: CONNECTS_PER_MINUTE,
            open_per_address: OPEN_PER_ADDRESS,
        }
    }
}

/// The budgets of the socket functions' callers.
pub trait Guard: Send + Sync {
    /// A new connection from `address`: within the address's budgets, or refused.
    fn connect(&self, conn: &ConnId, address: &str) -> impl std::future::Future<Output = Result<Verdict, StoreError>> + Send;
    /// The connection ended: its address has one connection fewer.
    fn disconnect(&self, conn: &ConnId) -> impl std::future::Future<Output = ()> + Send;
    /// The connection spends `frames` and `bytes` of this minute's budget.
    fn spend(
        &self,
        conn: &ConnId,
        frames: u64,
        bytes: u64,
    ) -> impl std::future::Future<Output = Result<Verdict, StoreError>> + Send;
}

/// No budgets (tests of other things).
pub struct Unguarded;

impl Guard for Unguarded {
    async fn connect(&self, _: &ConnId, _: &str) -> Result<Verdict, StoreError> {
        Ok(Verdict::Allowed)
    }
    async fn disconnect(&self, _: &ConnId) {}
    async fn spend(&self, _: &ConnId, _: u64, _: u64) -> Result<Verdict, StoreError> {
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
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}
fn num(item: &HashMap<String, AttributeValue>, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}
fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, e.to_string())
}

type UpdateResult = Result<
    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
    aws_sdk_dynamodb::error::SdkError<UpdateItemError, aws_sdk_dynamodb::config::http::HttpResponse>,
>;

/// The item a failed condition found, or `None` for any other failure.
fn failed_condition(r: &UpdateResult) -> Option<Option<&HashMap<String, AttributeValue>>> {
    match r {
        Err(e) => match e.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => Some(c.item.as_ref()),
            _ => None,
        },
        Ok(_) => None,
    }
}

impl TableGuard {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), limits: Budgets::default(), clock: now_secs }
    }
    pub fn with_limits(mut self, limits: Budgets) -> Self {
        self.limits = limits;
        self
    }
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    /// Adds `by` to a counter of one item in one window, unless that would
    /// pass `max`: one update, a second only when the window turns over.
    async fn count(
        &self,
        item: HashMap<String, AttributeValue>,
        window: u64,
        costs: &[(&str, u64, u64)],
        ttl: u64,
    ) -> Result<bool, StoreError> {
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
            let mut conds = vec!["w = :w".to_owned()];
            for (i, (name, by, max)) in costs.iter().enumerate() {
                if by > max {
                    return Ok(false);
                }
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
                return r.map(|_| true).map_err(|e| store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)));
            };
            if old.and_then(|o| num(o, "w")) == Some(window) {
                return Ok(false);
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
                .condition_expression("attribute_not_exists(w) OR w <> :w");
            let mut sets = vec!["w = :w".to_owned(), "#ttl = :ttl".to_owned()];
            for (i, (name, by, _)) in costs.iter().enumerate() {
                sets.push(format!("#c{i} = :b{i}"));
                u = u.expression_attribute_names(format!("#c{i}"), *name).expression_attribute_values(format!(":b{i}"), n(by));
            }
            let r = u.update_expression(format!("SET {}", sets.join(", "))).send().await;
            match failed_condition(&r) {
                Some(_) => continue,
                None => return r.map(|_| true).map_err(|e| store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e))),
            }
        }
        Ok(false)
    }
}

impl Guard for TableGuard {
    async fn connect(&self, conn: &ConnId, address: &str) -> Result<Verdict, StoreError> {
        let now = (self.clock)();
        let (minute, hour) = (now / 60, now / 3600);
        let pk = format!("ip#{address}");
        // Open at once: the connections of the last three opening hours.
        let keys: Vec<_> = (0..3).map(|h| key(pk.clone(), &format!("h#{}", hour.saturating_sub(h)))).collect();
        let got = self
            .client
            .batch_get_item()
            .request_items(
                &self.table,
                aws_sdk_dynamodb::types::KeysAndAttributes::builder().set_keys(Some(keys)).build().map_err(store_err)?,
            )
            .send()
            .await
            .map_err(|e| store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let open: u64 = got
            .responses
            .and_then(|mut r| r.remove(&self.table))
            .unwrap_or_default()
            .iter()
            .filter(|i| num(i, "ttl").is_none_or(|t| t > now))
            .filter_map(|i| num(i, "n"))
            .sum();
        if open >= self.limits.open_per_address {
            return Ok(Verdict::Over("connections open from this address"));
        }
        let fresh = self
            .count(
                key(pk.clone(), &format!("m#{minute}")),
                minute,
                &[("n", 1, self.limits.connects_per_minute)],
                (minute + 2) * 60,
            )
            .await?;
        if !fresh {
            return Ok(Verdict::Over("new connections a minute from this address"));
        }
        // Counted open in its opening hour, until $disconnect.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, &format!("h#{hour}"))))
            .update_expression("ADD n :one SET #ttl = :ttl")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n((hour + 3) * 3600))
            .send()
            .await
            .map_err(|e| store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let mut item = key(format!("conn#{}", conn.0), "guard");
        item.insert("ip".into(), s(address));
        item.insert("hour".into(), n(hour));
        item.insert("ttl".into(), n(now + 3 * 3600));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(Verdict::Allowed)
    }

    async fn disconnect(&self, conn: &ConnId) {
        let gone = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("conn#{}", conn.0), "guard")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        let old = match gone {
            Ok(out) => out.attributes,
            Err(e) => {
                tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(e), conn = %conn, "could not forget a connection's budget");
                return;
            }
        };
        let Some((ip, hour)) = old.as_ref().and_then(|o| Some((o.get("ip")?.as_s().ok()?.clone(), num(o, "hour")?))) else {
            return;
        };
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("ip#{ip}"), &format!("h#{hour}"))))
            .update_expression("ADD n :less")
            .condition_expression("attribute_exists(n) AND n > :zero")
            .expression_attribute_values(":less", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        if let Err(e) = r {
            if !matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) {
                tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(e), "could not count a connection closed");
            }
        }
    }

    async fn spend(&self, conn: &ConnId, frames: u64, bytes: u64) -> Result<Verdict, StoreError> {
        let now = (self.clock)();
        let minute = now / 60;
        let costs = [("ops", frames, self.limits.frames_per_minute), ("bytes", bytes, self.limits.reply_bytes_per_minute)];
        if self.count(key(format!("conn#{}", conn.0), "guard"), minute, &costs, now + 3 * 3600).await? {
            Ok(Verdict::Allowed)
        } else if frames > 0 && bytes == 0 {
            Ok(Verdict::Over("frames a minute"))
        } else {
            Ok(Verdict::Over("reply bytes a minute"))
        }
    }
}
