//! The seams between the core and the world, each its own port: the
//! [`EventLog`] (the webhook path and replays), the [`Subscriptions`] (the
//! socket side and the fan-out) and the [`Gateway`] (pushes). A host
//! supplies each; one type may implement several (DynamoDB keeps logs and
//! subscriptions in one table), and each engine asks only for what it uses.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::channel::{Channel, EventName};
use crate::protocol::Event;
use crate::state::{State, StateSpec, StateTooLarge};

/// A connection id: API Gateway's `connectionId`, or one the local server made.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub String);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened to one frame sent to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// The connection no longer exists (API Gateway's 410); forget it.
    Gone,
    /// A transient failure; the connection may still be there.
    Failed,
}

/// What kind of failure a store reports: callers decide on it (retry now,
/// retry later, alarm, give up); clients only ever see a 503 or an
/// `unavailable` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store did not answer or failed (I/O, network, a stopped writer,
    /// a file locked by another process).
    Unavailable,
    /// Other writers kept winning the same items (transaction conflicts, a
    /// seq taken again and again) until the time allowed ran out.
    Conflict,
    /// The store asks for less (DynamoDB throttling), or the fan-out is
    /// behind and appends are paced: retry later.
    Throttled,
    /// Stored data that does not decode.
    Corrupt,
    /// A request that can never succeed as made (a missing table, a bad
    /// key): retrying is pointless; the deployment needs fixing.
    Invalid,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "unavailable",
            Self::Conflict => "conflict",
            Self::Throttled => "throttled",
            Self::Corrupt => "corrupt",
            Self::Invalid => "invalid request",
        })
    }
}

/// The store failed; the detail is for logs, never for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store {kind}: {detail}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub detail: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Unavailable, detail)
    }
}

/// How long a channel's history and its state are kept (dedupe keys carry
/// their own retention: [`DedupeKey::ttl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_events: u32,
    pub max_age: Duration,
    /// A channel's state is not served, nor built on, once this long has
    /// passed since an append last carried it on (each one renews it).
    pub state_ttl: Duration,
}

impl From<&crate::config::Limits> for Retention {
    fn from(l: &crate::config::Limits) -> Self {
        Self { max_events: l.history_max_events, max_age: l.history_max_age, state_ttl: l.state_ttl }
    }
}

/// One identity of a delivery: an append carrying a key seen within its
/// `ttl` is a duplicate. Keys are global (scoped by the caller, e.g. with
/// the source's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeKey {
    pub key: String,
    pub ttl: Duration,
}

impl DedupeKey {
    pub fn new(key: impl Into<String>, ttl: Duration) -> Self {
        Self { key: key.into(), ttl }
    }
}

/// An event ready to append; the store assigns `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub channel: Channel,
    pub event: EventName,
    pub data: Value,
    pub at: String,
    pub at_ms: u64,
    /// The delivery's identities (its sender's delivery id, the hash of
    /// what its signature covers, …), all checked and written with the
    /// event; any one seen makes it a duplicate. Empty: always a new event.
    pub dedupe_keys: Vec<DedupeKey>,
    /// The sender's own time for the event (ms), where its body carries
    /// one: a `last` state never goes back to an older event.
    pub event_ms: Option<u64>,
    /// The channel keeps a state: the log carries it on in the same commit
    /// (see [`crate::state::advance`]).
    pub state: Option<StateSpec>,
}

impl Pending {
    pub fn with_seq(&self, seq: u64) -> Event {
        Event { channel: self.channel.clone(), seq, event: self.event.clone(), data: self.data.clone(), at: self.at.clone() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    Stored(Event),
    /// One of the dedupe keys was seen before (`seq`: the event the first
    /// of them, in the append's order, names); nothing was written.
    Duplicate {
        seq: u64,
    },
    /// The event would grow the channel's state past its limit; nothing was written.
    StateTooLarge(StateTooLarge),
}

#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Events with seq > since, oldest first.
    pub events: Vec<Event>,
    /// The channel's latest seq (0 when it has none).
    pub head: u64,
    /// The oldest seq still retained (head + 1 when none is).
    pub first_retained: u64,
    /// The log's identity, made when the log was created: a seq means
    /// something only with it. A log wiped and grown again has a new epoch,
    /// so a reader's old `since` is not taken for a place in it.
    pub epoch: String,
    /// The channel's state at `head` (read with it), if it keeps one.
    pub state: Option<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOutcome {
    Added,
    AlreadySubscribed,
    LimitReached,
}

/// Whether a connection may ask for a channel's occupancy now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Allowed; the ask is recorded, so the next one waits a full interval.
    Granted,
    /// Asked less than an interval ago; may ask again after `wait_ms`.
    TooSoon { wait_ms: u64 },
    /// Only subscribers may ask (it is their own page's count).
    NotSubscribed,
}

/// A page of one subscriber shard, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberPage {
    pub conns: Vec<ConnId>,
    /// Pass as `after` for the next page; `None` when this was the last.
    pub next: Option<ConnId>,
}

/// The channel logs. The webhook path needs only this.
///
/// Contract (checked by `hookcast_testkit::conformance` on every implementation):
/// per channel, `seq` is gapless and increasing, assigned atomically with the
/// event, its dedupe keys and the channel's state (all or nothing; a state
/// that would outgrow its limit writes nothing, nor does a duplicate); an
/// append with any key seen within that key's `ttl` is refused; reads
/// return only what retention keeps (the newest `max_events`, none older
/// than `max_age`), oldest first, with the log's epoch (the same for every
/// read of one log, different for another log) and the state at the head
/// they report, unless `state_ttl` has passed since an append last carried
/// that state on (then no state, and the next append does not build on it).
pub trait EventLog: Send + Sync + 'static {
    /// Atomically: refuse a delivery any of whose dedupe keys was seen, else
    /// assign the next seq and store the event, every key and the state.
    /// Returns once all are durable.
    fn append(&self, ev: &Pending) -> impl Future<Output = Result<Appended, StoreError>> + Send;
    /// Retained events with seq > `since`, at most `limit`.
    fn read(&self, channel: &Channel, since: u64, limit: usize) -> impl Future<Output = Result<History, StoreError>> + Send;
    /// The retained events with `since` < seq ≤ `upto`, at most `limit`,
    /// without reading the head again (a caller that has read it with
    /// `read(.., 0)` and now knows it wants the events).
    fn read_events(
        &self,
        channel: &Channel,
        since: u64,
        upto: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        async move {
            let mut events = self.read(channel, since, limit).await?.events;
            events.retain(|e| e.seq <= upto);
            Ok(events)
        }
    }
}

/// Connections and their channels. The socket functions and the fan-out
/// workers need this. Subscribers are spread over `shards()` shards by
/// connection id; one fan-out work unit is one (channel, shard), paged, so
/// memory stays bounded at any audience.
pub trait Subscriptions: Send + Sync + 'static {
    fn add_connection(&self, conn: &ConnId, now_ms: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forgets the connection and all its subscriptions.
    fn remove_connection(&self, conn: &ConnId) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Adds the subscription unless the connection already has it, or already
    /// has `max_per_conn` (checked atomically with the add).
    fn subscribe(
        &self,
        conn: &ConnId,
        channel: &Channel,
        max_per_conn: usize,
    ) -> impl Future<Output = Result<SubOutcome, StoreError>> + Send;
    fn unsubscribe(&self, conn: &ConnId, channel: &Channel) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How many shards each channel's subscribers are spread over.
    fn shards(&self) -> u32 {
        1
    }
    /// Up to `limit` subscribers of one shard after `after`.
    fn subscriber_page(
        &self,
        channel: &Channel,
        shard: u32,
        after: Option<&ConnId>,
        limit: usize,
    ) -> impl Future<Output = Result<SubscriberPage, StoreError>> + Send;
    /// How many connections are subscribed to `channel` (occupancy).
    fn count_subscribers(&self, channel: &Channel) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Rate limit for occupancy requests, per connection and channel: grants
    /// at most one ask per `interval_ms`, atomically (two racing asks cannot
    /// both be granted).
    fn occupancy_turn(
        &self,
        conn: &ConnId,
        channel: &Channel,
        now_ms: u64,
        interval_ms: u64,
    ) -> impl Future<Output = Result<Turn, StoreError>> + Send;
}

/// Every subscriber of a channel, all shards, all pages: for tests and small
/// tools. Fan-out pages instead.
pub async fn all_subscribers<S: Subscriptions>(s: &S, channel: &Channel) -> Result<Vec<ConnId>, StoreError> {
    let mut out = Vec::new();
    for shard in 0..s.shards() {
        let mut after = None;
        loop {
            let page = s.subscriber_page(channel, shard, after.as_ref(), 1000).await?;
            out.extend(page.conns);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    Ok(out)
}

/// Drops a connection the gateway says is gone, with all its subscriptions
/// (a failure is logged: the connection's items expire anyway).
pub async fn forget<S: Subscriptions>(subs: &S, conn: &ConnId) {
    if let Err(e) = subs.remove_connection(conn).await {
        tracing::warn!(error = %e, conn = %conn, "could not remove a gone connection");
    }
}

/// Pushes one encoded frame to one connection.
pub trait Gateway: Send + Sync + 'static {
    /// A live push (fan-out): a host may refuse it when the connection has
    /// fallen behind, and close that connection.
    fn send(&self, conn: &ConnId, frame: &str) -> impl Future<Output = Delivery> + Send;
    /// A reply to the connection's own message (a replay included). The
    /// connection asked for it, so a host queues it whole and paces the
    /// client instead (it reads the next message once replies have drained).
    fn reply(&self, conn: &ConnId, frame: &str) -> impl Future<Output = Delivery> + Send {
        self.send(conn, frame)
    }
    /// One live push to many connections (a page of a fan-out), at most
    /// `concurrency` at once; each connection's result, in any order. A
    /// host that can do better than one call per connection (the local
    /// binary: one lock, one shared copy of the frame) overrides it.
    fn send_many(
        &self,
        conns: Vec<ConnId>,
        frame: &str,
        concurrency: usize,
    ) -> impl Future<Output = Vec<(ConnId, Delivery)>> + Send {
        use futures::StreamExt;
        futures::stream::iter(conns)
            .map(move |c| async move {
                let d = self.send(&c, frame).await;
                (c, d)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
    }
    /// [`Gateway::send`], giving up (`Failed`) rather than retrying past
    /// `deadline`: a fan-out worker with a time budget.
    fn send_until(&self, conn: &ConnId, frame: &str, deadline: std::time::Instant) -> impl Future<Output = Delivery> + Send {
        let _ = deadline;
        self.send(conn, frame)
    }
    /// A page of a fan-out with a deadline: posts start in the page's order,
    /// at most `concurrency` at once, and none starts at or after
    /// `deadline`; each started one gives up retrying at it. The results
    /// are those of the page's first connections (any order), so the
    /// connections not reached are exactly those after the last result's
    /// position in the page.
    fn send_many_until(
        &self,
        conns: Vec<ConnId>,
        frame: &str,
        concurrency: usize,
        deadline: std::time::Instant,
    ) -> impl Future<Output = Vec<(ConnId, Delivery)>> + Send {
        use futures::StreamExt;
        futures::stream::iter(conns)
            .take_while(move |_| std::future::ready(std::time::Instant::now() < deadline))
            .map(move |c| async move {
                let d = self.send_until(&c, frame, deadline).await;
                (c, d)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
    }
    fn close(&self, conn: &ConnId) -> impl Future<Output = ()> + Send;
}
