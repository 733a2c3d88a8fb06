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

#[cfg(test)]
mod tests {
    use crate::config::SourceKind;
    use crate::error::HookError;
    use crate::secret::Secret;
    use crate::sign;
    use crate::verify::tests::*;
    use crate::verify::Verified;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use crate::normalize::tests::*;

    #[test]
    fn shopify_base64_hmac_and_topic() {
        let body = fixture("shopify/orders-create.json");
        let src =
            source(SourceKind::Shopify { secret: Secret::new("shpss_hookcast_shopify_test_0123") }, Some("x-shopify-webhook-id"));
        // Python: base64.b64encode(hmac.new(secret, body, sha256).digest())
        let sig = "PXVtmf0dTQQ3sdwmD4uT2gc+NyGSpNrN/96VU4p0Ebo=";
        assert_eq!(sign::shopify(b"shpss_hookcast_shopify_test_0123", &body), sig);
        let ok = [("X-Shopify-Hmac-Sha256", sig), ("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", "b54557e4")];
        let v = run(&src, &ok, &body, now()).unwrap();
        assert_eq!((v.delivery_id.as_deref(), v.topic.as_deref()), (Some("b54557e4"), Some("orders/create")));
        assert!(refused(run(&src, &ok, &body[..body.len() - 2], now())).contains("does not match"));
        let hex_sig = hex::encode(STANDARD.decode(sig).unwrap());
        // Hex is not Shopify's encoding (it decodes as base64, to other bytes).
        assert!(refused(run(&src, &[("X-Shopify-Hmac-Sha256", &hex_sig)], &body, now())).contains("does not match"));
        assert!(refused(run(&src, &[("X-Shopify-Hmac-Sha256", "sha256=***")], &body, now())).contains("not base64"));
        assert!(matches!(run(&src, &ok[..1], &body, now()), Err(HookError::BadPayload(m)) if m.contains("X-Shopify-Topic")));
    }

    #[test]
    fn shopify_topic_names_the_event_and_no_customer_data_passes() {
        let src = configured("shopify", |r| r.channel = Some("orders".into()));
        let v = Verified { delivery_id: Some("b54557e4".into()), topic: Some("orders/create".into()), ..Verified::default() };
        let ev = normalise(&src, None, &sender_fixture("shopify/orders-create.json"), &v).unwrap();
        assert_eq!((ev.channel.as_str(), ev.event.as_str()), ("orders", "orders.create"));
        let keys: Vec<&String> = ev.data.as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| ["id", "name", "admin_graphql_api_id", "title", "handle"].contains(&k.as_str())), "{keys:?}");
        assert!(ev.data.get("id").is_some());
        let all = json_of(&ev);
        for private in ["@", "address", "browser_ip", "token", "phone"] {
            assert!(!all.contains(private), "{private} in {all}");
        }
        assert_eq!(ev.delivery_keys, vec!["src:id:b54557e4"]);
        assert_eq!(ev.event_ms, Some(1_199_980_800_000), "updated_at, with its offset");
    }
}
