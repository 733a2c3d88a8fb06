//! Subscribe tokens for private channels: `v1.<claims>.<mac>`, where claims is
//! base64url JSON `{"channels": ["orders/*"], "exp": 1700000000}` and mac is
//! base64url HMAC-SHA256 over `v1.<claims>` with `[private].secret`.
//!
//! The claims name channels (or `prefix*` patterns) and an expiry, nothing
//! about a connection: a site's backend, or `hookcast token` at build time,
//! mints one, and any socket or history request may present it until it
//! expires. Whoever holds the token reads those channels; keep lifetimes short
//! for anything sensitive.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ChannelPattern};
use crate::senders::shared::mac;

/// Tokens longer than this are refused before any work.
pub const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Channel names or `prefix*` patterns the holder may read.
    pub channels: Vec<String>,
    /// Expiry, seconds since the Unix epoch (RFC 7519 NumericDate; fractions allowed).
    pub exp: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("channel {0:?} is private: subscribe with a token")]
    Missing(String),
    #[error("the subscribe token is malformed")]
    Malformed,
    #[error("the subscribe token's signature does not match")]
    BadSignature,
    #[error("the subscribe token has expired")]
    Expired,
    #[error("the subscribe token does not cover channel {0:?}")]
    NotCovered(String),
}

fn now_secs(now: SystemTime) -> f64 {
    now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Signs `claims` with `secret`.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let signed = format!("v1.{body}");
    let mut m = mac(secret);
    m.update(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
}

/// Checks `token` for reading `channel` at `now`: signature first, then expiry, then coverage.
pub fn check(secret: &[u8], token: Option<&str>, channel: &Channel, now: SystemTime) -> Result<Claims, TokenError> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| TokenError::Missing(channel.to_string()))?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some("v1"), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(b"v1.");
    m.update(body.as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let claims: Claims =
        URL_SAFE_NO_PAD.decode(body).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(TokenError::Malformed)?;
    if !claims.exp.is_finite() || now_secs(now) >= claims.exp {
        return Err(TokenError::Expired);
    }
    if !claims.channels.iter().any(|p| ChannelPattern::parse(p).is_ok_and(|p| p.matches(channel))) {
        return Err(TokenError::NotCovered(channel.to_string()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }
    fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    #[test]
    fn round_trip_and_refusals() {
        let claims = Claims { channels: vec!["orders/*".into(), "team".into()], exp: 1000.5 };
        let t = mint(KEY, &claims);
        assert_eq!(check(KEY, Some(&t), &ch("orders/42"), at(1000)).unwrap(), claims);
        assert_eq!(check(KEY, Some(&t), &ch("team"), at(999)).unwrap(), claims);
        // A fractional expiry counts: 1000.5 has passed at 1001.
        assert_eq!(check(KEY, Some(&t), &ch("team"), at(1001)), Err(TokenError::Expired));
        assert_eq!(check(KEY, Some(&t), &ch("teams"), at(0)), Err(TokenError::NotCovered("teams".into())));
        assert_eq!(check(b"another key entirely 0123456789", Some(&t), &ch("team"), at(0)), Err(TokenError::BadSignature));
        assert_eq!(check(KEY, None, &ch("team"), at(0)), Err(TokenError::Missing("team".into())));
        assert_eq!(check(KEY, Some("v1.e30"), &ch("team"), at(0)), Err(TokenError::Malformed));
        assert_eq!(check(KEY, Some(&"a".repeat(5000)), &ch("team"), at(0)), Err(TokenError::Malformed));
        // Claims changed after signing: the MAC no longer matches.
        let (head, sig) = t.rsplit_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"channels":["*"],"exp":1e12}"#);
        assert_eq!(check(KEY, Some(&format!("v1.{forged}.{sig}")), &ch("team"), at(0)), Err(TokenError::BadSignature));
        assert!(head.starts_with("v1."));
    }

    /// An independent signer (Python's hmac, run by hand) gives the same MAC:
    /// `hmac.new(b"0123456789abcdef0123456789abcdef", b"v1." + body, "sha256")`.
    #[test]
    fn mac_is_plain_hmac_sha256_over_the_prefix() {
        let body = URL_SAFE_NO_PAD.encode(br#"{"channels":["a"],"exp":2000000000.0}"#);
        let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(KEY).unwrap();
        m.update(format!("v1.{body}").as_bytes());
        let token = format!("v1.{body}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()));
        assert!(check(KEY, Some(&token), &ch("a"), at(1)).is_ok());
    }
}
