//! The webhook path: verify the raw bytes → normalise → append durably →
//! acknowledge. It needs only the [`EventLog`]: fan-out is driven by the log
//! afterwards (a dispatcher task locally, the table's stream on AWS), so the
//! acknowledgement never waits for work that grows with the audience.

use std::sync::Arc;
use std::time::Duration;

use serde::ser::SerializeMap;

use crate::catchup::{catch_up, current_state, Reader};
pub use crate::catchup::{Catchup, HISTORY_BYTES};
use crate::channel::{Channel, EventName};
use crate::clock::{format_at, millis, Clock};
use crate::config::{Config, Source, UNTIMED_DEDUPE_TTL};
use crate::error::HookError;
use crate::normalize::{normalise, NewEvent, Normalised};
use crate::policy::may_read;
use crate::ports::{Appended, DedupeKey, EventLog, History, Pending, StoreError};
use crate::verify::{verify, HookRequest};

/// The acknowledgement: the event is in the channel's log with this seq,
/// or (`ignored`) there was nothing to publish and nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub channel: Channel,
    pub event: EventName,
    /// 0 when ignored.
    pub seq: u64,
    /// The sender's delivery was seen before; nothing new was written.
    pub duplicate: bool,
    /// Why nothing was published (a Netlify form the source does not list).
    pub ignored: Option<String>,
}

/// `{"channel","event","seq","duplicate"}`, or `{"ignored":true,"reason"}`:
/// an ignored delivery names no channel or seq, as it has none.
impl serde::Serialize for Accepted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match &self.ignored {
            Some(reason) => {
                m.serialize_entry("ignored", &true)?;
                m.serialize_entry("reason", reason)?;
            }
            None => {
                m.serialize_entry("channel", &self.channel)?;
                m.serialize_entry("event", &self.event)?;
                m.serialize_entry("seq", &self.seq)?;
                m.serialize_entry("duplicate", &self.duplicate)?;
            }
        }
        m.end()
    }
}

/// How long a delivery's identities are kept. A sender that signs a
/// timestamp bounds replays by its tolerance: its delivery ids for
/// `dedupe_ttl` (retries), the hash of its signed content for as long as
/// a signature stays acceptable (twice the tolerance: from the earliest
/// to the latest clock that accepts it, and a minute's margin). A request
/// from a sender that signs none verifies for ever, so its keys are kept
/// at least [`UNTIMED_DEDUPE_TTL`].
fn dedupe_keys(source: &Source, ev: &NewEvent, dedupe_ttl: Duration) -> Vec<DedupeKey> {
    let (delivery_ttl, content_ttl) = match source.signed_tolerance() {
        Some(tolerance) => (dedupe_ttl, tolerance * 2 + Duration::from_secs(60)),
        None => {
            let ttl = dedupe_ttl.max(UNTIMED_DEDUPE_TTL);
            (ttl, ttl)
        }
    };
    let mut keys: Vec<DedupeKey> = Vec::with_capacity(ev.delivery_keys.len() + 1);
    for k in &ev.delivery_keys {
        if !keys.iter().any(|d| &d.key == k) {
            keys.push(DedupeKey::new(k.clone(), delivery_ttl));
        }
    }
    keys.extend(ev.content_key.iter().map(|k| DedupeKey::new(k.clone(), content_ttl)));
    keys
}

pub struct Hooks<L> {
    config: Arc<Config>,
    log: Arc<L>,
    clock: Clock,
}

impl<L: EventLog> Hooks<L> {
    /// The host keeps its own handle on `log` (a dispatcher follows it).
    pub fn new(config: Arc<Config>, log: Arc<L>) -> Self {
        Self { config, log, clock: crate::clock::system() }
    }
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn log(&self) -> &L {
        &self.log
    }

    /// `Ok` means the event (or an earlier copy of the same delivery) is
    /// durably in the log. Nothing is written on any `Err`.
    pub async fn ingest(
        &self,
        source_name: &str,
        content_type: Option<&str>,
        req: &HookRequest<'_>,
    ) -> Result<Accepted, HookError> {
        let source = self.config.sources.get(source_name).ok_or_else(|| HookError::UnknownSource(source_name.to_owned()))?;
        let limit = self.config.limits.max_body_bytes;
        if req.body.len() > limit {
            return Err(HookError::TooLarge { size: req.body.len(), limit });
        }
        if let Some(enc) =
            req.header("content-encoding").map(str::trim).filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
        {
            return Err(HookError::UnsupportedEncoding(enc.chars().take(40).collect()));
        }
        let now = (self.clock)();
        let verified = verify(source, req, now)?;
        let ignored = |channel: Channel, reason: String| {
            tracing::info!(source = source_name, %channel, reason, "webhook ignored: nothing published");
            let event = EventName::parse("ignored").expect("valid literal");
            Ok(Accepted { channel, event, seq: 0, duplicate: false, ignored: Some(reason) })
        };
        let ev = match normalise(source, content_type, req.body, &verified)? {
            Normalised::Event(ev) => ev,
            Normalised::Ignored { channel, reason } => return ignored(channel, reason),
        };
        if !source.takes(&ev.event) {
            let reason = format!("{} is not among sources.{}.events", ev.event, source.name);
            return ignored(ev.channel, reason);
        }
        let data_len = ev.data.to_string().len();
        if data_len > self.config.limits.max_event_bytes {
            return Err(HookError::EventTooLarge { size: data_len, limit: self.config.limits.max_event_bytes });
        }
        let state = self.config.state_spec(&ev.channel);
        let dedupe_keys = dedupe_keys(source, &ev, self.config.limits.dedupe_ttl);
        let pending = Pending {
            channel: ev.channel,
            event: ev.event,
            data: ev.data,
            at: format_at(now),
            at_ms: millis(now),
            dedupe_keys,
            event_ms: ev.event_ms,
            state,
        };
        let appended = self.log.append(&pending).await.map_err(|e| {
            tracing::warn!(error = %e, channel = %pending.channel, "append failed");
            HookError::Unavailable
        })?;
        let (seq, duplicate) = match appended {
            Appended::Stored(e) => (e.seq, false),
            Appended::Duplicate { seq } => (seq, true),
            Appended::StateTooLarge(t) => {
                return Err(HookError::StateTooLarge { channel: pending.channel.to_string(), size: t.size, limit: t.limit })
            }
        };
        Ok(Accepted { channel: pending.channel, event: pending.event, seq, duplicate, ignored: None })
    }

    /// Whether `token` lets its holder read `channel` (always, for a public one).
    pub fn may_read(&self, channel: &Channel, token: Option<&str>) -> Result<(), crate::token::TokenError> {
        may_read(&self.config, channel, token, (self.clock)())
    }

    /// Catch-up over HTTP ([`Reader::Document`] under the one rule in
    /// [`crate::catchup`]): retained events after `since`, the channel's
    /// state if it keeps one, and whether the caller missed events that
    /// neither covers. At most [`HISTORY_BYTES`] of events: `next` is the
    /// `since` to ask again with for the rest.
    pub async fn history(&self, channel: &Channel, since: u64, epoch: Option<&str>) -> Result<Catchup, StoreError> {
        let max = self.config.limits.history_max_events as usize;
        catch_up(&*self.log, &self.config, channel, Reader::Document, Some(since), epoch, max).await
    }

    /// Where the channel's log stands: its head, epoch and state (what a
    /// build stamps into its pages).
    pub async fn head(&self, channel: &Channel) -> Result<History, StoreError> {
        let mut h = self.log.read(channel, 0, 0).await?;
        h.state = current_state(&self.config, channel, h.state.take());
        Ok(h)
    }
}
