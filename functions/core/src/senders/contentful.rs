//! Contentful: a request signature (`x-contentful-signature`, hex
//! HMAC-SHA256) over the method, path, the headers it names in
//! `x-contentful-signed-headers` and the body; the topic in
//! `X-Contentful-Topic`, the delivery id in `X-Contentful-Idempotency-Key`
//! (signed when the signed headers cover it).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::shared::{check_age, delivery_id, header, hmac_bytes, mac_matches, sha256_hex, topic_header, unauthorized, unix_ms, unix_secs, Algorithm};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SIGNATURE: &str = "x-contentful-signature";
pub const SIGNED_HEADERS: &str = "x-contentful-signed-headers";
pub const TIMESTAMP: &str = "x-contentful-timestamp";
pub const TOPIC: &str = "x-contentful-topic";
pub const IDEMPOTENCY_KEY: &str = "x-contentful-idempotency-key";

pub const SPEC: Spec = Spec {
    name: "contentful",
    body: BodyShape::Native,
    secret: SecretForm::Key,
    options: &["path"],
    tolerance: super::always,
    signs_delivery: false,
    delivery_header: |_| Some(IDEMPOTENCY_KEY),
    build,
    content_type: "application/vnd.contentful.management.v1+json",
    sample,
    sign: send_headers,
};

pub struct Options<'a> {
    pub secret: &'a Secret,
    pub tolerance: &'a Duration,
    /// The request path Contentful signs.
    pub path: &'a String,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    let path = b.raw.path.clone().unwrap_or_else(|| format!("/hooks/{}", b.name));
    if !path.starts_with('/') {
        b.problem(format!("{}.path must start with '/' (the path of the URL given to Contentful)", b.at));
    }
    // Contentful's toolkit allows 30 s.
    let tolerance = b.tolerance(30);
    b.secret.take().map(|s| SourceKind::Contentful { secret: Secret::new(s), tolerance, path })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, now: SystemTime) -> Result<Verified, HookError> {
        let signed = check(self.secret.expose(), "POST", self.path, req, now, *self.tolerance)?;
        let topic = topic_header(req, TOPIC, "X-Contentful-Topic")?;
        let id_signed = delivery_header.is_some_and(|h| signed.headers.iter().any(|n| n == h));
        Ok(Verified {
            delivery_id: delivery_id(delivery_header, req),
            id_signed,
            signed_sha256: Some(signed.sha256),
            topic: Some(topic.to_owned()),
        })
    }

    fn signed_tolerance(&self) -> Option<Duration> {
        Some(*self.tolerance)
    }

    fn event(
        &self,
        body: &Value,
        topic: Option<&str>,
        fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        // A customised payload may lack sys; then its fields say what to take.
        if fields.is_none() && !body.get("sys").is_some_and(Value::is_object) {
            return Err(HookError::BadPayload("not a Contentful entity: the body has no \"sys\" object".into()));
        }
        Ok((topic.map(str::to_owned), None))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["sys.id", "sys.type", "sys.version", "sys.contentType.sys.id", "sys.environment.sys.id", "sys.space.sys.id"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        ["sys.updatedAt", "sys.deletedAt"].iter().find_map(|p| lookup(body, p).and_then(time_ms))
    }
}

/// What a Contentful signature covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentfulSigned {
    /// The signed headers' names, lower-case and sorted.
    pub headers: Vec<String>,
    /// Hex SHA-256 of the canonical request.
    pub sha256: String,
}

/// Contentful request verification: hex HMAC-SHA256 of
/// `method\npath\n<signed headers as name:value joined by ;>\nbody`, the
/// signed headers named (sorted) in `x-contentful-signed-headers`, which
/// must cover the timestamp (ms) and itself.
pub fn check(
    secret: &[u8],
    method: &str,
    path: &str,
    req: &HookRequest<'_>,
    now: SystemTime,
    tolerance: Duration,
) -> Result<ContentfulSigned, HookError> {
    let sig = header(req, SIGNATURE, SIGNATURE)?;
    let signed = header(req, SIGNED_HEADERS, SIGNED_HEADERS)?;
    let ts = header(req, TIMESTAMP, TIMESTAMP)?.trim();
    let at_ms: i64 = ts.parse().map_err(|_| unauthorized("x-contentful-timestamp is not a number"))?;
    check_age("x-contentful-timestamp", at_ms / 1000, unix_secs(now), tolerance)?;
    let mut names: Vec<String> = signed.split(',').map(|n| n.trim().to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    for needed in [TIMESTAMP, SIGNED_HEADERS] {
        if !names.iter().any(|n| n == needed) {
            return Err(unauthorized(format!("x-contentful-signed-headers does not cover {needed}")));
        }
    }
    let mut lines = Vec::with_capacity(names.len());
    for n in &names {
        let v = req.header(n).ok_or_else(|| unauthorized(format!("signed header {n} is missing")))?;
        lines.push(format!("{n}:{}", v.trim()));
    }
    let sig = hex::decode(sig.trim()).map_err(|_| unauthorized("x-contentful-signature is not hex"))?;
    let head = format!("{method}\n{path}\n{}\n", lines.join(";"));
    if mac_matches(Algorithm::Sha256, secret, &[head.as_bytes(), req.body], &sig) {
        Ok(ContentfulSigned { headers: names, sha256: sha256_hex(&[head.as_bytes(), req.body]) })
    } else {
        Err(unauthorized("x-contentful-signature does not match the request"))
    }
}

/// Contentful's request signature over `POST`, `path`, `headers` (which it
/// signs, beside its own timestamp and signed-headers list) and the body:
/// the headers to add (`x-contentful-signature`, `-signed-headers`, `-timestamp`).
pub fn sign(secret: &[u8], path: &str, headers: &[(&str, &str)], t_ms: i64, body: &[u8]) -> Vec<(String, String)> {
    let t = t_ms.to_string();
    let mut signed: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let mut names: Vec<String> = signed.iter().map(|(k, _)| k.clone()).collect();
    names.extend([SIGNED_HEADERS.to_owned(), TIMESTAMP.to_owned()]);
    names.sort();
    names.dedup();
    let list = names.join(",");
    signed.push((SIGNED_HEADERS.into(), list.clone()));
    signed.push((TIMESTAMP.into(), t.clone()));
    signed.sort();
    let lines: Vec<String> = signed.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let head = format!("POST\n{path}\n{}\n", lines.join(";"));
    let sig = hex::encode(hmac_bytes(Algorithm::Sha256, secret, &[head.as_bytes(), body]));
    vec![(SIGNATURE.into(), sig), (SIGNED_HEADERS.into(), list), (TIMESTAMP.into(), t)]
}

fn sample(out: &Outgoing<'_>) -> Value {
    let n = u32::from_str_radix(&(out.random_id)("")[..8], 16).unwrap_or(1);
    json!({"sys": {"id": "entry1", "type": "Entry", "version": 1 + n % 100,
        "contentType": {"sys": {"id": "blogpost", "type": "Link", "linkType": "ContentType"}}},
        "fields": {"title": {"en-US": "Hello"}}})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    let path = match out.path {
        Some(p) => p.to_owned(),
        None => out.url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())).unwrap_or("/".into()),
    };
    let topic = out.event.unwrap_or("ContentManagement.Entry.publish").to_owned();
    let mut v = sign(out.secret.as_bytes(), &path, &[("x-contentful-topic", &topic)], unix_ms(out.now), body);
    v.push(("X-Contentful-Topic".into(), topic));
    v.push(("X-Contentful-Idempotency-Key".into(), (out.random_id)("")));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use crate::config::SourceKind;
    use crate::secret::Secret;
    use crate::sign;
    use crate::verify::tests::*;
    use crate::verify::{verify, HookRequest};
    use std::time::Duration;

    #[test]
    fn contentful_request_verification() {
        let body = fixture("contentful/entry-create.json");
        let secret = "c".repeat(64);
        let src = source(
            SourceKind::Contentful {
                secret: Secret::new(secret.clone()),
                tolerance: Duration::from_secs(30),
                path: "/hooks/contentful".into(),
            },
            Some("x-contentful-idempotency-key"),
        );
        let signed = "x-contentful-signed-headers,x-contentful-timestamp,x-contentful-topic";
        // Python, as node-apps-toolkit's signRequest: hex HMAC-SHA256 of
        // "POST\n/hooks/contentful\n" + "k:v" of each signed header joined by ";" + "\n" + body.
        let sig = "1aa0c848bd4c957f6888a9918de30db78934b1d7860d2296afc0a21541524df4";
        let ok = [
            ("X-Contentful-Topic", "ContentManagement.Entry.create"),
            ("x-contentful-signed-headers", signed),
            ("x-contentful-timestamp", "1700000000000"),
            ("x-contentful-signature", sig),
            ("X-Contentful-Idempotency-Key", "9c1f"),
        ];
        let v = run(&src, &ok, &body, secs(1_700_000_010)).unwrap();
        assert_eq!((v.delivery_id.as_deref(), v.topic.as_deref()), (Some("9c1f"), Some("ContentManagement.Entry.create")));
        // The idempotency key is not among the signed headers: the request's hash stands in.
        assert!(!v.id_signed && v.signed_sha256.is_some());
        // Signed among them, it is the delivery's signed identity.
        let extra = [("X-Contentful-Topic", "ContentManagement.Entry.create"), ("X-Contentful-Idempotency-Key", "9c1f")];
        let mut with_key: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        with_key.extend(sign::contentful(secret.as_bytes(), "/hooks/contentful", &extra, 1_700_000_000_000, &body));
        let v = verify(&src, &HookRequest { headers: &with_key, body: &body }, secs(1_700_000_010)).unwrap();
        assert!(v.id_signed, "{v:?}");
        let ours = sign::contentful(
            secret.as_bytes(),
            "/hooks/contentful",
            &[("X-Contentful-Topic", "ContentManagement.Entry.create")],
            1_700_000_000_000,
            &body,
        );
        assert_eq!(ours[0].1, sig);
        assert_eq!(ours[1].1, signed);
        let mut topic = ok;
        topic[0].1 = "ContentManagement.Entry.delete";
        assert!(refused(run(&src, &topic, &body, secs(1_700_000_010))).contains("does not match the request"));
        assert!(refused(run(&src, &ok, &body, secs(1_700_000_031))).contains("tolerance"));
        let mut unsigned_ts = ok;
        unsigned_ts[1].1 = "x-contentful-signed-headers,x-contentful-topic";
        assert!(refused(run(&src, &unsigned_ts, &body, secs(1_700_000_010))).contains("does not cover x-contentful-timestamp"));
        let mut other_path = src.clone();
        if let SourceKind::Contentful { path, .. } = &mut other_path.kind {
            *path = "/hooks/cms".into();
        }
        assert!(refused(run(&other_path, &ok, &body, secs(1_700_000_010))).contains("does not match"));
        assert!(refused(run(&src, &ok[..3], &body, secs(1_700_000_010))).contains("missing x-contentful-signature"));
    }
}
