//! The delivery log and the console's open pages on AWS, in the stack's one
//! table (the items are in [`crate::dynamo`]'s table of items).
//!
//! Entries are spread over [`DELIVERY_SHARDS`] partitions by a hash of
//! their id (`dlv#<shard>` / `<id>`), so a flood of deliveries is not held
//! to one partition's 1,000 writes a second; the id alone says its shard,
//! so `get` is one GetItem. `list` asks every shard for its part (newest
//! first with a `Limit`, or after the cursor oldest first) and merges them.
//!
//! Bounds, as AWS can keep them: the count is bounded per read (`limit`,
//! which the console caps at 200), not in storage; what is stored is bounded
//! by age: every entry carries the table's `ttl` at its time plus
//! [`Bounds::max_age`] (24 h by default), after which DynamoDB deletes it
//! (within days; reads skip it from its `ttl` on). The storage is so at most
//! `max_age` × the rate entries come in. Refused ones are written at most
//! [`REFUSED_WRITTEN_PER_SEC`] a second per webhook instance (below
//! hookcast-http's own 20): a refusal answers before any read or write
//! (the cheapest answer a flood of forgeries can get), so the write its
//! entry costs must not be what a flood pays for or waits on; those over it
//! are counted, and the next one written says how many.
//!
//! An event's audience is one item per event (`aud#<channel>` / `<seq>`),
//! moved by `ADD` alone: each fan-out unit (a channel's shard) adds its own
//! counts, and additions from any number of workers, in any order, sum.
//!
//! The console asks for the newest entries a few times a second while it is
//! open. Read whole each time, that is every shard's newest `limit` items
//! and every listed event's audience: about 100 read units a poll with a
//! full log, some $0.15 an hour. So each instance keeps what it last read
//! ([`Recent`]): a poll reads only what its shards hold from
//! [`FRESH_WINDOW`] before the previous poll on (half a read unit a shard
//! when nothing came), entries being immutable; a full read is made at most
//! every [`FULL_READ_EVERY`], or when a larger `limit` is asked. An entry
//! that became visible more than [`FRESH_WINDOW`] after its id's time (a
//! write retried that long) is shown from the next full read. An event's
//! audience is read again at most every [`AUDIENCE_REREAD`], and not at all
//! once it was read [`SETTLED`] after its event: the fan-out is long done by
//! then.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::KeysAndAttributes;
use aws_sdk_dynamodb::Client;
use hookcast_core::deliveries::{Bounds, DeliveryLog, Entry, Pages};
use hookcast_core::fanout::FanoutReport;
use hookcast_core::ports::{ConnId, StoreError, StoreErrorKind, Subscriptions};
use hookcast_core::Channel;

use crate::attr::{fnv1a, get_n, get_s, key, n, s, sdk_err, Item};
use crate::dynamo::DynamoStore;

/// Partitions the entries are spread over.
pub const DELIVERY_SHARDS: u32 = 8;
/// Partitions the open-page counters are spread over (by connection).
pub const BUILD_SHARDS: u32 = 8;
/// Keys one BatchGetItem may ask for.
const BATCH_GET_MAX: usize = 100;
/// A poll of the newest entries reads its shards from this long before the
/// previous poll: an entry is visible within it of its id's time.
pub const FRESH_WINDOW: Duration = Duration::from_secs(10);
/// The newest entries are read whole at least this often.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(60);
/// An audience read this long after its event is kept by the instance.
pub const SETTLED: Duration = Duration::from_secs(600);
/// A younger event's audience, read this long ago, is read again.
pub const AUDIENCE_REREAD: Duration = Duration::from_secs(2);
/// Audiences an instance keeps (past it, it starts over).
const AUDIENCES_KEPT: usize = 4096;
/// Refused entries one instance writes a second (by the entries' time).
pub const REFUSED_WRITTEN_PER_SEC: u32 = 5;

fn now_secs() -> u64 {
    now_ms() / 1000
}
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The partition of entry `id`.
pub fn entry_pk(id: &str) -> String {
    format!("dlv#{}", fnv1a(id) % DELIVERY_SHARDS)
}

/// An event's audience item.
pub fn audience_key(channel: &str, seq: u64) -> Item {
    key(format!("aud#{channel}"), format!("{seq:020}"))
}

/// The counter of pages on `build` that `conn` opened in `hour` counts on.
pub(crate) fn build_counter_key(conn: &ConnId, build: &str, hour: u64) -> Item {
    key(format!("bld#{}", fnv1a(&conn.0) % BUILD_SHARDS), format!("{build}#{hour}"))
}

/// Whether an item is past its TTL (DynamoDB deletes such items lazily).
fn expired(item: &Item, now_s: u64) -> bool {
    get_n(item, "ttl").is_some_and(|t| t <= now_s)
}

/// The delivery log in the table.
#[derive(Clone)]
pub struct DynamoDeliveries {
    client: Client,
    table: String,
    bounds: Bounds,
    recent: Arc<std::sync::Mutex<Recent>>,
    /// Refused entries written in a second: (the second, written, not written since the last one that was).
    refused: Arc<std::sync::Mutex<(u64, u32, u64)>>,
}

/// What this instance last read of the newest entries (see the module's doc).
#[derive(Default)]
struct Recent {
    /// The newest `depth` entries as of `read_at_ms`, oldest first.
    entries: Vec<Entry>,
    /// The `limit` of the last full read (0: none yet).
    depth: usize,
    /// When the last full read, and the last read, started (ms).
    full_at_ms: u64,
    read_at_ms: u64,
    /// Audiences as last read: when (ms), and whether that was [`SETTLED`]
    /// after their event.
    audiences: HashMap<(String, u64), (FanoutReport, u64, bool)>,
}

impl DynamoDeliveries {
    /// `bounds.max_age` is each entry's and audience's time to live;
    /// `bounds.max_entries` is not kept in storage (see the module's doc).
    pub fn new(client: Client, table: impl Into<String>, bounds: Bounds) -> Self {
        Self { client, table: table.into(), bounds, recent: Default::default(), refused: Default::default() }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Every change to it is whole before the lock is let go.
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The first id of `ms` (ids begin with their time): `sk > ` it is every
    /// entry of that millisecond on.
    fn id_floor(ms: u64) -> String {
        format!("{ms:013}")
    }

    /// The newest `limit` live entries: what this instance read before, and
    /// what its shards hold from [`FRESH_WINDOW`] before that read on (all
    /// of them, when a full read is due).
    async fn newest(&self, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let started = now_ms();
        let oldest_live = now_secs().saturating_sub(self.bounds.max_age.as_secs()) * 1000;
        let full_due = |r: &Recent| r.depth < limit || started.saturating_sub(r.full_at_ms) >= FULL_READ_EVERY.as_millis() as u64;
        let (full, from_ms) = {
            let r = self.recent();
            match full_due(&r) {
                true => (true, oldest_live),
                false => (false, r.read_at_ms.saturating_sub(FRESH_WINDOW.as_millis() as u64).max(oldest_live)),
            }
        };
        let from = Self::id_floor(from_ms);
        let parts = futures::future::join_all((0..DELIVERY_SHARDS).map(|shard| self.shard_part(shard, &from, true, limit))).await;
        let mut read = Vec::new();
        for part in parts {
            read.extend(part?);
        }
        let mut r = self.recent();
        if full {
            r.entries = read;
            r.depth = limit;
            r.full_at_ms = started;
        } else {
            // Entries never change: what was read before stays as it was.
            r.entries.extend(read);
        }
        r.read_at_ms = r.read_at_ms.max(started);
        r.entries.sort_by(|a, b| a.id.cmp(&b.id));
        r.entries.dedup_by(|a, b| a.id == b.id);
        let max_age_ms = self.bounds.max_age.as_millis() as u64;
        r.entries.retain(|e| e.at_ms + max_age_ms > started);
        let keep = r.depth.max(limit);
        let extra = r.entries.len().saturating_sub(keep);
        r.entries.drain(..extra);
        let skip = r.entries.len().saturating_sub(limit);
        Ok(r.entries[skip..].to_vec())
    }

    fn ttl_after(&self, secs: u64) -> u64 {
        secs + self.bounds.max_age.as_secs()
    }

    fn decode(item: &Item) -> Option<Entry> {
        let entry = get_s(item, "e").and_then(|json| serde_json::from_str(json).ok());
        if entry.is_none() {
            tracing::warn!(id = get_s(item, "sk").unwrap_or_default(), "a delivery log item does not decode; skipped");
        }
        entry
    }

    /// One shard's live entries with id > `from`: the newest `limit`
    /// (`newest`) or the oldest `limit`.
    async fn shard_part(&self, shard: u32, from: &str, newest: bool, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let now = now_secs();
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk > :from")
                .expression_attribute_values(":pk", s(format!("dlv#{shard}")))
                .expression_attribute_values(":from", s(from))
                .scan_index_forward(!newest)
                .limit((limit - out.len()).min(1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_err)?;
            for item in page.items.unwrap_or_default() {
                if !expired(&item, now) {
                    out.extend(Self::decode(&item));
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() && out.len() < limit => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

impl DeliveryLog for DynamoDeliveries {
    /// One PutItem (one write unit for an entry up to 1 KB; the largest,
    /// with every listed header at its longest, about 5). A refused entry
    /// over [`REFUSED_WRITTEN_PER_SEC`] is not written, and the next one
    /// that is says how many were not.
    async fn record(&self, entry: &Entry) -> Result<(), StoreError> {
        let mut noted;
        let mut entry = entry;
        if entry.outcome == hookcast_core::deliveries::Outcome::Refused {
            let second = entry.at_ms / 1000;
            let skipped = {
                let mut g = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if g.0 != second {
                    (g.0, g.1) = (second, 0);
                }
                if g.1 >= REFUSED_WRITTEN_PER_SEC {
                    g.2 += 1;
                    return Ok(());
                }
                g.1 += 1;
                std::mem::take(&mut g.2)
            };
            if skipped > 0 {
                noted = entry.clone();
                let note = format!(
                    " ({skipped} refused deliveries before this one were not logged: over {REFUSED_WRITTEN_PER_SEC}/s on this instance)"
                );
                noted.reason = Some(noted.reason.take().unwrap_or_default() + &note);
                entry = &noted;
            }
        }
        let json = serde_json::to_string(entry).map_err(|e| StoreError::new(StoreErrorKind::Invalid, e.to_string()))?;
        let mut item = key(entry_pk(&entry.id), entry.id.clone());
        item.insert("e".into(), s(json));
        item.insert("ttl".into(), n(self.ttl_after(entry.at_ms / 1000)));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_err)?;
        Ok(())
    }

    /// One Query per shard, side by side, each from the oldest id still
    /// live (ids begin with their time) or the cursor, whichever is later.
    /// Without a cursor, the newest `limit` ([`DynamoDeliveries::newest`]:
    /// mostly what this instance read before).
    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let Some(after) = after else {
            return if limit == 0 { Ok(vec![]) } else { self.newest(limit).await };
        };
        if limit == 0 {
            return Ok(vec![]);
        }
        let floor = Self::id_floor(now_secs().saturating_sub(self.bounds.max_age.as_secs()) * 1000);
        let from = if after > floor.as_str() { after.to_owned() } else { floor };
        let parts =
            futures::future::join_all((0..DELIVERY_SHARDS).map(|shard| self.shard_part(shard, &from, false, limit))).await;
        let mut all = Vec::new();
        for part in parts {
            all.extend(part?);
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.truncate(limit);
        Ok(all)
    }

    async fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        let got =
            self.client.get_item().table_name(&self.table).set_key(Some(key(entry_pk(id), id))).send().await.map_err(sdk_err)?;
        Ok(got.item.filter(|i| !expired(i, now_secs())).and_then(|i| Self::decode(&i)))
    }

    /// One UpdateItem of `ADD`s (none for a report of nobody): commutative,
    /// so any number of fan-out workers may add to one event at once.
    async fn add_audience(&self, channel: &str, seq: u64, report: FanoutReport) -> Result<(), StoreError> {
        if report == FanoutReport::default() {
            return Ok(());
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(audience_key(channel, seq)))
            .update_expression("ADD delivered :d, gone :g, failed :f SET #ttl = :ttl")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":d", n(report.delivered))
            .expression_attribute_values(":g", n(report.gone))
            .expression_attribute_values(":f", n(report.failed))
            .expression_attribute_values(":ttl", n(self.ttl_after(now_secs())))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn audience(&self, channel: &str, seq: u64) -> Result<FanoutReport, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(audience_key(channel, seq)))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(got.item.filter(|i| !expired(i, now_secs())).map(|i| report_of(&i)).unwrap_or_default())
    }

    /// BatchGetItem, 100 keys a call (the same event asked twice is read
    /// once), what DynamoDB leaves unprocessed asked again; an audience this
    /// instance read less than [`AUDIENCE_REREAD`] ago, or [`SETTLED`] after
    /// its event, is not read again.
    async fn audiences(&self, events: &[(String, u64)]) -> Result<Vec<FanoutReport>, StoreError> {
        let started = now_ms();
        let reread_ms = AUDIENCE_REREAD.as_millis() as u64;
        let mut found: HashMap<(String, u64), FanoutReport> = HashMap::new();
        // When each event was logged, as far as this instance knows.
        let logged: HashMap<(String, u64), u64> = {
            let r = self.recent();
            for k in events {
                match r.audiences.get(k) {
                    Some((a, read_at, settled)) if *settled || started.saturating_sub(*read_at) < reread_ms => {
                        found.insert(k.clone(), *a);
                    }
                    _ => {}
                }
            }
            r.entries
                .iter()
                .filter_map(|e| Some(((e.channel.clone()?, e.seq?), e.at_ms)))
                .filter(|(k, _)| events.contains(k))
                .collect()
        };
        let mut wanted: Vec<(String, u64)> = events.iter().filter(|k| !found.contains_key(*k)).cloned().collect();
        wanted.sort();
        wanted.dedup();
        let now = now_secs();
        for chunk in wanted.chunks(BATCH_GET_MAX) {
            let keys: Vec<Item> = chunk.iter().map(|(c, seq)| audience_key(c, *seq)).collect();
            let mut ask = Some(
                KeysAndAttributes::builder().set_keys(Some(keys)).build().map_err(|e| StoreError::unavailable(e.to_string()))?,
            );
            let mut attempt = 0;
            while let Some(keys) = ask.take() {
                let out = self.client.batch_get_item().request_items(&self.table, keys).send().await.map_err(sdk_err)?;
                for item in out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    let channel = get_s(&item, "pk").and_then(|pk| pk.strip_prefix("aud#")).map(str::to_owned);
                    let seq = get_s(&item, "sk").and_then(|sk| sk.parse().ok());
                    if let (Some(channel), Some(seq), false) = (channel, seq, expired(&item, now)) {
                        found.insert((channel, seq), report_of(&item));
                    }
                }
                ask = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).filter(|k| !k.keys().is_empty());
                if ask.is_some() {
                    attempt += 1;
                    if attempt >= 8 {
                        return Err(StoreError::new(
                            StoreErrorKind::Throttled,
                            "BatchGetItem left keys unprocessed after 8 attempts",
                        ));
                    }
                    crate::backoff_sleep(attempt, Duration::from_millis(20), Duration::from_secs(1)).await;
                }
            }
        }
        // Settled: read long enough after its event (an event never fanned
        // out settles at zeroes).
        let settled_ms = SETTLED.as_millis() as u64;
        let mut r = self.recent();
        if r.audiences.len() + wanted.len() > AUDIENCES_KEPT {
            r.audiences.clear();
        }
        for k in wanted {
            let settled = logged.get(&k).is_some_and(|at| started.saturating_sub(*at) >= settled_ms);
            let a = found.get(&k).copied().unwrap_or_default();
            r.audiences.insert(k, (a, started, settled));
        }
        Ok(events.iter().map(|k| found.get(k).copied().unwrap_or_default()).collect())
    }
}

fn report_of(item: &Item) -> FanoutReport {
    let count = |k| get_n(item, k).unwrap_or(0) as usize;
    FanoutReport { delivered: count("delivered"), gone: count("gone"), failed: count("failed") }
}

/// Open pages as the table counts them: a channel's occupancy from the
/// subscribe counters (what the `occupancy` route reads), pages per build
/// from the counters `$connect` and `$disconnect` move ([`crate::guard`]).
pub struct DynamoPages {
    store: Arc<DynamoStore>,
}

impl DynamoPages {
    pub fn new(store: Arc<DynamoStore>) -> Self {
        Self { store }
    }
}

impl Pages for DynamoPages {
    async fn occupancy(&self, channel: &Channel) -> Result<u64, StoreError> {
        self.store.count_subscribers(channel).await
    }

    /// One Query per counter shard: a handful of small items per build
    /// (shards × the about three hours a connection's counter lives).
    async fn builds(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let now = self.store.clock_secs();
        let pks: Vec<String> = (0..BUILD_SHARDS).map(|shard| format!("bld#{shard}")).collect();
        let parts = futures::future::join_all(pks.iter().map(|pk| self.store.query_all(pk, None))).await;
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for part in parts {
            for item in part?.iter().filter(|i| !expired(i, now)) {
                let Some((build, _hour)) = get_s(item, "sk").and_then(|sk| sk.rsplit_once('#')) else { continue };
                let by = item.get("n").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                *sums.entry(build.to_owned()).or_default() += by;
            }
        }
        Ok(sums.into_iter().filter(|(_, n)| *n > 0).map(|(b, n)| (b, n as u64)).collect())
    }
}
