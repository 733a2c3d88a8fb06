//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! with the whole `whsec_…` string as key; its event id and type are in the
//! (signed) body.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::shared::{check_age, header, hmac_bytes, mac_matches, need_str, unauthorized, unix_secs, Algorithm};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SIGNATURE: &str = "stripe-signature";

pub const SPEC: Spec = Spec {
    name: "stripe",
    body: BodyShape::Native,
    secret: SecretForm::Key,
    options: &[],
    tolerance: super::always,
    signs_delivery: true,
    delivery_header: super::no_header,
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
    b.secret.take().map(|s| SourceKind::Stripe { secret: Secret::new(s), tolerance })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, _delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        let sig = header(req, SIGNATURE, "Stripe-Signature")?;
        check(self.secret.expose(), sig, req.body, now, *self.tolerance)?;
        Ok(Verified::default())
    }

    fn signed_tolerance(&self) -> Option<Duration> {
        Some(*self.tolerance)
    }

    fn event(
        &self,
        body: &Value,
        _topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        // Snapshot events are "event"; thin events (event destinations) "v2.core.event".
        if !body.get("object").and_then(Value::as_str).is_some_and(|o| o == "event" || o.ends_with(".event")) {
            return Err(HookError::BadPayload("not a Stripe event: \"object\" is not \"event\"".into()));
        }
        Ok((Some(need_str(body, "type", "Stripe")?.to_owned()), Some(need_str(body, "id", "Stripe")?.to_owned())))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["id", "data.object.id", "data.object.object"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        lookup(body, "created").and_then(time_ms)
    }
}

/// Stripe: `t=<unix>,v1=<hex>[,v1=…]`, HMAC-SHA256 of `<t>.<body>` with the
/// whole `whsec_…` string as key; any one v1 may match (secret rotation).
pub fn check(secret: &[u8], header: &str, body: &[u8], now: SystemTime, tolerance: Duration) -> Result<(), HookError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v),
            Some(("v1", v)) => v1.push(v),
            _ => {}
        }
    }
    let t = t.ok_or_else(|| unauthorized("Stripe-Signature has no t="))?;
    if v1.is_empty() {
        return Err(unauthorized("Stripe-Signature has no v1= signature"));
    }
    let at: i64 = t.parse().map_err(|_| unauthorized("Stripe-Signature t= is not a number"))?;
    check_age("Stripe-Signature t=", at, unix_secs(now), tolerance)?;
    let matched = v1
        .iter()
        .filter_map(|v| hex::decode(v).ok())
        .any(|sig| mac_matches(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body], &sig));
    if matched {
        Ok(())
    } else {
        Err(unauthorized("no Stripe-Signature v1 matches the body"))
    }
}

/// Stripe's `Stripe-Signature`: `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    format!("t={t},v1={}", hex::encode(hmac_bytes(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body])))
}

fn sample(out: &Outgoing<'_>) -> Value {
    json!({"id": (out.random_id)("evt_"), "object": "event", "type": out.event.unwrap_or("checkout.session.completed"),
        "created": unix_secs(out.now), "livemode": false,
        "data": {"object": {"id": (out.random_id)("cs_test_"), "object": "checkout.session"}}})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    Ok(vec![("Stripe-Signature".into(), sign(out.secret.as_bytes(), unix_secs(out.now), body))])
}
