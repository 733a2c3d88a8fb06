//! What every sender kind verifies and signs with: HMACs, encodings, the
//! timestamp tolerance, header look-ups and the 401s they answer. Nothing
//! here knows a sender; the kind files import it, never the other way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::HookError;
use crate::webhook::HookRequest;

/// How a MAC is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// The hash under an HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha1,
}

pub type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed with `key` (any length).
pub fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes any key length")
}

/// The HMAC of `parts`, concatenated.
pub fn hmac_bytes(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        Algorithm::Sha256 => {
            let mut m = mac(key);
            parts.iter().for_each(|p| m.update(p));
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha1 => {
            let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
            parts.iter().for_each(|p| m.update(p));
            m.finalize().into_bytes().to_vec()
        }
    }
}

/// Whether `sig` is the HMAC of `parts` (concatenated), by the MAC's own
/// constant-time check.
pub fn mac_matches(alg: Algorithm, key: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
    match alg {
        Algorithm::Sha256 => {
            let mut m = mac(key);
            parts.iter().for_each(|p| m.update(p));
            m.verify_slice(sig).is_ok()
        }
        Algorithm::Sha1 => {
            let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
            parts.iter().for_each(|p| m.update(p));
            m.verify_slice(sig).is_ok()
        }
    }
}

/// Hex SHA-256 of `parts`, concatenated.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    parts.iter().for_each(|p| h.update(p));
    hex::encode(h.finalize())
}

pub fn unauthorized(msg: impl Into<String>) -> HookError {
    HookError::Unauthorized(msg.into())
}

/// Header `name`, or a 401 naming it as `shown`.
pub fn header<'a>(req: &HookRequest<'a>, name: &str, shown: &str) -> Result<&'a str, HookError> {
    req.header(name).ok_or_else(|| unauthorized(format!("missing {shown} header")))
}

/// A header the sender names its event in: present and not empty, or a 400 `missing <shown> header`.
pub fn topic_header<'a>(req: &HookRequest<'a>, name: &str, shown: &str) -> Result<&'a str, HookError> {
    req.header(name).filter(|t| !t.is_empty()).ok_or_else(|| HookError::BadPayload(format!("missing {shown} header")))
}

/// The sender's name for this delivery, from the header the source names.
pub fn delivery_id(delivery_header: Option<&str>, req: &HookRequest<'_>) -> Option<String> {
    delivery_header.and_then(|h| req.header(h)).filter(|v| !v.is_empty()).map(str::to_owned)
}

pub fn unix_secs(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub fn unix_ms(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A signed time within `tolerance` of `now`, or a 401 naming `what`.
pub fn check_age(what: &str, signed: i64, now: i64, tolerance: Duration) -> Result<(), HookError> {
    if (now - signed).unsigned_abs() > tolerance.as_secs() {
        return Err(unauthorized(format!("{what} is outside the allowed tolerance")));
    }
    Ok(())
}

/// A text field of a sender's body, or a 400 saying the body is not `sender`'s.
pub fn need_str<'a>(body: &'a Value, key: &str, sender: &str) -> Result<&'a str, HookError> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| HookError::BadPayload(format!("not a {sender} event: the body has no \"{key}\" text")))
}
