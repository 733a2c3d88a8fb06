//! The DynamoDB store: one on-demand table, `pk`/`sk` strings, a `ttl`
//! attribute (epoch seconds) for DynamoDB's TTL. Query, never Scan; every
//! Query paginates. SDK types stay in this file.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | connection (+ `subs`: how many channels it has) | `conn#<id>` | `meta` |
//! | its subscription (+ `sh`: its shard, `ep`: its counter's hour, `occ_at`: last occupancy ask, ms) | `conn#<id>` | `sub#<channel>` |
//! | channel subscriber | `subs#<channel>#<shard>` | `<conn id>` |
//! | subscribers one shard gained in one hour (`n`, expires) | `count#<channel>` | `<shard>#<hour>` |
//! | channel head (+ `state_kind`, `state_json`, `state_event_ms`: the channel state at `seq`; `ttl`: `state_ttl` after its last append) | `chan#<channel>` | `head` |
//! | event | `chan#<channel>` | `ev#<seq, 20 digits>` |
//! | dedupe key | `dedupe#<key>` | `dedupe` |
//!
//! Subscribers are sharded by a hash of the connection id so one hot channel
//! spreads over partitions, and fan-out works one (channel, shard) at a time.
//! Seq is assigned by an optimistic transaction (head with its state, event and dedupe keys
//! conditional in one TransactWriteItems), so it is gapless and two writers
//! can never take the same seq. The head expires `state_ttl` after the
//! channel's last append, and its state with it (reads ignore it from then,
//! before AWS deletes the item); a channel quiet for that long starts again
//! at seq 1, as no event of it is left (`state_ttl` ≥ `max_age`). New event items are what the table's stream
//! carries to the fan-out. Appends never prune: retention is applied in reads
//! (the newest `max_events`, none older than `max_age`) and TTL deletes the
//! rest; items past their TTL that AWS has not deleted yet are filtered out.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, Put, TransactWriteItem, WriteRequest};
use aws_sdk_dynamodb::Client;
use hookcast_core::channel::Channel;

use crate::attr::sdk_err;
use crate::attr::{get_n, get_s, key, n, s, Item};
use hookcast_core::ports::{
    Appended, ConnId, EventLog, History, Pending, Retention, StoreError, StoreErrorKind, SubOutcome, SubscriberPage,
    Subscriptions, Turn,
};
use hookcast_core::protocol::Event;
use hookcast_core::state::State;

/// API Gateway closes a WebSocket at 2 hours; keep connection items a little longer.
pub const CONNECTION_TTL: Duration = Duration::from_secs(2 * 3600 + 600);

/// Occupancy counters are kept per hour of subscribing: a subscription made
/// in hour `h` counts in `count#<channel>` / `<shard>#<h>`, and its end takes
/// it off that same item. No subscription made in hour `h` outlives
/// `(h + 1) h + CONNECTION_TTL` (API Gateway closes every socket at 2 hours),
/// so the counter expires then, and what a `$disconnect` that never came
/// (API Gateway's is best-effort) left on it goes with it: a count is high
/// for at most about 3 hours, not for ever.
const COUNT_HOUR: u64 = 3600;
fn count_expiry(hour: u64) -> u64 {
    (hour + 1) * COUNT_HOUR + CONNECTION_TTL.as_secs()
}
/// Tries of a subscription transaction that another one touching the same
/// item cancelled (`TransactionConflict`); jittered, about 2 s at most.
const CONFLICT_ATTEMPTS: u32 = 10;

/// What runs after each commit, with its events in seq order.
pub type OnCommit = std::sync::Arc<dyn Fn(Vec<Event>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A channel's head as this instance last saw it: a guess, checked by
/// every append's condition (`seq = :old`). The state is that of `seq`
/// (the two change only together); `None` when the channel keeps none or
/// it was too large to cache (then an append that builds on it reads it).
#[derive(Debug, Clone)]
struct Known {
    seq: u64,
    state: Option<State>,
    /// The head's `ttl` (epoch seconds): its state is gone from then.
    expires_s: Option<u64>,
}

impl Known {
    /// The head item (or a cancelled transaction's copy of it).
    fn from_item(item: Option<&Item>) -> Self {
        match item {
            Some(i) => Known { seq: get_n(i, "seq").unwrap_or(0), state: state_of(i), expires_s: get_n(i, "ttl") },
            None => Known { seq: 0, state: None, expires_s: None },
        }
    }
    /// The state, unless the head is past its TTL at `now_ms` (AWS deletes
    /// such items lazily; until then they are still read).
    fn live_state(&self, now_ms: u64) -> Option<&State> {
        self.state.as_ref().filter(|_| self.expires_s.is_none_or(|t| t.saturating_mul(1000) > now_ms))
    }
}

pub(crate) fn state_of(i: &Item) -> Option<State> {
    let kind = get_s(i, "state_kind")?;
    let value = serde_json::from_str(get_s(i, "state_json")?).ok()?;
    Some(State { kind: kind.to_owned(), value, event_ms: get_n(i, "state_event_ms") })
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: Retention,
    shards: u32,
    /// What follows a commit: the fan-out's fast path (the webhook function
    /// enqueues the committed events' jobs itself).
    on_commit: Option<OnCommit>,
    /// Epoch seconds, for the occupancy counters (a test moves it).
    clock: fn() -> u64,
    /// The table's log epoch, once read (it never changes for a table).
    epoch: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(e.to_string())
}
fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
fn ev_sk(seq: u64) -> String {
    format!("ev#{seq:020}")
}
fn conn_pk(c: &ConnId) -> String {
    format!("conn#{}", c.0)
}
/// One shard of a channel's subscribers.
fn shard_pk(channel: &Channel, shard: u32) -> String {
    format!("subs#{channel}#{shard}")
}
fn chan_pk(c: &Channel) -> String {
    format!("chan#{c}")
}
fn count_pk(c: &Channel) -> String {
    format!("count#{c}")
}
/// Whether an item is past its TTL (AWS deletes such items lazily).
fn expired(item: &Item, now_s: u64) -> bool {
    get_n(item, "ttl").is_some_and(|t| t <= now_s)
}

/// FNV-1a: stable across processes and releases, unlike `DefaultHasher`.
pub fn shard_of(conn: &ConnId, shards: u32) -> u32 {
    crate::attr::fnv1a(&conn.0) % shards
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, retention: Retention) -> Self {
        Self { client, table: table.into(), retention, shards: 8, on_commit: None, clock: now_secs, epoch: Default::default() }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }
    pub(crate) fn retention(&self) -> &Retention {
        &self.retention
    }
    /// Runs `hook` with the events of each commit, in seq order, before the
    /// commit's appends are answered (their fan-out's fast path).
    pub fn with_on_commit(mut self, hook: OnCommit) -> Self {
        self.on_commit = Some(hook);
        self
    }
    pub(crate) async fn on_commit(&self, events: Vec<Event>) {
        if let (Some(hook), false) = (&self.on_commit, events.is_empty()) {
            hook(events).await;
        }
    }
    pub fn table(&self) -> &str {
        &self.table
    }
    pub fn with_shards(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }
    /// The occupancy counters' clock (epoch seconds); tests move it hours on.
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    /// Creates the table as template.yaml does (tests and local setups).
    /// Returns nothing; the stream's ARN is [`DynamoStore::stream_arn`].
    pub async fn create_table(&self) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
            StreamViewType, TimeToLiveSpecification,
        };
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().map_err(err)
        };
        let key_el = |name: &str, t| KeySchemaElement::builder().attribute_name(name).key_type(t).build().map_err(err);
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key_el("pk", KeyType::Hash)?)
            .key_schema(key_el("sk", KeyType::Range)?)
            // New event items feed the fan-out (template.yaml: StreamSpecification).
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .map_err(err)?,
            )
            .send()
            .await
            .map_err(sdk_err)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder().attribute_name("ttl").enabled(true).build().map_err(err)?,
            )
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    /// Every item of one partition (optionally an sk prefix), all pages.
    async fn query_all(&self, pk: &str, sk_prefix: Option<&str>) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(pk))
                .set_exclusive_start_key(start.take());
            q = match sk_prefix {
                Some(p) => q.key_condition_expression("pk = :pk AND begins_with(sk, :p)").expression_attribute_values(":p", s(p)),
                None => q.key_condition_expression("pk = :pk"),
            };
            let page = q.send().await.map_err(sdk_err)?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// BatchWriteItem in chunks of 25, retrying UnprocessedItems with backoff.
    async fn batch_write(&self, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        while !requests.is_empty() {
            let chunk: Vec<WriteRequest> = requests.drain(..requests.len().min(25)).collect();
            let mut pending = HashMap::from([(self.table.clone(), chunk)]);
            for attempt in 0..8u32 {
                let res = self.client.batch_write_item().set_request_items(Some(pending)).send().await.map_err(sdk_err)?;
                match res.unprocessed_items {
                    Some(u) if u.values().any(|v| !v.is_empty()) => {
                        pending = u;
                        crate::backoff_sleep(attempt, Duration::from_millis(20), Duration::from_secs(2)).await;
                    }
                    _ => {
                        pending = HashMap::new();
                        break;
                    }
                }
            }
            if pending.values().any(|v| !v.is_empty()) {
                return Err(StoreError::new(StoreErrorKind::Throttled, "BatchWriteItem left unprocessed items after 8 attempts"));
            }
        }
        Ok(())
    }

    fn delete_req(item_key: Item) -> Result<WriteRequest, StoreError> {
        Ok(WriteRequest::builder().delete_request(DeleteRequest::builder().set_key(Some(item_key)).build().map_err(err)?).build())
    }

    /// The channel's head item: its seq, state and whether it exists, and
    /// the `at_ms` of its newest event.
    async fn head(&self, channel: &Channel) -> Result<(Known, u64), StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(chan_pk(channel), "head")))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        let at_ms = got.item.as_ref().and_then(|i| get_n(i, "last_at_ms")).unwrap_or(0);
        Ok((Known::from_item(got.item.as_ref()), at_ms))
    }

    /// A transaction, tried again with jittered backoff while another request
    /// writing one of its items cancels it: on DynamoDB two requests touching
    /// one item at once do that (the snippet subscribes to its channels at
    /// once, each in its own Lambda invocation).
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>>
    {
        let mut attempt = 0;
        loop {
            match self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await {
                Err(e) if conflicted(&e) && attempt + 1 < CONFLICT_ATTEMPTS => {
                    crate::backoff_sleep(attempt, Duration::from_millis(10), Duration::from_millis(500)).await;
                    attempt += 1;
                }
                r => return r.map(|_| ()),
            }
        }
    }

    /// One hour's counter of a shard moves by `by` (see [`COUNT_HOUR`]),
    /// outside the subscription's transaction: plain `ADD`s on one item
    /// never conflict with each other, where every subscribe to a channel
    /// touching its counter in a transaction would. A counter that fails to
    /// move is logged; occupancy is a figure for display.
    async fn count(&self, channel: &Channel, shard: u64, hour: u64, by: i64) {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(count_pk(channel), format!("{shard}#{hour}"))))
            .update_expression("ADD n :by SET #ttl = :ttl")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":by", AttributeValue::N(by.to_string()))
            .expression_attribute_values(":ttl", n(count_expiry(hour)))
            .send()
            .await;
        if let Err(e) = res {
            tracing::warn!(%channel, error = %sdk_err(e), "the occupancy counter did not move");
        }
    }

    /// One transaction, conditional on the subscription existing, then the
    /// counts, so they move exactly once however often it is called. `item`
    /// is the subscription's own item: its shard and counter hour (an item
    /// written before they were kept: the shard from today's `Shards`, and
    /// no counter, as the old counters no longer count).
    async fn end_subscription(&self, conn: &ConnId, channel: &Channel, item: &Item) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::Delete;
        let shard = get_n(item, "sh").unwrap_or_else(|| u64::from(shard_of(conn, self.shards)));
        let by_conn = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(conn_pk(conn), format!("sub#{channel}"))))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(err)?;
        let by_channel = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(shard_pk(channel, shard as u32), conn.0.clone())))
            .build()
            .map_err(err)?;
        let items =
            vec![TransactWriteItem::builder().delete(by_conn).build(), TransactWriteItem::builder().delete(by_channel).build()];
        match self.transact(items).await {
            Ok(()) => {
                self.give_back(conn).await;
                if let Some(hour) = get_n(item, "ep") {
                    self.count(channel, shard, hour, -1).await;
                }
                Ok(())
            }
            // Not subscribed: nothing to undo.
            Err(e) if cancellation_reasons(&e).is_some_and(|r| r.iter().any(|c| c == "ConditionalCheckFailed")) => Ok(()),
            Err(e) => Err(sdk_err(e)),
        }
    }

    /// One channel back on the connection's count (a subscription that was
    /// not made, or is gone). Only while the connection item exists: a
    /// removed connection is not brought back.
    async fn give_back(&self, conn: &ConnId) {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(conn_pk(conn), "meta")))
            .update_expression("ADD subs :minus")
            .condition_expression("attribute_exists(subs)")
            .expression_attribute_values(":minus", n(-1))
            .send()
            .await;
        match res {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => tracing::warn!(conn = %conn.0, error = %sdk_err(e), "the connection's channel count did not move"),
        }
    }
}

/// Whether DynamoDB cancelled the transaction only because another request
/// was writing one of its items at that moment, or because an item's
/// partition was over its capacity (`ThrottlingError`): worth trying again.
/// A failed condition decides the outcome, so it is never retried.
fn conflicted<R>(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>) -> bool {
    cancellation_reasons(e).is_some_and(|r| {
        r.iter().any(|c| c == "TransactionConflict" || c == "ThrottlingError") && !r.iter().any(|c| c == "ConditionalCheckFailed")
    })
}

/// The codes of a cancelled transaction's items, in order ("None" where that item was fine).
fn cancellation_reasons<R>(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect())
        }
        Some(TransactWriteItemsError::TransactionInProgressException(_)) => Some(vec!["InProgress".into()]),
        _ => None,
    }
}

impl Subscriptions for DynamoStore {
    async fn add_connection(&self, conn: &ConnId, now_ms: u64) -> Result<(), StoreError> {
        let mut item = key(conn_pk(conn), "meta");
        item.insert("connected_at".into(), n(now_ms));
        item.insert("ttl".into(), n(now_ms / 1000 + CONNECTION_TTL.as_secs()));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_err)?;
        Ok(())
    }

    async fn remove_connection(&self, conn: &ConnId) -> Result<(), StoreError> {
        let items = self.query_all(&conn_pk(conn), Some("sub#")).await?;
        // Each one conditional, so a $disconnect racing a 410 clean-up
        // decrements each counter once.
        for item in &items {
            if let Some(c) = get_s(item, "sk").and_then(|sk| sk.strip_prefix("sub#")).and_then(|c| Channel::parse(c).ok()) {
                self.end_subscription(conn, &c, item).await?;
            }
        }
        self.batch_write(vec![Self::delete_req(key(conn_pk(conn), "meta"))?]).await
    }

    /// The connection's count first, a plain conditional `ADD` (the cap,
    /// atomic across Lambda instances); then one transaction of the two items
    /// that are this subscription alone (its item under the connection,
    /// absent: not a repeat; the channel's subscriber item). Nothing shared
    /// is in the transaction: a page's subscribes, sent at once and run as
    /// concurrent invocations, would otherwise collide on the connection's
    /// item (`TransactionConflict`). A failed transaction gives the count
    /// back; a function killed between the two steps leaves it one too high
    /// until the connection goes (the cap errs towards refusing).
    async fn subscribe(&self, conn: &ConnId, channel: &Channel, max: usize) -> Result<SubOutcome, StoreError> {
        let ttl = n(now_secs() + CONNECTION_TTL.as_secs());
        // Its shard and its counter's hour are kept on it, so its end finds
        // both whatever `Shards` is by then and whenever it ends.
        let (shard, hour) = (u64::from(shard_of(conn, self.shards)), (self.clock)() / COUNT_HOUR);
        let took = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(conn_pk(conn), "meta")))
            .update_expression("SET subs = if_not_exists(subs, :zero) + :one, #ttl = if_not_exists(#ttl, :ttl)")
            .condition_expression("attribute_not_exists(subs) OR subs < :max")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .expression_attribute_values(":ttl", ttl.clone())
            .send()
            .await;
        match took {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                // At the cap: a repeat is still a repeat.
                let had = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(key(conn_pk(conn), format!("sub#{channel}"))))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(sdk_err)?;
                return Ok(if had.item.is_some() { SubOutcome::AlreadySubscribed } else { SubOutcome::LimitReached });
            }
            Err(e) => return Err(sdk_err(e)),
        }
        let mut by_conn = key(conn_pk(conn), format!("sub#{channel}"));
        by_conn.insert("ttl".into(), ttl.clone());
        by_conn.insert("sh".into(), n(shard));
        by_conn.insert("ep".into(), n(hour));
        let by_conn = Put::builder()
            .table_name(&self.table)
            .set_item(Some(by_conn))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(err)?;
        let mut by_channel = key(shard_pk(channel, shard as u32), conn.0.clone());
        by_channel.insert("ttl".into(), ttl);
        let by_channel = Put::builder().table_name(&self.table).set_item(Some(by_channel)).build().map_err(err)?;
        let items = vec![TransactWriteItem::builder().put(by_conn).build(), TransactWriteItem::builder().put(by_channel).build()];
        let outcome = match self.transact(items).await {
            Ok(()) => {
                self.count(channel, shard, hour, 1).await;
                return Ok(SubOutcome::Added);
            }
            Err(e) => match cancellation_reasons(&e) {
                Some(r) if r.first().map(String::as_str) == Some("ConditionalCheckFailed") => Ok(SubOutcome::AlreadySubscribed),
                _ => Err(sdk_err(e)),
            },
        };
        self.give_back(conn).await;
        outcome
    }

    /// The subscription's item says its shard and counter; then
    /// [`DynamoStore::end_subscription`].
    async fn unsubscribe(&self, conn: &ConnId, channel: &Channel) -> Result<(), StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(conn_pk(conn), format!("sub#{channel}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        match got.item {
            Some(item) => self.end_subscription(conn, channel, &item).await,
            None => Ok(()),
        }
    }

    fn shards(&self) -> u32 {
        self.shards
    }

    async fn subscriber_page(
        &self,
        channel: &Channel,
        shard: u32,
        after: Option<&ConnId>,
        limit: usize,
    ) -> Result<SubscriberPage, StoreError> {
        let pk = shard_pk(channel, shard);
        let start = after.map(|c| key(pk.clone(), c.0.clone()));
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .set_exclusive_start_key(start)
            .limit(limit.clamp(1, 1000) as i32)
            // A subscriber added just before this page is read is on it: an
            // eventually consistent page could skip a brand-new page for the
            // whole event. (Twice the read units of an eventually consistent
            // read: about 250 per 10,000 subscribers.)
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        let now = now_secs();
        let items = page.items.unwrap_or_default();
        let conns =
            items.iter().filter(|i| !expired(i, now)).filter_map(|i| get_s(i, "sk").map(|c| ConnId(c.to_owned()))).collect();
        let next = page.last_evaluated_key.and_then(|k| get_s(&k, "sk").map(|c| ConnId(c.to_owned())));
        Ok(SubscriberPage { conns, next })
    }

    /// The shards' live hourly counters: a handful of small items (shards ×
    /// about 3), not every subscription. Expired ones, and counters from
    /// before they were hourly (sk without `#`), count nothing.
    async fn count_subscribers(&self, channel: &Channel) -> Result<u64, StoreError> {
        let items = self.query_all(&count_pk(channel), None).await?;
        let now = (self.clock)();
        let total: i64 = items
            .iter()
            .filter(|i| !expired(i, now) && get_s(i, "sk").is_some_and(|sk| sk.contains('#')))
            .filter_map(|i| i.get("n").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok()))
            .sum();
        Ok(total.max(0) as u64)
    }

    async fn occupancy_turn(&self, conn: &ConnId, channel: &Channel, now_ms: u64, interval_ms: u64) -> Result<Turn, StoreError> {
        let item_key = key(conn_pk(conn), format!("sub#{channel}"));
        // One conditional write on the connection's own subscription item:
        // racing asks (even from other Lambda instances) cannot both pass.
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key.clone()))
            .update_expression("SET occ_at = :now")
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(occ_at) OR occ_at <= :cutoff)")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":cutoff", n(now_ms.saturating_sub(interval_ms)))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Turn::Granted),
            Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => {
                let got = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(item_key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(sdk_err)?;
                Ok(match got.item.and_then(|i| get_n(&i, "occ_at")) {
                    None => Turn::NotSubscribed,
                    Some(at) => Turn::TooSoon { wait_ms: (at + interval_ms).saturating_sub(now_ms).max(1) },
                })
            }
            Err(e) => Err(sdk_err(e)),
        }
    }
}

impl EventLog for DynamoStore {
    /// Group commit (see [`crate::commit`]): the event is pending where
    /// nothing conflicts, then committed by the channel's committer with
    /// whatever else is pending, in one transaction.
    async fn append(&self, ev: &Pending) -> Result<Appended, StoreError> {
        self.group_append(ev).await
    }

    /// Only the events: the caller read the head (and so the retention
    /// window) a moment ago with `read(.., 0)`. Items past their TTL are
    /// still filtered; retention by count and age was checked on that read.
    async fn read_events(&self, channel: &Channel, since: u64, upto: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        if since >= upto || limit == 0 {
            return Ok(vec![]);
        }
        let now = now_secs();
        self.events_between(channel, since + 1, upto, limit, &|i: &Item| !expired(i, now)).await
    }

    /// Retention in the read: from the newest `max_events`, none older than
    /// `max_age` before the newest event, none past its TTL.
    async fn read(&self, channel: &Channel, since: u64, limit: usize) -> Result<History, StoreError> {
        let (known, head_at_ms) = self.head(channel).await?;
        let head = known.seq;
        let r = &self.retention;
        let window_start = head.saturating_sub(r.max_events as u64) + 1;
        let cutoff_ms = head_at_ms.saturating_sub(r.max_age.as_millis() as u64);
        let now = now_secs();
        let kept = |i: &Item| get_n(i, "at_ms").unwrap_or(0) >= cutoff_ms && !expired(i, now);
        let pk = crate::event_item::events_pk(channel);
        let query = |from: u64| {
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":from", s(ev_sk(from)))
                .expression_attribute_values(":to", s(ev_sk(head)))
                .consistent_read(true)
        };
        // The first retained seq: events age in seq order, so this is the
        // first kept item of the window, almost always its first item: one
        // item is read (a read is charged on the items' whole size, however
        // few attributes it projects), then more only if that one has aged.
        let mut first_retained = head + 1;
        let mut start: Option<Item> = None;
        let mut page_size = 1;
        'find: loop {
            if head == 0 {
                break;
            }
            let page = query(window_start)
                .projection_expression("seq, at_ms, #ttl")
                .expression_attribute_names("#ttl", "ttl")
                .limit(page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_err)?;
            for i in page.items.unwrap_or_default() {
                if kept(&i) {
                    first_retained = get_n(&i, "seq").unwrap_or(head + 1);
                    break 'find;
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
            page_size = 25;
        }
        let from = since.saturating_add(1).max(first_retained);
        let events =
            if limit > 0 && from <= head { self.events_between(channel, from, head, limit, &kept).await? } else { vec![] };
        // Past the head's TTL its state is gone, though AWS may not have deleted it yet.
        let state = known.live_state(now.saturating_mul(1000)).cloned();
        Ok(History { events, head, first_retained, epoch: self.epoch().await?, state })
    }
}

impl DynamoStore {
    /// The event items `from..=to` that `kept` keeps, at most `limit`, in order.
    async fn events_between(
        &self,
        channel: &Channel,
        from: u64,
        to: u64,
        limit: usize,
        kept: &(dyn Fn(&Item) -> bool + Sync),
    ) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        while events.len() < limit {
            let want = (limit - events.len()).min(1000) as i32;
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(crate::event_item::events_pk(channel)))
                .expression_attribute_values(":from", s(ev_sk(from)))
                .expression_attribute_values(":to", s(ev_sk(to)))
                .consistent_read(true)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_err)?;
            for i in page.items.unwrap_or_default().iter().filter(|i| kept(i)) {
                let e = crate::event_item::decode(i).map_err(|e| StoreError::new(StoreErrorKind::Corrupt, e.to_string()))?;
                events.push(e);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        events.truncate(limit);
        Ok(events)
    }

    /// The log's epoch: the `meta` / `epoch` item, made by whichever
    /// instance reads it first (a conditional put; a loser reads the
    /// winner's), then kept for the instance's life.
    async fn epoch(&self) -> Result<String, StoreError> {
        self.epoch
            .get_or_try_init(|| async {
                let k = key("meta", "epoch");
                let read = || async {
                    let got = self
                        .client
                        .get_item()
                        .table_name(&self.table)
                        .set_key(Some(k.clone()))
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(sdk_err)?;
                    Ok::<_, StoreError>(got.item.and_then(|i| get_s(&i, "epoch").map(str::to_owned)))
                };
                if let Some(e) = read().await? {
                    return Ok(e);
                }
                let fresh = format!("{:016x}", rand::random::<u64>());
                let mut item = k.clone();
                item.insert("epoch".into(), s(fresh.clone()));
                let put = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
                    .await;
                match put {
                    Ok(_) => Ok(fresh),
                    Err(e) if matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => {
                        read().await?.ok_or_else(|| StoreError::new(StoreErrorKind::Corrupt, "the epoch item has no epoch"))
                    }
                    Err(e) => Err(sdk_err(e)),
                }
            })
            .await
            .cloned()
    }
}

/// Where an unfinished fan-out job resumes: `cursor#<job>` / `cursor`, with
/// the last subscriber it reached; gone after an hour by TTL (a job is
/// redelivered within minutes or sits in the dead-letter queue).
impl crate::pipeline::Cursors for DynamoStore {
    async fn resume_point(&self, job: &str) -> Result<Option<ConnId>, crate::pipeline::PipelineError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("cursor#{job}"), "cursor")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::pipeline::PipelineError::Cursor(sdk_err(e).to_string()))?;
        Ok(got.item.filter(|i| !expired(i, now_secs())).and_then(|i| get_s(&i, "after").map(|a| ConnId(a.to_owned()))))
    }

    /// `fail#<job>` / `fail`: the job's own failures, a day at most.
    async fn count_failure(&self, job: &str) -> Result<u32, crate::pipeline::PipelineError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("fail#{job}"), "fail")))
            .update_expression("ADD n :one SET #ttl = :ttl")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(now_secs() + 86_400))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| crate::pipeline::PipelineError::Cursor(sdk_err(e).to_string()))?;
        Ok(out.attributes.as_ref().and_then(|a| get_n(a, "n")).unwrap_or(1) as u32)
    }

    async fn save_resume_point(&self, job: &str, after: &ConnId) -> Result<(), crate::pipeline::PipelineError> {
        let mut item = key(format!("cursor#{job}"), "cursor");
        item.insert("after".into(), s(after.0.clone()));
        item.insert("ttl".into(), n(now_secs() + 3600));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| crate::pipeline::PipelineError::Cursor(sdk_err(e).to_string()))?;
        Ok(())
    }
}
