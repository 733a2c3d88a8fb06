//! Signature verification on the raw body, before any parsing: [`verify`]
//! hands the request to the source's kind (each kind's check is in its file
//! under [`crate::senders`]; every MAC is checked with the MAC's own
//! constant-time `verify_slice`). The request and what a valid signature
//! tells are [`crate::webhook`]'s, named here as before.

use std::time::SystemTime;

use crate::config::Source;
use crate::error::HookError;

pub use crate::webhook::{Headers, HookRequest, Verified};

/// Checks `req` as the source's kind signs it, and reads what its headers say.
pub fn verify(source: &Source, req: &HookRequest<'_>, now: SystemTime) -> Result<Verified, HookError> {
    source.kind.verify(req, source.delivery_header.as_deref(), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Algorithm as MacAlg, Encoding, HmacScheme, Source, SourceKind};
    use crate::secret::Secret;
    use crate::senders::shared::mac;
    use crate::senders::{
        github::check as github, netlify::check as netlify, sanity::check as sanity, standard::check as standard,
    };
    use crate::sign;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use hmac::Mac;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use sha2::{Digest, Sha256};
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_700_000_000;
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }
    fn reason<T: std::fmt::Debug>(r: Result<T, HookError>) -> String {
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
        standard("webhook", key.expose(), STD_ID, STD_TS, STD_SIG, STD_BODY, at, tol).unwrap();
        assert_eq!(sign::standard(key.expose(), STD_ID, 1_614_265_330, STD_BODY), STD_SIG);
        // Several signatures, one valid (key rotation), in any position.
        let multi = format!("v1,Zm9vYmFy v2,abc {STD_SIG}");
        standard("webhook", key.expose(), STD_ID, STD_TS, &multi, STD_BODY, at, tol).unwrap();

        let r = |secret: &[u8], id: &str, ts: &str, sig: &str, body: &[u8], at| {
            reason(standard("webhook", secret, id, ts, sig, body, at, tol))
        };
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
            route: None,
            events: None,
        };
        let ok = [("X-Hookcast-Token".to_string(), "t0ken".to_string())];
        let bad = [("x-hookcast-token".to_string(), "t0ke".to_string())];
        verify(&src, &HookRequest { headers: &ok, body: b"{}" }, now()).unwrap();
        assert!(matches!(verify(&src, &HookRequest { headers: &bad, body: b"{}" }, now()), Err(HookError::Unauthorized(_))));
        assert!(
            matches!(verify(&src, &HookRequest { headers: &Vec::new(), body: b"{}" }, now()), Err(HookError::Unauthorized(m)) if m.contains("missing"))
        );
    }

    // ---- Sender kinds, each against its sender's published vector or an
    // independent signer (Python's hmac, run once; values pasted here). ----

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../tests/fixtures/senders/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }
    fn source(kind: SourceKind, delivery_header: Option<&str>) -> Source {
        Source {
            name: "s".into(),
            kind,
            channels: vec![],
            delivery_header: delivery_header.map(str::to_owned),
            fields: None,
            route: None,
            events: None,
        }
    }
    fn hs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
    fn run(src: &Source, headers: &[(&str, &str)], body: &[u8], at: SystemTime) -> Result<Verified, HookError> {
        verify(src, &HookRequest { headers: &hs(headers), body }, at)
    }
    fn refused(r: Result<Verified, HookError>) -> String {
        match r {
            Err(HookError::Unauthorized(m)) => m,
            other => panic!("expected 401, got {other:?}"),
        }
    }
    fn secs(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
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
    fn stripe_signature_header() {
        let body = fixture("stripe/event.json");
        let secret = "whsec_hookcast_stripe_test_0123456789";
        let src = source(SourceKind::Stripe { secret: Secret::new(secret), tolerance: Duration::from_secs(300) }, None);
        // Python: hmac.new(secret, b"1700000000." + body, sha256).hexdigest()
        let v1 = "570b5ddfb757b9ddb1cb36611d9e1849efc503c3c688a547ab4b5402a1098188";
        let ok = format!("t=1700000000,v1={v1}");
        assert_eq!(sign::stripe(secret.as_bytes(), 1_700_000_000, &body), ok);
        run(&src, &[("Stripe-Signature", &ok)], &body, secs(1_700_000_100)).unwrap();
        // Several v1 (a rolled secret) and a v0 (test mode) beside them.
        let rotated = format!("t=1700000000,v1={},v0=abc,v1={v1}", "0".repeat(64));
        run(&src, &[("Stripe-Signature", &rotated)], &body, secs(1_700_000_100)).unwrap();
        let r = |h: &str, at| refused(run(&src, &[("Stripe-Signature", h)], &body, secs(at)));
        assert!(r(&ok, 1_700_000_301).contains("tolerance"));
        assert!(r(&ok, 1_699_999_699).contains("tolerance"));
        assert!(r(&format!("t=1700000001,v1={v1}"), 1_700_000_000).contains("no Stripe-Signature v1 matches"));
        assert!(r(&format!("v1={v1}"), 1_700_000_000).contains("no t="));
        assert!(r("t=1700000000,v0=abc", 1_700_000_000).contains("no v1="));
        assert!(r(&format!("t=soon,v1={v1}"), 1_700_000_000).contains("not a number"));
        assert!(r("t=1700000000,v1=zz", 1_700_000_000).contains("no Stripe-Signature v1 matches"));
        let wrong = source(SourceKind::Stripe { secret: Secret::new("whsec_other"), tolerance: Duration::from_secs(300) }, None);
        assert!(refused(run(&wrong, &[("Stripe-Signature", &ok)], &body, secs(1_700_000_000))).contains("matches"));
    }

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

    // sanity-io/webhook-toolkit test/signature.test.ts: secret "test", this body and header.
    #[test]
    fn sanity_toolkit_vector() {
        let body = fixture("sanity/toolkit-vector.json");
        let sig = "t=1633519811129,v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0";
        sanity(b"test", sig, &body, secs(1_633_519_811), Duration::from_secs(300)).unwrap();
        assert_eq!(sign::sanity(b"test", 1_633_519_811_129, &body), sig);
        let r = |secret: &[u8], h: &str, b: &[u8], at| reason(sanity(secret, h, b, secs(at), Duration::from_secs(300)));
        assert!(r(b"tesT", sig, &body, 1_633_519_811).contains("does not match"));
        assert!(r(b"test", sig, br#"{"_id":"resumE"}"#, 1_633_519_811).contains("does not match"));
        assert!(r(b"test", sig, &body, 1_633_519_811 + 301).contains("tolerance"));
        assert!(r(b"test", "t=1633519811129", &body, 1_633_519_811).contains("not t=<ms>,v1=<signature>"));
        assert!(r(b"test", "v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0", &body, 1_633_519_811).contains("not t="));
        assert!(r(b"test", "t=1633519811129,v1=***", &body, 1_633_519_811).contains("not base64url"));
        // A seconds-precision timestamp is not Sanity's (milliseconds): far out of tolerance.
        assert!(
            r(b"test", "t=1633519811,v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0", &body, 1_633_519_811).contains("tolerance")
        );
    }

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

    #[test]
    fn svix_and_webhook_header_names_both_verify() {
        let body = fixture("clerk/user-created.json");
        let key = crate::config::decode_standard_secret(STD_SECRET).unwrap();
        let src = source(SourceKind::Svix { secret: key, tolerance: Duration::from_secs(300) }, None);
        // Python: base64(hmac(b64decode(secret), b"msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ.1700000000." + body, sha256))
        let sig = "v1,INh9UW33q7khVb9alzH7JaDfVrSb0B3+EkObHdullYk=";
        for p in ["svix", "webhook"] {
            let (id, ts, sg) = (format!("{p}-id"), format!("{p}-timestamp"), format!("{p}-signature"));
            let ok = [(id.as_str(), "msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ"), (ts.as_str(), "1700000000"), (sg.as_str(), sig)];
            let v = run(&src, &ok, &body, secs(1_700_000_060)).unwrap();
            assert_eq!(v.delivery_id.as_deref(), Some("msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ"), "{p}");
            // A refusal names the headers the delivery carried (Clerk's are svix-*).
            let late = refused(run(&src, &ok, &body, secs(1_700_000_301)));
            assert!(late.contains(&format!("{p}-timestamp is outside the allowed tolerance")), "{p}: {late}");
            let mut other = ok;
            other[0].1 = "msg_other";
            let forged = refused(run(&src, &other, &body, secs(1_700_000_060)));
            assert!(forged.contains(&format!("no {p}-signature matches")), "{p}: {forged}");
            let mut garbled = ok;
            garbled[1].1 = "soon";
            assert!(refused(run(&src, &garbled, &body, secs(1_700_000_060))).contains(&format!("{p}-timestamp is not a number")));
        }
        // One set of names, not a mix.
        let mixed =
            [("svix-id", "msg_2Lh9KRb0pzN4LePd3XiA4y5DbWJ"), ("webhook-timestamp", "1700000000"), ("svix-signature", sig)];
        assert!(refused(run(&src, &mixed, &body, secs(1_700_000_060))).contains("missing svix-timestamp"));
    }

    #[test]
    fn strapi_bearer_or_bare_token() {
        let src =
            source(SourceKind::Strapi { header: "authorization".into(), secret: Secret::new("strapi-token-0123456789") }, None);
        let body = fixture("strapi/entry-publish.json");
        for ok in ["Bearer strapi-token-0123456789", "bearer strapi-token-0123456789", "strapi-token-0123456789"] {
            run(&src, &[("Authorization", ok)], &body, now()).unwrap();
        }
        for bad in ["Bearer strapi-token-012345678", "Basic strapi-token-0123456789", "", "Bearer "] {
            assert!(refused(run(&src, &[("Authorization", bad)], &body, now())).contains("wrong"), "{bad:?}");
        }
        assert!(refused(run(&src, &[], &body, now())).contains("missing authorization"));
    }

    #[test]
    fn generic_hmac_schemes() {
        let body = fixture("strapi/entry-publish.json");
        let secret = Secret::new("generic-secret-0123456789");
        // GitHub's defaults, unchanged: the published vector.
        let gh =
            source(SourceKind::Hmac { secret: Secret::new("It's a Secret to Everybody"), scheme: HmacScheme::github() }, None);
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        run(&gh, &[("X-Hub-Signature-256", sig)], b"Hello, World!", now()).unwrap();
        // base64 HMAC-SHA1 over "<t>.<body>", with a prefix and a timestamp header.
        let scheme = HmacScheme {
            header: "x-signature".into(),
            prefix: "v1=".into(),
            encoding: Encoding::Base64,
            algorithm: MacAlg::Sha1,
            timestamp: Some(("x-timestamp".into(), Duration::from_secs(300))),
        };
        let src = source(SourceKind::Hmac { secret, scheme }, None);
        // Python: base64(hmac(b"generic-secret-0123456789", b"1700000000." + body, sha1))
        let ok = [("X-Signature", "v1=jbnmp00Blq8xFKjFjaSRiGx6So0="), ("X-Timestamp", "1700000000")];
        if let SourceKind::Hmac { scheme, .. } = &src.kind {
            assert_eq!(sign::hmac_scheme(b"generic-secret-0123456789", scheme, Some(1_700_000_000), &body), ok[0].1);
        }
        let v = run(&src, &ok, &body, secs(1_700_000_000)).unwrap();
        // What it signed is the timestamp and the body.
        let signed = [&b"1700000000."[..], &body].concat();
        assert_eq!(v.signed_sha256, Some(hex::encode(Sha256::digest(&signed))));
        let r = |h: &[(&str, &str)], at| refused(run(&src, h, &body, secs(at)));
        assert!(r(&ok, 1_700_000_301).contains("tolerance"));
        assert!(r(&[ok[0], ("X-Timestamp", "1700000001")], 1_700_000_000).contains("does not match"));
        assert!(r(&[ok[0]], 1_700_000_000).contains("missing x-timestamp"));
        assert!(r(&[("X-Signature", "jbnmp00Blq8xFKjFjaSRiGx6So0="), ok[1]], 1_700_000_000).contains("must start with \"v1=\""));
        assert!(r(&[("X-Signature", "v1=@@@"), ok[1]], 1_700_000_000).contains("not base64"));
        assert!(r(&[ok[0], ("X-Timestamp", "later")], 1_700_000_000).contains("not a number"));
    }
}
