//! The delivery log: one entry per webhook delivery, accepted or refused,
//! with why, where it went and which pages it reached. It is what an
//! operator reads when "nothing arrives" (the console, `hookcast
//! deliveries`). Both hosts keep it behind [`DeliveryLog`]: SQLite locally,
//! DynamoDB items with a TTL on AWS.
//!
//! What an entry may hold is decided here, once, for both hosts:
//! - headers only from [`LOGGED_HEADERS`] (never a signature, a token or an
//!   unlisted header);
//! - no body: an accepted delivery's event data is the sender's body through
//!   the source's own allow-list, and it is in the channel's log already
//!   (the console reads it from there); a refused body is not kept at all,
//!   only its size;
//! - the reason from [`HookError`]'s message, which never quotes a secret,
//!   with what can and cannot be told apart ([`Entry::refused`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::{format_at, millis};
use crate::error::HookError;
use crate::fanout::FanoutReport;
use crate::hooks::Accepted;
use crate::ports::StoreError;
use crate::webhook::Headers;

/// Headers an entry may keep: what tells a delivery apart and what its
/// sender says it is, never a signature or a token. Lower case.
pub const LOGGED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-netlify-event",
    "webhook-id",
    "webhook-timestamp",
    "svix-id",
    "svix-timestamp",
    "x-shopify-topic",
    "x-shopify-webhook-id",
    "x-shopify-shop-domain",
    "x-shopify-triggered-at",
    "x-contentful-topic",
    "x-contentful-webhook-name",
    "sanity-webhook-id",
    "sanity-operation",
    "x-strapi-event",
    "x-vercel-event",
];

/// Longest header value an entry keeps (longer ones are cut, marked `…`).
pub const HEADER_VALUE_MAX: usize = 200;
/// Longest reason an entry keeps.
pub const REASON_MAX: usize = 600;

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A new event on its channel.
    Accepted,
    /// The sender's delivery was seen before: nothing new was written.
    Duplicate,
    /// Verified, and nothing to publish (a source's `events` filter, a form
    /// the source does not list).
    Ignored,
    /// Refused, with its status and reason.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Refused => "refused",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Outcome::Accepted, Outcome::Duplicate, Outcome::Ignored, Outcome::Refused].into_iter().find(|o| o.as_str() == s)
    }
}

/// Where an entry came from: a sender's webhook, or the console.
pub const KIND_TEST: &str = "test";
pub const KIND_REPLAY: &str = "replay";
/// The source name the console's own events are logged under.
pub const CONSOLE_SOURCE: &str = "_console";

/// One delivery, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Sortable (by time, then arrival) and unique: `<13-digit ms>-<16 hex>`.
    pub id: String,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub at_ms: u64,
    /// The source's name as the URL gave it (cut to 64 characters), or
    /// [`CONSOLE_SOURCE`].
    pub source: String,
    /// The sender kind (`github`, `netlify`, …), [`KIND_TEST`] or
    /// [`KIND_REPLAY`]; empty for an unknown source.
    pub kind: String,
    /// The HTTP status the sender was answered.
    pub status: u16,
    pub outcome: Outcome,
    /// The refusal's code (`invalid_signature`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why it was refused or ignored, as precisely as the check allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The event's seq (an accepted delivery's new one, a duplicate's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// A replay: the id of the entry it replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// The body's size in bytes (the body itself is not kept).
    pub bytes: usize,
    /// [`LOGGED_HEADERS`] the delivery carried.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// For an accepted event: the pages it reached so far (filled in when
    /// the log is read, from [`DeliveryLog::audience`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<FanoutReport>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new entry id at `now`: its time, then a per-process random part that
/// also orders entries made in one millisecond by one process.
pub fn new_id(now: SystemTime) -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish() & 0xffff_ffff_0000_0000
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
    format!("{:013}-{:016x}", millis(now), seed | n)
}

/// Whether `id` is one [`new_id`] could make (what a cursor or a replay may name).
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 30 && b[13] == b'-' && b[..13].iter().all(u8::is_ascii_digit) && b[14..].iter().all(u8::is_ascii_hexdigit)
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The [`LOGGED_HEADERS`] `headers` holds, each value cut to [`HEADER_VALUE_MAX`].
pub fn logged_headers(headers: &dyn Headers) -> BTreeMap<String, String> {
    LOGGED_HEADERS.iter().filter_map(|name| headers.get(name).map(|v| ((*name).to_owned(), cut(v, HEADER_VALUE_MAX)))).collect()
}

/// What the log adds to a refusal's message: what the check can and cannot
/// tell apart.
fn explain(e: &HookError) -> String {
    let message = e.to_string();
    let hint = match e {
        HookError::Unauthorized(m) if m.contains("does not match the body") || m.contains("no Stripe-Signature v1 matches") => {
            " — an HMAC cannot tell a different secret from a changed body: check that the sender holds this source's secret, then that nothing between them rewrites the body"
        }
        HookError::Unauthorized(m) if m.contains("JWS signature does not match the secret") => {
            " — the token was signed with another secret (Netlify's JWS signs the body's hash, so the body itself is not what differs)"
        }
        HookError::Unauthorized(m) if m.contains("sha256 claim does not match the body") => {
            " — the secret is right but the body was changed after Netlify signed it"
        }
        HookError::Unauthorized(m) if m.starts_with("missing") => " — the sender did not sign: is this source's secret set on the sender's side?",
        HookError::UnknownSource(_) => " — no [sources.<name>] with this name in the configuration",
        _ => "",
    };
    cut(&format!("{message}{hint}"), REASON_MAX)
}

impl Entry {
    fn base(now: SystemTime, source: &str, kind: &str, status: u16, outcome: Outcome) -> Self {
        Entry {
            id: new_id(now),
            at: format_at(now),
            at_ms: millis(now),
            source: cut(source, 64),
            kind: kind.to_owned(),
            status,
            outcome,
            code: None,
            reason: None,
            event: None,
            channel: None,
            seq: None,
            replay_of: None,
            bytes: 0,
            headers: BTreeMap::new(),
            audience: None,
        }
    }

    /// A delivery the host answered with `e` (`kind` empty for an unknown source).
    pub fn refused(now: SystemTime, source: &str, kind: &str, e: &HookError, headers: &dyn Headers, bytes: usize) -> Self {
        let mut entry = Self::base(now, source, kind, e.status(), Outcome::Refused);
        entry.code = Some(e.code().to_owned());
        entry.reason = Some(explain(e));
        entry.headers = logged_headers(headers);
        entry.bytes = bytes;
        if let HookError::StateTooLarge { channel, .. } = e {
            entry.channel = Some(channel.clone());
        }
        entry
    }

    /// A delivery the host acknowledged with `done`.
    pub fn answered(now: SystemTime, source: &str, kind: &str, done: &Accepted, headers: &dyn Headers, bytes: usize) -> Self {
        let outcome = match (&done.ignored, done.duplicate) {
            (Some(_), _) => Outcome::Ignored,
            (None, true) => Outcome::Duplicate,
            (None, false) => Outcome::Accepted,
        };
        let mut entry = Self::base(now, source, kind, 200, outcome);
        entry.reason = done.ignored.as_ref().map(|r| cut(r, REASON_MAX));
        entry.channel = Some(done.channel.to_string());
        if done.ignored.is_none() {
            entry.event = Some(done.event.to_string());
            entry.seq = Some(done.seq);
        }
        entry.headers = logged_headers(headers);
        entry.bytes = bytes;
        entry
    }

    /// An event the console published: a test event, or a replay of `replay_of`.
    pub fn console(now: SystemTime, done: &Accepted, replay_of: Option<&str>) -> Self {
        let kind = if replay_of.is_some() { KIND_REPLAY } else { KIND_TEST };
        let mut entry = Self::base(now, CONSOLE_SOURCE, kind, 200, Outcome::Accepted);
        entry.channel = Some(done.channel.to_string());
        entry.event = Some(done.event.to_string());
        entry.seq = Some(done.seq);
        entry.replay_of = replay_of.map(str::to_owned);
        entry
    }
}

/// How much the log keeps: at most `max_entries`, none older than `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_entries: usize,
    pub max_age: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { max_entries: 1000, max_age: Duration::from_secs(24 * 3600) }
    }
}

/// The delivery log's port.
///
/// Contract:
/// - `record` keeps the entry durably enough for an operator (a host may
///   drop entries under a flood, and says so in its docs), never more than
///   its [`Bounds`]: the oldest go first.
/// - `list` answers entries with id > `after` (all if `None`), oldest first,
///   at most `limit`; with `after == None` the newest `limit`, still oldest
///   first.
/// - `add_audience` adds a fan-out's counts to the event (channel, seq);
///   `audience` reads them back (zeroes for an event never fanned out).
pub trait DeliveryLog: Send + Sync + 'static {
    fn record(&self, entry: &Entry) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn list(&self, after: Option<&str>, limit: usize) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send;
    fn add_audience(&self, channel: &str, seq: u64, report: FanoutReport) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn audience(&self, channel: &str, seq: u64) -> impl Future<Output = Result<FanoutReport, StoreError>> + Send;
    /// [`DeliveryLog::audience`] of several events, in `events`' order: one
    /// by one unless a host reads them together (DynamoDB: one
    /// BatchGetItem per 100, where a list of 100 accepted entries would
    /// otherwise cost 100 round trips).
    fn audiences(&self, events: &[(String, u64)]) -> impl Future<Output = Result<Vec<FanoutReport>, StoreError>> + Send {
        async move {
            let mut out = Vec::with_capacity(events.len());
            for (channel, seq) in events {
                out.push(self.audience(channel, *seq).await?);
            }
            Ok(out)
        }
    }
}

/// Reads `list` and fills each accepted entry's audience.
pub async fn list_with_audience<D: DeliveryLog>(log: &D, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
    let mut entries = log.list(after, limit).await?;
    let (at, events): (Vec<usize>, Vec<(String, u64)>) = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match (e.outcome, &e.channel, e.seq) {
            (Outcome::Accepted, Some(channel), Some(seq)) => Some((i, (channel.clone(), seq))),
            _ => None,
        })
        .unzip();
    if !events.is_empty() {
        for (i, audience) in at.into_iter().zip(log.audiences(&events).await?) {
            entries[i].audience = Some(audience);
        }
    }
    Ok(entries)
}

/// The entries, oldest first, and each event's audience.
type MemInner = (std::collections::VecDeque<Entry>, BTreeMap<(String, u64), FanoutReport>);

/// The delivery log in memory, bounded: for tests and for a host without a
/// store of its own.
pub struct MemDeliveries {
    bounds: Bounds,
    inner: Mutex<MemInner>,
}

impl MemDeliveries {
    pub fn new(bounds: Bounds) -> Self {
        Self { bounds, inner: Mutex::new(Default::default()) }
    }
}

impl DeliveryLog for MemDeliveries {
    async fn record(&self, entry: &Entry) -> Result<(), StoreError> {
        let mut g = self.inner.lock().expect("not poisoned");
        let (entries, audiences) = &mut *g;
        let pos = entries.partition_point(|e| e.id < entry.id);
        entries.insert(pos, entry.clone());
        let oldest = entry.at_ms.saturating_sub(self.bounds.max_age.as_millis() as u64);
        while entries.len() > self.bounds.max_entries || entries.front().is_some_and(|e| e.at_ms < oldest) {
            if let Some(gone) = entries.pop_front() {
                if let (Some(c), Some(s)) = (gone.channel, gone.seq) {
                    audiences.remove(&(c, s));
                }
            }
        }
        Ok(())
    }
    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let g = self.inner.lock().expect("not poisoned");
        Ok(match after {
            Some(a) => g.0.iter().filter(|e| e.id.as_str() > a).take(limit).cloned().collect(),
            None => g.0.iter().skip(g.0.len().saturating_sub(limit)).cloned().collect(),
        })
    }
    async fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.inner.lock().expect("not poisoned").0.iter().find(|e| e.id == id).cloned())
    }
    async fn add_audience(&self, channel: &str, seq: u64, report: FanoutReport) -> Result<(), StoreError> {
        *self.inner.lock().expect("not poisoned").1.entry((channel.to_owned(), seq)).or_default() += report;
        Ok(())
    }
    async fn audience(&self, channel: &str, seq: u64) -> Result<FanoutReport, StoreError> {
        Ok(self.inner.lock().expect("not poisoned").1.get(&(channel.to_owned(), seq)).copied().unwrap_or_default())
    }
}

/// Open pages: how many view a channel, and how many are open per build
/// stamp (the `hookcast-deploy` a page was built with, sent as the socket's
/// `build` query parameter). Each host counts its own connections.
pub trait Pages: Send + Sync + 'static {
    fn occupancy(&self, channel: &crate::Channel) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Open pages per build; pages without a stamp under `""`.
    fn builds(&self) -> impl Future<Output = Result<BTreeMap<String, u64>, StoreError>> + Send;
}

/// A build stamp as a socket may send it: up to 64 of `[A-Za-z0-9._:-]`,
/// else none (an unstamped page).
pub fn build_stamp(raw: Option<&str>) -> Option<String> {
    raw.filter(|b| !b.is_empty() && b.len() <= 64 && b.bytes().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c)))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Channel, EventName};

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn ids_sort_by_time_then_arrival_and_are_checked() {
        let a = new_id(at(1_700_000_000_000));
        let b = new_id(at(1_700_000_000_000));
        let c = new_id(at(1_700_000_000_001));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(valid_id(&a) && valid_id(&c));
        for bad in ["", "x", "1700000000000-zz", "1700000000000_0000000000000000", "17000000000000000000000000000'"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn an_entry_keeps_listed_headers_only_and_says_what_it_cannot_tell() {
        let headers: Vec<(String, String)> = [
            ("X-Hub-Signature-256", "sha256=abcdef"),
            ("X-GitHub-Event", "push"),
            ("Authorization", "Bearer secret"),
            ("User-Agent", &"x".repeat(500)),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = HookError::Unauthorized("signature does not match the body".into());
        let entry = Entry::refused(at(5), "gh", "github", &e, &headers, 42);
        assert_eq!(entry.status, 401);
        assert_eq!(entry.code.as_deref(), Some("invalid_signature"));
        assert!(entry.reason.as_deref().unwrap().contains("cannot tell a different secret from a changed body"));
        assert_eq!(entry.headers.keys().collect::<Vec<_>>(), ["user-agent", "x-github-event"]);
        assert!(entry.headers["user-agent"].chars().count() <= HEADER_VALUE_MAX + 1);
        let json = serde_json::to_string(&entry).unwrap();
        assert!(!json.contains("abcdef") && !json.contains("Bearer"), "{json}");
    }

    #[test]
    fn memory_log_keeps_its_bounds_and_audiences() {
        let log = MemDeliveries::new(Bounds { max_entries: 3, max_age: Duration::from_secs(60) });
        let done = |seq| Accepted {
            channel: Channel::parse("c").unwrap(),
            event: EventName::parse("e").unwrap(),
            seq,
            duplicate: false,
            ignored: None,
        };
        futures::executor::block_on(async {
            for i in 0..5u64 {
                log.record(&Entry::console(at(1000 + i), &done(i + 1), None)).await.unwrap();
                log.add_audience("c", i + 1, FanoutReport { delivered: 2, gone: 0, failed: 1 }).await.unwrap();
            }
            let all = list_with_audience(&log, None, 10).await.unwrap();
            assert_eq!(all.iter().map(|e| e.seq.unwrap()).collect::<Vec<_>>(), [3, 4, 5]);
            assert_eq!(all[0].audience, Some(FanoutReport { delivered: 2, gone: 0, failed: 1 }));
            let after = log.list(Some(&all[0].id), 10).await.unwrap();
            assert_eq!(after.len(), 2);
            // A minute later, the old ones are gone.
            log.record(&Entry::console(at(1000 + 61_000), &done(9), None)).await.unwrap();
            assert_eq!(log.list(None, 10).await.unwrap().len(), 1);
        });
    }

    #[test]
    fn build_stamps_are_short_plain_tokens() {
        assert_eq!(build_stamp(Some("64b1f0c2a1")), Some("64b1f0c2a1".into()));
        for bad in [None, Some(""), Some("a b"), Some("<script>"), Some(&*"x".repeat(65))] {
            assert_eq!(build_stamp(bad), None);
        }
    }
}
