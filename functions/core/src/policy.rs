//! Who may do what, decided once for both engines and both hosts: which
//! origins may open a socket or read history, and who may read a private
//! channel (the catch-up rule is [`crate::catchup`]).

use std::time::SystemTime;

use crate::channel::Channel;
use crate::config::Config;

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
            || s.route.as_ref().is_some_and(|r| prefix(r.channel.as_str()) || r.by_event.iter().any(|(_, t)| prefix(t.as_str())))
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
