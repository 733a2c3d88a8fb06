//! The bad-input table: webhooks, history requests and
//! client frames that must each be refused with a given status or close code,
//! storing and sending nothing. The local binary's tests and the Lambda
//! handlers' tests run the same table, so the two hosts cannot drift.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use serde_json::{json, Value};

use hookcast_core::sign;

/// The configuration the table is written against, in TOML as a user writes
/// it (each host parses it as it parses its own configuration).
pub const CONFIG_TOML: &str = r#"
allowed_origins = ["https://site.example"]

[limits]
max_body_bytes = 65536
max_event_bytes = 4096

[sources.netlify]
kind = "netlify"
secret = "netlify-hostile-secret-0123"
[sources.netlify.forms.guestbook]
fields = ["name", "message"]
# Listed, but with no letter or digit to name a channel by.
[sources.netlify.forms."!!! ???"]
fields = []

[sources.gh]
kind = "hmac"
secret = "gh-hostile-secret-0123456"
channels = ["news", "news/*"]
fields = ["title", "n", "pad"]

[sources.std]
kind = "standard"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
channels = ["news"]
fields = ["title"]

[sources.zap]
kind = "token"
secret = "zap-hostile-token-0123456"
channels = ["zaps/*"]
fields = ["title"]

[sources.github]
kind = "github"
secret = "github-hostile-secret-0123"

[sources.vercel]
kind = "vercel"
secret = "vercel-hostile-secret-0123"

[sources.stripe]
kind = "stripe"
secret = "whsec_stripe-hostile-secret-0123"

[sources.shopify]
kind = "shopify"
secret = "shopify-hostile-secret-0123"

[sources.sanity]
kind = "sanity"
secret = "sanity-hostile-secret-0123"

[sources.contentful]
kind = "contentful"
secret = "contentful-hostile-secret-0123-contentful-hostile-secret-012345"

[sources.svix]
kind = "svix"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[sources.strapi]
kind = "strapi"
secret = "strapi-hostile-token-0123"

[sources.cms]
kind = "contentful"
secret = "contentful-hostile-secret-0123-contentful-hostile-secret-012345"
channel = "cms/{sys.contentType.sys.id}"

[sources.custom]
kind = "hmac"
secret = "custom-hostile-secret-0123"
header = "x-signature"
prefix = "v1="
encoding = "base64"
algorithm = "sha1"
timestamp_header = "x-timestamp"
channel = "custom"
event = "{type}"
fields = ["id", "type"]

[private]
secret = "private-hostile-secret-0123"
channels = ["orders/*"]
"#;

pub const NETLIFY: &[u8] = b"netlify-hostile-secret-0123";
pub const GH: &[u8] = b"gh-hostile-secret-0123456";
pub const STD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ZAP: &str = "zap-hostile-token-0123456";
pub const PRIVATE: &[u8] = b"private-hostile-secret-0123";
pub const GITHUB: &[u8] = b"github-hostile-secret-0123";
pub const VERCEL: &[u8] = b"vercel-hostile-secret-0123";
pub const STRIPE: &[u8] = b"whsec_stripe-hostile-secret-0123";
pub const SHOPIFY: &[u8] = b"shopify-hostile-secret-0123";
pub const SANITY: &[u8] = b"sanity-hostile-secret-0123";
pub const CONTENTFUL: &[u8] = b"contentful-hostile-secret-0123-contentful-hostile-secret-012345";
pub const STRAPI: &str = "strapi-hostile-token-0123";
pub const CUSTOM: &[u8] = b"custom-hostile-secret-0123";

/// Every channel a case could have written to: all must stay empty.
pub const CHANNELS: &[&str] = &[
    "deploys",
    "forms/guestbook",
    "news",
    "news/a",
    "zaps/a",
    "secret",
    "orders/1",
    "github",
    "vercel",
    "stripe",
    "shopify",
    "sanity",
    "contentful",
    "svix",
    "strapi",
    "cms/blogpost",
    "custom",
];

/// One HTTP request that must be refused.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    /// The JSON body's `error`.
    pub code: &'static str,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// An HS256 JWS over arbitrary header and claims (for forged Netlify tokens).
pub fn jws(secret: &[u8], header: &Value, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
}

fn sha(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// A POST case: what it sends and the status and code it must get.
fn post(name: &str, path: &str, headers: Vec<(String, String)>, body: &[u8], status: u16, code: &'static str) -> Case {
    Case { name: name.to_owned(), method: "POST", path: path.to_owned(), headers, body: body.to_vec(), status, code }
}

/// The webhook and history cases.
pub fn http_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut case = |name: &str, path: &str, headers: Vec<(String, String)>, body: &[u8], status: u16, code: &'static str| {
        out.push(post(name, path, headers, body, status, code))
    };
    let json_ct = || h("content-type", "application/json");
    let deploy = br#"{"id":"d1","state":"ready","branch":"main"}"#.to_vec();
    let nl = |body: &[u8]| vec![json_ct(), h("x-webhook-signature", &sign::netlify(NETLIFY, body))];
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    let claims = |extra: Value| {
        let mut c = json!({"iss": "netlify", "sha256": sha(&deploy)});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let with_jws = |t: String| vec![json_ct(), h("x-webhook-signature", &t)];

    // Netlify signatures.
    case("netlify: no signature", "/hooks/netlify", vec![json_ct()], &deploy, 401, "invalid_signature");
    case(
        "netlify: wrong secret",
        "/hooks/netlify",
        with_jws(jws(b"another-secret-0123456789", &hs, &claims(json!({})))),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: alg none",
        "/hooks/netlify",
        with_jws(format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
        )),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: HS512 header",
        "/hooks/netlify",
        with_jws(jws(NETLIFY, &json!({"alg":"HS512"}), &claims(json!({})))),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: body changed after signing",
        "/hooks/netlify",
        nl(&deploy),
        br#"{"id":"d1","state":"error","branch":"main"}"#,
        401,
        "invalid_signature",
    );
    case(
        "netlify: expired",
        "/hooks/netlify",
        with_jws(jws(NETLIFY, &hs, &claims(json!({"exp": now() - 3600})))),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: expired, fractional exp",
        "/hooks/netlify",
        with_jws(jws(NETLIFY, &hs, &claims(json!({"exp": now() as f64 - 3600.5})))),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: exp not a number",
        "/hooks/netlify",
        with_jws(jws(NETLIFY, &hs, &claims(json!({"exp": "never"})))),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: wrong issuer",
        "/hooks/netlify",
        with_jws(jws(NETLIFY, &hs, &claims(json!({"iss": "github"})))),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: no sha256 claim",
        "/hooks/netlify",
        with_jws(jws(NETLIFY, &hs, &json!({"iss": "netlify"}))),
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: not a JWS",
        "/hooks/netlify",
        vec![json_ct(), h("x-webhook-signature", "garbage")],
        &deploy,
        401,
        "invalid_signature",
    );
    case(
        "netlify: signature with four parts",
        "/hooks/netlify",
        vec![json_ct(), h("x-webhook-signature", "a.b.c.d")],
        &deploy,
        401,
        "invalid_signature",
    );

    // GitHub-style HMAC.
    let news = br#"{"channel":"news","event":"post","data":{"n":1}}"#.to_vec();
    let gh = |body: &[u8]| vec![json_ct(), h("x-hub-signature-256", &sign::github(GH, body))];
    case("hmac: no signature", "/hooks/gh", vec![json_ct()], &news, 401, "invalid_signature");
    case(
        "hmac: wrong secret",
        "/hooks/gh",
        vec![json_ct(), h("x-hub-signature-256", &sign::github(b"wrong-secret-0123456789", &news))],
        &news,
        401,
        "invalid_signature",
    );
    case(
        "hmac: sha1 prefix",
        "/hooks/gh",
        vec![json_ct(), h("x-hub-signature-256", &sign::github(GH, &news).replace("sha256=", "sha1="))],
        &news,
        401,
        "invalid_signature",
    );
    case("hmac: not hex", "/hooks/gh", vec![json_ct(), h("x-hub-signature-256", "sha256=zzzz")], &news, 401, "invalid_signature");
    let truncated = sign::github(GH, &news);
    case(
        "hmac: truncated signature",
        "/hooks/gh",
        vec![json_ct(), h("x-hub-signature-256", &truncated[..truncated.len() - 4])],
        &news,
        401,
        "invalid_signature",
    );
    case("hmac: empty signature", "/hooks/gh", vec![json_ct(), h("x-hub-signature-256", "")], &news, 401, "invalid_signature");

    // Standard Webhooks.
    let key = hookcast_core::config::decode_standard_secret(STD).expect("valid");
    let std_headers = |id: &str, ts: i64, sig: Option<String>| {
        let sig = sig.unwrap_or_else(|| sign::standard(key.expose(), id, ts, &news));
        vec![json_ct(), h("webhook-id", id), h("webhook-timestamp", &ts.to_string()), h("webhook-signature", &sig)]
    };
    case("standard: no headers", "/hooks/std", vec![json_ct()], &news, 401, "invalid_signature");
    case(
        "standard: timestamp 10 minutes old",
        "/hooks/std",
        std_headers("msg_1", now() - 600, None),
        &news,
        401,
        "invalid_signature",
    );
    case(
        "standard: timestamp 10 minutes ahead",
        "/hooks/std",
        std_headers("msg_1", now() + 600, None),
        &news,
        401,
        "invalid_signature",
    );
    let mut bad_ts = std_headers("msg_1", now(), None);
    bad_ts[2].1 = "soon".into();
    case("standard: timestamp not a number", "/hooks/std", bad_ts, &news, 401, "invalid_signature");
    let mut other_id = std_headers("msg_1", now(), None);
    other_id[1].1 = "msg_2".into();
    case("standard: signed for another id", "/hooks/std", other_id, &news, 401, "invalid_signature");
    case(
        "standard: only a v2 signature",
        "/hooks/std",
        std_headers("msg_1", now(), Some("v2,abc".into())),
        &news,
        401,
        "invalid_signature",
    );
    case(
        "standard: signature not base64",
        "/hooks/std",
        std_headers("msg_1", now(), Some("v1,!!!".into())),
        &news,
        401,
        "invalid_signature",
    );

    // Token.
    let zap_ok = || vec![json_ct(), h("x-hookcast-token", ZAP)];
    let zap_body = br#"{"channel":"zaps/a","event":"zap","data":{"title":"t"}}"#.to_vec();
    case("token: missing", "/hooks/zap", vec![json_ct()], &zap_body, 401, "invalid_signature");
    case(
        "token: wrong",
        "/hooks/zap",
        vec![json_ct(), h("x-hookcast-token", "zap-hostile-token-0123457")],
        &zap_body,
        401,
        "invalid_signature",
    );
    case(
        "token: prefix of the right one",
        "/hooks/zap",
        vec![json_ct(), h("x-hookcast-token", &ZAP[..10])],
        &zap_body,
        401,
        "invalid_signature",
    );

    // Bodies, signed correctly.
    let signed = |body: &[u8]| gh(body);
    for (name, body, status, code) in [
        ("body: not JSON", &b"{nope"[..], 400, "invalid_payload"),
        ("body: empty", b"", 400, "invalid_payload"),
        ("body: a JSON array", b"[1,2]", 400, "invalid_payload"),
        ("body: a JSON string", b"\"news\"", 400, "invalid_payload"),
        ("body: no channel", br#"{"event":"e"}"#, 400, "invalid_payload"),
        ("body: no event", br#"{"channel":"news"}"#, 400, "invalid_payload"),
        ("body: channel not a string", br#"{"channel":7,"event":"e"}"#, 400, "invalid_payload"),
        ("body: channel with a space", br#"{"channel":"a b","event":"e"}"#, 400, "invalid_payload"),
        ("body: channel with ..", br#"{"channel":"news/../x","event":"e"}"#, 400, "invalid_payload"),
        (
            "body: channel of 200 characters",
            format!(r#"{{"channel":"news/{}","event":"e"}}"#, "a".repeat(200)).leak().as_bytes(),
            400,
            "invalid_payload",
        ),
        ("body: event name with a space", br#"{"channel":"news","event":"a b"}"#, 400, "invalid_payload"),
        ("body: event name empty", br#"{"channel":"news","event":""}"#, 400, "invalid_payload"),
        ("body: channel not allowed", br#"{"channel":"secret","event":"e"}"#, 403, "channel_not_allowed"),
        (
            "body: integer beyond 64 bits",
            br#"{"channel":"news","event":"e","data":{"n":18446744073709551616}}"#,
            400,
            "invalid_payload",
        ),
        (
            "body: decimal finer than a double",
            br#"{"channel":"news","event":"e","data":{"n":0.1234567890123456789012}}"#,
            400,
            "invalid_payload",
        ),
        ("body: number that underflows", br#"{"channel":"news","event":"e","data":{"n":1e-400}}"#, 400, "invalid_payload"),
        ("body: number that overflows", br#"{"channel":"news","event":"e","data":{"n":1e400}}"#, 400, "invalid_payload"),
        ("body: invalid UTF-8 in JSON", b"{\"channel\":\"news\",\"event\":\"e\",\"data\":\"\xff\"}", 400, "invalid_payload"),
        (
            "body: event data over max_event_bytes",
            format!(r#"{{"channel":"news","event":"e","data":{{"title":"{}"}}}}"#, "x".repeat(5000)).leak().as_bytes(),
            413,
            "event_too_large",
        ),
    ] {
        case(name, "/hooks/gh", signed(body), body, status, code);
    }
    let big = vec![b' '; 70_000];
    case("body: over max_body_bytes", "/hooks/gh", signed(&big), &big, 413, "payload_too_large");
    let form = |body: &[u8]| {
        vec![h("content-type", "application/x-www-form-urlencoded"), h("x-hub-signature-256", &sign::github(GH, body))]
    };
    for (name, body) in [
        ("form: no channel", &b"event=e&x=1"[..]),
        ("form: invalid UTF-8 (percent-encoded)", b"channel=news&event=e&x=%FF%FE"),
        ("form: invalid UTF-8 (raw)", b"channel=news&event=e&x=\xff"),
        ("form: channel given twice", b"channel=news&channel=news/a&event=e"),
    ] {
        case(name, "/hooks/gh", form(body), body, 400, "invalid_payload");
    }
    let ct = |ct: &str, body: &[u8]| vec![h("content-type", ct), h("x-hub-signature-256", &sign::github(GH, body))];
    case("header: text/plain", "/hooks/gh", ct("text/plain", &news), &news, 415, "unsupported_media_type");
    case("header: multipart", "/hooks/gh", ct("multipart/form-data; boundary=x", &news), &news, 415, "unsupported_media_type");
    let mut gz = signed(&news);
    gz.push(h("content-encoding", "gzip"));
    case("header: Content-Encoding gzip", "/hooks/gh", gz, &news, 415, "unsupported_content_encoding");
    let mut zap_email = zap_ok();
    zap_email[0] = h("content-type", "application/json");
    case(
        "token: data not an object with a field allow-list",
        "/hooks/zap",
        zap_email,
        br#"{"channel":"zaps/a","event":"e","data":"a@b.example"}"#,
        400,
        "invalid_payload",
    );
    case(
        "token: channel outside zaps/*",
        "/hooks/zap",
        zap_ok(),
        br#"{"channel":"deploys","event":"deploy.succeeded"}"#,
        403,
        "channel_not_allowed",
    );

    // Netlify payloads, signed correctly.
    for (name, body) in [
        ("netlify: neither deploy nor form", &br#"{"hello":1}"#[..]),
        ("netlify: a JSON array", b"[]"),
        ("netlify: form name with no letter or digit", br#"{"form_name":"!!! ???","data":{}}"#),
        ("netlify: deploy state with only symbols", br#"{"id":"d","state":"!!!"}"#),
    ] {
        case(name, "/hooks/netlify", nl(body), body, 400, "invalid_payload");
    }

    // Paths and methods.
    case("path: unknown source", "/hooks/nope", gh(&news), &news, 404, "unknown_source");
    case("path: no source", "/hooks/", gh(&news), &news, 404, "not_found");
    case("path: nothing there", "/admin", vec![], b"", 404, "not_found");
    let mut get = |name: &str, path: &str, headers: Vec<(String, String)>, status: u16, code: &'static str| {
        out.push(Case { name: name.into(), method: "GET", path: path.into(), headers, body: vec![], status, code })
    };
    get("method: GET a webhook", "/hooks/gh", vec![], 405, "method_not_allowed");
    get("history: bad channel", "/channels/a%20b/events", vec![], 400, "invalid_channel");
    get("history: since not a number", "/channels/news/events?since=x", vec![], 400, "invalid_since");
    get("history: negative since", "/channels/news/events?since=-1", vec![], 400, "invalid_since");
    get("history: since twice", "/channels/news/events?since=1&since=2", vec![], 400, "invalid_query");
    get("history: an unknown parameter", "/channels/news/events?sinse=1", vec![], 400, "invalid_query");
    get("history: since that is not text", "/channels/news/events?since=%ff%fe", vec![], 400, "invalid_since");
    get("history: no /events", "/channels/news", vec![], 404, "not_found");
    get("history: private channel, no token", "/channels/orders/1/events", vec![], 403, "forbidden");
    let forged = hookcast_core::token::mint(
        b"not-the-private-secret-0123",
        &hookcast_core::token::Claims { channels: vec!["*".into()], exp: 4e9 },
    );
    get("history: private channel, forged token", &format!("/channels/orders/1/events?token={forged}"), vec![], 403, "forbidden");
    let stale = hookcast_core::token::mint(
        PRIVATE,
        &hookcast_core::token::Claims { channels: vec!["orders/*".into()], exp: now() as f64 - 0.5 },
    );
    get(
        "history: private channel, expired token",
        "/channels/orders/1/events",
        vec![h("authorization", &format!("Bearer {stale}"))],
        403,
        "forbidden",
    );
    let other =
        hookcast_core::token::mint(PRIVATE, &hookcast_core::token::Claims { channels: vec!["orders/2".into()], exp: 4e9 });
    get(
        "history: private channel, token for another",
        &format!("/channels/orders/1/events?token={other}"),
        vec![],
        403,
        "forbidden",
    );
    sender_cases(&mut out);
    out
}

/// Each sender kind's forgeries: wrong secret, stale timestamp, malformed
/// signature header, and a correctly signed body that is not the sender's.
fn sender_cases(out: &mut Vec<Case>) {
    let mut case = |name: &str, path: &str, headers: Vec<(String, String)>, body: &[u8], status: u16, code: &'static str| {
        out.push(post(name, path, headers, body, status, code))
    };
    let json_ct = || h("content-type", "application/json");
    let bad = "invalid_signature";
    let t = now();

    // GitHub.
    let release = br#"{"action":"published","release":{"id":1,"tag_name":"v1"},"repository":{"full_name":"o/r"}}"#;
    let gh = |secret: &[u8], body: &[u8], event: Option<&str>| {
        let mut v = vec![json_ct(), h("x-hub-signature-256", &sign::github(secret, body)), h("x-github-delivery", "d-1")];
        v.extend(event.map(|e| h("x-github-event", e)));
        v
    };
    case("github: wrong secret", "/hooks/github", gh(b"not-the-github-secret-0123", release, Some("release")), release, 401, bad);
    case("github: body changed after signing", "/hooks/github", gh(GITHUB, b"{}", Some("release")), release, 401, bad);
    let mut sha1 = gh(GITHUB, release, Some("release"));
    sha1[1] = h("x-hub-signature", &sign::github(GITHUB, release).replace("sha256=", "sha1="));
    case("github: only the SHA-1 header", "/hooks/github", sha1, release, 401, bad);
    case("github: no X-GitHub-Event", "/hooks/github", gh(GITHUB, release, None), release, 400, "invalid_payload");
    case("github: a JSON array, signed", "/hooks/github", gh(GITHUB, b"[]", Some("push")), b"[]", 400, "invalid_payload");
    let form = b"payload=%7B%7D";
    let mut form_h = gh(GITHUB, form, Some("push"));
    form_h[0] = h("content-type", "application/x-www-form-urlencoded");
    case("github: form-encoded payload, signed", "/hooks/github", form_h, form, 400, "invalid_payload");

    // Vercel.
    let deploy = br#"{"id":"uev_1","type":"deployment.created","payload":{"deployment":{"id":"dpl_1"}}}"#;
    let vc = |sig: String| vec![json_ct(), h("x-vercel-signature", &sig)];
    case("vercel: wrong secret", "/hooks/vercel", vc(sign::vercel(b"not-the-vercel-secret-01", deploy)), deploy, 401, bad);
    let sha256 = sign::github(VERCEL, deploy).replace("sha256=", "");
    case("vercel: HMAC-SHA256 instead of SHA-1", "/hooks/vercel", vc(sha256), deploy, 401, bad);
    case("vercel: signature not hex", "/hooks/vercel", vc("zz".repeat(20)), deploy, 401, bad);
    let no_type = br#"{"id":"uev_1","payload":{}}"#;
    case("vercel: signed body with no type", "/hooks/vercel", vc(sign::vercel(VERCEL, no_type)), no_type, 400, "invalid_payload");

    // Stripe.
    let event = br#"{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"id":"in_1","object":"invoice"}}}"#;
    let st = |v: String| vec![json_ct(), h("stripe-signature", &v)];
    case("stripe: wrong secret", "/hooks/stripe", st(sign::stripe(b"whsec_not-the-stripe-secret", t, event)), event, 401, bad);
    case("stripe: timestamp 10 minutes old", "/hooks/stripe", st(sign::stripe(STRIPE, t - 600, event)), event, 401, bad);
    let v1_only = sign::stripe(STRIPE, t, event).split(',').nth(1).unwrap_or_default().to_owned();
    case("stripe: no t=", "/hooks/stripe", st(v1_only), event, 401, bad);
    let retimed = sign::stripe(STRIPE, t - 600, event).replace(&format!("t={}", t - 600), &format!("t={t}"));
    case("stripe: timestamp moved after signing", "/hooks/stripe", st(retimed), event, 401, bad);
    let not_event = br#"{"id":"in_1","object":"invoice"}"#;
    case(
        "stripe: signed object that is no event",
        "/hooks/stripe",
        st(sign::stripe(STRIPE, t, not_event)),
        not_event,
        400,
        "invalid_payload",
    );

    // Shopify.
    let order = br##"{"id":820982911946154508,"name":"#9999","email":"jon@example.com"}"##;
    let sh = |sig: String, topic: bool| {
        let mut v = vec![json_ct(), h("x-shopify-hmac-sha256", &sig), h("x-shopify-webhook-id", "w-1")];
        if topic {
            v.push(h("x-shopify-topic", "orders/create"));
        }
        v
    };
    case(
        "shopify: wrong secret",
        "/hooks/shopify",
        sh(sign::shopify(b"not-the-shopify-secret-01", order), true),
        order,
        401,
        bad,
    );
    let hex_sig = sign::github(SHOPIFY, order).replace("sha256=", "");
    case("shopify: hex instead of base64", "/hooks/shopify", sh(hex_sig, true), order, 401, bad);
    case(
        "shopify: no X-Shopify-Topic",
        "/hooks/shopify",
        sh(sign::shopify(SHOPIFY, order), false),
        order,
        400,
        "invalid_payload",
    );

    // Sanity.
    let doc = br#"{"_id":"post-1","_type":"post","_rev":"r1"}"#;
    let sa = |v: String| vec![json_ct(), h("sanity-webhook-signature", &v)];
    case("sanity: wrong secret", "/hooks/sanity", sa(sign::sanity(b"not-the-sanity-secret-01", t * 1000, doc)), doc, 401, bad);
    case("sanity: timestamp 10 minutes old", "/hooks/sanity", sa(sign::sanity(SANITY, (t - 600) * 1000, doc)), doc, 401, bad);
    case("sanity: seconds, not milliseconds", "/hooks/sanity", sa(sign::sanity(SANITY, t, doc)), doc, 401, bad);
    case("sanity: no v1=", "/hooks/sanity", sa(format!("t={}", t * 1000)), doc, 401, bad);
    case(
        "sanity: a JSON array, signed",
        "/hooks/sanity",
        sa(sign::sanity(SANITY, t * 1000, b"[]")),
        b"[]",
        400,
        "invalid_payload",
    );

    // Contentful.
    let entry = br#"{"sys":{"id":"e1","type":"Entry","version":1,"contentType":{"sys":{"id":"blogpost"}}}}"#;
    let topic = ("X-Contentful-Topic", "ContentManagement.Entry.publish");
    let cf = |secret: &[u8], path: &str, ts: i64, body: &[u8]| {
        let mut v = vec![json_ct(), h(topic.0, topic.1)];
        v.extend(sign::contentful(secret, path, &[topic], ts, body));
        v
    };
    let ms = t * 1000;
    case("contentful: wrong secret", "/hooks/contentful", cf(&[b'x'; 64], "/hooks/contentful", ms, entry), entry, 401, bad);
    case(
        "contentful: a minute old",
        "/hooks/contentful",
        cf(CONTENTFUL, "/hooks/contentful", ms - 60_000, entry),
        entry,
        401,
        bad,
    );
    case("contentful: signed for another path", "/hooks/contentful", cf(CONTENTFUL, "/hooks/other", ms, entry), entry, 401, bad);
    let mut retopic = cf(CONTENTFUL, "/hooks/contentful", ms, entry);
    retopic[1] = h(topic.0, "ContentManagement.Entry.delete");
    case("contentful: topic changed after signing", "/hooks/contentful", retopic, entry, 401, bad);
    let mut uncovered = cf(CONTENTFUL, "/hooks/contentful", ms, entry);
    uncovered.retain(|(k, _)| k != "x-contentful-signed-headers");
    uncovered.push(h("x-contentful-signed-headers", "x-contentful-topic"));
    case("contentful: timestamp not signed", "/hooks/contentful", uncovered, entry, 401, bad);
    let no_sys = br#"{"fields":{}}"#;
    case(
        "contentful: signed body with no sys",
        "/hooks/contentful",
        cf(CONTENTFUL, "/hooks/contentful", ms, no_sys),
        no_sys,
        400,
        "invalid_payload",
    );
    let no_type = br#"{"sys":{"id":"e1","type":"Entry"}}"#;
    case(
        "contentful: a channel its template cannot build",
        "/hooks/cms",
        cf(CONTENTFUL, "/hooks/cms", ms, no_type),
        no_type,
        400,
        "invalid_payload",
    );

    // Svix (Clerk, Resend).
    let user = br#"{"type":"user.created","object":"event","data":{"id":"user_1","object":"user"}}"#;
    let key = hookcast_core::config::decode_standard_secret(STD).expect("valid");
    let sv = |prefix: &str, id: &str, ts: i64, body: &[u8]| {
        vec![
            json_ct(),
            h(&format!("{prefix}-id"), id),
            h(&format!("{prefix}-timestamp"), &ts.to_string()),
            h(&format!("{prefix}-signature"), &sign::standard(key.expose(), id, ts, body)),
        ]
    };
    case("svix: timestamp 10 minutes old", "/hooks/svix", sv("svix", "msg_1", t - 600, user), user, 401, bad);
    let mut other = sv("svix", "msg_1", t, user);
    other[1] = h("svix-id", "msg_2");
    case("svix: signed for another id", "/hooks/svix", other, user, 401, bad);
    let mut mixed = sv("svix", "msg_1", t, user);
    mixed[2] = h("webhook-timestamp", &t.to_string());
    case("svix: svix- and webhook- names mixed", "/hooks/svix", mixed, user, 401, bad);
    let wrong = decode_other_key();
    let forged = vec![
        json_ct(),
        h("webhook-id", "msg_1"),
        h("webhook-timestamp", &t.to_string()),
        h("webhook-signature", &sign::standard(&wrong, "msg_1", t, user)),
    ];
    case("svix: wrong secret", "/hooks/svix", forged, user, 401, bad);
    let no_type = br#"{"data":{"id":"user_1"}}"#;
    case("svix: signed body with no type", "/hooks/svix", sv("webhook", "msg_1", t, no_type), no_type, 400, "invalid_payload");

    // Strapi.
    let publish = br#"{"event":"entry.publish","model":"post","entry":{"id":1}}"#;
    let sp = |v: &str| vec![json_ct(), h("authorization", v)];
    case("strapi: no token", "/hooks/strapi", vec![json_ct()], publish, 401, bad);
    case("strapi: wrong token", "/hooks/strapi", sp("Bearer strapi-hostile-token-0124"), publish, 401, bad);
    case("strapi: token as Basic", "/hooks/strapi", sp(&format!("Basic {STRAPI}")), publish, 401, bad);
    let no_event = br#"{"model":"post","entry":{"id":1}}"#;
    case("strapi: body with no event", "/hooks/strapi", sp(&format!("Bearer {STRAPI}")), no_event, 400, "invalid_payload");

    // The general hmac: base64 HMAC-SHA1 after "v1=", over "<t>.<body>".
    let custom = br#"{"type":"thing.happened","id":"t1"}"#;
    let scheme = hookcast_core::config::HmacScheme {
        header: "x-signature".into(),
        prefix: "v1=".into(),
        encoding: hookcast_core::config::Encoding::Base64,
        algorithm: hookcast_core::config::Algorithm::Sha1,
        timestamp: Some(("x-timestamp".into(), std::time::Duration::from_secs(300))),
    };
    let hm = |secret: &[u8], ts: i64, sent_ts: i64, body: &[u8]| {
        vec![
            json_ct(),
            h("x-signature", &sign::hmac_scheme(secret, &scheme, Some(ts), body)),
            h("x-timestamp", &sent_ts.to_string()),
        ]
    };
    case("hmac (custom): wrong secret", "/hooks/custom", hm(b"not-the-custom-secret-01", t, t, custom), custom, 401, bad);
    case("hmac (custom): timestamp 10 minutes old", "/hooks/custom", hm(CUSTOM, t - 600, t - 600, custom), custom, 401, bad);
    case("hmac (custom): timestamp moved after signing", "/hooks/custom", hm(CUSTOM, t - 600, t, custom), custom, 401, bad);
    let mut no_prefix = hm(CUSTOM, t, t, custom);
    no_prefix[1].1 = no_prefix[1].1.trim_start_matches("v1=").to_owned();
    case("hmac (custom): no prefix", "/hooks/custom", no_prefix, custom, 401, bad);
    let no_type = br#"{"id":"t1"}"#;
    case(
        "hmac (custom): event template with no value",
        "/hooks/custom",
        hm(CUSTOM, t, t, no_type),
        no_type,
        400,
        "invalid_payload",
    );
}

/// A Standard Webhooks key that is not [`STD`]'s.
fn decode_other_key() -> Vec<u8> {
    b"another-standard-webhooks-key-0123".to_vec()
}

/// One client frame that must be refused with an error frame (`code`).
#[derive(Debug, Clone)]
pub struct FrameCase {
    pub name: &'static str,
    pub frame: String,
    pub code: &'static str,
}

/// Client frames answered with an error frame on both hosts.
pub fn frame_cases() -> Vec<FrameCase> {
    let forged = hookcast_core::token::mint(
        b"not-the-private-secret-0123",
        &hookcast_core::token::Claims { channels: vec!["*".into()], exp: 4e9 },
    );
    let stale =
        hookcast_core::token::mint(PRIVATE, &hookcast_core::token::Claims { channels: vec!["orders/*".into()], exp: 1.5 });
    let c = |name, frame: Value, code| FrameCase { name, frame: frame.to_string(), code };
    vec![
        FrameCase { name: "frame: not JSON", frame: "not json".into(), code: "bad_json" },
        FrameCase { name: "frame: empty", frame: String::new(), code: "bad_json" },
        c("frame: a JSON array", json!([1]), "bad_message"),
        c("frame: null", Value::Null, "bad_message"),
        c("frame: no action", json!({"channel": "news"}), "bad_message"),
        c("frame: unknown action", json!({"action": "publish", "channel": "news"}), "unknown_action"),
        c("frame: subscribe without channel", json!({"action": "subscribe"}), "bad_message"),
        c("frame: subscribe to a bad channel", json!({"action": "subscribe", "channel": "../etc"}), "invalid_channel"),
        c("frame: since negative", json!({"action": "subscribe", "channel": "news", "since": -1}), "bad_message"),
        c("frame: since a string", json!({"action": "subscribe", "channel": "news", "since": "1"}), "bad_message"),
        c("frame: private channel, no token", json!({"action": "subscribe", "channel": "orders/1"}), "forbidden"),
        c(
            "frame: private channel, forged token",
            json!({"action": "subscribe", "channel": "orders/1", "token": forged}),
            "forbidden",
        ),
        c(
            "frame: private channel, expired token",
            json!({"action": "subscribe", "channel": "orders/1", "token": stale}),
            "forbidden",
        ),
        c("frame: occupancy without subscribing", json!({"action": "occupancy", "channel": "news"}), "not_subscribed"),
    ]
}
