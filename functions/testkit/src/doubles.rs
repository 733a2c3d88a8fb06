//! Test doubles of the ports and their conformance suites. Every event
//! log runs [`conformance::log`], every subscriptions store
//! [`conformance::subscriptions`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use hookcast_core::channel::Channel;
use hookcast_core::ports::*;
use hookcast_core::protocol::Event;
use hookcast_core::state::{advance, State};

/// A correct, unoptimised in-memory event log: the reference the log suite
/// is checked against.
pub struct MemLog {
    retention: Retention,
    epoch: String,
    inner: Mutex<Mem>,
    /// When set, every call fails: for "store down" tests.
    pub fail: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Mem {
    logs: HashMap<Channel, (u64, Vec<(u64, Event)>)>,
    /// Each channel's state and when an append last carried it on (ms).
    states: HashMap<Channel, (State, u64)>,
    /// Key → (seq, expires at ms).
    dedupe: HashMap<String, (u64, u64)>,
}

impl MemLog {
    pub fn new(retention: Retention) -> Self {
        static LOGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = LOGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let epoch = format!("mem{n}-{}", hookcast_core::clock::millis(std::time::SystemTime::now()));
        Self { retention, epoch, inner: Mutex::default(), fail: Default::default() }
    }
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Mem>, StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::unavailable("injected failure"));
        }
        Ok(self.inner.lock().unwrap())
    }
}

/// Subscriptions that can be switched off: every call fails while `fail`
/// is set ("store down" tests of the socket side), and the next
/// `fail_pages` subscriber pages fail (a fan-out job that fails and then
/// recovers).
#[derive(Default)]
pub struct Faulty<S> {
    pub inner: S,
    pub fail: std::sync::atomic::AtomicBool,
    pub fail_pages: std::sync::atomic::AtomicU32,
}

impl<S> Faulty<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, fail: Default::default(), fail_pages: Default::default() }
    }
    fn up(&self) -> Result<&S, StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::unavailable("injected failure"));
        }
        Ok(&self.inner)
    }
}

impl<S: Subscriptions> Subscriptions for Faulty<S> {
    async fn add_connection(&self, conn: &ConnId, now_ms: u64) -> Result<(), StoreError> {
        self.up()?.add_connection(conn, now_ms).await
    }
    async fn remove_connection(&self, conn: &ConnId) -> Result<(), StoreError> {
        self.up()?.remove_connection(conn).await
    }
    async fn subscribe(&self, conn: &ConnId, channel: &Channel, max: usize) -> Result<SubOutcome, StoreError> {
        self.up()?.subscribe(conn, channel, max).await
    }
    async fn unsubscribe(&self, conn: &ConnId, channel: &Channel) -> Result<(), StoreError> {
        self.up()?.unsubscribe(conn, channel).await
    }
    fn shards(&self) -> u32 {
        self.inner.shards()
    }
    async fn subscriber_page(
        &self,
        channel: &Channel,
        shard: u32,
        after: Option<&ConnId>,
        limit: usize,
    ) -> Result<SubscriberPage, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.fail_pages.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::unavailable("injected failure of a subscriber page"));
        }
        self.up()?.subscriber_page(channel, shard, after, limit).await
    }
    async fn count_subscribers(&self, channel: &Channel) -> Result<u64, StoreError> {
        self.up()?.count_subscribers(channel).await
    }
    async fn occupancy_turn(&self, conn: &ConnId, channel: &Channel, now_ms: u64, interval_ms: u64) -> Result<Turn, StoreError> {
        self.up()?.occupancy_turn(conn, channel, now_ms, interval_ms).await
    }
}

impl EventLog for MemLog {
    async fn append(&self, ev: &Pending) -> Result<Appended, StoreError> {
        let mut m = self.lock()?;
        m.dedupe.retain(|_, (_, exp)| *exp > ev.at_ms);
        // The first key seen, in the append's order, names the earlier event.
        if let Some(seq) = ev.dedupe_keys.iter().find_map(|k| m.dedupe.get(&k.key).map(|(seq, _)| *seq)) {
            return Ok(Appended::Duplicate { seq });
        }
        let seq = m.logs.get(&ev.channel).map_or(0, |(h, _)| *h) + 1;
        let event = ev.with_seq(seq);
        // The state first: one that would outgrow its limit writes nothing.
        // One past its TTL is gone: nothing builds on it.
        if let Some(spec) = ev.state {
            let ttl = self.retention.state_ttl.as_millis() as u64;
            let prev = m.states.get(&ev.channel).filter(|(_, at)| at + ttl > ev.at_ms).map(|(s, _)| s);
            match advance(spec, prev, &event, ev.event_ms) {
                Ok(next) => m.states.insert(ev.channel.clone(), (next, ev.at_ms)),
                Err(too_large) => return Ok(Appended::StateTooLarge(too_large)),
            };
        }
        let (head, log) = m.logs.entry(ev.channel.clone()).or_default();
        *head = seq;
        log.push((ev.at_ms, event.clone()));
        let max_age = self.retention.max_age.as_millis() as u64;
        log.retain(|(at, e)| e.seq + self.retention.max_events as u64 > seq && at + max_age >= ev.at_ms);
        for k in &ev.dedupe_keys {
            m.dedupe.insert(k.key.clone(), (seq, ev.at_ms + k.ttl.as_millis() as u64));
        }
        Ok(Appended::Stored(event))
    }
    async fn read(&self, channel: &Channel, since: u64, limit: usize) -> Result<History, StoreError> {
        let m = self.lock()?;
        let (head, log) = m.logs.get(channel).map(|(h, l)| (*h, l.as_slice())).unwrap_or((0, &[]));
        let first_retained = log.first().map_or(head + 1, |(_, e)| e.seq);
        let events = log.iter().map(|(_, e)| e).filter(|e| e.seq > since).take(limit).cloned().collect();
        let (now, ttl) =
            (hookcast_core::clock::millis(std::time::SystemTime::now()), self.retention.state_ttl.as_millis() as u64);
        let state = m.states.get(channel).filter(|(_, at)| at + ttl > now).map(|(s, _)| s.clone());
        Ok(History { events, head, first_retained, epoch: self.epoch.clone(), state })
    }
}

/// Records every frame; answers Gone for the ids in `gone`.
#[derive(Default)]
pub struct RecordingGateway {
    pub gone: Mutex<HashSet<ConnId>>,
    pub sent: Mutex<BTreeMap<ConnId, Vec<String>>>,
    pub closed: Mutex<Vec<ConnId>>,
}

impl RecordingGateway {
    pub fn frames(&self, conn: &str) -> Vec<serde_json::Value> {
        let sent = self.sent.lock().unwrap();
        sent.get(&ConnId(conn.into())).map(|v| v.iter().map(|f| serde_json::from_str(f).unwrap()).collect()).unwrap_or_default()
    }
}

impl Gateway for RecordingGateway {
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        if self.gone.lock().unwrap().contains(conn) {
            return Delivery::Gone;
        }
        self.sent.lock().unwrap().entry(conn.clone()).or_default().push(frame.to_owned());
        Delivery::Delivered
    }
    async fn close(&self, conn: &ConnId) {
        self.closed.lock().unwrap().push(conn.clone());
    }
}

pub mod conformance {
    //! The ports' contracts. Call [`log`] or [`subscriptions`] with a
    //! factory that makes a fresh, empty store for the given retention.

    use std::time::Duration;

    use hookcast_core::state::{StateMode, StateSpec};
    use serde_json::json;

    use super::*;

    pub const T0: u64 = 1_800_000_000_000;

    pub fn retention() -> Retention {
        Retention { max_events: 5, max_age: Duration::from_secs(3600), state_ttl: Duration::from_secs(7200) }
    }

    /// How long [`pending`]'s key is kept.
    pub const KEY_TTL: Duration = Duration::from_secs(600);

    pub fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }
    pub fn pending(channel: &str, key: &str, at_ms: u64) -> Pending {
        Pending {
            channel: ch(channel),
            event: hookcast_core::channel::EventName::parse("thing.happened").unwrap(),
            data: json!({"key": key, "nested": {"list": [1, 2.5, "ü✓"], "null": null}}),
            at: "2027-01-15T08:00:00.000Z".into(),
            at_ms,
            dedupe_keys: vec![DedupeKey::new(key, KEY_TTL)],
            event_ms: None,
            state: None,
        }
    }
    /// [`pending`] with these keys, in this order.
    pub fn with_keys(p: Pending, keys: &[(&str, Duration)]) -> Pending {
        Pending { dedupe_keys: keys.iter().map(|(k, ttl)| DedupeKey::new(*k, *ttl)).collect(), ..p }
    }
    /// The wall clock in ms: what reads judge a state's TTL by.
    pub fn now_ms() -> u64 {
        hookcast_core::clock::millis(std::time::SystemTime::now())
    }
    fn conn(s: &str) -> ConnId {
        ConnId(s.into())
    }
    async fn seq_of<S: EventLog>(s: &S, p: &Pending) -> u64 {
        match s.append(p).await.unwrap() {
            Appended::Stored(e) => e.seq,
            other => panic!("unexpected {other:?} for {:?}", p.dedupe_keys),
        }
    }

    /// Every [`EventLog`] check, each on a fresh log.
    pub async fn log<S: EventLog, F: Fn(Retention) -> S>(make: F) {
        seq_is_gapless_per_channel(make(retention())).await;
        events_round_trip_exactly(make(retention())).await;
        dedupe_refuses_a_seen_key(make(retention())).await;
        dedupe_keys_expire(make(retention())).await;
        any_seen_key_is_a_duplicate(make(retention())).await;
        no_key_is_written_by_an_append_that_fails(make(retention())).await;
        each_key_keeps_its_own_retention(make(retention())).await;
        events_without_a_delivery_id_are_never_deduped(make(retention())).await;
        retention_by_count(make(retention())).await;
        retention_by_age(make(retention())).await;
        read_since_and_limit(make(retention())).await;
        concurrent_appends_get_distinct_consecutive_seqs(make(Retention { max_events: 1000, ..retention() })).await;
        each_log_has_its_own_epoch(make(retention()), make(retention())).await;
        state_is_committed_with_its_event(make(retention())).await;
        a_state_too_large_writes_nothing(make(retention())).await;
        concurrent_appends_carry_the_state_on_in_seq_order(make(Retention { max_events: 1000, ..retention() })).await;
        a_last_state_keeps_the_newer_event(make(retention())).await;
        a_state_past_its_ttl_is_neither_served_nor_built_on(make(retention())).await;
    }

    fn with_state(p: Pending, mode: StateMode, max_bytes: usize) -> Pending {
        Pending { state: Some(StateSpec { mode, max_bytes }), ..p }
    }

    /// Each append carries the state on in its own commit: the state read
    /// with a head is the fold of every event up to that head, whatever
    /// history still keeps; a duplicate changes nothing; an append without
    /// a state leaves it; a state kept under another mode starts again.
    pub async fn state_is_committed_with_its_event<S: EventLog>(s: S) {
        let merge = |key: &str, data: serde_json::Value| {
            with_state(Pending { data, ..pending("score", key, T0) }, StateMode::Merge, 10_000)
        };
        seq_of(&s, &merge("m1", json!({"home": 0, "away": 0, "period": {"n": 1}}))).await;
        seq_of(&s, &merge("m2", json!({"home": 1}))).await;
        assert!(matches!(s.append(&merge("m2", json!({"home": 99}))).await.unwrap(), Appended::Duplicate { seq: 2 }));
        seq_of(&s, &merge("m3", json!({"period": {"n": 2, "clock": "12:00"}, "away": null}))).await;
        let h = s.read(&ch("score"), 0, 10).await.unwrap();
        let state = h.state.expect("a merge state");
        assert_eq!((h.head, state.kind.as_str()), (3, "merge"));
        assert_eq!(state.value, json!({"home": 1, "period": {"n": 2, "clock": "12:00"}}));
        // Without a spec (the channel no longer keeps one) the state is left as it was.
        seq_of(&s, &pending("score", "plain", T0)).await;
        assert_eq!(s.read(&ch("score"), 0, 0).await.unwrap().state.unwrap().value["home"], 1);
        // Another mode starts again from this event.
        seq_of(&s, &with_state(pending("score", "l1", T0), StateMode::Last, 10_000)).await;
        let last = s.read(&ch("score"), 0, 0).await.unwrap().state.unwrap();
        assert_eq!((last.kind.as_str(), &last.value["seq"], &last.value["data"]["key"]), ("last", &json!(5), &json!("l1")));

        // A list keeps its N newest past history's max_events (5 here).
        for i in 1..=9 {
            seq_of(&s, &with_state(pending("forms/c", &format!("f{i}"), T0 + i), StateMode::List(7), 100_000)).await;
        }
        let h = s.read(&ch("forms/c"), 0, 100).await.unwrap();
        assert_eq!(h.events.len(), 5, "history keeps 5");
        let list = h.state.unwrap();
        let seqs: Vec<u64> = list.value.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (3..=9).collect::<Vec<_>>(), "the list keeps 7, oldest first");
        assert_eq!(list.value[6]["data"]["key"], "f9");
        assert_eq!(list.value[6]["event"], "thing.happened");
        assert!(s.read(&ch("never"), 0, 10).await.unwrap().state.is_none());
    }

    /// A merge that would outgrow its limit is refused whole: no seq, no
    /// event, no state change, and its delivery id is not used up.
    pub async fn a_state_too_large_writes_nothing<S: EventLog>(s: S) {
        let big = |key: &str, field: &str| {
            let data = json!({ field: "x".repeat(600) });
            with_state(Pending { data, ..pending("s", key, T0) }, StateMode::Merge, 1000)
        };
        seq_of(&s, &big("a", "one")).await;
        match s.append(&big("b", "two")).await.unwrap() {
            Appended::StateTooLarge(t) => assert_eq!(t.limit, 1000),
            other => panic!("{other:?}"),
        }
        let h = s.read(&ch("s"), 0, 10).await.unwrap();
        assert_eq!((h.head, h.events.len()), (1, 1));
        assert_eq!(h.state.unwrap().value.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["one"]);
        // The same delivery, now as a patch that fits, is a new event.
        let fits =
            with_state(Pending { data: json!({"one": null, "two": "y"}), ..pending("s", "b", T0) }, StateMode::Merge, 1000);
        assert_eq!(seq_of(&s, &fits).await, 2);
        assert_eq!(s.read(&ch("s"), 0, 0).await.unwrap().state.unwrap().value, json!({"two": "y"}));
    }

    /// Racing appends to one channel each see the state the one before left.
    pub async fn concurrent_appends_carry_the_state_on_in_seq_order<S: EventLog>(s: S) {
        let ps: Vec<_> = (0..30)
            .map(|i| {
                let data = json!({ format!("k{i}"): i, "last": i });
                with_state(Pending { data, ..pending("hot", &format!("c{i}"), T0) }, StateMode::Merge, 100_000)
            })
            .collect();
        for r in futures::future::join_all(ps.iter().map(|p| s.append(p))).await {
            assert!(matches!(r.unwrap(), Appended::Stored(_)));
        }
        let h = s.read(&ch("hot"), 0, 1000).await.unwrap();
        let state = h.state.unwrap().value;
        assert_eq!(state.as_object().unwrap().len(), 31, "every key merged once: {state}");
        let newest = h.events.last().unwrap();
        assert_eq!(state["last"], newest.data["last"], "the state is the fold in seq order");
        let lists: Vec<_> =
            (0..30).map(|i| with_state(pending("hot-list", &format!("l{i}"), T0), StateMode::List(50), 100_000)).collect();
        futures::future::join_all(lists.iter().map(|p| s.append(p))).await;
        let l = s.read(&ch("hot-list"), 0, 0).await.unwrap().state.unwrap().value;
        let seqs: Vec<u64> = l.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    }

    /// Every read of one log carries the same epoch, whatever the channel
    /// and before or after appends; another log has another.
    pub async fn each_log_has_its_own_epoch<S: EventLog>(s: S, other: S) {
        let before = s.read(&ch("a"), 0, 10).await.unwrap().epoch;
        assert!(!before.is_empty(), "a log has an epoch from its start");
        seq_of(&s, &pending("a", "k1", T0)).await;
        assert_eq!(s.read(&ch("a"), 0, 10).await.unwrap().epoch, before);
        assert_eq!(s.read(&ch("b"), 0, 10).await.unwrap().epoch, before, "one epoch per log, not per channel");
        seq_of(&other, &pending("a", "k1", T0)).await;
        assert_ne!(other.read(&ch("a"), 0, 10).await.unwrap().epoch, before, "another log, another epoch");
    }

    /// Every [`Subscriptions`] check, each on a fresh store.
    pub async fn subscriptions<S: Subscriptions, F: Fn(Retention) -> S>(make: F) {
        subscribe_and_unsubscribe(make(retention())).await;
        subscriber_pages_cover_every_subscriber_once(make(retention())).await;
        subscription_limit(make(retention())).await;
        remove_connection_drops_all_its_subscriptions(make(retention())).await;
        occupancy_counts_subscribers(make(retention())).await;
        occupancy_turns_are_rate_limited(make(retention())).await;
    }

    pub async fn seq_is_gapless_per_channel<S: EventLog>(s: S) {
        for i in 1..=3 {
            assert_eq!(seq_of(&s, &pending("a", &format!("a{i}"), T0)).await, i);
        }
        assert_eq!(seq_of(&s, &pending("b", "b1", T0)).await, 1, "channels count independently");
        assert_eq!(seq_of(&s, &pending("a", "a4", T0)).await, 4);
    }

    pub async fn events_round_trip_exactly<S: EventLog>(s: S) {
        let p = pending("forms/guestbook", "k", T0);
        let Appended::Stored(stored) = s.append(&p).await.unwrap() else { panic!("duplicate") };
        assert_eq!(stored, p.with_seq(1));
        let h = s.read(&ch("forms/guestbook"), 0, 10).await.unwrap();
        assert_eq!(h.events, vec![p.with_seq(1)]);
        assert_eq!((h.head, h.first_retained), (1, 1));
        let empty = s.read(&ch("never"), 0, 10).await.unwrap();
        assert_eq!((empty.events.len(), empty.head, empty.first_retained), (0, 0, 1));
    }

    pub async fn dedupe_refuses_a_seen_key<S: EventLog>(s: S) {
        assert_eq!(seq_of(&s, &pending("a", "same", T0)).await, 1);
        assert_eq!(seq_of(&s, &pending("a", "other", T0)).await, 2);
        assert_eq!(s.append(&pending("a", "same", T0 + 1)).await.unwrap(), Appended::Duplicate { seq: 1 });
        // Keys are global: the same key on another channel is still a duplicate.
        assert_eq!(s.append(&pending("b", "same", T0 + 1)).await.unwrap(), Appended::Duplicate { seq: 1 });
        let h = s.read(&ch("a"), 0, 10).await.unwrap();
        assert_eq!(h.head, 2, "a duplicate writes nothing");
        assert_eq!(s.read(&ch("b"), 0, 10).await.unwrap().head, 0);
        // A delivery id longer than any key limit (DynamoDB's is 2 KB) still
        // appends and still dedupes: a permanent limit must not be a 503.
        let long = "k".repeat(5000);
        assert_eq!(seq_of(&s, &pending("a", &long, T0)).await, 3);
        assert_eq!(s.append(&pending("a", &long, T0 + 1)).await.unwrap(), Appended::Duplicate { seq: 3 });
        let other = format!("{}x", "k".repeat(4999));
        assert_eq!(seq_of(&s, &pending("a", &other, T0)).await, 4);
    }

    /// A delivery with two identities (a delivery id and the hash of what
    /// its sender signed): either one seen makes it a duplicate, with the
    /// seq of the event the first one seen (in its order) names.
    pub async fn any_seen_key_is_a_duplicate<S: EventLog>(s: S) {
        let keys = |p: &str, ks: &[&str]| with_keys(pending("a", p, T0), &ks.iter().map(|k| (*k, KEY_TTL)).collect::<Vec<_>>());
        assert_eq!(seq_of(&s, &keys("one", &["id:1", "sha:x"])).await, 1);
        assert_eq!(s.append(&keys("again", &["id:2", "sha:x"])).await.unwrap(), Appended::Duplicate { seq: 1 }, "the second key");
        assert_eq!(s.append(&keys("again", &["id:1", "sha:y"])).await.unwrap(), Appended::Duplicate { seq: 1 }, "the first key");
        assert_eq!(seq_of(&s, &keys("two", &["id:3", "sha:z"])).await, 2);
        // Keys naming two events: the first in the append's order answers.
        assert_eq!(s.append(&keys("both", &["sha:z", "id:1"])).await.unwrap(), Appended::Duplicate { seq: 2 });
        assert_eq!(s.append(&keys("both", &["id:1", "sha:z"])).await.unwrap(), Appended::Duplicate { seq: 1 });
        // Keys on another channel are the same keys.
        let other = with_keys(pending("b", "x", T0), &[("sha:new", KEY_TTL), ("sha:x", KEY_TTL)]);
        assert_eq!(s.append(&other).await.unwrap(), Appended::Duplicate { seq: 1 });
        assert_eq!(s.read(&ch("a"), 0, 10).await.unwrap().head, 2, "duplicates write nothing");
        assert_eq!(s.read(&ch("b"), 0, 10).await.unwrap().head, 0);
    }

    /// An append that writes nothing (a duplicate, a state too large)
    /// writes none of its keys either: each can still name a new event.
    pub async fn no_key_is_written_by_an_append_that_fails<S: EventLog>(s: S) {
        assert_eq!(seq_of(&s, &with_keys(pending("a", "one", T0), &[("id:1", KEY_TTL)])).await, 1);
        let dup = with_keys(pending("a", "dup", T0), &[("id:new", KEY_TTL), ("id:1", KEY_TTL), ("sha:new", KEY_TTL)]);
        assert_eq!(s.append(&dup).await.unwrap(), Appended::Duplicate { seq: 1 });
        assert_eq!(
            seq_of(&s, &with_keys(pending("a", "two", T0), &[("id:new", KEY_TTL)])).await,
            2,
            "not written by the duplicate"
        );
        assert_eq!(seq_of(&s, &with_keys(pending("a", "three", T0), &[("sha:new", KEY_TTL)])).await, 3);

        let big = |key: &str, field: &str| {
            let p = Pending { data: json!({ field: "x".repeat(600) }), ..pending("s", key, T0) };
            with_state(with_keys(p, &[(&format!("id:{key}"), KEY_TTL), (&format!("sha:{key}"), KEY_TTL)]), StateMode::Merge, 1000)
        };
        seq_of(&s, &big("m1", "one")).await;
        assert!(matches!(s.append(&big("m2", "two")).await.unwrap(), Appended::StateTooLarge(_)));
        for key in ["id:m2", "sha:m2"] {
            let p = with_keys(pending("s", key, T0), &[(key, KEY_TTL)]);
            assert!(matches!(s.append(&p).await.unwrap(), Appended::Stored(_)), "{key} was written by a refused append");
        }
    }

    /// Each key is kept for its own `ttl`: one expires while another of
    /// the same delivery still refuses it.
    pub async fn each_key_keeps_its_own_retention<S: EventLog>(s: S) {
        let (short, long) = (Duration::from_secs(10), Duration::from_secs(3000));
        seq_of(&s, &with_keys(pending("a", "k", T0), &[("short", short), ("long", long)])).await;
        let later = T0 + 20_000;
        assert_eq!(seq_of(&s, &with_keys(pending("a", "k", later), &[("short", short)])).await, 2, "the short key expired");
        let again = with_keys(pending("a", "k", later), &[("long", long)]);
        assert_eq!(s.append(&again).await.unwrap(), Appended::Duplicate { seq: 1 });
        let past = with_keys(pending("a", "k", T0 + 3_000_001), &[("long", long)]);
        assert_eq!(seq_of(&s, &past).await, 3);
    }

    /// A `last` state holds the newest event by the sender's own time: an
    /// older one that arrives later is still logged, but the state keeps
    /// the newer. An event with no time, or an equal one, replaces it.
    pub async fn a_last_state_keeps_the_newer_event<S: EventLog>(s: S) {
        let last = |key: &str, event_ms: Option<u64>| {
            with_state(Pending { event_ms, ..pending("deploys", key, T0) }, StateMode::Last, 10_000)
        };
        assert_eq!(seq_of(&s, &last("new", Some(2_000))).await, 1);
        assert_eq!(seq_of(&s, &last("old", Some(1_000))).await, 2, "the older event is still logged");
        let h = s.read(&ch("deploys"), 0, 10).await.unwrap();
        assert_eq!(h.events.len(), 2);
        let state = h.state.unwrap();
        assert_eq!((state.value["seq"].clone(), state.value["data"]["key"].clone()), (json!(1), json!("new")));
        assert_eq!(state.event_ms, Some(2_000));
        // Racing appends (one batch, one transaction each) keep it too.
        let racing: Vec<_> = (0..6u64).map(|i| last(&format!("r{i}"), Some(1_500 + i))).collect();
        futures::future::join_all(racing.iter().map(|p| s.append(p))).await;
        assert_eq!(s.read(&ch("deploys"), 0, 0).await.unwrap().state.unwrap().value["data"]["key"], "new");
        assert_eq!(seq_of(&s, &last("same", Some(2_000))).await, 9);
        assert_eq!(s.read(&ch("deploys"), 0, 0).await.unwrap().state.unwrap().value["data"]["key"], "same");
        seq_of(&s, &last("untimed", None)).await;
        assert_eq!(s.read(&ch("deploys"), 0, 0).await.unwrap().state.unwrap().value["data"]["key"], "untimed");
    }

    /// A state whose channel has had no append for `state_ttl` is not
    /// served, and the next append starts it again.
    pub async fn a_state_past_its_ttl_is_neither_served_nor_built_on<S: EventLog>(s: S) {
        let ttl = retention().state_ttl.as_millis() as u64;
        let old = now_ms() - ttl - 60_000;
        let merge = |key: &str, at: u64, data: serde_json::Value| {
            with_state(Pending { data, ..pending("profile", key, at) }, StateMode::Merge, 10_000)
        };
        seq_of(&s, &merge("m1", old, json!({"email": "a@b.example", "name": "Ada"}))).await;
        let h = s.read(&ch("profile"), 0, 10).await.unwrap();
        assert!(h.state.is_none(), "served past its TTL: {:?}", h.state);
        seq_of(&s, &merge("m2", now_ms(), json!({"name": "Grace"}))).await;
        let state = s.read(&ch("profile"), 0, 0).await.unwrap().state.expect("a fresh state");
        assert_eq!(state.value, json!({"name": "Grace"}), "the new state does not build on the expired one");
        // A live state is served, and carried on.
        seq_of(&s, &merge("m3", now_ms(), json!({"n": 1}))).await;
        assert_eq!(s.read(&ch("profile"), 0, 0).await.unwrap().state.unwrap().value, json!({"name": "Grace", "n": 1}));
    }

    pub async fn dedupe_keys_expire<S: EventLog>(s: S) {
        let ttl = KEY_TTL.as_millis() as u64;
        assert_eq!(seq_of(&s, &pending("a", "k", T0)).await, 1);
        assert!(matches!(s.append(&pending("a", "k", T0 + ttl - 1)).await.unwrap(), Appended::Duplicate { .. }));
        assert_eq!(seq_of(&s, &pending("a", "k", T0 + ttl + 1)).await, 2);
    }

    pub async fn events_without_a_delivery_id_are_never_deduped<S: EventLog>(s: S) {
        let same = Pending { dedupe_keys: vec![], ..pending("a", "unused", T0) };
        assert_eq!(seq_of(&s, &same).await, 1);
        assert_eq!(seq_of(&s, &same).await, 2, "an equal body is a second event");
        assert_eq!(seq_of(&s, &same).await, 3);
        let h = s.read(&ch("a"), 0, 10).await.unwrap();
        assert_eq!(h.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    pub async fn retention_by_count<S: EventLog>(s: S) {
        for i in 1..=8 {
            seq_of(&s, &pending("a", &format!("k{i}"), T0 + i)).await;
        }
        let h = s.read(&ch("a"), 0, 100).await.unwrap();
        assert_eq!(h.head, 8);
        assert_eq!(h.first_retained, 4, "max_events = 5 keeps 4..=8");
        assert_eq!(h.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
    }

    pub async fn retention_by_age<S: EventLog>(s: S) {
        let age = retention().max_age.as_millis() as u64;
        seq_of(&s, &pending("a", "old", T0)).await;
        seq_of(&s, &pending("a", "mid", T0 + age / 2)).await;
        seq_of(&s, &pending("a", "new", T0 + age + 1)).await;
        let h = s.read(&ch("a"), 0, 100).await.unwrap();
        assert_eq!(h.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!((h.head, h.first_retained), (3, 2));
    }

    pub async fn read_since_and_limit<S: EventLog>(s: S) {
        for i in 1..=5 {
            seq_of(&s, &pending("a", &format!("k{i}"), T0)).await;
        }
        let seqs = |h: History| h.events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(s.read(&ch("a"), 2, 100).await.unwrap()), vec![3, 4, 5]);
        assert_eq!(seqs(s.read(&ch("a"), 2, 2).await.unwrap()), vec![3, 4], "oldest first");
        assert_eq!(seqs(s.read(&ch("a"), 5, 100).await.unwrap()), Vec::<u64>::new());
        let h = s.read(&ch("a"), 0, 0).await.unwrap();
        assert_eq!((h.events.len(), h.head), (0, 5));
    }

    pub async fn concurrent_appends_get_distinct_consecutive_seqs<S: EventLog>(s: S) {
        let ps: Vec<_> = (0..40).map(|i| pending("hot", &format!("c{i}"), T0)).collect();
        let got = futures::future::join_all(ps.iter().map(|p| s.append(p))).await;
        let mut seqs: Vec<u64> = got
            .into_iter()
            .map(|r| match r.unwrap() {
                Appended::Stored(e) => e.seq,
                d => panic!("{d:?}"),
            })
            .collect();
        seqs.sort();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        let h = s.read(&ch("hot"), 0, 1000).await.unwrap();
        assert_eq!(h.events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    }

    pub async fn subscribe_and_unsubscribe<S: Subscriptions>(s: S) {
        s.add_connection(&conn("c1"), T0).await.unwrap();
        s.add_connection(&conn("c2"), T0).await.unwrap();
        assert_eq!(s.subscribe(&conn("c1"), &ch("a"), 10).await.unwrap(), SubOutcome::Added);
        assert_eq!(s.subscribe(&conn("c1"), &ch("a"), 10).await.unwrap(), SubOutcome::AlreadySubscribed);
        assert_eq!(s.subscribe(&conn("c2"), &ch("a"), 10).await.unwrap(), SubOutcome::Added);
        assert_eq!(s.subscribe(&conn("c2"), &ch("b"), 10).await.unwrap(), SubOutcome::Added);
        let mut a = all_subscribers(&s, &ch("a")).await.unwrap();
        a.sort();
        assert_eq!(a, vec![conn("c1"), conn("c2")]);
        s.unsubscribe(&conn("c1"), &ch("a")).await.unwrap();
        assert_eq!(all_subscribers(&s, &ch("a")).await.unwrap(), vec![conn("c2")]);
        assert_eq!(all_subscribers(&s, &ch("b")).await.unwrap(), vec![conn("c2")]);
        assert!(all_subscribers(&s, &ch("nobody")).await.unwrap().is_empty());
        s.unsubscribe(&conn("c1"), &ch("never-subscribed")).await.unwrap();
    }

    pub async fn subscriber_pages_cover_every_subscriber_once<S: Subscriptions>(s: S) {
        let want: Vec<ConnId> = (0..57).map(|i| conn(&format!("p{i:02}"))).collect();
        for c in &want {
            s.add_connection(c, T0).await.unwrap();
            s.subscribe(c, &ch("a"), 10).await.unwrap();
        }
        s.subscribe(&want[0], &ch("b"), 10).await.unwrap();
        // Small pages across every shard: each subscriber exactly once.
        let mut got = Vec::new();
        for shard in 0..s.shards() {
            let mut after = None;
            loop {
                let page = s.subscriber_page(&ch("a"), shard, after.as_ref(), 7).await.unwrap();
                assert!(page.conns.len() <= 7);
                got.extend(page.conns);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        got.sort();
        assert_eq!(got, want);
        assert_eq!(all_subscribers(&s, &ch("b")).await.unwrap(), vec![conn("p00")]);
    }

    pub async fn subscription_limit<S: Subscriptions>(s: S) {
        s.add_connection(&conn("c"), T0).await.unwrap();
        for i in 0..3 {
            assert_eq!(s.subscribe(&conn("c"), &ch(&format!("ch{i}")), 3).await.unwrap(), SubOutcome::Added);
        }
        assert_eq!(s.subscribe(&conn("c"), &ch("ch3"), 3).await.unwrap(), SubOutcome::LimitReached);
        assert_eq!(s.subscribe(&conn("c"), &ch("ch0"), 3).await.unwrap(), SubOutcome::AlreadySubscribed);
        s.unsubscribe(&conn("c"), &ch("ch0")).await.unwrap();
        assert_eq!(s.subscribe(&conn("c"), &ch("ch3"), 3).await.unwrap(), SubOutcome::Added);
    }

    pub async fn remove_connection_drops_all_its_subscriptions<S: Subscriptions>(s: S) {
        for c in ["c1", "c2"] {
            s.add_connection(&conn(c), T0).await.unwrap();
            s.subscribe(&conn(c), &ch("a"), 10).await.unwrap();
            s.subscribe(&conn(c), &ch("b"), 10).await.unwrap();
        }
        s.remove_connection(&conn("c1")).await.unwrap();
        assert_eq!(all_subscribers(&s, &ch("a")).await.unwrap(), vec![conn("c2")]);
        assert_eq!(all_subscribers(&s, &ch("b")).await.unwrap(), vec![conn("c2")]);
        s.remove_connection(&conn("c1")).await.unwrap(); // idempotent
        s.remove_connection(&conn("unknown")).await.unwrap();
    }

    pub async fn occupancy_counts_subscribers<S: Subscriptions>(s: S) {
        assert_eq!(s.count_subscribers(&ch("a")).await.unwrap(), 0);
        for i in 0..7 {
            let c = conn(&format!("c{i}"));
            s.add_connection(&c, T0).await.unwrap();
            s.subscribe(&c, &ch("a"), 10).await.unwrap();
            s.subscribe(&c, &ch("a"), 10).await.unwrap(); // twice counts once
        }
        s.subscribe(&conn("c0"), &ch("b"), 10).await.unwrap();
        assert_eq!(s.count_subscribers(&ch("a")).await.unwrap(), 7);
        assert_eq!(s.count_subscribers(&ch("b")).await.unwrap(), 1);
        s.unsubscribe(&conn("c1"), &ch("a")).await.unwrap();
        s.remove_connection(&conn("c2")).await.unwrap();
        assert_eq!(s.count_subscribers(&ch("a")).await.unwrap(), 5);
        assert_eq!(s.count_subscribers(&ch("nobody")).await.unwrap(), 0);
    }

    pub async fn occupancy_turns_are_rate_limited<S: Subscriptions>(s: S) {
        let (a, b) = (ch("a"), ch("b"));
        s.add_connection(&conn("c"), T0).await.unwrap();
        assert_eq!(s.occupancy_turn(&conn("c"), &a, T0, 10_000).await.unwrap(), Turn::NotSubscribed);
        s.subscribe(&conn("c"), &a, 10).await.unwrap();
        s.subscribe(&conn("c"), &b, 10).await.unwrap();
        assert_eq!(s.occupancy_turn(&conn("c"), &a, T0, 10_000).await.unwrap(), Turn::Granted);
        assert_eq!(s.occupancy_turn(&conn("c"), &a, T0 + 4_000, 10_000).await.unwrap(), Turn::TooSoon { wait_ms: 6_000 });
        assert_eq!(s.occupancy_turn(&conn("c"), &b, T0 + 4_000, 10_000).await.unwrap(), Turn::Granted, "per channel");
        assert_eq!(s.occupancy_turn(&conn("c"), &a, T0 + 10_000, 10_000).await.unwrap(), Turn::Granted);
        // Racing asks: exactly one is granted.
        let c = conn("c");
        let asks = (0..8).map(|_| s.occupancy_turn(&c, &a, T0 + 20_000, 10_000));
        let got = futures::future::join_all(asks).await;
        let granted = got.iter().filter(|t| matches!(t, Ok(Turn::Granted))).count();
        assert_eq!(granted, 1, "{got:?}");
        s.unsubscribe(&conn("c"), &a).await.unwrap();
        assert_eq!(s.occupancy_turn(&conn("c"), &a, T0 + 40_000, 10_000).await.unwrap(), Turn::NotSubscribed);
        assert_eq!(s.occupancy_turn(&conn("other"), &b, T0, 10_000).await.unwrap(), Turn::NotSubscribed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_log_passes_the_log_suite() {
        futures::executor::block_on(super::conformance::log(super::MemLog::new));
    }

    #[test]
    fn live_passes_the_subscriptions_suite() {
        futures::executor::block_on(super::conformance::subscriptions(|_| hookcast_core::live::Live::new()));
    }
}
