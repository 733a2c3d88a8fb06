//! Signature verification on the raw body, before any parsing. Every MAC is
//! checked with the MAC's own constant-time `verify_slice`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::Mac;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Source, SourceKind};
use crate::error::HookError;
use crate::sign::mac;

/// A request's headers as verification reads them: the first value of a
/// name, compared case-insensitively; a value that is not text is absent.
/// The HTTP edge implements it over its own header map, so nothing is copied.
pub trait Headers: Sync {
    fn get(&self, name: &str) -> Option<&str>;
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Name-value pairs (tests, fuzzing, tools).
impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        find(self, name)
    }
}

impl<const N: usize> Headers for [(String, String); N] {
    fn get(&self, name: &str) -> Option<&str> {
        find(self, name)
    }
}

/// A webhook as it arrived.
#[derive(Clone, Copy)]
pub struct HookRequest<'a> {
    pub headers: &'a dyn Headers,
    pub body: &'a [u8],
}

impl<'a> HookRequest<'a> {
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)
    }
}

/// What a valid signature tells us beyond "authentic".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// A sender-assigned delivery id (Standard Webhooks `webhook-id`).
    pub delivery_id: Option<String>,
}

fn unauthorized(msg: impl Into<String>) -> HookError {
    HookError::Unauthorized(msg.into())
}

/// The sender's name for this delivery, from the header the source names.
fn delivery_id(source: &Source, req: &HookRequest<'_>) -> Option<String> {
    source.delivery_header.as_deref().and_then(|h| req.header(h)).filter(|v| !v.is_empty()).map(str::to_owned)
}

pub fn verify(source: &Source, req: &HookRequest<'_>, now: SystemTime) -> Result<Verified, HookError> {
    match &source.kind {
        SourceKind::Netlify { secret, .. } => {
            let token = req.header("x-webhook-signature").ok_or_else(|| unauthorized("missing X-Webhook-Signature header"))?;
            netlify(secret.expose(), token, req.body, now)?;
            Ok(Verified::default())
        }
        SourceKind::Hmac { secret } => {
            let sig = req.header("x-hub-signature-256").ok_or_else(|| unauthorized("missing X-Hub-Signature-256 header"))?;
            github(secret.expose(), sig, req.body)?;
            // GitHub names each delivery (x-github-delivery); redeliveries keep the id.
            Ok(Verified { delivery_id: delivery_id(source, req) })
        }
        SourceKind::Standard { secret, tolerance } => {
            let get = |h: &str| req.header(h).ok_or_else(|| unauthorized(format!("missing {h} header")));
            let id = get("webhook-id")?;
            let ts = get("webhook-timestamp")?;
            let sigs = get("webhook-signature")?;
            standard(secret.expose(), id, ts, sigs, req.body, now, *tolerance)?;
            Ok(Verified { delivery_id: Some(id.to_owned()) })
        }
        SourceKind::Token { header, secret } => {
            let got = req.header(header).ok_or_else(|| unauthorized(format!("missing {header} header")))?;
            if secret.matches(got.as_bytes()) {
                Ok(Verified { delivery_id: delivery_id(source, req) })
            } else {
                Err(unauthorized(format!("wrong {header} token")))
            }
        }
    }
}

/// GitHub form: `sha256=<hex>` HMAC-SHA256 of the body.
pub fn github(secret: &[u8], header: &str, body: &[u8]) -> Result<(), HookError> {
    let hex_sig =
        header.trim().strip_prefix("sha256=").ok_or_else(|| unauthorized("X-Hub-Signature-256 must start with sha256="))?;
    let sig = hex::decode(hex_sig).map_err(|_| unauthorized("X-Hub-Signature-256 is not hex"))?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig).map_err(|_| unauthorized("signature does not match the body"))
}

/// Standard Webhooks: any of the space-separated `v1,<base64>` signatures over
/// `id.timestamp.body`, with the timestamp within `tolerance` of `now`.
pub fn standard(
    secret: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), HookError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| unauthorized("webhook-timestamp is not a number"))?;
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if (now_s - ts).unsigned_abs() > tolerance.as_secs() {
        return Err(unauthorized("webhook-timestamp is outside the allowed tolerance"));
    }
    let mut saw_v1 = false;
    for candidate in signatures.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        saw_v1 = true;
        let Ok(sig) = STANDARD.decode(b64) else {
            continue;
        };
        let mut m = mac(secret);
        m.update(id.as_bytes());
        m.update(b".");
        m.update(timestamp.trim().as_bytes());
        m.update(b".");
        m.update(body);
        if m.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(unauthorized(if saw_v1 { "no webhook-signature matches the body" } else { "webhook-signature has no v1 signature" }))
}

/// Netlify's JWS: HS256 only, `iss == "netlify"`, `sha256` claim == hex SHA-256 of the body.
pub fn netlify(secret: &[u8], token: &str, body: &[u8], now: SystemTime) -> Result<(), HookError> {
    let mut parts = token.trim().split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(unauthorized("X-Webhook-Signature is not a JWS (header.payload.signature)"));
    };
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('='));
    let header: Value = b64(h64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| unauthorized("JWS header is not base64url JSON"))?;
    // Checked before the MAC: `alg: none` and every other algorithm are refused outright.
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => {}
        Some(other) => return Err(unauthorized(format!("JWS alg {other:?} is not accepted; only HS256"))),
        None => return Err(unauthorized("JWS header has no alg")),
    }
    let sig = b64(s64).map_err(|_| unauthorized("JWS signature is not base64url"))?;
    let mut m = mac(secret);
    m.update(h64.as_bytes());
    m.update(b".");
    m.update(p64.as_bytes());
    m.verify_slice(&sig).map_err(|_| unauthorized("JWS signature does not match the secret"))?;

    let claims: Value = b64(p64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| unauthorized("JWS payload is not base64url JSON"))?;
    if claims.get("iss").and_then(Value::as_str) != Some("netlify") {
        return Err(unauthorized("JWS issuer is not netlify"));
    }
    // RFC 7519 NumericDate: any JSON number, fractions included; 60 s leeway.
    match claims.get("exp") {
        None => {}
        Some(exp) => {
            let exp = exp.as_f64().filter(|e| e.is_finite()).ok_or_else(|| unauthorized("JWS exp is not a NumericDate"))?;
            let now_s = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            if now_s > exp + 60.0 {
                return Err(unauthorized("JWS has expired"));
            }
        }
    }
    let claimed = claims.get("sha256").and_then(Value::as_str).ok_or_else(|| unauthorized("JWS has no sha256 claim"))?;
    let actual = hex::encode(Sha256::digest(body));
    if bool::from(claimed.to_ascii_lowercase().as_bytes().ct_eq(actual.as_bytes())) {
        Ok(())
    } else {
        Err(unauthorized("JWS sha256 claim does not match the body"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    const NOW: u64 = 1_700_000_000;
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }
    fn reason(r: Result<(), HookError>) -> String {
        match r {
            Err(HookError::Unauthorized(m)) => m,
            other => panic!("expected 401, got {other:?}"),
        }
    }

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

    // The example in the Standard Webhooks specification.
    const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STD_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const STD_TS: &str = "1614265330";
    const STD_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const STD_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_spec_vector() {
        let key = crate::config::decode_standard_secret(STD_SECRET).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_614_265_330 + 10);
        let tol = Duration::from_secs(300);
        standard(key.expose(), STD_ID, STD_TS, STD_SIG, STD_BODY, at, tol).unwrap();
        assert_eq!(sign::standard(key.expose(), STD_ID, 1_614_265_330, STD_BODY), STD_SIG);
        // Several signatures, one valid (key rotation), in any position.
        let multi = format!("v1,Zm9vYmFy v2,abc {STD_SIG}");
        standard(key.expose(), STD_ID, STD_TS, &multi, STD_BODY, at, tol).unwrap();

        let r =
            |secret: &[u8], id: &str, ts: &str, sig: &str, body: &[u8], at| reason(standard(secret, id, ts, sig, body, at, tol));
        assert!(r(b"other", STD_ID, STD_TS, STD_SIG, STD_BODY, at).contains("no webhook-signature matches"));
        assert!(r(key.expose(), "msg_other", STD_TS, STD_SIG, STD_BODY, at).contains("matches"));
        assert!(r(key.expose(), STD_ID, STD_TS, STD_SIG, br#"{"test": 2432232315}"#, at).contains("matches"));
        assert!(r(key.expose(), STD_ID, STD_TS, "v1,!!!notbase64", STD_BODY, at).contains("matches"));
        assert!(r(key.expose(), STD_ID, STD_TS, "v2,abc", STD_BODY, at).contains("no v1"));
        assert!(r(key.expose(), STD_ID, "soon", STD_SIG, STD_BODY, at).contains("not a number"));
        let late = UNIX_EPOCH + Duration::from_secs(1_614_265_330 + 301);
        let early = UNIX_EPOCH + Duration::from_secs(1_614_265_330 - 301);
        assert!(r(key.expose(), STD_ID, STD_TS, STD_SIG, STD_BODY, late).contains("tolerance"));
        assert!(r(key.expose(), STD_ID, STD_TS, STD_SIG, STD_BODY, early).contains("tolerance"));
    }

    /// Netlify tokens made by an independent JWT implementation.
    fn jwt(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }
    fn body_sha(body: &[u8]) -> String {
        hex::encode(Sha256::digest(body))
    }

    #[test]
    fn netlify_accepts_independently_signed_tokens() {
        let body = br#"{"id":"abc","state":"ready"}"#;
        let token = jwt(Algorithm::HS256, b"jws-secret", serde_json::json!({"iss":"netlify","sha256":body_sha(body)}));
        netlify(b"jws-secret", &token, body, now()).unwrap();
        // And our own signer produces tokens the independent one accepts.
        let ours = sign::netlify(b"jws-secret", body);
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.required_spec_claims.clear();
        v.set_issuer(&["netlify"]);
        let decoded =
            jsonwebtoken::decode::<serde_json::Value>(&ours, &jsonwebtoken::DecodingKey::from_secret(b"jws-secret"), &v).unwrap();
        assert_eq!(decoded.claims["sha256"], body_sha(body));
    }

    #[test]
    fn netlify_refusals() {
        let body = br#"{"id":"abc","state":"ready"}"#;
        let good = serde_json::json!({"iss":"netlify","sha256":body_sha(body)});
        let r = |t: &str, b: &[u8]| reason(netlify(b"jws-secret", t, b, now()));

        assert!(r(&jwt(Algorithm::HS256, b"other", good.clone()), body).contains("does not match the secret"));
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", good.clone()), b"tampered").contains("sha256 claim does not match"));
        assert!(r(&jwt(Algorithm::HS384, b"jws-secret", good.clone()), body).contains("\"HS384\" is not accepted"));
        assert!(r(&jwt(Algorithm::HS512, b"jws-secret", good.clone()), body).contains("only HS256"));
        let wrong_iss = serde_json::json!({"iss":"github","sha256":body_sha(body)});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", wrong_iss), body).contains("issuer"));
        let no_iss = serde_json::json!({"sha256":body_sha(body)});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", no_iss), body).contains("issuer"));
        let no_sha = serde_json::json!({"iss":"netlify"});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", no_sha), body).contains("no sha256 claim"));
        let expired = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": NOW - 3600});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", expired), body).contains("expired"));
        // A fractional NumericDate is still a date (it once skipped the check).
        let fractional = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": (NOW - 3600) as f64 + 0.5});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", fractional), body).contains("expired"));
        let fresh = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": NOW as f64 + 0.5});
        netlify(b"jws-secret", &jwt(Algorithm::HS256, b"jws-secret", fresh), body, now()).unwrap();
        let text = serde_json::json!({"iss":"netlify","sha256":body_sha(body),"exp": "tomorrow"});
        assert!(r(&jwt(Algorithm::HS256, b"jws-secret", text), body).contains("NumericDate"));

        // alg: none, with and without a signature part.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(good.to_string());
        assert!(r(&format!("{none_header}.{payload}."), body).contains("\"none\" is not accepted"));
        assert!(r(&format!("{none_header}.{payload}"), body).contains("not a JWS"));
        // A valid HS256 header swapped onto a none-signed token still fails on the MAC.
        let hs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        assert!(r(&format!("{hs_header}.{payload}."), body).contains("does not match the secret"));
        assert!(r("garbage", body).contains("not a JWS"));
        assert!(r("a.b.c", body).contains("header is not base64url JSON"));
    }

    #[test]
    fn token_and_headers_through_verify() {
        use crate::config::{Source, SourceKind};
        use crate::secret::Secret;
        let src = Source {
            name: "zap".into(),
            kind: SourceKind::Token { header: "x-hookcast-token".into(), secret: Secret::new("t0ken") },
            channels: vec!["*".parse().unwrap()],
            delivery_header: None,
            fields: None,
        };
        let ok = [("X-Hookcast-Token".to_string(), "t0ken".to_string())];
        let bad = [("x-hookcast-token".to_string(), "t0ke".to_string())];
        verify(&src, &HookRequest { headers: &ok, body: b"{}" }, now()).unwrap();
        assert!(matches!(verify(&src, &HookRequest { headers: &bad, body: b"{}" }, now()), Err(HookError::Unauthorized(_))));
        assert!(
            matches!(verify(&src, &HookRequest { headers: &Vec::new(), body: b"{}" }, now()), Err(HookError::Unauthorized(m)) if m.contains("missing"))
        );
    }
}
