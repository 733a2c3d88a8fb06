//! Channel and event names: validated once at the edge, typed after that.

use std::fmt;

pub const MAX_CHANNEL_LEN: usize = 128;
pub const MAX_EVENT_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters; the limit is {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} {name:?} has {found:?}; allowed are letters, digits and {allowed}")]
    BadChar { what: &'static str, name: String, found: char, allowed: &'static str },
    #[error("{what} {name:?} must not start or end with '/' or contain '//' or '..'")]
    BadShape { what: &'static str, name: String },
}

/// A channel name: 1–128 characters of `A-Z a-z 0-9 _ - . : /`, used as a
/// path-like namespace (`forms/guestbook`), never with empty segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Channel(String);

impl Channel {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        const WHAT: &str = "channel name";
        check_chars(WHAT, name, MAX_CHANNEL_LEN, "_ - . : /", |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')
        })?;
        if name.starts_with('/') || name.ends_with('/') || name.contains("//") || name.contains("..") {
            return Err(NameError::BadShape { what: WHAT, name: name.to_owned() });
        }
        Ok(Self(name.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Channel::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An event name such as `deploy.succeeded`: 1–64 of `A-Z a-z 0-9 _ - . :`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EventName(String);

impl EventName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        check_chars("event name", name, MAX_EVENT_LEN, "_ - . :", |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
        })?;
        Ok(Self(name.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for EventName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_chars(
    what: &'static str,
    name: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    let len = name.chars().count();
    if len > max {
        return Err(NameError::TooLong { what, len, max });
    }
    if let Some(found) = name.chars().find(|c| !ok(*c)) {
        return Err(NameError::BadChar { what, name: name.to_owned(), found, allowed });
    }
    Ok(())
}

/// Which channels something covers (a source's allow-list, the private
/// channels, a token's claims): `*`, an exact channel name, or a name prefix
/// ending in `*` (`orders/*`). Parsed once, where it is configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ChannelPattern(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a channel name nor a prefix ending in '*'")]
pub struct PatternError(pub String);

impl ChannelPattern {
    pub fn parse(p: &str) -> Result<Self, PatternError> {
        let stem = p.strip_suffix('*').unwrap_or(p).trim_end_matches('/');
        if p == "*" || Channel::parse(stem).is_ok() {
            Ok(Self(p.to_owned()))
        } else {
            Err(PatternError(p.to_owned()))
        }
    }
    pub fn matches(&self, channel: &Channel) -> bool {
        name_matches(&self.0, channel.as_str())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The event names a source publishes (`[sources.x] events`): a name, or
/// a prefix ending in `*` (`release.*`; `*` alone is every event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern(String);

impl EventPattern {
    pub fn parse(p: &str) -> Result<Self, PatternError> {
        let stem = p.strip_suffix('*').unwrap_or(p);
        if p == "*" || (!stem.is_empty() && EventName::parse(stem).is_ok()) {
            Ok(Self(p.to_owned()))
        } else {
            Err(PatternError(p.to_owned()))
        }
    }
    pub fn matches(&self, event: &EventName) -> bool {
        name_matches(&self.0, event.as_str())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name, or a prefix ending in `*`, against a name.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl std::str::FromStr for ChannelPattern {
    type Err = PatternError;
    fn from_str(p: &str) -> Result<Self, PatternError> {
        Self::parse(p)
    }
}

impl<'de> serde::Deserialize<'de> for ChannelPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for ChannelPattern {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_path_like_names() {
        for ok in ["deploys", "forms/guestbook", "a", "site:blog/post-1.comments", &"x".repeat(128)] {
            assert_eq!(Channel::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_names_with_the_reason() {
        assert_eq!(Channel::parse(""), Err(NameError::Empty { what: "channel name" }));
        assert!(matches!(Channel::parse(&"x".repeat(129)), Err(NameError::TooLong { len: 129, .. })));
        assert!(matches!(Channel::parse("a b"), Err(NameError::BadChar { found: ' ', .. })));
        assert!(matches!(Channel::parse("é"), Err(NameError::BadChar { found: 'é', .. })));
        for shape in ["/a", "a/", "a//b", "a/../b"] {
            assert!(matches!(Channel::parse(shape), Err(NameError::BadShape { .. })), "{shape}");
        }
        let msg = Channel::parse("a<b").unwrap_err().to_string();
        assert!(msg.contains("'<'") && msg.contains("channel name"), "{msg}");
    }

    #[test]
    fn event_names() {
        assert!(EventName::parse("deploy.succeeded").is_ok());
        assert!(EventName::parse("a/b").is_err());
        assert!(EventName::parse(&"e".repeat(65)).is_err());
    }

    #[test]
    fn patterns() {
        let c = Channel::parse("news/today").unwrap();
        let m = |p: &str| ChannelPattern::parse(p).unwrap().matches(&c);
        assert!(m("news/*"));
        assert!(m("*"));
        assert!(m("news/today"));
        assert!(!m("news"));
        assert!(!m("new/*"));
        for bad in ["a b", "news/**", "", "*/x"] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
