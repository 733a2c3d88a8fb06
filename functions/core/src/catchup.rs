//! The one catch-up rule: what a reader gets when it asks where a channel
//! stands, given its place in the log (`since`, read in `epoch`). HTTP
//! history and a WebSocket subscribe ask the same question; they differ only
//! in what the answer is for ([`Reader`]), and in how many bytes it may
//! carry.
//!
//! The rule:
//! - A place in another epoch is no place in this log: nothing after it is
//!   replayed, and the reader counts as having missed events.
//! - A place history no longer reaches (pruned past it, or ahead of the
//!   head after a reset) has missed events too.
//! - A reader that missed events, or has no place, is brought current by the
//!   channel's state, if the channel keeps one under its configured mode.
//!   Only without a state is a gap a `reset`.
//! - The retained events after the place follow, cut at the reader's byte
//!   bound (at least one event); `next` is the `since` to ask again with.

use crate::channel::Channel;
use crate::config::Config;
use crate::ports::{EventLog, History, StoreError};
use crate::protocol::{Event, ServerMsg};
use crate::state::State;

/// An HTTP catch-up answer's events at most, as JSON: a Lambda answer is
/// at most 6 MB ("Invoke": "For synchronous invocations, the maximum payload
/// size is 6 MB"), and the body travels inside it as an escaped string,
/// which can double it (every `"` and `\\` written again).
pub const HISTORY_BYTES: usize = 2_800_000;

/// The most one subscribe replays (its events' JSON; at least one event):
/// what a page missed beyond it follows `next`, each ask paced by the host.
pub const REPLAY_BYTES: usize = 1024 * 1024;

/// Who asks, and so what the answer carries beside the rule's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// An HTTP reader (a build, a server, a script): the channel as a
    /// document. No `since` means from the start; the state, where the
    /// channel keeps one, always comes with the events.
    Document,
    /// A live page subscribing: the least that brings it current. No
    /// `since` means it wants only what follows (and the state); a state,
    /// when it is sent, already holds every event it would replay, so
    /// those are not sent with it.
    Page,
}

impl Reader {
    fn bytes(self) -> usize {
        match self {
            Reader::Document => HISTORY_BYTES,
            Reader::Page => REPLAY_BYTES,
        }
    }
}

/// The answer: `history.events` and `history.state` are what the reader
/// gets (the state only where the rule sends one).
#[derive(Debug, Clone)]
pub struct Catchup {
    pub history: History,
    /// Events were missed that neither the events nor the state cover.
    pub reset: bool,
    /// More events follow: ask again with this as `since`.
    pub next: Option<u64>,
}

/// The rule, read from `log`: at most `max_events` events (the log's own
/// bound on one read) and the reader's byte bound.
pub async fn catch_up<L: EventLog>(
    log: &L,
    config: &Config,
    channel: &Channel,
    reader: Reader,
    since: Option<u64>,
    epoch: Option<&str>,
    max_events: usize,
) -> Result<Catchup, StoreError> {
    let since = match reader {
        Reader::Document => Some(since.unwrap_or(0)),
        Reader::Page => since,
    };
    let other_log = |h: &History| since.is_some() && epoch.is_some_and(|e| e != h.epoch);
    let mut h = match since {
        // A page whose state may answer for the events reads the head first,
        // and the events only when they are wanted.
        Some(s) if reader == Reader::Page && config.state_spec(channel).is_some() => {
            let mut h = log.read(channel, s, 0).await?;
            if !other_log(&h) && !missed_history(s, &h) && s < h.head {
                h.events = log.read_events(channel, s, h.head, max_events).await?;
            }
            h
        }
        Some(s) => log.read(channel, s, max_events).await?,
        None => log.read(channel, 0, 0).await?,
    };
    let other_log = other_log(&h);
    let missed = other_log || since.is_some_and(|s| missed_history(s, &h));
    let state = current_state(config, channel, h.state.take());
    h.state = match reader {
        Reader::Document => state,
        Reader::Page => state.filter(|_| since.is_none() || missed),
    };
    let reset = missed && h.state.is_none();
    if other_log || (reader == Reader::Page && h.state.is_some()) {
        h.events.clear();
    }
    let (events, next) = page_of(std::mem::take(&mut h.events), h.head, reader.bytes());
    h.events = events;
    Ok(Catchup { history: h, reset, next })
}

/// The state a channel's log returned, if the channel keeps one now under
/// the same mode (a state left from an earlier config is not shown).
pub fn current_state(config: &Config, channel: &Channel, state: Option<State>) -> Option<State> {
    let mode = config.state.mode(channel)?;
    state.filter(|s| s.kind == mode.kind())
}

/// True when events after `since` were pruned, or `since` is ahead of the
/// log (the log was reset): either way the reader must refetch its state.
pub fn missed_history(since: u64, h: &History) -> bool {
    since > h.head || (since < h.head && since + 1 < h.first_retained)
}

/// The first events whose JSON fits `max_bytes` (at least one), and the seq
/// to ask again from (`since`) when any retained event is left out: by the
/// bound, or by a count limit short of `head`.
pub fn page_of(mut events: Vec<Event>, head: u64, max_bytes: usize) -> (Vec<Event>, Option<u64>) {
    let mut used = 0;
    let mut keep = events.len();
    for (i, e) in events.iter().enumerate() {
        used += ServerMsg::Event(e.clone()).to_json().len();
        if used > max_bytes && i > 0 {
            keep = i;
            break;
        }
    }
    events.truncate(keep);
    let next = events.last().map(|e| e.seq).filter(|last| *last < head);
    (events, next)
}
