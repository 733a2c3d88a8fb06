//! `hookcast send`: builds and signs a webhook exactly as its real sender
//! would, and posts it.

use crate::error::Error;
use std::time::{SystemTime, UNIX_EPOCH};

use hookcast_core::config::decode_standard_secret;
use hookcast_core::sign;
use rand::RngCore;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Netlify,
    Hmac,
    Standard,
    Token,
    Github,
    Vercel,
    Stripe,
    Shopify,
    Sanity,
    Contentful,
    Svix,
    Strapi,
}

impl Kind {
    /// Kinds whose body is the sender's own JSON (a sample, or `--body`).
    fn native(self) -> bool {
        !matches!(self, Kind::Netlify | Kind::Hmac | Kind::Standard | Kind::Token)
    }
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The webhook URL, e.g. http://127.0.0.1:8787/hooks/netlify
    #[arg(long)]
    pub url: String,
    /// How to sign: as Netlify (JWS), GitHub-style HMAC, Standard Webhooks, a token header,
    /// or as a sender itself (github, vercel, stripe, shopify, sanity, contentful, svix, strapi).
    #[arg(long, value_enum, default_value = "netlify")]
    pub kind: Kind,
    /// The source's secret.
    #[arg(long, env = "HOOKCAST_SEND_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Netlify deploy notification: succeeded, started, failed, or a raw Netlify state.
    #[arg(long, conflicts_with = "form")]
    pub deploy: Option<String>,
    /// Netlify form submission for this form name.
    #[arg(long)]
    pub form: Option<String>,
    /// Generic events: the channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Generic events: the event name. Sender kinds: the sender's event type
    /// (GitHub's X-GitHub-Event, Shopify's topic, Contentful's topic, Sanity's
    /// operation; the sample body's type for Stripe, Vercel, Svix, Strapi).
    #[arg(long)]
    pub event: Option<String>,
    /// A file holding the body to send as is (a payload the sender sent);
    /// sender kinds without it send a small sample of that sender's body.
    #[arg(long, value_name = "FILE")]
    pub body: Option<std::path::PathBuf>,
    /// Contentful: the request path it signs (default: the URL's path).
    #[arg(long)]
    pub path: Option<String>,
    /// hmac: the signature's header (default GitHub's X-Hub-Signature-256).
    #[arg(long)]
    pub signature_header: Option<String>,
    /// hmac: text before the signature (default "sha256=" with GitHub's header, else none).
    #[arg(long)]
    pub prefix: Option<String>,
    /// hmac: hex (default) or base64.
    #[arg(long, value_parser = ["hex", "base64"])]
    pub encoding: Option<String>,
    /// hmac: sha256 (default) or sha1.
    #[arg(long, value_parser = ["sha256", "sha1"])]
    pub algorithm: Option<String>,
    /// hmac: send the current unix time in this header and sign "<time>.<body>".
    #[arg(long)]
    pub timestamp_header: Option<String>,
    /// Generic events: data as a JSON value.
    #[arg(long)]
    pub data: Option<String>,
    /// A field, name=value (form fields for --form; data fields otherwise). Repeatable.
    #[arg(long = "field", value_name = "NAME=VALUE")]
    pub fields: Vec<String>,
    /// Send application/x-www-form-urlencoded, as Zapier does by default.
    #[arg(long)]
    pub form_encoded: bool,
    /// Token sources: the header to carry the secret (Strapi: authorization, as Bearer).
    #[arg(long, default_value = "x-hookcast-token")]
    pub header: String,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The generic hmac kind's headers: GitHub's form unless the flags say otherwise,
/// read as the source's `header`, `prefix`, `encoding`, `algorithm`, `timestamp_header`.
fn hmac_headers(a: &SendArgs, body: &[u8]) -> Result<Vec<(String, String)>, String> {
    use hookcast_core::config::{Algorithm, Encoding, HmacScheme};
    let github = HmacScheme::github();
    let scheme = HmacScheme {
        header: a.signature_header.clone().unwrap_or(github.header),
        prefix: a.prefix.clone().unwrap_or_else(|| if a.signature_header.is_none() { github.prefix } else { String::new() }),
        encoding: if a.encoding.as_deref() == Some("base64") { Encoding::Base64 } else { Encoding::Hex },
        algorithm: if a.algorithm.as_deref() == Some("sha1") { Algorithm::Sha1 } else { Algorithm::Sha256 },
        timestamp: None,
    };
    let ts = a.timestamp_header.as_ref().map(|h| (h.clone(), unix_now()));
    let mut headers =
        vec![(scheme.header.clone(), sign::hmac_scheme(a.secret.as_bytes(), &scheme, ts.as_ref().map(|t| t.1), body))];
    headers.extend(ts.map(|(h, t)| (h, t.to_string())));
    Ok(headers)
}

/// A small body of each sender's own shape; `event` is its type where the body carries one.
pub fn sample(kind: Kind, event: Option<&str>) -> Value {
    let n = u32::from_str_radix(&random_id("")[..8], 16).unwrap_or(1);
    match kind {
        Kind::Github => json!({"action": "published",
            "release": {"id": n, "tag_name": "v1.0.0", "name": "v1.0.0", "prerelease": false},
            "repository": {"id": 1, "full_name": "you/site"}}),
        Kind::Vercel => json!({"id": random_id("uev_"), "type": event.unwrap_or("deployment.succeeded"),
            "createdAt": unix_now() * 1000,
            "payload": {"deployment": {"id": random_id("dpl_"), "name": "site", "url": "site-git-main.vercel.app"},
                        "target": "production", "project": {"id": "prj_hookcast"}}}),
        Kind::Stripe => json!({"id": random_id("evt_"), "object": "event", "type": event.unwrap_or("checkout.session.completed"),
            "created": unix_now(), "livemode": false,
            "data": {"object": {"id": random_id("cs_test_"), "object": "checkout.session"}}}),
        Kind::Shopify => json!({"id": n, "name": "#1001", "admin_graphql_api_id": format!("gid://shopify/Order/{n}")}),
        Kind::Sanity => json!({"_id": "post-1", "_type": "post", "_rev": random_id(""), "title": "Hello"}),
        Kind::Contentful => json!({"sys": {"id": "entry1", "type": "Entry", "version": 1 + n % 100,
            "contentType": {"sys": {"id": "blogpost", "type": "Link", "linkType": "ContentType"}}},
            "fields": {"title": {"en-US": "Hello"}}}),
        Kind::Svix => json!({"type": event.unwrap_or("user.created"), "object": "event",
            "data": {"id": random_id("user_"), "object": "user"}}),
        Kind::Strapi => json!({"event": event.unwrap_or("entry.publish"), "createdAt": now_rfc3339(), "model": "post",
            "entry": {"id": n % 1000, "title": "Hello"}}),
        Kind::Netlify | Kind::Hmac | Kind::Standard | Kind::Token => json!({}),
    }
}

/// The headers each sender sends with `body`, signed as it signs.
fn sender_headers(a: &SendArgs, body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let secret = a.secret.as_bytes();
    let h = |k: &str, v: String| (k.to_owned(), v);
    Ok(match a.kind {
        Kind::Github => vec![
            h("X-Hub-Signature-256", sign::github(secret, body)),
            h("X-GitHub-Event", a.event.clone().unwrap_or_else(|| "release".into())),
            h("X-GitHub-Delivery", random_id("")),
        ],
        Kind::Vercel => vec![h("x-vercel-signature", sign::vercel(secret, body))],
        Kind::Stripe => vec![h("Stripe-Signature", sign::stripe(secret, unix_now(), body))],
        Kind::Shopify => vec![
            h("X-Shopify-Hmac-Sha256", sign::shopify(secret, body)),
            h("X-Shopify-Topic", a.event.clone().unwrap_or_else(|| "orders/create".into())),
            h("X-Shopify-Webhook-Id", random_id("")),
            h("X-Shopify-Triggered-At", now_rfc3339()),
        ],
        Kind::Sanity => {
            let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            vec![
                h("sanity-webhook-signature", sign::sanity(secret, ms, body)),
                h("sanity-operation", a.event.clone().unwrap_or_else(|| "update".into())),
                h("idempotency-key", random_id("msg-")),
            ]
        }
        Kind::Contentful => {
            let path = match &a.path {
                Some(p) => p.clone(),
                None => {
                    a.url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())).unwrap_or("/".into())
                }
            };
            let topic = a.event.clone().unwrap_or_else(|| "ContentManagement.Entry.publish".into());
            let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let mut v = sign::contentful(secret, &path, &[("x-contentful-topic", &topic)], ms, body);
            v.push(h("X-Contentful-Topic", topic));
            v.push(h("X-Contentful-Idempotency-Key", random_id("")));
            v
        }
        Kind::Svix => {
            let key = decode_standard_secret(&a.secret)?;
            let id = random_id("msg_");
            let ts = unix_now();
            vec![
                h("svix-signature", sign::standard(key.expose(), &id, ts, body)),
                h("svix-id", id),
                h("svix-timestamp", ts.to_string()),
            ]
        }
        Kind::Strapi => {
            let header = if a.header == "x-hookcast-token" { "Authorization".to_owned() } else { a.header.clone() };
            let event = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["event"].as_str().map(str::to_owned));
            let mut v = vec![(header, format!("Bearer {}", a.secret))];
            v.extend(event.map(|e| h("X-Strapi-Event", e)));
            v
        }
        Kind::Netlify | Kind::Hmac | Kind::Standard | Kind::Token => vec![],
    })
}

pub struct Built {
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

fn now_rfc3339() -> String {
    humantime_like(SystemTime::now())
}

fn humantime_like(t: SystemTime) -> String {
    hookcast_core::clock::format_at(t)
}

fn parse_fields(fields: &[String]) -> Result<Vec<(String, String)>, String> {
    fields
        .iter()
        .map(|f| {
            f.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("--field {f:?} is not NAME=VALUE"))
        })
        .collect()
}

/// A deploy notification with the fields Netlify sends.
pub fn netlify_deploy(state: &str) -> Value {
    let state = match state {
        "succeeded" => "ready",
        "started" => "building",
        "failed" => "error",
        other => other,
    };
    let id = random_id("")[..24].to_owned();
    let now = now_rfc3339();
    json!({
        "id": id, "site_id": "00000000-hookcast-dev-site", "build_id": id, "state": state,
        "name": "hookcast-dev", "url": "http://hookcast-dev.netlify.app", "ssl_url": "https://hookcast-dev.netlify.app",
        "admin_url": "https://app.netlify.com/sites/hookcast-dev",
        "deploy_url": format!("http://{id}--hookcast-dev.netlify.app"),
        "deploy_ssl_url": format!("https://{id}--hookcast-dev.netlify.app"),
        "created_at": now, "updated_at": now, "published_at": if state == "ready" { json!(now) } else { Value::Null },
        "error_message": if state == "error" { json!("Build script returned non-zero exit code: 2") } else { Value::Null },
        "branch": "main", "context": "production", "commit_ref": &id[..7], "title": "Sent by hookcast send",
        "commit_url": null, "review_id": null, "review_url": null, "skipped": null, "locked": null,
        "deploy_time": 12, "manual_deploy": false, "framework": "unknown", "committer": "hookcast"
    })
}

/// A form submission with the fields Netlify sends.
pub fn netlify_form(form: &str, fields: &[(String, String)]) -> Value {
    let data: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .chain([
            ("ip".to_owned(), json!("127.0.0.1")),
            ("user_agent".to_owned(), json!("hookcast send")),
            ("referrer".to_owned(), json!("http://127.0.0.1/")),
        ])
        .collect();
    let human: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "number": 1, "title": null, "email": null, "name": fields.iter().find(|(k, _)| k == "name").map(|(_, v)| v),
        "first_name": null, "last_name": null, "company": null, "summary": "", "body": "",
        "data": data, "created_at": now_rfc3339(), "human_fields": human, "ordered_human_fields": [],
        "id": random_id("")[..24].to_owned(), "form_id": "00000000hookcastform", "site_url": "https://hookcast-dev.netlify.app",
        "form_name": form
    })
}

pub fn build(a: &SendArgs) -> Result<Built, Error> {
    make(a).map_err(Error::Usage)
}

fn make(a: &SendArgs) -> Result<Built, String> {
    if a.kind.native() {
        let body = match &a.body {
            Some(path) => std::fs::read(path).map_err(|e| format!("--body {}: {e}", path.display()))?,
            None => sample(a.kind, a.event.as_deref()).to_string().into_bytes(),
        };
        let content_type =
            if a.kind == Kind::Contentful { "application/vnd.contentful.management.v1+json" } else { "application/json" };
        return Ok(Built { content_type, headers: sender_headers(a, &body)?, body });
    }
    let fields = parse_fields(&a.fields)?;
    let (content_type, body): (&'static str, Vec<u8>) = if let Some(path) = &a.body {
        ("application/json", std::fs::read(path).map_err(|e| format!("--body {}: {e}", path.display()))?)
    } else if a.kind == Kind::Netlify {
        let payload = match (&a.deploy, &a.form) {
            (Some(state), None) => netlify_deploy(state),
            (None, Some(form)) => netlify_form(form, &fields),
            _ => return Err("netlify: pass --deploy STATE or --form NAME".into()),
        };
        ("application/json", payload.to_string().into_bytes())
    } else {
        let channel = a.channel.clone().ok_or("--channel is required for generic events")?;
        let event = a.event.clone().ok_or("--event is required for generic events")?;
        if a.form_encoded {
            let mut pairs = vec![("channel".to_owned(), channel), ("event".to_owned(), event)];
            pairs.extend(fields);
            ("application/x-www-form-urlencoded", serde_urlencoded_pairs(&pairs).into_bytes())
        } else {
            let mut data = match &a.data {
                Some(d) => serde_json::from_str(d).map_err(|e| format!("--data is not JSON: {e}"))?,
                None => json!({}),
            };
            if let Some(obj) = data.as_object_mut() {
                for (k, v) in fields {
                    obj.insert(k, json!(v));
                }
            }
            ("application/json", json!({"channel": channel, "event": event, "data": data}).to_string().into_bytes())
        }
    };
    let secret = a.secret.as_bytes();
    let headers = match a.kind {
        Kind::Netlify => vec![("X-Webhook-Signature".into(), sign::netlify(secret, &body))],
        Kind::Hmac => hmac_headers(a, &body)?,
        Kind::Standard => {
            let key = decode_standard_secret(&a.secret)?;
            let id = random_id("msg_");
            let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            vec![
                ("webhook-signature".into(), sign::standard(key.expose(), &id, ts, &body)),
                ("webhook-id".into(), id),
                ("webhook-timestamp".into(), ts.to_string()),
            ]
        }
        Kind::Token => vec![(a.header.clone(), a.secret.clone())],
        _ => sender_headers(a, &body)?,
    };
    Ok(Built { content_type, headers, body })
}

fn serde_urlencoded_pairs(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v))).collect::<Vec<_>>().join("&")
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Posts and prints the answer; Ok(true) on 2xx.
pub async fn run(a: SendArgs) -> Result<bool, Error> {
    let built = build(&a)?;
    let client = reqwest::Client::new();
    let mut req = client.post(&a.url).header("content-type", built.content_type).body(built.body);
    for (k, v) in &built.headers {
        req = req.header(k, v);
    }
    let res = req.send().await.map_err(|e| Error::Network(format!("could not reach {}: {e}", a.url)))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    println!("{} {}", status.as_u16(), text);
    Ok(status.is_success())
}
