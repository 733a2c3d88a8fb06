//! Who may do what, decided once for both engines and both hosts: which
//! origins may open a socket or read history, who may read a private
//! channel, and when a reader has missed more than history keeps.

use std::time::SystemTime;

use crate::channel::Channel;
use crate::config::Config;
use crate::ports::History;
use crate::state::State;

/// Whether a page on `origin` may connect or read history. Browsers always
/// send Origin; other clients may not and cannot be stopped by it anyway, so
/// a missing Origin is allowed.
pub fn origin_allowed(config: &Config, origin: Option<&str>) -> bool {
    let list = &config.allowed_origins;
    match origin {
        _ if list.is_empty() || list.iter().any(|o| o == "*") => true,
        None => true,
        Some(o) => list.iter().any(|a| origin_matches(a, o)),
    }
}

/// One allow-list entry against one Origin: exact (case-insensitive), or with
/// one `*` standing for one or more letters, digits and '-' within a single
/// host label, so `https://*--site.netlify.app` admits Netlify's deploy
/// previews and `https://*.example.com` one level of subdomain, never a
/// different scheme, port or registrable domain.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    let (p, o) = (pattern.trim_end_matches('/').to_ascii_lowercase(), origin.trim_end_matches('/').to_ascii_lowercase());
    match p.split_once('*') {
        None => p == o,
        Some((head, tail)) => {
            o.len() > head.len() + tail.len()
                && o.starts_with(head)
                && o.ends_with(tail)
                && o[head.len()..o.len() - tail.len()].chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
    }
}

/// Private channels need a valid subscribe token; public ones need nothing.
pub fn may_read(
    config: &Config,
    channel: &Channel,
    token: Option<&str>,
    now: SystemTime,
) -> Result<(), crate::token::TokenError> {
    match &config.private {
        Some(p) if config.is_private(channel) => crate::token::check(p.secret.expose(), token, channel, now).map(|_| ()),
        _ => Ok(()),
    }
}

/// True when events after `since` were pruned, or `since` is ahead of the
/// log (the log was reset): either way the page must refetch its state.
/// The state a channel's log returned, if the channel keeps one now under
/// the same mode (a state left from an earlier config is not shown).
pub fn current_state(config: &Config, channel: &Channel, state: Option<State>) -> Option<State> {
    let mode = config.state.mode(channel)?;
    state.filter(|s| s.kind == mode.kind())
}

pub fn missed_history(since: u64, h: &History) -> bool {
    since > h.head || (since < h.head && since + 1 < h.first_retained)
}

/// The first events whose JSON fits `max_bytes` (at least one), and the seq
/// to ask again from (`since`) when any retained event is left out: by the
/// bound, or by a count limit short of `head`.
pub fn page_of(
    mut events: Vec<crate::protocol::Event>,
    head: u64,
    max_bytes: usize,
) -> (Vec<crate::protocol::Event>, Option<u64>) {
    let mut used = 0;
    let mut keep = events.len();
    for (i, e) in events.iter().enumerate() {
        used += crate::protocol::ServerMsg::Event(e.clone()).to_json().len();
        if used > max_bytes && i > 0 {
            keep = i;
            break;
        }
    }
    events.truncate(keep);
    let next = events.last().map(|e| e.seq).filter(|last| *last < head);
    (events, next)
}

/// Whether any configured source can publish to `channel` (or the
/// configuration names it, as a private or stateful channel): a channel no
/// source reaches can never carry an event, so a subscribe to it is refused
/// before it costs a write. A sender's channel template counts up to its
/// first placeholder (`github/{repository.name}` reaches `github/…`).
pub fn reachable(config: &crate::config::Config, channel: &crate::channel::Channel) -> bool {
    use crate::config::SourceKind;
    let c = channel.as_str();
    let prefix = |template: &str| -> bool {
        match template.find('{') {
            None => c == template,
            Some(at) => c.starts_with(&template[..at]),
        }
    };
    let by_source = config.sources.values().any(|s| {
        s.channels.iter().any(|p| p.matches(channel))
            || s.route.as_ref().is_some_and(|r| prefix(r.channel.as_str()))
            || match &s.kind {
                SourceKind::Netlify { form_channels, .. } => {
                    c == "deploys"
                        || c.starts_with("deploys/")
                        || c.starts_with("forms/")
                        || form_channels.values().any(|f| f == channel)
                }
                _ => false,
            }
    });
    by_source || config.is_private(channel) || config.state.mode(channel).is_some()
}
