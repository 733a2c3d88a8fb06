//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, the
//! event in `X-GitHub-Event`, the (unsigned) delivery id in `X-GitHub-Delivery`.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::shared::{header, mac, sha256_hex, topic_header, unauthorized};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};
use hmac::Mac;

pub const SIGNATURE: &str = "x-hub-signature-256";
pub const EVENT: &str = "x-github-event";
pub const DELIVERY: &str = "x-github-delivery";

pub const SPEC: Spec = Spec {
    name: "github",
    body: BodyShape::Native,
    secret: SecretForm::Key,
    options: &[],
    tolerance: super::never,
    signs_delivery: false,
    delivery_header: |_| Some(DELIVERY),
    build,
    content_type: "application/json",
    sample,
    sign: send_headers,
};

pub struct Options<'a> {
    pub secret: &'a Secret,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    b.secret.take().map(|s| SourceKind::Github { secret: Secret::new(s) })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, _now: SystemTime) -> Result<Verified, HookError> {
        let sig = header(req, SIGNATURE, "X-Hub-Signature-256")?;
        check(self.secret.expose(), sig, req.body)?;
        // GitHub names the event in a header; a body alone cannot say which it is.
        let event = topic_header(req, EVENT, "X-GitHub-Event")?;
        Ok(Verified {
            delivery_id: super::shared::delivery_id(delivery_header, req),
            id_signed: false,
            signed_sha256: Some(sha256_hex(&[req.body])),
            topic: Some(event.to_owned()),
        })
    }

    // GitHub's ping (sent when a webhook is made, and by "Redeliver") says
    // the hook works; it is no event of the repository, and never a state.
    fn ignores(&self, verified: &Verified) -> Option<&'static str> {
        (verified.topic.as_deref() == Some("ping")).then_some("GitHub's ping: the webhook works; nothing to publish")
    }

    fn event(
        &self,
        body: &Value,
        topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        let event = topic.unwrap_or_default();
        Ok(match body.get("action").and_then(Value::as_str) {
            Some(action) => (Some(format!("{event}.{action}")), None),
            None => (Some(event.to_owned()), None),
        })
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &[
            "action",
            "repository.id",
            "repository.full_name",
            "release.id",
            "release.tag_name",
            "release.name",
            "release.prerelease",
            "id=deployment.id",
            "deployment.environment",
            "deployment.ref",
            "deployment.sha",
            "deployment_status.id",
            "deployment_status.state",
            "deployment_status.environment",
            "ref",
            "after",
            "workflow_run.id",
            "workflow_run.name",
            "workflow_run.status",
            "workflow_run.conclusion",
            "workflow_run.head_branch",
            "workflow_run.head_sha",
        ]
    }

    /// By event: a push `repository.pushed_at`, a deployment (status) or
    /// workflow run its `updated_at`, a release its `published_at`
    /// (`created_at` when created); none for other events.
    fn time(&self, body: &Value, topic: Option<&str>) -> Option<u64> {
        let paths: &[&str] = match (topic?, body.get("action").and_then(Value::as_str)) {
            ("push", _) => &["repository.pushed_at"],
            ("deployment_status", _) => &["deployment_status.updated_at"],
            ("deployment", _) => &["deployment.updated_at"],
            ("workflow_run", _) => &["workflow_run.updated_at"],
            ("release", Some("published" | "released" | "prereleased")) => &["release.published_at"],
            ("release", Some("created")) => &["release.created_at"],
            _ => &[],
        };
        paths.iter().find_map(|p| lookup(body, p).and_then(time_ms))
    }
}

/// GitHub form: `sha256=<hex>` HMAC-SHA256 of the body.
pub fn check(secret: &[u8], header: &str, body: &[u8]) -> Result<(), HookError> {
    let hex_sig =
        header.trim().strip_prefix("sha256=").ok_or_else(|| unauthorized("X-Hub-Signature-256 must start with sha256="))?;
    let sig = hex::decode(hex_sig).map_err(|_| unauthorized("X-Hub-Signature-256 is not hex"))?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig).map_err(|_| unauthorized("signature does not match the body"))
}

/// GitHub's `X-Hub-Signature-256` value: `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

fn sample(out: &Outgoing<'_>) -> Value {
    let n = u32::from_str_radix(&(out.random_id)("")[..8], 16).unwrap_or(1);
    json!({"action": "published",
        "release": {"id": n, "tag_name": "v1.0.0", "name": "v1.0.0", "prerelease": false},
        "repository": {"id": 1, "full_name": "you/site"}})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    Ok(vec![
        ("X-Hub-Signature-256".into(), sign(out.secret.as_bytes(), body)),
        ("X-GitHub-Event".into(), out.event.unwrap_or("release").to_owned()),
        ("X-GitHub-Delivery".into(), (out.random_id)("")),
    ])
}
