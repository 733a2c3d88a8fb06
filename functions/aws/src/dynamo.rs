//! The DynamoDB store: one on-demand table, `pk`/`sk` strings, a `ttl`
//! attribute (epoch seconds) for DynamoDB's TTL. Query, never Scan; every
//! Query paginates. SDK types stay in this file.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | connection | `conn#<id>` | `meta` |
//! | its subscription (+ `occ_at`: last occupancy ask, ms) | `conn#<id>` | `sub#<channel>` |
//! | channel subscriber | `subs#<channel>#<shard>` | `<conn id>` |
//! | channel head | `chan#<channel>` | `head` |
//! | event | `chan#<channel>` | `ev#<seq, 20 digits>` |
//! | dedupe key | `dedupe#<key>` | `dedupe` |
//!
//! Subscribers are sharded by a hash of the connection id so one hot channel
//! spreads over partitions. Seq is assigned by an optimistic transaction
//! (head, event and dedupe key conditional in one TransactWriteItems), so it
//! is gapless and two writers can never take the same seq.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures::future::try_join_all;
use hookcast_core::channel::Channel;
use hookcast_core::ports::{Appended, ConnId, History, Pending, Retention, Store, StoreError, SubOutcome, Turn};
use hookcast_core::protocol::Event;

/// API Gateway closes a WebSocket at 2 hours; keep connection items a little longer.
pub const CONNECTION_TTL: Duration = Duration::from_secs(2 * 3600 + 600);
const MAX_APPEND_ATTEMPTS: u32 = 60;
const PRUNE_BATCH: i32 = 25;

type Item = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: Retention,
    shards: u32,
    /// Occupancy counts reused for this long, per channel, in this instance:
    /// a count reads every subscription item, and a popular page asks often.
    count_ttl: Duration,
    counts: std::sync::Arc<std::sync::Mutex<HashMap<Channel, (u64, std::time::Instant)>>>,
}

/// Counted channels kept before stale counts are dropped.
const COUNT_CACHE_ENTRIES: usize = 4096;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}
fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}
fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}
fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}
/// The SDK's `Display` says only "service error"; the code and message say why.
fn sdk_err<E: ProvideErrorMetadata + std::fmt::Display>(e: E) -> StoreError {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => StoreError(format!("{c}: {m}")),
        (Some(c), None) => StoreError(c.to_owned()),
        _ => err(e),
    }
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

/// FNV-1a: stable across processes and releases, unlike `DefaultHasher`.
fn shard_of(conn: &ConnId, shards: u32) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in conn.0.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h % shards
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, retention: Retention) -> Self {
        Self {
            client,
            table: table.into(),
            retention,
            shards: 8,
            count_ttl: Duration::from_secs(5),
            counts: Default::default(),
        }
    }
    /// How long an occupancy count is reused (default 5 s; zero: always count).
    pub fn with_count_ttl(mut self, ttl: Duration) -> Self {
        self.count_ttl = ttl;
        self
    }
    pub fn with_shards(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }
    fn subs_pk(&self, channel: &Channel, conn: &ConnId) -> String {
        shard_pk(channel, shard_of(conn, self.shards))
    }

    /// Creates the table as template.yaml does (tests and local setups).
    pub async fn create_table(&self) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
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
                Some(p) => q
                    .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                    .expression_attribute_values(":p", s(p)),
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
                return Err(StoreError("BatchWriteItem left unprocessed items after 8 attempts".into()));
            }
        }
        Ok(())
    }

    fn put_req(item: Item) -> Result<WriteRequest, StoreError> {
        Ok(WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().map_err(err)?).build())
    }

    fn delete_req(item_key: Item) -> Result<WriteRequest, StoreError> {
        Ok(WriteRequest::builder().delete_request(DeleteRequest::builder().set_key(Some(item_key)).build().map_err(err)?).build())
    }

    async fn head(&self, channel: &Channel) -> Result<(u64, bool), StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(chan_pk(channel), "head".into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(match got.item {
            Some(i) => (get_n(&i, "seq").unwrap_or(0), true),
            None => (0, false),
        })
    }

    async fn dedupe_seq(&self, dedupe_key: &str) -> Result<Option<u64>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("dedupe#{dedupe_key}"), "dedupe".into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(got.item.and_then(|i| get_n(&i, "seq")))
    }

    fn append_transaction(&self, ev: &Pending, old: u64, exists: bool) -> Result<Vec<TransactWriteItem>, StoreError> {
        let new = old + 1;
        let r = &self.retention;
        let dedupe_expires_ms = ev.at_ms + r.dedupe_ttl.as_millis() as u64;
        let dedupe = Put::builder()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("pk".to_owned(), s(format!("dedupe#{}", ev.dedupe_key))),
                ("sk".to_owned(), s("dedupe")),
                ("seq".to_owned(), n(new)),
                ("channel".to_owned(), s(ev.channel.as_str())),
                ("expires_ms".to_owned(), n(dedupe_expires_ms)),
                ("ttl".to_owned(), n(dedupe_expires_ms / 1000 + 1)),
            ])))
            // TTL deletes lazily, so an expired key may still be there.
            .condition_expression("attribute_not_exists(pk) OR expires_ms <= :now")
            .expression_attribute_values(":now", n(ev.at_ms))
            .build()
            .map_err(err)?;
        let head = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(chan_pk(&ev.channel), "head".into())))
            .update_expression("SET seq = :new, last_at_ms = :at");
        let head = if exists {
            head.condition_expression("seq = :old").expression_attribute_values(":old", n(old))
        } else {
            head.condition_expression("attribute_not_exists(pk)")
        }
        .expression_attribute_values(":new", n(new))
        .expression_attribute_values(":at", n(ev.at_ms))
        .build()
        .map_err(err)?;
        let expires_s = (ev.at_ms + r.max_age.as_millis() as u64) / 1000 + 1;
        let event = Put::builder()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("pk".to_owned(), s(chan_pk(&ev.channel))),
                ("sk".to_owned(), s(ev_sk(new))),
                ("seq".to_owned(), n(new)),
                ("event".to_owned(), s(&ev.event)),
                ("data".to_owned(), s(ev.data.to_string())),
                ("at".to_owned(), s(&ev.at)),
                ("at_ms".to_owned(), n(ev.at_ms)),
                ("ttl".to_owned(), n(expires_s)),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(err)?;
        Ok(vec![
            TransactWriteItem::builder().put(dedupe).build(),
            TransactWriteItem::builder().update(head).build(),
            TransactWriteItem::builder().put(event).build(),
        ])
    }

    /// Deletes the oldest events past the count or age limit (a bounded batch per append).
    async fn prune(&self, channel: &Channel, head: u64, head_at_ms: u64) -> Result<(), StoreError> {
        let r = &self.retention;
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :ev)")
            .expression_attribute_values(":pk", s(chan_pk(channel)))
            .expression_attribute_values(":ev", s("ev#"))
            .consistent_read(true)
            .limit(PRUNE_BATCH)
            .send()
            .await
            .map_err(sdk_err)?;
        let cutoff_ms = head_at_ms.saturating_sub(r.max_age.as_millis() as u64);
        let doomed: Vec<WriteRequest> = page
            .items
            .unwrap_or_default()
            .into_iter()
            .filter(|i| {
                let seq = get_n(i, "seq").unwrap_or(0);
                seq + r.max_events as u64 <= head || get_n(i, "at_ms").unwrap_or(0) < cutoff_ms
            })
            .map(|i| Self::delete_req(key(chan_pk(channel), get_s(&i, "sk").unwrap_or_default().to_owned())))
            .collect::<Result<_, _>>()?;
        self.batch_write(doomed).await
    }

    /// Live subscriptions of a channel, all shards, all pages.
    async fn count_uncached(&self, channel: &Channel) -> Result<u64, StoreError> {
        let now = now_secs();
        let shards = (0..self.shards).map(|sh| {
            let pk = shard_pk(channel, sh);
            async move {
                let mut total = 0u64;
                let mut start: Option<Item> = None;
                loop {
                    // Select COUNT returns no items, but DynamoDB still reads
                    // (and bills) them: hence the count cache.
                    let page = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .consistent_read(true)
                        .select(aws_sdk_dynamodb::types::Select::Count)
                        .key_condition_expression("pk = :pk")
                        // TTL deletes lazily; an expired subscription is already dead.
                        .filter_expression("attribute_not_exists(#ttl) OR #ttl > :now")
                        .expression_attribute_names("#ttl", "ttl")
                        .expression_attribute_values(":pk", s(&pk))
                        .expression_attribute_values(":now", n(now))
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(sdk_err)?;
                    total += page.count.max(0) as u64;
                    match page.last_evaluated_key {
                        Some(k) if !k.is_empty() => start = Some(k),
                        _ => return Ok::<u64, StoreError>(total),
                    }
                }
            }
        });
        Ok(try_join_all(shards).await?.into_iter().sum())
    }
}

fn to_event(channel: &Channel, i: &Item) -> Event {
    Event {
        channel: channel.to_string(),
        seq: get_n(i, "seq").unwrap_or(0),
        event: get_s(i, "event").unwrap_or_default().to_owned(),
        data: get_s(i, "data").and_then(|d| serde_json::from_str(d).ok()).unwrap_or(serde_json::Value::Null),
        at: get_s(i, "at").unwrap_or_default().to_owned(),
    }
}

impl Store for DynamoStore {
    async fn add_connection(&self, conn: &ConnId, now_ms: u64) -> Result<(), StoreError> {
        let mut item = key(conn_pk(conn), "meta".into());
        item.insert("connected_at".into(), n(now_ms));
        item.insert("ttl".into(), n(now_ms / 1000 + CONNECTION_TTL.as_secs()));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_err)?;
        Ok(())
    }

    async fn remove_connection(&self, conn: &ConnId) -> Result<(), StoreError> {
        let items = self.query_all(&conn_pk(conn), None).await?;
        let mut reqs = Vec::with_capacity(items.len() * 2);
        for i in &items {
            let sk = get_s(i, "sk").unwrap_or_default();
            if let Some(channel) = sk.strip_prefix("sub#").and_then(|c| Channel::parse(c).ok()) {
                reqs.push(Self::delete_req(key(self.subs_pk(&channel, conn), conn.0.clone()))?);
            }
            reqs.push(Self::delete_req(key(conn_pk(conn), sk.to_owned()))?);
        }
        self.batch_write(reqs).await
    }

    async fn subscribe(&self, conn: &ConnId, channel: &Channel, max: usize) -> Result<SubOutcome, StoreError> {
        let mine = self.query_all(&conn_pk(conn), Some("sub#")).await?;
        let sk = format!("sub#{channel}");
        if mine.iter().any(|i| get_s(i, "sk") == Some(sk.as_str())) {
            return Ok(SubOutcome::AlreadySubscribed);
        }
        if mine.len() >= max {
            return Ok(SubOutcome::LimitReached);
        }
        let ttl = n(now_secs() + CONNECTION_TTL.as_secs());
        let mut by_conn = key(conn_pk(conn), sk);
        by_conn.insert("ttl".into(), ttl.clone());
        let mut by_channel = key(self.subs_pk(channel, conn), conn.0.clone());
        by_channel.insert("ttl".into(), ttl);
        // Not a transaction: both items are idempotent and expire with the
        // connection, a half-written pair heals (a stray subscriber is Gone
        // on the next fan-out), and transactions cost twice the writes.
        self.batch_write(vec![Self::put_req(by_conn)?, Self::put_req(by_channel)?]).await?;
        Ok(SubOutcome::Added)
    }

    async fn unsubscribe(&self, conn: &ConnId, channel: &Channel) -> Result<(), StoreError> {
        self.batch_write(vec![
            Self::delete_req(key(conn_pk(conn), format!("sub#{channel}")))?,
            Self::delete_req(key(self.subs_pk(channel, conn), conn.0.clone()))?,
        ])
        .await
    }

    async fn subscribers(&self, channel: &Channel) -> Result<Vec<ConnId>, StoreError> {
        let now = now_secs();
        let shards = (0..self.shards).map(|sh| {
            let pk = shard_pk(channel, sh);
            async move { self.query_all(&pk, None).await }
        });
        let pages = try_join_all(shards).await?;
        Ok(pages
            .into_iter()
            .flatten()
            // TTL deletes lazily; an expired subscription is already dead.
            .filter(|i| get_n(i, "ttl").is_none_or(|t| t > now))
            .filter_map(|i| get_s(&i, "sk").map(|c| ConnId(c.to_owned())))
            .collect())
    }

    async fn count_subscribers(&self, channel: &Channel) -> Result<u64, StoreError> {
        let fresh = |at: &std::time::Instant| at.elapsed() < self.count_ttl;
        if let Some((n, _)) = self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(channel).filter(|(_, at)| fresh(at)) {
            return Ok(*n);
        }
        let n = self.count_uncached(channel).await?;
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= COUNT_CACHE_ENTRIES {
            counts.retain(|_, (_, at)| fresh(at));
        }
        counts.insert(channel.clone(), (n, std::time::Instant::now()));
        Ok(n)
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

    async fn append(&self, ev: &Pending) -> Result<Appended, StoreError> {
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let (old, exists) = self.head(&ev.channel).await?;
            let items = self.append_transaction(ev, old, exists)?;
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => {
                    let seq = old + 1;
                    if let Err(e) = self.prune(&ev.channel, seq, ev.at_ms).await {
                        // The event is stored; pruning catches up on the next append.
                        tracing::warn!(error = %e, channel = %ev.channel, "prune failed");
                    }
                    return Ok(Appended::Stored(ev.with_seq(seq)));
                }
                Err(e) => {
                    let reasons: Vec<String> = match e.as_service_error() {
                        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                            .cancellation_reasons()
                            .iter()
                            .map(|r| r.code().unwrap_or("None").to_owned())
                            .collect(),
                        Some(TransactWriteItemsError::TransactionInProgressException(_)) => vec!["InProgress".into()],
                        _ => return Err(sdk_err(e)),
                    };
                    if reasons.first().map(String::as_str) == Some("ConditionalCheckFailed") {
                        if let Some(seq) = self.dedupe_seq(&ev.dedupe_key).await? {
                            return Ok(Appended::Duplicate { seq });
                        }
                    }
                    // Another writer took this seq first: read the head again.
                    crate::backoff_sleep(attempt, Duration::from_millis(10), Duration::from_millis(320)).await;
                }
            }
        }
        Err(StoreError(format!("append to {} lost the seq race {MAX_APPEND_ATTEMPTS} times", ev.channel)))
    }

    async fn read(&self, channel: &Channel, since: u64, limit: usize) -> Result<History, StoreError> {
        let (head, _) = self.head(channel).await?;
        let pk = chan_pk(channel);
        let query = |from: u64, limit: i32| {
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":from", s(ev_sk(from)))
                .expression_attribute_values(":to", s(ev_sk(u64::MAX >> 1)))
                .consistent_read(true)
                .limit(limit)
        };
        let first = query(0, 1).send().await.map_err(sdk_err)?;
        let first_retained =
            first.items.unwrap_or_default().first().and_then(|i| get_n(i, "seq")).unwrap_or(head + 1);
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        while events.len() < limit && since < head {
            let want = (limit - events.len()).min(1000) as i32;
            let page = query(since.saturating_add(1), want).set_exclusive_start_key(start.take()).send().await.map_err(sdk_err)?;
            events.extend(page.items.unwrap_or_default().iter().map(|i| to_event(channel, i)));
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        events.truncate(limit);
        Ok(History { events, head, first_retained })
    }
}
