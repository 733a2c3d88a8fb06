//! Webhook errors, each knowing its HTTP status and wire code. Messages are
//! short and safe to show a client: no internals, no `{:?}` of anything.

use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("no webhook source named {0:?} is configured")]
    UnknownSource(String),
    #[error("body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("event data is {size} bytes; the limit is {limit} (API Gateway's 128 KB message limit)")]
    EventTooLarge { size: usize, limit: usize },
    #[error("this event would make channel {channel:?}'s merged state {size} bytes; the limit is {limit} (send a patch that removes fields with null)")]
    StateTooLarge { channel: String, size: usize, limit: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("content type {0:?} is not accepted; send application/json or application/x-www-form-urlencoded")]
    UnsupportedMediaType(String),
    #[error("Content-Encoding {0:?} is not accepted; send the body uncompressed")]
    UnsupportedEncoding(String),
    #[error("{0}")]
    BadPayload(String),
    #[error("this source may not publish to channel {0:?}")]
    ChannelNotAllowed(String),
    #[error("the event store is unavailable; retry later")]
    Unavailable,
}

impl HookError {
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownSource(_) => 404,
            Self::TooLarge { .. } | Self::EventTooLarge { .. } | Self::StateTooLarge { .. } => 413,
            Self::Unauthorized(_) => 401,
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_) => 415,
            Self::BadPayload(_) => 400,
            Self::ChannelNotAllowed(_) => 403,
            Self::Unavailable => 503,
        }
    }
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource(_) => "unknown_source",
            Self::TooLarge { .. } => "payload_too_large",
            Self::EventTooLarge { .. } => "event_too_large",
            Self::StateTooLarge { .. } => "state_too_large",
            Self::Unauthorized(_) => "invalid_signature",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnsupportedEncoding(_) => "unsupported_content_encoding",
            Self::BadPayload(_) => "invalid_payload",
            Self::ChannelNotAllowed(_) => "channel_not_allowed",
            Self::Unavailable => "unavailable",
        }
    }
    /// Seconds a sender should wait before retrying, where retrying helps.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, Self::Unavailable).then_some(5)
    }
    /// The JSON body: `{"error": code, "message": text}`.
    pub fn body(&self) -> String {
        json!({"error": self.code(), "message": self.to_string()}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_short_json() {
        let e = HookError::TooLarge { size: 2_000_000, limit: 1_048_576 };
        assert_eq!(e.status(), 413);
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"], "payload_too_large");
        assert_eq!(v["message"], "body is 2000000 bytes; the limit is 1048576");
        assert_eq!(HookError::Unavailable.retry_after(), Some(5));
        assert_eq!(HookError::BadPayload("x".into()).retry_after(), None);
    }
}
