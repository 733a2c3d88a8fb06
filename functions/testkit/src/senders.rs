//! The senders' proof, shared by the hosts' end-to-end tests: a
//! configuration a user would write for every sender kind ([`config_toml`],
//! or a subset on one line: [`sources_config`]),
//! one case per real payload in `tests/fixtures/senders` with the channel,
//! event and data a page must receive ([`cases`]), and two signers that are
//! not hookcast's: `tests/senders/sign.py` (Python's standard library and
//! clock, [`sign`]) and `tests/senders/sdk-sign.js` (the senders' own npm
//! SDKs, [`sdk_sign`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Contentful's secrets are 64 characters; its toolkit refuses others.
pub const CONTENTFUL_SECRET: &str = "cf5ecret-0123456789abcdef0123456789abcdef0123456789abcdef0123456";

/// Each source a user would write for these senders, as the inside of a
/// TOML inline table (so a subset fits on one line).
const SOURCES: &[(&str, &str)] = &[
    (
        "github",
        r#"kind = "github", secret = "github-e2e-secret-0123456789", channel = "releases", events = ["release.*"], fields = ["release.tag_name", "repository.full_name"]"#,
    ),
    ("gh-deploys", r#"kind = "github", secret = "github-e2e-secret-0123456789""#),
    (
        "gh-routes",
        r#"kind = "github", secret = "github-e2e-secret-0123456789", channel = "gh-other", channel_by_event = { "release.*" = "releases/{repository.name}", "push" = "pushes" }, fields = ["repository.full_name"]"#,
    ),
    (
        "netlify",
        r#"kind = "netlify", secret = "netlify-e2e-secret-0123456789", forms = { contact = { fields = ["name", "message"] } }"#,
    ),
    ("vercel", r#"kind = "vercel", secret = "AiK52QASLJXmCXX3X9gO2Zyh""#),
    ("stripe", r#"kind = "stripe", secret = "whsec_stripe-e2e-secret-0123456789", channel = "billing/{data.object.object}""#),
    ("shopify", r#"kind = "shopify", secret = "shopify-e2e-secret-0123456789", channel = "orders""#),
    ("sanity", r#"kind = "sanity", secret = "sanity-e2e-secret-0123456789", channel = "content/{_type}""#),
    ("contentful", r#"kind = "contentful", secret = "CONTENTFUL_SECRET", channel = "cms/{sys.contentType.sys.id}""#),
    ("clerk", r#"kind = "svix", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", channel = "users""#),
    (
        "std",
        r#"kind = "standard", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", channel = "std", event = "{type}", fields = ["type"]"#,
    ),
    ("strapi", r#"kind = "strapi", secret = "strapi-e2e-token-0123456789", channel = "strapi/{model}""#),
    (
        "custom",
        r#"kind = "hmac", secret = "custom-e2e-secret-0123456789", header = "x-signature", prefix = "v1=", encoding = "base64", algorithm = "sha1", timestamp_header = "x-timestamp", channel = "custom", event = "{type}", fields = ["id", "type"]"#,
    ),
    ("zapier", r#"kind = "token", secret = "zapier-e2e-token-0123456789", channels = ["news/*"], fields = ["title", "url"]"#),
];

/// Deliveries the `github` source (`events = ["release.*"]`) takes in and
/// publishes nothing of: a real `push` (not a release) and GitHub's `ping`
/// (`tests/fixtures/senders/github/ping.json`), each with its headers.
pub fn ignored_by_github() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("github/push.json", vec![("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "9b2c6e5e-0000-11ef-8a1a-push00000001")]),
        ("github/ping.json", vec![("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "9b2c6e5e-0000-11ef-8a1a-ping00000001")]),
    ]
}

/// The configuration a user would write for these senders: every source.
pub fn config_toml() -> String {
    sources_config(&SOURCES.iter().map(|(name, _)| *name).collect::<Vec<_>>())
}

/// Only the named sources, on one line (`sources = { … }`), secrets written in.
pub fn sources_config(names: &[&str]) -> String {
    let tables: Vec<String> = SOURCES
        .iter()
        .filter(|(name, _)| names.contains(name))
        .map(|(name, table)| format!("{name} = {{ {} }}", table.replace("CONTENTFUL_SECRET", CONTENTFUL_SECRET)))
        .collect();
    assert_eq!(tables.len(), names.len(), "every name is one of the sources: {names:?}");
    format!("sources = {{ {} }}", tables.join(", "))
}

/// The private channel of [`one_file`]: Shopify's orders, read with a token.
pub const PRIVATE_CHANNEL: &str = "orders";

/// The one `hookcast.toml` a user keeps for both hosts: every source, each
/// secret named by `secret_env` (never written in it), a private channel
/// and state rules. [`secret_env_vars`] are the variables it names, as the
/// machine that runs `hookcast serve` or `hookcast secrets` has them.
pub fn one_file() -> String {
    let sources: Vec<String> = SOURCES
        .iter()
        .map(|(name, table)| {
            let (var, _) = secret_var(name, table);
            let written = format!("secret = \"{}\"", secret_literal(table));
            format!("{name} = {{ {} }}", table.replace(&written, &format!("secret_env = \"{var}\"")))
        })
        .collect();
    format!(
        "allowed_origins = [\"http://127.0.0.1\", \"http://127.0.0.1:*\"]\nsources = {{ {} }}\n\
         [private]\nchannels = [\"{PRIVATE_CHANNEL}\"]\nsecret_env = \"HOOKCAST_E2E_SUBSCRIBE\"\n\
         [state]\n\"releases\" = \"last\"\n\"billing/*\" = \"merge\"\n",
        sources.join(", ")
    )
}

/// The subscribe secret [`one_file`]'s `[private]` names.
pub const SUBSCRIBE_SECRET: &str = "subscribe-e2e-secret-0123456789";

/// Every variable [`one_file`] names, with its value.
pub fn secret_env_vars() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = SOURCES.iter().map(|(name, table)| secret_var(name, table)).collect();
    vars.push(("HOOKCAST_E2E_SUBSCRIBE".into(), SUBSCRIBE_SECRET.into()));
    vars
}

fn secret_literal(table: &str) -> &str {
    let at = table.find("secret = \"").expect("every source has a secret") + "secret = \"".len();
    &table[at..at + table[at..].find('"').unwrap()]
}

/// A source's `secret_env` variable and the secret it holds.
fn secret_var(name: &str, table: &str) -> (String, String) {
    let secret = secret_literal(table);
    let secret = if secret == "CONTENTFUL_SECRET" { CONTENTFUL_SECRET } else { secret };
    (format!("HOOKCAST_E2E_{}", name.to_ascii_uppercase().replace('-', "_")), secret.to_owned())
}

pub fn fixture(path: &str) -> PathBuf {
    root().join("tests/fixtures/senders").join(path)
}

/// Headers from the independent signer.
pub fn sign(scheme: &str, secret: &str, body: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    run_signer("python3", "sign.py", scheme, secret, body, extra)
}

/// Headers from the sender's own SDK (npm devDependencies: `npm ci`).
pub fn sdk_sign(sdk: &str, secret: &str, body: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    assert!(root().join("node_modules/svix").exists(), "the senders' SDKs are npm devDependencies: run `npm ci` at the top");
    run_signer("node", "sdk-sign.js", sdk, secret, body, extra)
}

fn run_signer(
    program: &str,
    script: &str,
    scheme: &str,
    secret: &str,
    body: &Path,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let script = root().join("tests/senders").join(script);
    let mut cmd = Command::new(program);
    cmd.arg(script).arg(scheme).arg(secret).arg(body);
    for (k, v) in extra {
        cmd.arg(format!("{k}={v}"));
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{program} runs the signer: {e}"));
    assert!(out.status.success(), "{program} {scheme}: {}", String::from_utf8_lossy(&out.stderr));
    let headers: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    headers.into_iter().map(|(k, v)| (k, v.as_str().unwrap().to_owned())).collect()
}

/// One real payload, the source it is posted to, and what a page receives.
pub struct Case {
    /// The source in [`config_toml`]: `POST /hooks/<source>`.
    pub source: &'static str,
    /// The signers' scheme name (`svix` for Clerk, `webhook` for Standard Webhooks names).
    pub scheme: &'static str,
    pub secret: &'static str,
    pub fixture: &'static str,
    pub content_type: &'static str,
    /// Headers the sender sends beside its signature (event type, delivery
    /// id); `path` is Contentful's signed path, not a header.
    pub extra: Vec<(&'static str, &'static str)>,
    pub channel: &'static str,
    pub event: &'static str,
    pub data: Value,
}

/// Every kind's real payloads, as [`config_toml`] maps them.
pub fn cases() -> Vec<Case> {
    let c = |source, scheme, secret, fixture, extra, channel, event, data| Case {
        source,
        scheme,
        secret,
        fixture,
        content_type: "application/json",
        extra,
        channel,
        event,
        data,
    };
    vec![
        c(
            "github",
            "github",
            "github-e2e-secret-0123456789",
            "github/release-published.json",
            vec![("X-GitHub-Event", "release"), ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")],
            "releases",
            "release.published",
            json!({"release": {"tag_name": "0.0.1"}, "repository": {"full_name": "Codertocat/Hello-World"}}),
        ),
        // One source, a channel per event pattern: a release to its
        // repository's releases channel, a push to pushes.
        c(
            "gh-routes",
            "github",
            "github-e2e-secret-0123456789",
            "github/release-published.json",
            vec![("X-GitHub-Event", "release"), ("X-GitHub-Delivery", "5e1f0000-cc78-11e3-81ab-routes000001")],
            "releases/Hello-World",
            "release.published",
            json!({"repository": {"full_name": "Codertocat/Hello-World"}}),
        ),
        c(
            "gh-routes",
            "github",
            "github-e2e-secret-0123456789",
            "github/push.json",
            vec![("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "5e1f0000-cc78-11e3-81ab-routes000002")],
            "pushes",
            "push",
            json!({"repository": {"full_name": "Codertocat/Hello-World"}}),
        ),
        c(
            "gh-deploys",
            "github",
            "github-e2e-secret-0123456789",
            "github/deployment_status.json",
            vec![("X-GitHub-Event", "deployment_status"), ("X-GitHub-Delivery", "8a1b2c3d")],
            "gh-deploys",
            "deployment_status.created",
            json!({
                "action": "created",
                "id": 145988746,
                "deployment": {"environment": "production", "ref": "master", "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"},
                "deployment_status": {"id": 209916254, "state": "success", "environment": "production"},
                "repository": {"id": 186853002, "full_name": "Codertocat/Hello-World"}
            }),
        ),
        c(
            "netlify",
            "netlify",
            "netlify-e2e-secret-0123456789",
            "netlify/deploy-succeeded.json",
            vec![],
            "deploys",
            "deploy.succeeded",
            json!({
                "id": "juniper montage", "state": "ready", "branch": "master", "context": "production",
                "commit_ref": "b10e3145baf01f900cd3376257102ee89c5a1c3e",
                "deploy_ssl_url": "https://master--raymondcamden.netlify.app",
                "deploy_url": "http://master--raymondcamden.netlify.app",
                "published_at": "2020-05-29T14:56:14.166Z", "title": "testing func3"
            }),
        ),
        c(
            "netlify",
            "netlify",
            "netlify-e2e-secret-0123456789",
            "netlify/form-contact.json",
            vec![],
            "forms/contact",
            "form.submitted",
            json!({"form": "contact", "created_at": "2022-05-10T11:57:44.515Z",
                   "fields": {"name": "Ursula K. Le Guin", "message": "El nombre del mundo es Bosque"}}),
        ),
        c(
            "vercel",
            "vercel",
            "AiK52QASLJXmCXX3X9gO2Zyh",
            "vercel/deployment-created.json",
            vec![],
            "vercel",
            "deployment.created",
            json!({"id": "dpl_2p92SueSKLagubfcRtheS3Cvmcj3",
                   "payload": {"deployment": {"name": "nextjsblog-demo-new", "url": "nextjsblog-demo-new-gogovbsz1.vercel.app"},
                               "target": "production", "project": {"id": "QmQPfU4xn5APjEsSje4ccPcSJCmVAByA8CDKfZRhYyVPAg"}}}),
        ),
        c(
            "stripe",
            "stripe",
            "whsec_stripe-e2e-secret-0123456789",
            "stripe/event.json",
            vec![],
            "billing/plan",
            "plan.created",
            json!({"id": "evt_1Pgc76B7WZ01zgkWwyRHS12y",
                   "data": {"object": {"id": "price_1PgafmB7WZ01zgkW6dKueIc5", "object": "plan"}}}),
        ),
        c(
            "shopify",
            "shopify",
            "shopify-e2e-secret-0123456789",
            "shopify/orders-create.json",
            vec![("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")],
            "orders",
            "orders.create",
            json!({"id": 450789469, "name": "#1001"}),
        ),
        c(
            "sanity",
            "sanity",
            "sanity-e2e-secret-0123456789",
            "sanity/document.json",
            vec![("sanity-operation", "update"), ("idempotency-key", "msg-2c7f")],
            "content/internalFaq",
            "document.update",
            json!({"_id": "a39a3ac3-4739-453f-91fa-d2870e3c5dd0", "_type": "internalFaq", "_rev": "ZHITOiY4SUOGzKSh61vMNA"}),
        ),
        Case {
            content_type: "application/vnd.contentful.management.v1+json",
            ..c(
                "contentful",
                "contentful",
                CONTENTFUL_SECRET,
                "contentful/entry-create.json",
                vec![("path", "/hooks/contentful"), ("X-Contentful-Topic", "ContentManagement.Entry.create")],
                "cms/blogpost",
                "ContentManagement.Entry.create",
                json!({"sys": {"id": "oQx64E6BtEIiQacfLBYLU", "type": "Entry", "version": 1,
                               "contentType": {"sys": {"id": "blogpost"}}, "environment": {"sys": {"id": "env-integration"}},
                               "space": {"sys": {"id": "bohepdihyxin"}}}}),
            )
        },
        c(
            "clerk",
            "svix",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "clerk/user-created.json",
            vec![],
            "users",
            "user.created",
            json!({"data": {"id": "user_29w83sxmDNGwOuEthce5gg56FcC", "object": "user"}}),
        ),
        c(
            "std",
            "webhook",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "clerk/user-created.json",
            vec![],
            "std",
            "user.created",
            json!({"type": "user.created"}),
        ),
        c(
            "strapi",
            "strapi",
            "strapi-e2e-token-0123456789",
            "strapi/entry-publish.json",
            vec![("X-Strapi-Event", "entry.publish")],
            "strapi/address",
            "entry.publish",
            json!({"model": "address", "entry": {"id": 1}}),
        ),
        c(
            "custom",
            "custom",
            "custom-e2e-secret-0123456789",
            "stripe/event.json",
            vec![],
            "custom",
            "plan.created",
            json!({"id": "evt_1Pgc76B7WZ01zgkWwyRHS12y", "type": "plan.created"}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one file names every secret and writes none: each source's
    /// `secret_env` variable holds the secret the cases sign with.
    #[test]
    fn the_one_file_names_its_secrets_and_writes_none() {
        let file = one_file();
        let parsed: toml::Table = toml::from_str(&file).unwrap();
        let sources = parsed["sources"].as_table().unwrap();
        assert_eq!(sources.len(), SOURCES.len());
        let vars: std::collections::HashMap<String, String> = secret_env_vars().into_iter().collect();
        for (name, table) in SOURCES {
            let source = sources[*name].as_table().unwrap();
            assert!(!source.contains_key("secret"), "{name}: a secret written in");
            let var = source["secret_env"].as_str().unwrap();
            assert_eq!(vars[var], secret_var(name, table).1, "{name}");
        }
        assert_eq!(vars["HOOKCAST_E2E_CONTENTFUL"], CONTENTFUL_SECRET);
        assert!(!file.contains("0123456789"), "no secret value in the file: {file}");
        assert_eq!(parsed["private"]["channels"][0].as_str(), Some(PRIVATE_CHANNEL));
        assert_eq!(parsed["state"]["releases"].as_str(), Some("last"));
    }
}
