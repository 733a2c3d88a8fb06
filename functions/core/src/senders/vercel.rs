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
