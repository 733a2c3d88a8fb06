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
