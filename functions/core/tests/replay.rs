//! Issue 35 on the webhook path: a captured delivery does not replay, a
//! `last` state does not go back, and nothing unconfigured is published.
//! Real senders' bodies (tests/fixtures/senders), signed as they sign,
//! through `Hooks` over the in-memory log, with the clock moved by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::executor::block_on;
use serde_json::json;

use hookcast_core::channel::Channel;
use hookcast_core::config::{Config, RawConfig};
use hookcast_core::hooks::{Accepted, Hooks};
use hookcast_core::ports::{EventLog, Retention};
use hookcast_core::sign;
use hookcast_core::verify::HookRequest;
use hookcast_core::HookError;
use hookcast_testkit::MemLog;

const CONFIG: &str = r#"
[sources.github]
kind = "github"
secret = "github-replay-secret-0123"
channel = "releases"

[sources.shopify]
kind = "shopify"
secret = "shopify-replay-secret-0123"
channel = "orders"

[sources.netlify]
kind = "netlify"
secret = "netlify-replay-secret-0123"
[sources.netlify.forms.contact]
fields = ["name"]

[sources.gh]
kind = "hmac"
secret = "hmac-replay-secret-0123456"
channels = ["news"]
fields = ["title"]

[sources.timed]
kind = "hmac"
secret = "timed-replay-secret-012345"
header = "x-signature"
timestamp_header = "x-timestamp"
delivery_header = "x-delivery"
channels = ["news"]
fields = ["title"]

[sources.stripe]
kind = "stripe"
secret = "whsec_stripe-replay-secret-0123"

[state]
"deploys" = "last"
"orders" = "last"
"#;

const T0: u64 = 1_800_000_000;

/// Hooks over a fresh log, with a clock the test moves (seconds since the epoch).
struct World {
    hooks: Hooks<MemLog>,
    log: Arc<MemLog>,
    now: Arc<AtomicU64>,
}

impl World {
    fn new() -> Self {
        let raw: RawConfig = toml::from_str(CONFIG).unwrap();
        let config = Arc::new(Config::build(raw, &|_| None).unwrap_or_else(|e| panic!("{e}")));
        let log = Arc::new(MemLog::new(Retention::from(&config.limits)));
        let now = Arc::new(AtomicU64::new(T0));
        let clock = now.clone();
        let hooks = Hooks::new(config, log.clone())
            .with_clock(Arc::new(move || UNIX_EPOCH + Duration::from_secs(clock.load(Ordering::SeqCst))));
        Self { hooks, log, now }
    }
    fn later(&self, by: Duration) {
        self.now.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
    fn post(&self, source: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Accepted, HookError> {
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        block_on(self.hooks.ingest(source, Some("application/json"), &HookRequest { headers: &headers, body }))
    }
    fn head(&self, channel: &str) -> u64 {
        block_on(self.log.read(&Channel::parse(channel).unwrap(), 0, 0)).unwrap().head
    }
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../tests/fixtures/senders/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn stored(a: &Accepted) -> (u64, bool) {
    (a.seq, a.duplicate)
}

/// A captured GitHub delivery, posted again with a new X-GitHub-Delivery
/// and even another X-GitHub-Event (neither is signed), is the same
/// delivery: answered as a duplicate of the first, nothing pushed. A month
/// on (GitHub signs no time, so the capture never goes stale) it still is.
#[test]
fn a_captured_github_delivery_does_not_replay_under_a_new_delivery_id() {
    let w = World::new();
    let body = fixture("github/release-published.json");
    let sig = sign::github(b"github-replay-secret-0123", &body);
    let first = w.post(
        "github",
        &[
            ("X-Hub-Signature-256", &sig),
            ("X-GitHub-Event", "release"),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ],
        &body,
    );
    assert_eq!(stored(&first.unwrap()), (1, false));
    for (event, delivery) in
        [("release", "00000000-0000-0000-0000-000000000001"), ("push", "00000000-0000-0000-0000-000000000002")]
    {
        let again =
            w.post("github", &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", event), ("X-GitHub-Delivery", delivery)], &body);
        assert_eq!(stored(&again.unwrap()), (1, true), "replayed as {event} / {delivery}");
    }
    w.later(Duration::from_secs(29 * 24 * 3600));
    let late =
        w.post("github", &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", "release"), ("X-GitHub-Delivery", "late")], &body);
    assert_eq!(stored(&late.unwrap()), (1, true), "29 days on");
    assert_eq!(w.head("releases"), 1);
}

/// Shopify's X-Shopify-Webhook-Id is not signed either.
#[test]
fn a_captured_shopify_delivery_does_not_replay_under_a_new_webhook_id() {
    let w = World::new();
    let body = fixture("shopify/orders-create.json");
    let sig = sign::shopify(b"shopify-replay-secret-0123", &body);
    let h = |id: &'static str| {
        [("X-Shopify-Hmac-Sha256", sig.clone()), ("X-Shopify-Topic", "orders/create".into()), ("X-Shopify-Webhook-Id", id.into())]
    };
    let post = |id| {
        let h = h(id);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.post("shopify", &h, &body).unwrap()
    };
    assert_eq!(stored(&post("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")), (1, false));
    assert_eq!(stored(&post("a-new-id")), (1, true));
    assert_eq!(w.head("orders"), 1);
}

/// The general hmac kind: its delivery header is not signed; without a
/// signed timestamp the body's hash is kept 30 days, with one as long as
/// a signature can be accepted (and a retry, signed anew at another time,
/// is known by its delivery id).
#[test]
fn a_captured_hmac_delivery_does_not_replay() {
    let w = World::new();
    let body = br#"{"channel":"news","event":"post","data":{"title":"Hi"}}"#;
    let sig = sign::github(b"hmac-replay-secret-0123456", body);
    let post = |delivery: &str| w.post("gh", &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", delivery)], body).unwrap();
    assert_eq!(stored(&post("d1")), (1, false));
    assert_eq!(stored(&post("d2")), (1, true));
    w.later(Duration::from_secs(25 * 3600));
    assert_eq!(stored(&post("d3")), (1, true), "25 h on");

    let scheme = match &w.hooks.config().sources["timed"].kind {
        hookcast_core::SourceKind::Hmac { scheme, .. } => scheme.clone(),
        k => panic!("{k:?}"),
    };
    let now = w.now.load(Ordering::SeqCst) as i64;
    let timed = |t: i64, delivery: &str| {
        let sig = sign::hmac_scheme(b"timed-replay-secret-012345", &scheme, Some(t), body);
        w.post("timed", &[("x-signature", &sig), ("x-timestamp", &t.to_string()), ("x-delivery", delivery)], body).unwrap()
    };
    assert_eq!(stored(&timed(now, "t1")), (2, false));
    assert_eq!(stored(&timed(now, "t2")), (2, true), "the same signed time and body");
    w.later(Duration::from_secs(240));
    assert_eq!(stored(&timed(now, "t3")), (2, true), "still within the tolerance");
    // The sender's retry, signed again at its own time, keeps its delivery id.
    assert_eq!(stored(&timed(now + 240, "t1")), (2, true));
    assert_eq!(w.head("news"), 2);
}

/// Netlify signs its deploy's id but no time: a replay after the 24 h
/// dedupe window would pass, so its keys are kept 30 days.
#[test]
fn a_netlify_delivery_replayed_after_25_hours_is_still_a_duplicate() {
    let w = World::new();
    let body = fixture("netlify/deploy-succeeded.json");
    let sig = sign::netlify(b"netlify-replay-secret-0123", &body);
    assert_eq!(stored(&w.post("netlify", &[("X-Webhook-Signature", &sig)], &body).unwrap()), (1, false));
    w.later(Duration::from_secs(25 * 3600));
    assert_eq!(stored(&w.post("netlify", &[("X-Webhook-Signature", &sig)], &body).unwrap()), (1, true));
    w.later(Duration::from_secs(28 * 24 * 3600));
    assert_eq!(stored(&w.post("netlify", &[("X-Webhook-Signature", &sig)], &body).unwrap()), (1, true), "29 days on");
    assert_eq!(w.head("deploys"), 1);
}

/// Stripe signs a time: its event id is kept for the dedupe window only,
/// and a replay later is refused by its stale signature.
#[test]
fn a_timed_sender_s_keys_keep_the_dedupe_window() {
    let w = World::new();
    let body = fixture("stripe/event.json");
    let sig = sign::stripe(b"whsec_stripe-replay-secret-0123", T0 as i64, &body);
    assert_eq!(stored(&w.post("stripe", &[("Stripe-Signature", &sig)], &body).unwrap()), (1, false));
    assert_eq!(stored(&w.post("stripe", &[("Stripe-Signature", &sig)], &body).unwrap()), (1, true));
    w.later(Duration::from_secs(25 * 3600));
    assert!(matches!(w.post("stripe", &[("Stripe-Signature", &sig)], &body), Err(HookError::Unauthorized(_))));
}

/// A slow delivery of an older deploy arrives after a newer one: it is
/// logged (and pushed) in its turn, but a page that arrives later is shown
/// the newer deploy, by Netlify's own `updated_at`.
#[test]
fn a_last_state_keeps_the_newer_event_when_an_older_one_arrives_later() {
    let w = World::new();
    let deploy = |id: &str, updated_at: &str| {
        let mut v: serde_json::Value = serde_json::from_slice(&fixture("netlify/deploy-succeeded.json")).unwrap();
        v["id"] = json!(id);
        v["updated_at"] = json!(updated_at);
        v.to_string().into_bytes()
    };
    let post = |body: &[u8]| {
        let sig = sign::netlify(b"netlify-replay-secret-0123", body);
        w.post("netlify", &[("X-Webhook-Signature", &sig)], body).unwrap()
    };
    assert_eq!(stored(&post(&deploy("newer", "2020-05-29T15:00:00.000Z"))), (1, false));
    assert_eq!(stored(&post(&deploy("older", "2020-05-29T14:00:00.000Z"))), (2, false), "still logged");
    let h = block_on(w.hooks.head(&Channel::parse("deploys").unwrap())).unwrap();
    assert_eq!(h.head, 2);
    let state = h.state.unwrap();
    assert_eq!((state.value["seq"].clone(), state.value["data"]["id"].clone()), (json!(1), json!("newer")));
    assert_eq!(stored(&post(&deploy("newest", "2020-05-29T16:00:00.000Z"))), (3, false));
    let state = block_on(w.hooks.head(&Channel::parse("deploys").unwrap())).unwrap().state.unwrap();
    assert_eq!(state.value["data"]["id"], "newest");
}

/// A Netlify form the source does not list publishes nothing (not even its
/// name and time): answered 200 with `ignored`, nothing stored.
#[test]
fn an_unconfigured_form_is_ignored_and_stores_nothing() {
    let w = World::new();
    let body = fixture("netlify/form-submission.json");
    let sig = sign::netlify(b"netlify-replay-secret-0123", &body);
    let got = w.post("netlify", &[("X-Webhook-Signature", &sig)], &body).unwrap();
    assert!(got.ignored.as_deref().is_some_and(|r| r.contains("\"Contact Form\" is not configured")), "{got:?}");
    let answer = serde_json::to_value(&got).unwrap();
    assert_eq!(answer["ignored"], true);
    assert!(answer.get("seq").is_none() && answer.get("channel").is_none(), "{answer}");
    assert_eq!(w.head("forms/contact-form"), 0);
    // The listed one is published.
    let body = fixture("netlify/form-contact.json");
    let sig = sign::netlify(b"netlify-replay-secret-0123", &body);
    let got = w.post("netlify", &[("X-Webhook-Signature", &sig)], &body).unwrap();
    assert_eq!((got.ignored.clone(), got.seq, got.channel.as_str()), (None, 1, "forms/contact"));
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        json!({"channel": "forms/contact", "event": "form.submitted", "seq": 1, "duplicate": false})
    );
}
