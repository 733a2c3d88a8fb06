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
    secret: SecretForm::Prefixed("whsec_"),
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
    let secret = b.secret.take()?;
    // Every Stripe signing secret starts so; without it every delivery would be 401.
    if !secret.starts_with("whsec_") {
        b.problem(format!(
            "{}.secret: a Stripe endpoint's signing secret starts with whsec_ (Stripe Dashboard, Developers, Webhooks, \
             your endpoint, Signing secret); this one does not (its value is not shown), so every delivery would be \
             refused",
            b.at
        ));
        return None;
    }
    Some(SourceKind::Stripe { secret: Secret::new(secret), tolerance })
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

#[cfg(test)]
mod tests {
    use crate::config::SourceKind;
    use crate::error::HookError;
    use crate::secret::Secret;
    use crate::sign;
    use crate::verify::tests::*;
    use crate::verify::Verified;
    use std::time::Duration;
    use crate::normalize::tests::*;
    use serde_json::json;

    #[test]
    fn stripe_signature_header() {
        let body = fixture("stripe/event.json");
        let secret = "whsec_hookcast_stripe_test_0123456789";
        let src = source(SourceKind::Stripe { secret: Secret::new(secret), tolerance: Duration::from_secs(300) }, None);
        // Python: hmac.new(secret, b"1700000000." + body, sha256).hexdigest()
        let v1 = "570b5ddfb757b9ddb1cb36611d9e1849efc503c3c688a547ab4b5402a1098188";
        let ok = format!("t=1700000000,v1={v1}");
        assert_eq!(sign::stripe(secret.as_bytes(), 1_700_000_000, &body), ok);
        run(&src, &[("Stripe-Signature", &ok)], &body, secs(1_700_000_100)).unwrap();
        // Several v1 (a rolled secret) and a v0 (test mode) beside them.
        let rotated = format!("t=1700000000,v1={},v0=abc,v1={v1}", "0".repeat(64));
        run(&src, &[("Stripe-Signature", &rotated)], &body, secs(1_700_000_100)).unwrap();
        let r = |h: &str, at| refused(run(&src, &[("Stripe-Signature", h)], &body, secs(at)));
        assert!(r(&ok, 1_700_000_301).contains("tolerance"));
        assert!(r(&ok, 1_699_999_699).contains("tolerance"));
        assert!(r(&format!("t=1700000001,v1={v1}"), 1_700_000_000).contains("no Stripe-Signature v1 matches"));
        assert!(r(&format!("v1={v1}"), 1_700_000_000).contains("no t="));
        assert!(r("t=1700000000,v0=abc", 1_700_000_000).contains("no v1="));
        assert!(r(&format!("t=soon,v1={v1}"), 1_700_000_000).contains("not a number"));
        assert!(r("t=1700000000,v1=zz", 1_700_000_000).contains("no Stripe-Signature v1 matches"));
        let wrong = source(SourceKind::Stripe { secret: Secret::new("whsec_other"), tolerance: Duration::from_secs(300) }, None);
        assert!(refused(run(&wrong, &[("Stripe-Signature", &ok)], &body, secs(1_700_000_000))).contains("matches"));
    }

    #[test]
    fn stripe_type_and_event_id() {
        let src = configured("stripe", |r| r.channel = Some("billing/{data.object.object}".into()));
        let ev = normalise(&src, None, &sender_fixture("stripe/event.json"), &Verified::default()).unwrap();
        assert_eq!((ev.channel.as_str(), ev.event.as_str()), ("billing/plan", "plan.created"));
        assert_eq!(
            ev.data,
            json!({"id": "evt_1Pgc76B7WZ01zgkWwyRHS12y", "data": {"object": {"id": "price_1PgafmB7WZ01zgkW6dKueIc5", "object": "plan"}}})
        );
        assert_eq!(ev.delivery_keys, vec!["src:id:evt_1Pgc76B7WZ01zgkWwyRHS12y"]);
        assert_eq!(ev.event_ms, Some(1_234_567_890_000), "created");
        // A thin event (Stripe's event destinations) is an event too.
        let thin = br#"{"id":"evt_2","object":"v2.core.event","type":"v1.billing.meter.no_meter_found","related_object":{"id":"mtr_1"}}"#;
        let thin_src = configured("stripe", |_| {});
        assert_eq!(
            normalise(&thin_src, None, thin, &Verified::default()).unwrap().event.as_str(),
            "v1.billing.meter.no_meter_found"
        );
        for (body, why) in [
            (&br#"{"id":"evt_1","type":"x.y"}"#[..], "\"object\" is not \"event\""),
            (br#"{"id":"evt_1","object":"invoice","type":"x.y"}"#, "\"object\" is not \"event\""),
            (br#"{"object":"event","type":"x.y"}"#, "no \"id\""),
            (br#"{"object":"event","id":"evt_1"}"#, "no \"type\""),
        ] {
            let err = normalise(&src, None, body, &Verified::default()).unwrap_err();
            assert!(matches!(&err, HookError::BadPayload(m) if m.contains(why)), "{err:?}");
        }
        // A channel a template cannot build names the path.
        let err = normalise(&src, None, br#"{"object":"event","id":"evt_1","type":"x.y","data":{}}"#, &Verified::default());
        assert!(matches!(err, Err(HookError::BadPayload(m)) if m.contains("data.object.object")));
    }
}
