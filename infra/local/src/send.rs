//! `hookcast send`: builds and signs a webhook exactly as its real sender
//! would, and posts it.

use crate::error::Error;
use std::time::SystemTime;

use hookcast_core::senders::{self, BodyShape, Outgoing, SignError, Spec, KINDS};
use rand::RngCore;
use serde_json::{json, Map, Value};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The webhook URL, e.g. http://127.0.0.1:8787/hooks/netlify
    #[arg(long)]
    pub url: String,
    /// How to sign: as Netlify (JWS), GitHub-style HMAC, Standard Webhooks, a token header,
    /// or as a sender itself (github, vercel, stripe, shopify, sanity, contentful, svix, strapi).
    #[arg(long, default_value = "netlify", value_parser = kind_parser())]
    pub kind: &'static Spec,
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

/// `--kind`: one of the kinds hookcast knows ([`KINDS`], listed in `--help`).
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = &'static Spec> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(KINDS).map(|name| senders::spec(&name).expect("one of KINDS"))
}

/// Why `hookcast send` cannot build its request; each says which flag.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("--body {}: {source}", path.display())]
    Body { path: std::path::PathBuf, source: std::io::Error },
    #[error("--field {0:?} is not NAME=VALUE")]
    Field(String),
    #[error("--data is not JSON: {0}")]
    Data(serde_json::Error),
    #[error("netlify: pass --deploy STATE or --form NAME")]
    NetlifyPayload,
    #[error("--{0} is required for generic events")]
    Generic(&'static str),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// What the flags ask a kind to sign.
fn outgoing<'a>(a: &'a SendArgs, random_id: &'a dyn Fn(&str) -> String) -> Outgoing<'a> {
    Outgoing {
        secret: &a.secret,
        event: a.event.as_deref(),
        url: &a.url,
        path: a.path.as_deref(),
        header: &a.header,
        signature_header: a.signature_header.as_deref(),
        prefix: a.prefix.as_deref(),
        encoding: a.encoding.as_deref(),
        algorithm: a.algorithm.as_deref(),
        timestamp_header: a.timestamp_header.as_deref(),
        now: SystemTime::now(),
        random_id,
    }
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

fn parse_fields(fields: &[String]) -> Result<Vec<(String, String)>, SendError> {
    fields
        .iter()
        .map(|f| f.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| SendError::Field(f.clone())))
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
    make(a).map_err(|e| Error::Usage(e.to_string()))
}

fn read_body(path: &std::path::Path) -> Result<Vec<u8>, SendError> {
    std::fs::read(path).map_err(|source| SendError::Body { path: path.to_owned(), source })
}

fn make(a: &SendArgs) -> Result<Built, SendError> {
    let out = outgoing(a, &random_id);
    let kind = a.kind;
    if matches!(kind.body, BodyShape::Native) {
        let body = match &a.body {
            Some(path) => read_body(path)?,
            None => (kind.sample)(&out).to_string().into_bytes(),
        };
        return Ok(Built { content_type: kind.content_type, headers: (kind.sign)(&out, &body)?, body });
    }
    let fields = parse_fields(&a.fields)?;
    let (content_type, body) = match (&a.body, kind.body) {
        (Some(path), _) => ("application/json", read_body(path)?),
        (None, BodyShape::Own { .. }) => ("application/json", netlify_payload(a, &fields)?.to_string().into_bytes()),
        (None, _) => envelope(a, fields)?,
    };
    Ok(Built { content_type, headers: (kind.sign)(&out, &body)?, body })
}

/// A Netlify deploy or form notification, as `--deploy` or `--form` say.
fn netlify_payload(a: &SendArgs, fields: &[(String, String)]) -> Result<Value, SendError> {
    match (&a.deploy, &a.form) {
        (Some(state), None) => Ok(netlify_deploy(state)),
        (None, Some(form)) => Ok(netlify_form(form, fields)),
        _ => Err(SendError::NetlifyPayload),
    }
}

/// `{"channel","event","data"}`, or its form-encoded fields as Zapier sends them.
fn envelope(a: &SendArgs, fields: Vec<(String, String)>) -> Result<(&'static str, Vec<u8>), SendError> {
    let channel = a.channel.clone().ok_or(SendError::Generic("channel"))?;
    let event = a.event.clone().ok_or(SendError::Generic("event"))?;
    if a.form_encoded {
        let mut pairs = vec![("channel".to_owned(), channel), ("event".to_owned(), event)];
        pairs.extend(fields);
        return Ok(("application/x-www-form-urlencoded", serde_urlencoded_pairs(&pairs).into_bytes()));
    }
    let mut data = match &a.data {
        Some(d) => serde_json::from_str(d).map_err(SendError::Data)?,
        None => json!({}),
    };
    if let Some(obj) = data.as_object_mut() {
        for (k, v) in fields {
            obj.insert(k, json!(v));
        }
    }
    Ok(("application/json", json!({"channel": channel, "event": event, "data": data}).to_string().into_bytes()))
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
