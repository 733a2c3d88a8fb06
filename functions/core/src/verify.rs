//! Signature verification on the raw body, before any parsing: [`verify`]
//! hands the request to the source's kind (each kind's check is in its file
//! under [`crate::senders`]; every MAC is checked with the MAC's own
//! constant-time `verify_slice`). The request and what a valid signature
//! tells are [`crate::webhook`]'s, named here as before.

use std::time::SystemTime;

use crate::config::Source;
use crate::error::HookError;

pub use crate::webhook::{Headers, HookRequest, Verified};

/// Checks `req` as the source's kind signs it, and reads what its headers say.
pub fn verify(source: &Source, req: &HookRequest<'_>, now: SystemTime) -> Result<Verified, HookError> {
    source.kind.verify(req, source.delivery_header.as_deref(), now)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Source, SourceKind};

    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) const NOW: u64 = 1_700_000_000;
    pub(crate) fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }
    pub(crate) fn reason<T: std::fmt::Debug>(r: Result<T, HookError>) -> String {
        match r {
            Err(HookError::Unauthorized(m)) => m,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    // The example in the Standard Webhooks specification.
    pub(crate) const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    pub(crate) const STD_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    pub(crate) const STD_TS: &str = "1614265330";
    pub(crate) const STD_BODY: &[u8] = br#"{"test": 2432232314}"#;
    pub(crate) const STD_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    // ---- Sender kinds, each against its sender's published vector or an
    // independent signer (Python's hmac, run once; values pasted here). ----

    pub(crate) fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../tests/fixtures/senders/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }
    pub(crate) fn source(kind: SourceKind, delivery_header: Option<&str>) -> Source {
        Source {
            name: "s".into(),
            kind,
            channels: vec![],
            delivery_header: delivery_header.map(str::to_owned),
            fields: None,
            route: None,
            events: None,
        }
    }
    pub(crate) fn hs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
    pub(crate) fn run(src: &Source, headers: &[(&str, &str)], body: &[u8], at: SystemTime) -> Result<Verified, HookError> {
        verify(src, &HookRequest { headers: &hs(headers), body }, at)
    }
    pub(crate) fn refused(r: Result<Verified, HookError>) -> String {
        match r {
            Err(HookError::Unauthorized(m)) => m,
            other => panic!("expected 401, got {other:?}"),
        }
    }
    pub(crate) fn secs(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }
}
