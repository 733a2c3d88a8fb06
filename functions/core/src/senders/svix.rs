//! Svix and every sender through it (Clerk, Resend): Standard Webhooks
//! ([`super::standard`]) under `svix-*` or `webhook-*` header names, on the
//! sender's own body (`{"type", "data": {…}}`).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::shared::need_str;
use super::standard::{send_as, verify_signed_id, whsec};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SPEC: Spec = Spec {
    name: "svix",
    body: BodyShape::Native,
    secret: SecretForm::Whsec,
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
    whsec(b).map(|secret| SourceKind::Svix { secret, tolerance })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, _delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        verify_signed_id(self.secret, req, now, *self.tolerance)
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
        Ok((Some(need_str(body, "type", "Svix")?.to_owned()), None))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["data.id", "data.object", "data.email_id"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        lookup(body, "timestamp").and_then(time_ms)
    }
}

fn sample(out: &Outgoing<'_>) -> Value {
    json!({"type": out.event.unwrap_or("user.created"), "object": "event",
        "data": {"id": (out.random_id)("user_"), "object": "user"}})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    send_as("svix", out, body)
}

#[cfg(test)]
mod tests {
    use crate::config::SourceKind;
    use crate::verify::tests::*;
    use std::time::Duration;

    #[test]
    fn svix_and_webhook_header_names_both_verify() {
        let body = fixture("clerk/user-created.json");
        let key = crate::config::decode_standard_secret(STD_SECRET).unwrap();
        let src = source(SourceKind::Svix { secret: key, tolerance: Duration::from_secs(300) }, None);
        // Python: base64(hmac(b64decode(secret), b"msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ.1700000000." + body, sha256))
        let sig = "v1,INh9UW33q7khVb9alzH7JaDfVrSb0B3+EkObHdullYk=";
        for p in ["svix", "webhook"] {
            let (id, ts, sg) = (format!("{p}-id"), format!("{p}-timestamp"), format!("{p}-signature"));
            let ok = [(id.as_str(), "msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ"), (ts.as_str(), "1700000000"), (sg.as_str(), sig)];
            let v = run(&src, &ok, &body, secs(1_700_000_060)).unwrap();
            assert_eq!(v.delivery_id.as_deref(), Some("msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ"), "{p}");
            // A refusal names the headers the delivery carried (Clerk's are svix-*).
            let late = refused(run(&src, &ok, &body, secs(1_700_000_301)));
            assert!(late.contains(&format!("{p}-timestamp is outside the allowed tolerance")), "{p}: {late}");
            let mut other = ok;
            other[0].1 = "msg_other";
            let forged = refused(run(&src, &other, &body, secs(1_700_000_060)));
            assert!(forged.contains(&format!("no {p}-signature matches")), "{p}: {forged}");
            let mut garbled = ok;
            garbled[1].1 = "soon";
            assert!(refused(run(&src, &garbled, &body, secs(1_700_000_060))).contains(&format!("{p}-timestamp is not a number")));
        }
        // One set of names, not a mix.
        let mixed =
            [("svix-id", "msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ"), ("webhook-timestamp", "1700000000"), ("svix-signature", sig)];
        assert!(refused(run(&src, &mixed, &body, secs(1_700_000_060))).contains("missing svix-timestamp"));
    }
}
