//! Signing exactly as the real senders do. Used by `hookcast send`; the
//! verifier's tests check it against independent signers and published vectors.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::config::{Algorithm, Encoding, HmacScheme};

type HmacSha256 = Hmac<Sha256>;

pub(crate) fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(key).expect("HMAC takes any key length")
}

/// GitHub's `X-Hub-Signature-256` value: `sha256=<hex>`.
pub fn github(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Standard Webhooks `webhook-signature` value: `v1,<base64>` over `id.timestamp.body`.
pub fn standard(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(format!("{id}.{timestamp}.").as_bytes());
    m.update(body);
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}

/// Netlify's `X-Webhook-Signature`: an HS256 JWS with `iss: "netlify"` and
/// `sha256`: hex SHA-256 of the body.
pub fn netlify(secret: &[u8], body: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"iss": "netlify", "sha256": hex::encode(Sha256::digest(body))});
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
}

fn hmac_bytes(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        Algorithm::Sha256 => {
            let mut m = mac(key);
            parts.iter().for_each(|p| m.update(p));
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha1 => {
            let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
            parts.iter().for_each(|p| m.update(p));
            m.finalize().into_bytes().to_vec()
        }
    }
}

/// Vercel's `x-vercel-signature`: hex HMAC-SHA1 of the body.
pub fn vercel(secret: &[u8], body: &[u8]) -> String {
    hex::encode(hmac_bytes(Algorithm::Sha1, secret, &[body]))
}

/// Stripe's `Stripe-Signature`: `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn stripe(secret: &[u8], t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    format!("t={t},v1={}", hex::encode(hmac_bytes(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body])))
}

/// Shopify's `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body.
pub fn shopify(secret: &[u8], body: &[u8]) -> String {
    STANDARD.encode(hmac_bytes(Algorithm::Sha256, secret, &[body]))
}

/// Sanity's `sanity-webhook-signature`: `t=<unix ms>,v1=<base64url HMAC-SHA256 of "t.body">`.
pub fn sanity(secret: &[u8], t_ms: i64, body: &[u8]) -> String {
    let t = t_ms.to_string();
    format!("t={t},v1={}", URL_SAFE_NO_PAD.encode(hmac_bytes(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body])))
}

/// Contentful's request signature over `POST`, `path`, `headers` (which it
/// signs, beside its own timestamp and signed-headers list) and the body:
/// the headers to add (`x-contentful-signature`, `-signed-headers`, `-timestamp`).
pub fn contentful(secret: &[u8], path: &str, headers: &[(&str, &str)], t_ms: i64, body: &[u8]) -> Vec<(String, String)> {
    let t = t_ms.to_string();
    let mut signed: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let mut names: Vec<String> = signed.iter().map(|(k, _)| k.clone()).collect();
    names.extend(["x-contentful-signed-headers".to_owned(), "x-contentful-timestamp".to_owned()]);
    names.sort();
    names.dedup();
    let list = names.join(",");
    signed.push(("x-contentful-signed-headers".into(), list.clone()));
    signed.push(("x-contentful-timestamp".into(), t.clone()));
    signed.sort();
    let lines: Vec<String> = signed.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let head = format!("POST\n{path}\n{}\n", lines.join(";"));
    let sig = hex::encode(hmac_bytes(Algorithm::Sha256, secret, &[head.as_bytes(), body]));
    vec![
        ("x-contentful-signature".into(), sig),
        ("x-contentful-signed-headers".into(), list),
        ("x-contentful-timestamp".into(), t),
    ]
}

/// The generic `hmac` kind's signature header value; `timestamp` is the
/// value sent in the scheme's timestamp header, if it has one.
pub fn hmac_scheme(secret: &[u8], scheme: &HmacScheme, timestamp: Option<i64>, body: &[u8]) -> String {
    let raw = match timestamp {
        Some(t) => hmac_bytes(scheme.algorithm, secret, &[t.to_string().as_bytes(), b".", body]),
        None => hmac_bytes(scheme.algorithm, secret, &[body]),
    };
    let encoded = match scheme.encoding {
        Encoding::Hex => hex::encode(raw),
        Encoding::Base64 => STANDARD.encode(raw),
    };
    format!("{}{encoded}", scheme.prefix)
}
