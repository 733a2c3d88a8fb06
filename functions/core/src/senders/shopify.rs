//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`, the
//! topic in `X-Shopify-Topic`, the (unsigned) delivery id in `X-Shopify-Webhook-Id`.

use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::shared::{delivery_id, header, hmac_bytes, mac_matches, sha256_hex, topic_header, unauthorized, Algorithm};
use super::{Build, BodyShape, Headers, Outgoing, SecretForm, Sender, SignError, SourceKind, Spec};
use crate::clock::format_at;
use crate::error::HookError;
use crate::mapping::{lookup, time_ms};
use crate::secret::Secret;
use crate::webhook::{HookRequest, Verified};

pub const SIGNATURE: &str = "x-shopify-hmac-sha256";
pub const TOPIC: &str = "x-shopify-topic";
pub const WEBHOOK_ID: &str = "x-shopify-webhook-id";

pub const SPEC: Spec = Spec {
    name: "shopify",
    body: BodyShape::Native,
    secret: SecretForm::Key,
    options: &[],
    tolerance: super::never,
    signs_delivery: false,
    delivery_header: |_| Some(WEBHOOK_ID),
    build,
    content_type: "application/json",
    sample,
    sign: send_headers,
};

pub struct Options<'a> {
    pub secret: &'a Secret,
}

fn build(b: &mut Build<'_>) -> Option<SourceKind> {
    b.secret.take().map(|s| SourceKind::Shopify { secret: Secret::new(s) })
}

impl Sender for Options<'_> {
    fn verify(&self, req: &HookRequest<'_>, delivery_header: Option<&str>, _now: SystemTime) -> Result<Verified, HookError> {
        let sig = header(req, SIGNATURE, "X-Shopify-Hmac-Sha256")?;
        let sig = STANDARD.decode(sig.trim()).map_err(|_| unauthorized("X-Shopify-Hmac-Sha256 is not base64"))?;
        if !mac_matches(Algorithm::Sha256, self.secret.expose(), &[req.body], &sig) {
            return Err(unauthorized("X-Shopify-Hmac-Sha256 does not match the body"));
        }
        let topic = topic_header(req, TOPIC, "X-Shopify-Topic")?;
        Ok(Verified {
            delivery_id: delivery_id(delivery_header, req),
            id_signed: false,
            signed_sha256: Some(sha256_hex(&[req.body])),
            topic: Some(topic.to_owned()),
        })
    }

    // orders/create → orders.create
    fn event(
        &self,
        _body: &Value,
        topic: Option<&str>,
        _fields: Option<&Vec<String>>,
    ) -> Result<(Option<String>, Option<String>), HookError> {
        Ok((topic.map(|t| t.replace('/', ".")), None))
    }

    fn default_fields(&self) -> &'static [&'static str] {
        &["id", "name", "admin_graphql_api_id", "title", "handle"]
    }

    fn time(&self, body: &Value, _topic: Option<&str>) -> Option<u64> {
        ["updated_at", "created_at"].iter().find_map(|p| lookup(body, p).and_then(time_ms))
    }
}

/// Shopify's `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    STANDARD.encode(hmac_bytes(Algorithm::Sha256, secret, &[body]))
}

fn sample(out: &Outgoing<'_>) -> Value {
    let n = u32::from_str_radix(&(out.random_id)("")[..8], 16).unwrap_or(1);
    json!({"id": n, "name": "#1001", "admin_graphql_api_id": format!("gid://shopify/Order/{n}")})
}

fn send_headers(out: &Outgoing<'_>, body: &[u8]) -> Result<Headers, SignError> {
    Ok(vec![
        ("X-Shopify-Hmac-Sha256".into(), sign(out.secret.as_bytes(), body)),
        ("X-Shopify-Topic".into(), out.event.unwrap_or("orders/create").to_owned()),
        ("X-Shopify-Webhook-Id".into(), (out.random_id)("")),
        ("X-Shopify-Triggered-At".into(), format_at(out.now)),
    ])
}
