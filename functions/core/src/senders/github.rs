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

#[cfg(test)]
mod tests {
    use crate::config::SourceKind;
    use crate::error::HookError;
    use crate::secret::Secret;
    use crate::sign;
    use crate::verify::tests::*;
    use crate::verify::Verified;
    use sha2::{Digest, Sha256};
    use crate::normalize::tests::*;
    use serde_json::json;
    use super::check as github;

    // GitHub's published example (docs: "Validating webhook deliveries").
    #[test]
    fn github_published_vector() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        github(secret, expected, body).unwrap();
        assert_eq!(sign::github(secret, body), expected);
        assert!(reason(github(b"wrong secret", expected, body)).contains("does not match"));
        assert!(reason(github(secret, expected, b"Hello, World?")).contains("does not match"));
        assert!(reason(github(secret, "sha256=zz", body)).contains("not hex"));
        assert!(reason(github(secret, "sha1=757107ea", body)).contains("sha256="));
        let truncated = &expected[..expected.len() - 2];
        assert!(reason(github(secret, truncated, body)).contains("does not match"));
    }

    #[test]
    fn github_kind_reads_event_and_delivery_headers() {
        let body = fixture("github/release-published.json");
        let src = source(SourceKind::Github { secret: Secret::new("gh-secret-0123456789") }, Some("x-github-delivery"));
        // Python: "sha256=" + hmac.new(b"gh-secret-0123456789", body, sha256).hexdigest()
        let sig = "sha256=10f379bae45786d129c990b1e4a57321e93ca0b30e408b37ccd51380444ae2ba";
        let ok = [("X-Hub-Signature-256", sig), ("X-GitHub-Event", "release"), ("X-GitHub-Delivery", "72d3162e")];
        let v = run(&src, &ok, &body, now()).unwrap();
        assert_eq!((v.delivery_id.as_deref(), v.topic.as_deref()), (Some("72d3162e"), Some("release")));
        // The delivery id and the event type travel beside the signature, not
        // under it: a replayer may write others. The signed body's hash is the same.
        assert!(!v.id_signed);
        assert_eq!(v.signed_sha256, Some(hex::encode(Sha256::digest(&body))));
        let replay = [ok[0], ("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "ffffffff")];
        let r = run(&src, &replay, &body, now()).unwrap();
        assert_eq!((r.delivery_id.as_deref(), r.signed_sha256), (Some("ffffffff"), v.signed_sha256));
        assert!(refused(run(&src, &ok[..1], &body[1..], now())).contains("does not match"));
        assert!(matches!(run(&src, &ok[..1], &body, now()), Err(HookError::BadPayload(m)) if m.contains("X-GitHub-Event")));
    }

    #[test]
    fn github_events_names_and_default_data() {
        let src = configured("github", |_| {});
        let release = sender_fixture("github/release-published.json");
        let v = Verified { delivery_id: Some("72d3162e".into()), topic: Some("release".into()), ..Verified::default() };
        let ev = normalise(&src, Some("application/json"), &release, &v).unwrap();
        assert_eq!((ev.channel.as_str(), ev.event.as_str()), ("src", "release.published"));
        assert_eq!(
            ev.data,
            json!({"action": "published", "repository": {"id": 186853002, "full_name": "Codertocat/Hello-World"},
                   "release": {"id": 17372790, "tag_name": "0.0.1", "name": "", "prerelease": false}})
        );
        assert_eq!(ev.delivery_keys, vec!["src:id:72d3162e"]);
        let push = normalise(&src, None, &sender_fixture("github/push.json"), &topic("push")).unwrap();
        assert_eq!(push.event.as_str(), "push");
        assert_eq!(push.data["ref"], "refs/tags/simple-tag");
        assert!(!json_of(&push).contains("@"), "no e-mail address: {}", json_of(&push));
        // A deployment's id is data.id, where the snippet looks for the page's own deploy.
        let ds = normalise(&src, None, &sender_fixture("github/deployment_status.json"), &topic("deployment_status")).unwrap();
        assert_eq!(ds.event.as_str(), "deployment_status.created");
        assert_eq!(ds.data["id"], 145988746);
        assert_eq!(ds.data["deployment_status"]["state"], "success");
        let wr = normalise(&src, None, &sender_fixture("github/workflow_run-completed.json"), &topic("workflow_run")).unwrap();
        assert_eq!(wr.event.as_str(), "workflow_run.completed");
        assert!(wr.data["workflow_run"]["conclusion"].is_string(), "{}", json_of(&wr));

        // The issue's own example: a channel and the fields listed, nested as in the body.
        let src = configured("github", |r| {
            r.channel = Some("releases".into());
            r.fields = Some(vec!["release.tag_name".into(), "repository.full_name".into(), "release.nope".into()]);
        });
        let ev = normalise(&src, None, &release, &topic("release")).unwrap();
        assert_eq!(ev.channel.as_str(), "releases");
        assert_eq!(ev.data, json!({"release": {"tag_name": "0.0.1"}, "repository": {"full_name": "Codertocat/Hello-World"}}));
        // GitHub can be told to send form-encoded bodies; this kind reads JSON.
        let form = normalise(&src, Some("application/x-www-form-urlencoded"), b"payload=%7B%7D", &topic("release"));
        assert!(matches!(form, Err(HookError::BadPayload(m)) if m.contains("application/json")));
    }
}
