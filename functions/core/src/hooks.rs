//! The webhook path: verify the raw bytes → normalise → append durably →
//! acknowledge. It needs only the [`EventLog`]: fan-out is driven by the log
//! afterwards (a dispatcher task locally, the table's stream on AWS), so the
//! acknowledgement never waits for work that grows with the audience.

use std::sync::Arc;

use crate::channel::{Channel, EventName};
use crate::clock::{format_at, millis, Clock};
use crate::config::Config;
use crate::error::HookError;
use crate::normalize::normalise;
use crate::policy::{current_state, may_read, missed_history};
use crate::ports::{Appended, EventLog, History, Pending, StoreError};
use crate::verify::{verify, HookRequest};

/// The acknowledgement: the event is in the channel's log with this seq.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    pub channel: Channel,
    pub event: EventName,
    pub seq: u64,
    /// The sender's delivery was seen before; nothing new was written.
    pub duplicate: bool,
}

/// An HTTP catch-up answer's events at most, as JSON: a Lambda answer is
/// at most 6 MB ("Invoke": "For synchronous invocations, the maximum payload
/// size is 6 MB"), and the body travels inside it as an escaped string,
/// which can double it (every `"` and `\\` written again).
pub const HISTORY_BYTES: usize = 2_800_000;

/// What [`Hooks::history`] answers.
#[derive(Debug, Clone)]
pub struct Catchup {
    pub history: History,
    /// Events were missed that neither the events nor the state cover.
    pub reset: bool,
    /// More events follow: ask again with this as `since`.
    pub next: Option<u64>,
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
        let ev = normalise(source, content_type, req.body, &verified)?;
        let data_len = ev.data.to_string().len();
        if data_len > self.config.limits.max_event_bytes {
            return Err(HookError::EventTooLarge { size: data_len, limit: self.config.limits.max_event_bytes });
        }
        let state = self.config.state_spec(&ev.channel);
        let pending = Pending {
            channel: ev.channel,
            event: ev.event,
            data: ev.data,
            at: format_at(now),
            at_ms: millis(now),
            dedupe_key: ev.dedupe_key,
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
        Ok(Accepted { channel: pending.channel, event: pending.event, seq, duplicate })
    }

    /// Whether `token` lets its holder read `channel` (always, for a public one).
    pub fn may_read(&self, channel: &Channel, token: Option<&str>) -> Result<(), crate::token::TokenError> {
        may_read(&self.config, channel, token, (self.clock)())
    }

    /// Catch-up over HTTP: retained events after `since`, the channel's
    /// state if it keeps one, and whether the caller missed events that
    /// neither covers. A `since` read in another `epoch` is no place in
    /// this log: no events (the state still brings the caller current).
    /// At most [`HISTORY_BYTES`] of events: `next` is the `since` to ask
    /// again with for the rest.
    pub async fn history(&self, channel: &Channel, since: u64, epoch: Option<&str>) -> Result<Catchup, StoreError> {
        let mut h = self.log.read(channel, since, self.config.limits.history_max_events as usize).await?;
        h.state = current_state(&self.config, channel, h.state.take());
        let missed = if epoch.is_some_and(|e| e != h.epoch) {
            h.events.clear();
            true
        } else {
            missed_history(since, &h)
        };
        let reset = missed && h.state.is_none();
        let (events, next) = crate::policy::page_of(std::mem::take(&mut h.events), h.head, HISTORY_BYTES);
        h.events = events;
        Ok(Catchup { history: h, reset, next })
    }

    /// Where the channel's log stands: its head, epoch and state (what a
    /// build stamps into its pages).
    pub async fn head(&self, channel: &Channel) -> Result<History, StoreError> {
        let mut h = self.log.read(channel, 0, 0).await?;
        h.state = current_state(&self.config, channel, h.state.take());
        Ok(h)
    }
}
