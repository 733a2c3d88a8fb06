//! Vercel: `x-vercel-signature: <hex HMAC-SHA1 of the body>`; its event id
//! and type are in the (signed) body.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::shared::{header, hmac_bytes, mac_matches, need_str, unauthorized, unix_secs, Algorithm};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SIGNATURE: &str = "x-vercel-signature";

pub const SPEC: Spec = Spec {
    name: "vercel",
    body: BodyShape::Native,
    secret: SecretForm::Key,
    options: &[],
    tolerance: super::never,
    signs_delivery: true,
    delivery_header: super::no_header,
    build,
    content_type: "application/json",
    sample,
    sign: send_headers,
};

pub struct Options<'a> {
    pub secret: &'a Secret,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    b.secret.take().map(|s| SourceKind::Vercel { secret: Secret::new(s) })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, _delivery_header: Option<&str>, _now: SystemTime) -> Result<Verified, HookError> {
        let sig = header(req, SIGNATURE, SIGNATURE)?;
        let sig = hex::decode(sig.trim()).map_err(|_| unauthorized("x-vercel-signature is not hex"))?;
        if !mac_matches(Algorithm::Sha1, self.secret.expose(), &[req.body], &sig) {
            return Err(unauthorized("x-vercel-signature does not match the body"));
        }
        // Its event id is in the (signed) body.
        Ok(Verified::default())
    }

    fn event(
        &self,
        body: &Value,
        _topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        Ok((Some(need_str(body, "type", "Vercel")?.to_owned()), Some(need_str(body, "id", "Vercel")?.to_owned())))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["id=payload.deployment.id", "payload.deployment.name", "payload.deployment.url", "payload.target", "payload.project.id"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        lookup(body, "createdAt").and_then(time_ms)
    }
}

/// Vercel's `x-vercel-signature`: hex HMAC-SHA1 of the body.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    hex::encode(hmac_bytes(Algorithm::Sha1, secret, &[body]))
}

fn sample(out: &Outgoing<'_>) -> Value {
    json!({"id": (out.random_id)("uev_"), "type": out.event.unwrap_or("deployment.succeeded"),
        "createdAt": unix_secs(out.now) * 1000,
        "payload": {"deployment": {"id": (out.random_id)("dpl_"), "name": "site", "url": "site-git-main.vercel.app"},
                    "target": "production", "project": {"id": "prj_hookcast"}}})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    Ok(vec![("x-vercel-signature".into(), sign(out.secret.as_bytes(), body))])
}

#[cfg(test)]
mod tests {
    use crate::config::SourceKind;
    use crate::error::HookError;
    use crate::secret::Secret;
    use crate::senders::shared::mac;
    use crate::sign;
    use crate::verify::tests::*;
    use crate::verify::Verified;
    use hmac::Mac;
    use crate::normalize::tests::*;
    use serde_json::json;

    // Sentry's Vercel integration tests: this body, this secret, this signature.
    #[test]
    fn vercel_published_vector() {
        let body = fixture("vercel/deployment-created.json");
        let src = source(SourceKind::Vercel { secret: Secret::new("AiK52QASLJXmCXX3X9gO2Zyh") }, None);
        let sig = "cecad6333f8652af7d4e9c7b6ad87f1c922a76d3";
        assert_eq!(run(&src, &[("x-vercel-signature", sig)], &body, now()).unwrap(), Verified::default());
        assert_eq!(sign::vercel(b"AiK52QASLJXmCXX3X9gO2Zyh", &body), sig);
        let other = source(SourceKind::Vercel { secret: Secret::new("AiK52QASLJXmCXX3X9gO2Zyi") }, None);
        assert!(refused(run(&other, &[("x-vercel-signature", sig)], &body, now())).contains("does not match"));
        assert!(refused(run(&src, &[("x-vercel-signature", sig)], &body[..body.len() - 1], now())).contains("does not match"));
        assert!(refused(run(&src, &[("x-vercel-signature", "sha1=cecad6")], &body, now())).contains("not hex"));
        assert!(refused(run(&src, &[], &body, now())).contains("missing x-vercel-signature"));
        // An HMAC-SHA256 of the same body is not Vercel's signature.
        let sha256 = hex::encode({
            let mut m = mac(b"AiK52QASLJXmCXX3X9gO2Zyh");
            m.update(&body);
            m.finalize().into_bytes()
        });
        assert!(refused(run(&src, &[("x-vercel-signature", &sha256)], &body, now())).contains("does not match"));
    }

    #[test]
    fn vercel_deploy_id_is_data_id_and_event_id_dedupes() {
        let src = configured("vercel", |_| {});
        let ev = normalise(&src, None, &sender_fixture("vercel/deployment-created.json"), &Verified::default()).unwrap();
        assert_eq!(ev.event.as_str(), "deployment.created");
        assert_eq!(
            ev.data,
            json!({"id": "dpl_2p92SueSKLagubfcRtheS3Cvmcj3",
                   "payload": {"deployment": {"name": "nextjsblog-demo-new", "url": "nextjsblog-demo-new-gogovbsz1.vercel.app"},
                               "target": "production", "project": {"id": "QmQPfU4xn5APjEsSje4ccPcSJCmVAByA8CDKfZRhYyVPAg"}}})
        );
        assert_eq!(ev.delivery_keys, vec!["src:id:uev_ZfbZKA3Ts2aEa2Cic6t6wSZ3"]);
        assert_eq!(ev.event_ms, Some(1_592_335_604_941), "createdAt");
        assert!(!json_of(&ev).contains("githubCommitAuthor"));
        let no_type = normalise(&src, None, br#"{"id":"uev_1","payload":{}}"#, &Verified::default());
        assert!(matches!(no_type, Err(HookError::BadPayload(m)) if m.contains("not a Vercel event")));
    }
}
