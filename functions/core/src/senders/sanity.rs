//! Sanity: `sanity-webhook-signature: t=<unix ms>,v1=<base64url HMAC-SHA256
//! of "<t>.<body>">`, the operation in `sanity-operation`, the (unsigned)
//! delivery id in `idempotency-key`.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::shared::{check_age, delivery_id, header, hmac_bytes, mac_matches, sha256_hex, unauthorized, unix_ms, unix_secs, Algorithm};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SIGNATURE: &str = "sanity-webhook-signature";
pub const OPERATION: &str = "sanity-operation";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub const SPEC: Spec = Spec {
    name: "sanity",
    body: BodyShape::Native,
    secret: SecretForm::Key,
    options: &[],
    tolerance: super::always,
    signs_delivery: false,
    delivery_header: |_| Some(IDEMPOTENCY_KEY),
    build,
    content_type: "application/json",
    sample,
    sign: send_headers,
};

pub struct Options<'a> {
    pub secret: &'a Secret,
    pub tolerance: &'a Duration,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let tolerance = b.tolerance(300);
    b.secret.take().map(|s| SourceKind::Sanity { secret: Secret::new(s), tolerance })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        let sig = header(req, SIGNATURE, SIGNATURE)?;
        let signed = check(self.secret.expose(), sig, req.body, now, *self.tolerance)?;
        Ok(Verified {
            delivery_id: delivery_id(delivery_header, req),
            id_signed: false,
            signed_sha256: Some(signed),
            topic: req.header(OPERATION).filter(|o| !o.is_empty()).map(str::to_owned),
        })
    }

    fn signed_tolerance(&self) -> Option<Duration> {
        Some(*self.tolerance)
    }

    fn event(
        &self,
        _body: &Value,
        topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        Ok((Some(format!("document.{}", topic.unwrap_or("change"))), None))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["_id", "_type", "_rev"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        lookup(body, "_updatedAt").and_then(time_ms)
    }
}

/// Sanity: `t=<unix ms>,v1=<base64url HMAC-SHA256 of "<t>.<body>">`.
/// Returns the hex SHA-256 of `<t>.<body>`.
pub fn check(secret: &[u8], header: &str, body: &[u8], now: SystemTime, tolerance: Duration) -> Result<String, HookError> {
    let malformed = || unauthorized("sanity-webhook-signature is not t=<ms>,v1=<signature>");
    let rest = header.trim().strip_prefix("t=").ok_or_else(malformed)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(malformed)?;
    let (t, rest) = rest.split_at(digits);
    let sig = rest.trim_start_matches([',', ' ']).strip_prefix("v1=").ok_or_else(malformed)?;
    if t.is_empty() || sig.is_empty() || sig.contains([',', ' ']) {
        return Err(malformed());
    }
    let at_ms: i64 = t.parse().map_err(|_| malformed())?;
    check_age("sanity-webhook-signature t=", at_ms / 1000, unix_secs(now), tolerance)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig.trim_end_matches('='))
        .map_err(|_| unauthorized("sanity-webhook-signature is not base64url"))?;
    if mac_matches(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body], &sig) {
        Ok(sha256_hex(&[t.as_bytes(), b".", body]))
    } else {
        Err(unauthorized("sanity-webhook-signature does not match the body"))
    }
}

/// Sanity's `sanity-webhook-signature`: `t=<unix ms>,v1=<base64url HMAC-SHA256 of "t.body">`.
pub fn sign(secret: &[u8], t_ms: i64, body: &[u8]) -> String {
    let t = t_ms.to_string();
    format!("t={t},v1={}", URL_SAFE_NO_PAD.encode(hmac_bytes(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body])))
}

fn sample(out: &Outgoing<'_>) -> Value {
    json!({"_id": "post-1", "_type": "post", "_rev": (out.random_id)(""), "title": "Hello"})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    Ok(vec![
        ("sanity-webhook-signature".into(), sign(out.secret.as_bytes(), unix_ms(out.now), body)),
        ("sanity-operation".into(), out.event.unwrap_or("update").to_owned()),
        ("idempotency-key".into(), (out.random_id)("msg-")),
    ])
}

#[cfg(test)]
mod tests {
    use crate::sign;
    use crate::verify::tests::*;
    use std::time::Duration;
    use super::check as sanity;

    // sanity-io/webhook-toolkit test/signature.test.ts: secret "test", this body and header.
    #[test]
    fn sanity_toolkit_vector() {
        let body = fixture("sanity/toolkit-vector.json");
        let sig = "t=1633519811129,v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0";
        sanity(b"test", sig, &body, secs(1_633_519_811), Duration::from_secs(300)).unwrap();
        assert_eq!(sign::sanity(b"test", 1_633_519_811_129, &body), sig);
        let r = |secret: &[u8], h: &str, b: &[u8], at| reason(sanity(secret, h, b, secs(at), Duration::from_secs(300)));
        assert!(r(b"tesT", sig, &body, 1_633_519_811).contains("does not match"));
        assert!(r(b"test", sig, br#"{"_id":"resumE"}"#, 1_633_519_811).contains("does not match"));
        assert!(r(b"test", sig, &body, 1_633_519_811 + 301).contains("tolerance"));
        assert!(r(b"test", "t=1633519811129", &body, 1_633_519_811).contains("not t=<ms>,v1=<signature>"));
        assert!(r(b"test", "v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0", &body, 1_633_519_811).contains("not t="));
        assert!(r(b"test", "t=1633519811129,v1=***", &body, 1_633_519_811).contains("not base64url"));
        // A seconds-precision timestamp is not Sanity's (milliseconds): far out of tolerance.
        assert!(
            r(b"test", "t=1633519811,v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0", &body, 1_633_519_811).contains("tolerance")
        );
    }
}
