//! Appends that scale on one channel: group commit.
//!
//! Every append first makes itself durable where nothing conflicts: a
//! pending item of its own (`pend#<channel>#<k>` / `<at_ms>#<id>`). Then
//! whoever holds the channel's commit lease (`lease#<channel>`, taken by a
//! conditional update: one committer per channel at a time, across every
//! Lambda instance) reads the pending appends in arrival order and commits
//! up to a transaction's worth in one `TransactWriteItems`: the head's next
//! seq and state (conditional on the seq it read, so two committers can
//! never both commit one seq, even past a lease), the event items, their
//! dedupe keys, the pending items' deletion, and a small `done#<id>` item
//! per append saying what became of it (its seq, a duplicate of which seq,
//! or a state too large). No item a waiting append writes (its pending
//! item, the lease) is in a commit's transaction, so appends and commits
//! never conflict.
//!
//! An append tries the lease once, right after its pending item is
//! written, and otherwise waits for its `done` item: a committer looks for
//! pending appends once more after it gives the lease back, and takes it
//! again if any are there, so an append that found the lease held is always
//! committed by that committer or a later one. Only a committer that died
//! leaves its lease to expire ([`LEASE`]); an append still waiting then
//! tries it again. The acknowledgement comes only after the event's commit.
//!
//! Against the alternatives (DESIGN.md, "Appends on DynamoDB"): an
//! optimistic transaction per event livelocks past ~20 appends/s on one
//! channel (every concurrent append but one cancels and retries); seqs
//! reserved from an atomic counter leave holes when a function dies between
//! reserving and writing, and cannot carry a state that folds every event
//! in order. Group commit never conflicts (the lease admits one committer),
//! keeps seqs gapless and the state committed with its events, and its
//! cost per event falls as the rate rises (one head write per batch).
//! Past the table's capacity the pending appends simply wait longer, up to
//! the append's budget: then the append withdraws its pending item (if no
//! committer has taken it) and answers 503, and nothing is half written.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use hookcast_core::ports::{Appended, DedupeKey, Pending, StoreError, StoreErrorKind};
use hookcast_core::protocol::Event;
use hookcast_core::state::{advance, State, StateMode, StateSpec, StateTooLarge};
use hookcast_core::{Channel, EventName};

use crate::attr::{get_n, get_s, key, n, s, sdk_err as sdk, Item};
use crate::dynamo::DynamoStore;
use crate::event_item;

/// A channel's pending appends are spread over this many partitions (each
/// append writes and later deletes one item there: 3 write units a 1 KB
/// event, so one partition's 1,000 a second would cap a channel near 330).
pub const PENDING_SHARDS: u32 = 2;
/// Actions in one transaction at most (DynamoDB's limit).
const MAX_ACTIONS: usize = 100;
/// Bytes in one transaction at most (DynamoDB allows 4 MB), with room to spare.
const MAX_TXN_BYTES: usize = 3_500_000;
/// How long a committer's lease lasts: one that died holds the channel no longer.
pub const LEASE: Duration = Duration::from_secs(5);
/// A committer commits for at most this long, then lets another take over.
const LEAD_FOR: Duration = Duration::from_secs(2);
/// How long an append waits for its commit before it answers 503: well
/// inside the webhook function's timeout and a sender's (GitHub's 10 s).
pub const APPEND_BUDGET: Duration = Duration::from_secs(8);
/// How long a `done` item stays readable (its append reads it within seconds).
const DONE_TTL_SECS: u64 = 3600;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, what.to_string())
}

fn pending_pk(channel: &Channel, shard: u32) -> String {
    format!("pend#{channel}#{shard}")
}
fn done_pk(id: &str) -> String {
    format!("done#{id}")
}
fn head_key(channel: &Channel) -> Item {
    key(format!("chan#{channel}"), "head")
}
fn lease_key(channel: &Channel) -> Item {
    key(format!("lease#{channel}"), "lease")
}
pub(crate) fn dedupe_pk(dedupe_key: &str) -> String {
    // Long keys (a body's hash is short; a sender's id may not be) are hashed to fit a key.
    if dedupe_key.len() <= 512 {
        format!("dedupe#{dedupe_key}")
    } else {
        use sha2::Digest;
        format!("dedupe#sha256:{}", hex::encode(sha2::Sha256::digest(dedupe_key.as_bytes())))
    }
}

/// One pending append, as its item holds it.
#[derive(Debug, Clone)]
struct Waiting {
    id: String,
    pk: String,
    sk: String,
    pending: Pending,
    bytes: usize,
}

fn encode_pending(ev: &Pending, id: &str, shard: u32) -> Item {
    let keys: Vec<(String, u64)> = ev.dedupe_keys.iter().map(|k| (k.key.clone(), k.ttl.as_millis() as u64)).collect();
    let mut item = key(pending_pk(&ev.channel, shard), format!("{:013}#{id}", ev.at_ms));
    item.insert("id".into(), s(id));
    item.insert("event".into(), s(ev.event.as_str()));
    item.insert("data".into(), s(ev.data.to_string()));
    item.insert("at".into(), s(&ev.at));
    item.insert("at_ms".into(), n(ev.at_ms));
    item.insert("keys".into(), s(serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into())));
    if let Some(t) = ev.event_ms {
        item.insert("event_ms".into(), n(t));
    }
    if let Some(spec) = ev.state {
        item.insert("state".into(), s(spec.mode.to_string()));
        item.insert("state_max".into(), n(spec.max_bytes));
    }
    // Never committed and never withdrawn (its function died): gone in a day.
    item.insert("ttl".into(), n(ev.at_ms / 1000 + 86_400));
    item
}

fn decode_pending(channel: &Channel, item: &Item) -> Result<Waiting, StoreError> {
    let bad = |what: &str| StoreError::new(StoreErrorKind::Corrupt, format!("pending append in {channel}: {what}"));
    let keys: Vec<(String, u64)> = serde_json::from_str(get_s(item, "keys").unwrap_or("[]")).map_err(|_| bad("bad keys"))?;
    let state = match get_s(item, "state") {
        None => None,
        Some(m) => Some(StateSpec {
            mode: StateMode::parse(m).map_err(|e| bad(&e))?,
            max_bytes: get_n(item, "state_max").ok_or_else(|| bad("no state_max"))? as usize,
        }),
    };
    let data = serde_json::from_str(get_s(item, "data").ok_or_else(|| bad("no data"))?).map_err(|_| bad("data is not JSON"))?;
    let pending = Pending {
        channel: channel.clone(),
        event: EventName::parse(get_s(item, "event").ok_or_else(|| bad("no event"))?).map_err(|e| bad(&e.to_string()))?,
        data,
        at: get_s(item, "at").ok_or_else(|| bad("no at"))?.to_owned(),
        at_ms: get_n(item, "at_ms").ok_or_else(|| bad("no at_ms"))?,
        dedupe_keys: keys.into_iter().map(|(k, t)| DedupeKey::new(k, Duration::from_millis(t))).collect(),
        event_ms: get_n(item, "event_ms"),
        state,
    };
    Ok(Waiting {
        id: get_s(item, "id").ok_or_else(|| bad("no id"))?.to_owned(),
        pk: get_s(item, "pk").unwrap_or_default().to_owned(),
        sk: get_s(item, "sk").unwrap_or_default().to_owned(),
        bytes: item.iter().map(|(k, v)| k.len() + v.as_s().map_or(16, String::len)).sum(),
        pending,
    })
}

/// How long an append that has waited `waited` for its commit sleeps before
/// it looks again: a quarter of what it has waited (at least 10 ms, at most
/// 250 ms), jittered by ±20 % (`r` in [0, 1)). A commit usually lands within
/// a few of a committer's batches, so a short wait is looked at often; a
/// long one (a backlog) adds at most a quarter to itself, and a waiting
/// append reads its `done` item some 20 times in its first second and 4 a
/// second after that (not 25 a second whatever the backlog, as before).
pub(crate) fn poll_after(waited: Duration, r: f64) -> Duration {
    let base = (waited / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    base.mul_f64(0.8 + 0.4 * r.clamp(0.0, 1.0))
}

/// What became of one append, as its `done` item says.
fn encode_done(id: &str, outcome: &Appended) -> Item {
    let mut item = key(done_pk(id), "done");
    match outcome {
        Appended::Stored(e) => {
            item.insert("r".into(), s("stored"));
            item.insert("seq".into(), n(e.seq));
        }
        Appended::Duplicate { seq } => {
            item.insert("r".into(), s("duplicate"));
            item.insert("seq".into(), n(seq));
        }
        Appended::StateTooLarge(t) => {
            item.insert("r".into(), s("too_large"));
            item.insert("size".into(), n(t.size));
            item.insert("limit".into(), n(t.limit));
        }
    }
    item.insert("ttl".into(), n(now_ms() / 1000 + DONE_TTL_SECS));
    item
}

fn decode_done(item: &Item, pending: &Pending) -> Result<Appended, StoreError> {
    let bad = || StoreError::new(StoreErrorKind::Corrupt, format!("a done item in {} does not decode", pending.channel));
    Ok(match get_s(item, "r") {
        Some("stored") => Appended::Stored(pending.with_seq(get_n(item, "seq").ok_or_else(bad)?)),
        Some("duplicate") => Appended::Duplicate { seq: get_n(item, "seq").ok_or_else(bad)? },
        Some("too_large") => Appended::StateTooLarge(StateTooLarge {
            size: get_n(item, "size").ok_or_else(bad)? as usize,
            limit: get_n(item, "limit").ok_or_else(bad)? as usize,
        }),
        _ => return Err(bad()),
    })
}

/// The head as the committer holds it.
struct Head {
    seq: u64,
    state: Option<State>,
    /// The state is gone from this time (ms): the head's TTL.
    state_until_ms: Option<u64>,
}

impl Head {
    fn from_item(i: &Item) -> Self {
        let state = crate::dynamo::state_of(i);
        Head { seq: get_n(i, "seq").unwrap_or(0), state, state_until_ms: get_n(i, "ttl").map(|t| t.saturating_mul(1000)) }
    }
    fn live_state(&self, at_ms: u64) -> Option<&State> {
        self.state.as_ref().filter(|_| self.state_until_ms.is_none_or(|t| t > at_ms))
    }
}

/// What trying the lease came to.
pub(crate) enum Lead {
    /// This append led (the outcome of its own append if it committed it).
    Led(Option<Appended>),
    /// Another holds the lease, until this time (ms).
    Held { until: u64 },
}

/// What a committed batch carried.
pub struct Committed {
    /// Each append's outcome, by its id.
    pub outcomes: HashMap<String, Appended>,
    /// The events stored, in seq order.
    pub events: Vec<Event>,
}

impl DynamoStore {
    /// Appends `ev`: its pending item, then its commit (by whichever append
    /// holds the channel's lease, perhaps this one), within [`APPEND_BUDGET`].
    pub(crate) async fn group_append(&self, ev: &Pending) -> Result<Appended, StoreError> {
        let started = Instant::now();
        let id = format!("{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>());
        let shard = u32::from_str_radix(&id[..4], 16).unwrap_or(0) % PENDING_SHARDS;
        let item = encode_pending(ev, &id, shard);
        let (pk, sk) = (get_s(&item, "pk").unwrap_or_default().to_owned(), get_s(&item, "sk").unwrap_or_default().to_owned());
        self.client().put_item().table_name(self.table()).set_item(Some(item)).send().await.map_err(sdk)?;
        // The lease once now; again only when a holder's lease has run out
        // (a committer that died).
        let mut retry_lease_at = Some(0u64);
        loop {
            if retry_lease_at.is_some_and(|at| now_ms() >= at) {
                match self.lead(&ev.channel, Some(&id)).await? {
                    Lead::Led(Some(outcome)) => return Ok(outcome),
                    Lead::Led(None) => retry_lease_at = Some(0),
                    Lead::Held { until } => retry_lease_at = Some(until),
                }
            }
            if let Some(outcome) = self.done(&id, ev).await? {
                return Ok(outcome);
            }
            if started.elapsed() > APPEND_BUDGET {
                return self.withdraw(&id, &pk, &sk, ev, started).await;
            }
            tokio::time::sleep(poll_after(started.elapsed(), rand::random())).await;
        }
    }

    /// The append's `done` item, if a committer has written it.
    async fn done(&self, id: &str, ev: &Pending) -> Result<Option<Appended>, StoreError> {
        let got = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(key(done_pk(id), "done")))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        got.item.map(|i| decode_done(&i, ev)).transpose()
    }

    /// Past the budget: the pending item is taken back unless a committer
    /// took it first (then its outcome is on its way, and read).
    async fn withdraw(&self, id: &str, pk: &str, sk: &str, ev: &Pending, started: Instant) -> Result<Appended, StoreError> {
        let r = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(pk.to_owned(), sk.to_owned())))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match r {
            Ok(_) => Err(StoreError::new(
                StoreErrorKind::Conflict,
                format!("append to {} not committed within {} ms; withdrawn", ev.channel, started.elapsed().as_millis()),
            )),
            // Taken by a committer: its done item is written with the commit.
            Err(_) => {
                for _ in 0..50 {
                    if let Some(outcome) = self.done(id, ev).await? {
                        return Ok(outcome);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(unavailable(format!("append to {} was committed but its outcome could not be read", ev.channel)))
            }
        }
    }

    /// Takes the channel's lease if it is free and commits what is pending,
    /// for at most [`LEAD_FOR`] (and again while appends are left pending
    /// when it gives the lease back); the outcome of append `mine` if it
    /// was among what this committed.
    pub(crate) async fn lead(&self, channel: &Channel, mine: Option<&str>) -> Result<Lead, StoreError> {
        let mut mine_outcome = None;
        loop {
            let me = format!("{:016x}", rand::random::<u64>());
            let now = now_ms();
            let got = self
                .client()
                .update_item()
                .table_name(self.table())
                .set_key(Some(lease_key(channel)))
                .update_expression("SET lease = :me, lease_until = :until, #ttl = :ttl")
                .condition_expression("attribute_not_exists(lease_until) OR lease_until < :now")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":me", s(&me))
                .expression_attribute_values(":until", n(now + LEASE.as_millis() as u64))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":ttl", n(now / 1000 + 86_400))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match got {
                Ok(_) => {}
                Err(e) => {
                    if let Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) =
                        e.as_service_error()
                    {
                        let until =
                            c.item.as_ref().and_then(|i| get_n(i, "lease_until")).unwrap_or(now + LEASE.as_millis() as u64);
                        return Ok(match mine_outcome {
                            Some(o) => Lead::Led(Some(o)),
                            None => Lead::Held { until: until + 1 },
                        });
                    }
                    // Throttled or failing: the append waits on, and tries again.
                    tracing::warn!(error = %sdk(e), %channel, "could not take a commit lease");
                    return Ok(Lead::Led(mine_outcome));
                }
            }
            let mut head = self.read_head(channel).await?;
            let started = Instant::now();
            let mut failed = false;
            while started.elapsed() < LEAD_FOR {
                match self.commit_batch(channel, &mut head).await {
                    Ok(Some(committed)) => {
                        if let Some(m) = mine.and_then(|m| committed.outcomes.get(m)) {
                            mine_outcome = Some(m.clone());
                        }
                        self.on_commit(committed.events).await;
                    }
                    Ok(None) => break,
                    // A commit that did not go through leaves every append
                    // pending: each waits on, and one leads again.
                    Err(e) => {
                        tracing::warn!(error = %e, %channel, "a commit did not go through; the pending appends wait");
                        failed = true;
                        break;
                    }
                }
            }
            self.release(channel, &me).await;
            // Appends that came after the last look, while the lease was
            // held, tried it once and wait: look again now it is free
            // (unless committing is failing: the waiting appends try again).
            if failed || self.pending(channel).await?.is_empty() {
                return Ok(Lead::Led(mine_outcome));
            }
        }
    }

    /// The head, read as a committer starts.
    async fn read_head(&self, channel: &Channel) -> Result<Head, StoreError> {
        let got = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(head_key(channel)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        Ok(got.item.as_ref().map_or(Head { seq: 0, state: None, state_until_ms: None }, Head::from_item))
    }

    async fn release(&self, channel: &Channel, me: &str) {
        let r = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(lease_key(channel)))
            .update_expression("REMOVE lease, lease_until")
            .condition_expression("lease = :me")
            .expression_attribute_values(":me", s(me))
            .send()
            .await;
        if let Err(e) = r {
            if !crate::attr::condition_failed(&e) {
                tracing::warn!(error = %sdk(e), %channel, "could not give a commit lease back; it runs out");
            }
        }
    }

    /// The channel's pending appends, oldest first, as many as one transaction takes.
    async fn pending(&self, channel: &Channel) -> Result<Vec<Waiting>, StoreError> {
        let reads = (0..PENDING_SHARDS).map(|k| {
            self.client()
                .query()
                .table_name(self.table())
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pending_pk(channel, k)))
                .consistent_read(true)
                .limit(32)
                .send()
        });
        let mut all = vec![];
        for page in futures::future::join_all(reads).await {
            for item in page.map_err(sdk)?.items.unwrap_or_default() {
                all.push(decode_pending(channel, &item)?);
            }
        }
        all.sort_by(|a, b| a.sk.cmp(&b.sk));
        Ok(all)
    }

    /// The dedupe keys among `keys` that are stored: key → (the seq it
    /// names, when it expires in ms); each append judges expiry by its own time.
    async fn seen(&self, keys: &[String]) -> Result<HashMap<String, (u64, u64)>, StoreError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut ka = KeysAndAttributes::builder().consistent_read(true);
            for k in chunk {
                ka = ka.keys(key(dedupe_pk(k), "dedupe"));
            }
            let mut request = Some(HashMap::from([(self.table().to_owned(), ka.build().map_err(unavailable)?)]));
            for attempt in 0..8u32 {
                let Some(req) = request.take().filter(|r| !r.is_empty()) else { break };
                let got = self.client().batch_get_item().set_request_items(Some(req)).send().await.map_err(sdk)?;
                for item in got.responses.unwrap_or_default().remove(self.table()).unwrap_or_default() {
                    if let (Some(pk), Some(seq), Some(expires)) =
                        (get_s(&item, "pk"), get_n(&item, "seq"), get_n(&item, "expires_ms"))
                    {
                        if let Some(k) = chunk.iter().find(|k| dedupe_pk(k) == pk) {
                            out.insert(k.clone(), (seq, expires));
                        }
                    }
                }
                request = got.unprocessed_keys.filter(|u| !u.is_empty());
                if request.is_some() {
                    crate::backoff_sleep(attempt, Duration::from_millis(20), Duration::from_millis(500)).await;
                }
            }
        }
        Ok(out)
    }

    /// One transaction of pending appends; `None` when nothing is pending.
    async fn commit_batch(&self, channel: &Channel, head: &mut Head) -> Result<Option<Committed>, StoreError> {
        let mut waiting = self.pending(channel).await?;
        if waiting.is_empty() {
            return Ok(None);
        }
        let mut attempt = 0u32;
        loop {
            let keys: Vec<String> = waiting
                .iter()
                .flat_map(|w| w.pending.dedupe_keys.iter().map(|k| k.key.clone()))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let seen = self.seen(&keys).await?;
            let plan = self.plan(head, &waiting, &seen)?;
            match self.client().transact_write_items().set_transact_items(Some(plan.items)).send().await {
                Ok(_) => {
                    head.seq = plan.seq;
                    head.state = plan.state;
                    head.state_until_ms = plan.state_until_ms;
                    return Ok(Some(Committed { outcomes: plan.outcomes, events: plan.events }));
                }
                Err(e) => {
                    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else {
                        return Err(sdk(e));
                    };
                    let codes: Vec<String> =
                        c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect();
                    if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") {
                        // The head's condition: another committer (past this
                        // one's lease) took the seq; it commits the rest.
                        return Err(StoreError::new(
                            StoreErrorKind::Conflict,
                            format!("another committer moved {channel}'s head"),
                        ));
                    }
                    // A pending item its append took back (its condition
                    // failed), or one still being written (a conflict on
                    // it): commit without it; the second waits for the next round.
                    let left_out: HashSet<String> = plan
                        .deletes
                        .iter()
                        .filter(|(i, _)| {
                            codes.get(*i).is_some_and(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict")
                        })
                        .map(|(_, id)| id.clone())
                        .collect();
                    if !left_out.is_empty() {
                        waiting.retain(|w| !left_out.contains(&w.id));
                        if waiting.is_empty() {
                            return Ok(Some(Committed { outcomes: HashMap::new(), events: vec![] }));
                        }
                        continue;
                    }
                    if codes.iter().any(|c| c == "TransactionConflict" || c == "ThrottlingError") && attempt < 8 {
                        crate::backoff_sleep(attempt, Duration::from_millis(10), Duration::from_millis(250)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!("commit to {channel} cancelled for {codes:?}"),
                    ));
                }
            }
        }
    }

    /// The transaction for `waiting` in order: seqs after the head, the state
    /// folded event by event, duplicates and states too large answered.
    fn plan(&self, head: &Head, waiting: &[Waiting], seen: &HashMap<String, (u64, u64)>) -> Result<Plan, StoreError> {
        let r = self.retention();
        let mut items: Vec<TransactWriteItem> = vec![];
        let mut deletes = vec![];
        let mut outcomes = HashMap::new();
        let mut events = vec![];
        let (mut seq, mut state) = (head.seq, head.live_state(now_ms()).cloned());
        // Keys this batch stores: a later append of the batch with one is its duplicate.
        let mut keys_now: HashMap<String, u64> = HashMap::new();
        let (mut last_at, mut bytes) = (0u64, 0usize);
        // The head's update comes first (index 0), filled in below.
        items.push(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(self.table())
                        .set_key(Some(head_key(&waiting[0].pending.channel)))
                        .update_expression("SET seq = seq")
                        .build()
                        .map_err(unavailable)?,
                )
                .build(),
        );
        let mut event_puts: Vec<(usize, Event, u64, u64)> = vec![];
        for w in waiting {
            let ev = &w.pending;
            let actions = 3 + ev.dedupe_keys.len();
            if items.len() + actions > MAX_ACTIONS || bytes + 2 * w.bytes > MAX_TXN_BYTES {
                break;
            }
            bytes += 2 * w.bytes;
            // The first of its keys seen (in this batch, or stored and alive at the append's time).
            let dup = ev.dedupe_keys.iter().find_map(|k| {
                keys_now.get(&k.key).copied().or_else(|| seen.get(&k.key).filter(|(_, exp)| *exp > ev.at_ms).map(|(seq, _)| *seq))
            });
            let outcome = match dup {
                Some(seq) => Appended::Duplicate { seq },
                None => {
                    let event = ev.with_seq(seq + 1);
                    match ev.state.map(|spec| advance(spec, state.as_ref(), &event, ev.event_ms)) {
                        Some(Err(too_large)) => Appended::StateTooLarge(too_large),
                        next => {
                            if let Some(Ok(next)) = next {
                                state = Some(next);
                            }
                            seq += 1;
                            last_at = ev.at_ms;
                            let ttl = (ev.at_ms + r.max_age.as_millis() as u64) / 1000 + 1;
                            // Written below, once the commit's seqs are known.
                            event_puts.push((items.len(), event.clone(), ev.at_ms, ttl));
                            items.push(items[0].clone());
                            for k in &ev.dedupe_keys {
                                keys_now.insert(k.key.clone(), seq);
                                let expires_ms = ev.at_ms.saturating_add(k.ttl.as_millis() as u64);
                                let put = Put::builder()
                                    .table_name(self.table())
                                    .set_item(Some(HashMap::from([
                                        ("pk".to_owned(), s(dedupe_pk(&k.key))),
                                        ("sk".to_owned(), s("dedupe")),
                                        ("seq".to_owned(), n(seq)),
                                        ("channel".to_owned(), s(ev.channel.as_str())),
                                        ("expires_ms".to_owned(), n(expires_ms)),
                                        ("ttl".to_owned(), n(expires_ms / 1000 + 1)),
                                    ])))
                                    .build()
                                    .map_err(unavailable)?;
                                items.push(TransactWriteItem::builder().put(put).build());
                            }
                            events.push(event.clone());
                            Appended::Stored(event)
                        }
                    }
                }
            };
            let delete = Delete::builder()
                .table_name(self.table())
                .set_key(Some(key(w.pk.clone(), w.sk.clone())))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(unavailable)?;
            deletes.push((items.len(), w.id.clone()));
            items.push(TransactWriteItem::builder().delete(delete).build());
            let done = Put::builder()
                .table_name(self.table())
                .set_item(Some(encode_done(&w.id, &outcome)))
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().put(done).build());
            outcomes.insert(w.id.clone(), outcome);
        }
        // The event items, each saying which seqs were committed with it.
        let commit = (head.seq + 1, seq);
        for (at, event, at_ms, ttl) in event_puts {
            let put = Put::builder()
                .table_name(self.table())
                .set_item(Some(event_item::encode(&event, at_ms, ttl, commit)))
                // A seq left from before the head expired is past its own TTL.
                .condition_expression("attribute_not_exists(pk) OR #ttl <= :now_s")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":now_s", n(at_ms / 1000))
                .build()
                .map_err(unavailable)?;
            items[at] = TransactWriteItem::builder().put(put).build();
        }
        // The head: the new seq and state, only if the seq is still the one
        // this committer read. Each event renews the head's TTL (and its state's).
        let httl = match (last_at, head.state_until_ms) {
            (0, Some(t)) => t / 1000,
            (0, None) => (now_ms() + r.state_ttl.as_millis() as u64) / 1000 + 1,
            (at, _) => (at + r.state_ttl.as_millis() as u64) / 1000 + 1,
        };
        let state_until_ms = Some(httl * 1000);
        let mut upd = Update::builder()
            .table_name(self.table())
            .set_key(Some(head_key(&waiting[0].pending.channel)))
            .condition_expression("attribute_not_exists(seq) OR seq = :old")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":old", n(head.seq))
            .expression_attribute_values(":new", n(seq))
            .expression_attribute_values(":httl", n(httl))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let mut set = vec!["seq = :new", "#ttl = :httl"];
        if last_at > 0 {
            set.push("last_at_ms = :at");
            upd = upd.expression_attribute_values(":at", n(last_at));
        }
        let mut remove = vec![];
        if let Some(st) = &state {
            set.extend(["state_kind = :sk", "state_json = :sv"]);
            upd = upd.expression_attribute_values(":sk", s(&st.kind)).expression_attribute_values(":sv", s(st.value.to_string()));
            match st.event_ms {
                Some(t) => {
                    set.push("state_event_ms = :se");
                    upd = upd.expression_attribute_values(":se", n(t));
                }
                None => remove.push("state_event_ms"),
            }
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        items[0] = TransactWriteItem::builder().update(upd.update_expression(expr).build().map_err(unavailable)?).build();
        Ok(Plan { items, deletes, outcomes, events, seq, state, state_until_ms })
    }
}

struct Plan {
    items: Vec<TransactWriteItem>,
    /// Index of each pending item's Delete in `items`, and its append's id.
    deletes: Vec<(usize, String)>,
    outcomes: HashMap<String, Appended>,
    events: Vec<Event>,
    seq: u64,
    state: Option<State>,
    state_until_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_waiting_append_looks_often_at_first_and_seldom_in_a_backlog() {
        use super::poll_after;
        use std::time::Duration;
        let looks = |over: Duration| {
            let (mut t, mut n) = (Duration::ZERO, 0);
            while t < over {
                t += poll_after(t, 0.5);
                n += 1;
            }
            n
        };
        assert_eq!(poll_after(Duration::ZERO, 0.5), Duration::from_millis(10));
        assert_eq!(poll_after(Duration::from_secs(60), 0.999_999).as_millis(), 299);
        assert!((15..=20).contains(&looks(Duration::from_secs(1))), "{}", looks(Duration::from_secs(1)));
        assert!(looks(Duration::from_secs(8)) <= 50, "{}", looks(Duration::from_secs(8)));
    }
}
