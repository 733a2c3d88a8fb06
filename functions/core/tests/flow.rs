//! The webhook -> log -> fan-out flow and the socket side, end to end over
//! the in-memory parts (a log, live subscriptions, a recording gateway),
//! wired as a host wires them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::executor::block_on;
use serde_json::json;

use hookcast_core::channel::Channel;
use hookcast_core::clock::Clock;
use hookcast_core::config::{Config, Limits};
use hookcast_core::error::HookError;
use hookcast_core::fanout::{Fanout, FanoutReport};
use hookcast_core::hooks::{Accepted, Hooks};
use hookcast_core::live::Live;
use hookcast_core::ports::{all_subscribers, History, Retention};
use hookcast_core::ports::{ConnId, EventLog, StoreError};
use hookcast_core::protocol::ClientMsg;
use hookcast_core::relay::{ConnectError, Relay, MAX_CLIENT_FRAME};
use hookcast_core::secret::Secret;
use hookcast_core::sign;
use hookcast_core::verify::HookRequest;
use hookcast_testkit::{Faulty, MemLog, RecordingGateway};

const NETLIFY_SECRET: &[u8] = hookcast_testkit::NETLIFY_SECRET.as_bytes();

type Subs = Faulty<Live>;

/// The webhook side, the socket side and the fan-out over one log, one
/// set of subscriptions and one gateway, as a host wires them.
struct World {
    hooks: Hooks<MemLog>,
    relay: Relay<MemLog, Subs, RecordingGateway>,
    fanout: Fanout<Subs, RecordingGateway>,
    log: Arc<MemLog>,
    live: Arc<Subs>,
    gw: Arc<RecordingGateway>,
}

impl World {
    fn gateway(&self) -> &RecordingGateway {
        &self.gw
    }
    /// The log's epoch, as every `subscribed` carries it.
    fn epoch(&self) -> String {
        block_on(self.log.read(&Channel::parse("any").unwrap(), 0, 0)).unwrap().epoch
    }
    fn history(&self, c: &Channel, since: u64) -> Result<(History, bool), StoreError> {
        block_on(self.hooks.history(c, since, None)).map(|c| (c.history, c.reset))
    }
    fn raw_ingest(&self, source: &str, headers: &Vec<(String, String)>, body: &[u8]) -> Result<Accepted, HookError> {
        block_on(self.hooks.ingest(source, Some("application/json"), &HookRequest { headers, body }))
    }
    fn message(&self, conn: &str, text: &str) {
        block_on(self.relay.message(&ConnId(conn.into()), text))
    }
    fn with_clock(self, clock: Clock) -> Self {
        Self {
            hooks: self.hooks.with_clock(clock.clone()),
            relay: self.relay.with_clock(clock.clone()),
            fanout: self.fanout.with_clock(clock),
            ..self
        }
    }
}

fn relay() -> World {
    let limits = Limits { history_max_events: 3, max_body_bytes: 4096, ..Limits::default() };
    let config = Arc::new(Config { limits: limits.clone(), ..hookcast_testkit::config(&["https://site.example"]) });
    let log = Arc::new(MemLog::new(Retention::from(&limits)));
    let (live, gw) = (Arc::new(Subs::default()), Arc::new(RecordingGateway::default()));
    let clock: Clock = Arc::new(|| UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    World {
        hooks: Hooks::new(config.clone(), log.clone()).with_clock(clock.clone()),
        relay: Relay::new(config.clone(), log.clone(), live.clone(), gw.clone()).with_clock(clock.clone()),
        fanout: Fanout::new(config, live.clone(), gw.clone()).with_clock(clock),
        log,
        live,
        gw,
    }
}

fn deploy_body(id: &str, state: &str) -> Vec<u8> {
    json!({"id": id, "state": state, "branch": "main", "admin_url": "https://app.netlify.com/x"}).to_string().into_bytes()
}
fn netlify_headers(body: &[u8]) -> Vec<(String, String)> {
    vec![("X-Webhook-Signature".into(), sign::netlify(NETLIFY_SECRET, body))]
}
/// A webhook, then what the dispatcher does after it: fan out what was logged.
fn ingest(w: &World, body: &[u8]) -> Result<(Accepted, FanoutReport), HookError> {
    let got = w.raw_ingest("netlify", &netlify_headers(body), body)?;
    if got.duplicate {
        return Ok((got, FanoutReport::default()));
    }
    let h = w.history(&got.channel, got.seq - 1).unwrap().0;
    let report = block_on(w.fanout.fan_out(&h.events[0])).unwrap();
    Ok((got, report))
}
fn subscribe(w: &World, conn: &str, channel: &str, since: Option<u64>) {
    let c = ConnId(conn.into());
    block_on(w.relay.connect(&c, Some("https://site.example"))).unwrap();
    let msg = serde_json::to_string(&ClientMsg::Subscribe {
        channel: Channel::parse(channel).unwrap(),
        epoch: None,
        since,
        batch: false,
        token: None,
    })
    .unwrap();
    w.message(conn, &msg);
}

#[test]
fn webhook_reaches_subscribers_once() {
    let r = relay();
    subscribe(&r, "page", "deploys", None);
    let epoch = r.epoch();
    assert_eq!(r.gateway().frames("page"), vec![json!({"type":"subscribed","channel":"deploys","seq":0,"epoch":epoch})]);

    let body = deploy_body("d1", "ready");
    let (got, fanout) = ingest(&r, &body).unwrap();
    assert_eq!((got.seq, got.duplicate, fanout.delivered), (1, false, 1));
    let frames = r.gateway().frames("page");
    assert_eq!(frames[1]["type"], "event");
    assert_eq!(frames[1]["event"], "deploy.succeeded");
    assert_eq!(frames[1]["seq"], 1);
    assert_eq!(frames[1]["at"], "2027-01-15T08:00:00.000Z");
    assert_eq!(frames[1]["data"], json!({"id":"d1","state":"ready","branch":"main"}));

    // The same delivery again: acknowledged as a duplicate, not sent again.
    let (again, _) = ingest(&r, &body).unwrap();
    assert_eq!((again.seq, again.duplicate), (1, true));
    assert_eq!(r.gateway().frames("page").len(), 2);
}

#[test]
fn a_repeated_subscribe_is_one_subscription_and_a_bounded_replay() {
    let r = relay();
    for id in ["d1", "d2", "d3", "d4", "d5"] {
        ingest(&r, &deploy_body(id, "ready")).unwrap();
    }
    subscribe(&r, "page", "deploys", Some(3));
    let kinds = |r: &World| r.gateway().frames("page").iter().map(|f| f["type"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(kinds(&r), ["event", "event", "subscribed"]);
    // Asking from 0 again replays at most history_max_events (3), not 5.
    r.message("page", r#"{"action":"subscribe","channel":"deploys","since":0}"#);
    assert_eq!(kinds(&r).len(), 3 + 3 + 1);
    assert_eq!(
        r.gateway().frames("page")[6],
        json!({"type":"subscribed","channel":"deploys","seq":5,"reset":true,"epoch":r.epoch()})
    );
    // Still one subscription: the next event arrives once.
    let (_, report) = ingest(&r, &deploy_body("d6", "ready")).unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(
        block_on(hookcast_core::ports::Subscriptions::count_subscribers(&*r.live, &Channel::parse("deploys").unwrap())).unwrap(),
        1
    );
}

#[test]
fn private_channels_need_a_valid_token() {
    use hookcast_core::config::Private;
    use hookcast_core::token::{mint, Claims};
    const KEY: &[u8] = b"private-key-0123456789abcdef";
    let mut w = relay();
    let mut config = w.relay.config().clone();
    config.private = Some(Private { secret: Secret::new(KEY), channels: vec!["orders/*".parse().unwrap()] });
    let config = Arc::new(config);
    let clock: Clock = Arc::new(|| UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    w.relay = Relay::new(config, w.log.clone(), w.live.clone(), w.gw.clone()).with_clock(clock);
    let conn = ConnId("page".into());
    block_on(w.relay.connect(&conn, None)).unwrap();
    let good = mint(KEY, &Claims { channels: vec!["orders/*".parse().unwrap()], exp: 1_800_000_060.0 });
    let stale = mint(KEY, &Claims { channels: vec!["orders/*".parse().unwrap()], exp: 1_799_999_999.5 });
    let forged = mint(b"not-the-key-0123456789abcdef", &Claims { channels: vec!["*".parse().unwrap()], exp: 2e9 });
    for (token, code) in [(None, "forbidden"), (Some(&stale), "forbidden"), (Some(&forged), "forbidden")] {
        let msg = json!({"action": "subscribe", "channel": "orders/1", "token": token}).to_string();
        w.message("page", &msg);
        assert_eq!(w.gateway().frames("page").last().unwrap()["code"], code, "{token:?}");
    }
    assert_eq!(
        block_on(hookcast_core::ports::Subscriptions::count_subscribers(&*w.live, &Channel::parse("orders/1").unwrap())).unwrap(),
        0
    );
    w.message("page", &json!({"action": "subscribe", "channel": "orders/1", "token": good}).to_string());
    assert_eq!(w.gateway().frames("page").last().unwrap()["type"], "subscribed");
    // Public channels need no token.
    w.message("page", r#"{"action":"subscribe","channel":"deploys"}"#);
    assert_eq!(w.gateway().frames("page").last().unwrap()["type"], "subscribed");
}

#[test]
fn refused_webhooks_store_and_send_nothing() {
    let r = relay();
    subscribe(&r, "page", "deploys", None);
    let body = deploy_body("d1", "ready");
    let forged = vec![("X-Webhook-Signature".to_string(), sign::netlify(b"not the secret", &body))];
    let e = r.raw_ingest("netlify", &forged, &body).unwrap_err();
    assert_eq!(e.status(), 401);
    let tampered = netlify_headers(&body);
    let e = r.raw_ingest("netlify", &tampered, b"{\"state\":\"error\"}").unwrap_err();
    assert_eq!(e.status(), 401);
    let e = r.raw_ingest("nope", &tampered, &body).unwrap_err();
    assert_eq!((e.status(), e.code()), (404, "unknown_source"));
    let big = vec![b' '; 4097];
    let e = r.raw_ingest("netlify", &netlify_headers(&big), &big).unwrap_err();
    assert_eq!(e.status(), 413);
    let gh_body = br#"{"channel":"secret","event":"x"}"#;
    let gh = vec![("x-hub-signature-256".to_string(), sign::github(hookcast_testkit::GH_SECRET.as_bytes(), gh_body))];
    let e = r.raw_ingest("gh", &gh, gh_body).unwrap_err();
    assert_eq!(e.status(), 403);

    assert_eq!(r.history(&Channel::parse("deploys").unwrap(), 0).unwrap().0.head, 0);
    assert_eq!(r.history(&Channel::parse("secret").unwrap(), 0).unwrap().0.head, 0);
    assert_eq!(r.gateway().frames("page").len(), 1, "only the subscribed reply");
}

#[test]
fn store_down_is_503_and_nothing_is_sent() {
    let r = relay();
    subscribe(&r, "page", "deploys", None);
    r.log.fail.store(true, Ordering::SeqCst);
    let e = ingest(&r, &deploy_body("d1", "ready")).unwrap_err();
    assert_eq!((e.status(), e.retry_after()), (503, Some(5)));
    assert!(!e.body().contains("injected"), "internal detail must not reach the client");
    r.log.fail.store(false, Ordering::SeqCst);
    assert_eq!(r.gateway().frames("page").len(), 1);
    // The retry succeeds: nothing half-written blocks it as a duplicate.
    assert!(!ingest(&r, &deploy_body("d1", "ready")).unwrap().0.duplicate);
}

#[test]
fn fan_out_forgets_exactly_the_gone_connections() {
    let r = relay();
    for i in 0..200 {
        subscribe(&r, &format!("c{i}"), "deploys", None);
    }
    for i in (0..200).step_by(20) {
        r.gateway().gone.lock().unwrap().insert(ConnId(format!("c{i}")));
    }
    let (_, fanout) = ingest(&r, &deploy_body("d1", "ready")).unwrap();
    assert_eq!((fanout.delivered, fanout.gone, fanout.failed), (190, 10, 0));
    let mut left = block_on(all_subscribers(&*r.live, &Channel::parse("deploys").unwrap())).unwrap();
    left.sort();
    let mut want: Vec<_> = (0..200).filter(|i| i % 20 != 0).map(|i| ConnId(format!("c{i}"))).collect();
    want.sort();
    assert_eq!(left, want);
    for i in (1..200).filter(|i| i % 20 != 0) {
        let events: Vec<_> = r.gateway().frames(&format!("c{i}")).into_iter().filter(|f| f["type"] == "event").collect();
        assert_eq!(events.len(), 1, "c{i}");
    }
}

#[test]
fn subscribe_since_replays_then_reports_head() {
    let r = relay();
    for (i, st) in ["building", "ready"].iter().enumerate() {
        ingest(&r, &deploy_body(&format!("d{i}"), st)).unwrap();
    }
    subscribe(&r, "late", "deploys", Some(0));
    let f = r.gateway().frames("late");
    let kinds: Vec<_> = f.iter().map(|m| (m["type"].clone(), m["seq"].clone())).collect();
    assert_eq!(kinds, vec![(json!("event"), json!(1)), (json!("event"), json!(2)), (json!("subscribed"), json!(2))]);
    assert!(f[2].get("reset").is_none());

    // History keeps 3: after 5 events, since=1 has missed seq 2.
    for i in 2..5 {
        ingest(&r, &deploy_body(&format!("d{i}"), "ready")).unwrap();
    }
    subscribe(&r, "stale", "deploys", Some(1));
    let f = r.gateway().frames("stale");
    let epoch = r.epoch();
    assert_eq!(f.last().unwrap(), &json!({"type":"subscribed","channel":"deploys","seq":5,"reset":true,"epoch":epoch}));
    assert_eq!(f.iter().filter(|m| m["type"] == "event").map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![3, 4, 5]);
    // A client ahead of the log (server data wiped) is told to reset too.
    subscribe(&r, "future", "deploys", Some(99));
    assert_eq!(r.gateway().frames("future").last().unwrap()["reset"], true);
}

/// A `since` read in another log (the store was wiped and has grown
/// past it again) is no place in this one: no replay, a reset, and the
/// log's epoch to keep. The same `since` with this log's epoch replays.
#[test]
fn a_since_from_another_epoch_is_a_reset_not_a_replay() {
    let r = relay();
    for i in 0..3 {
        ingest(&r, &deploy_body(&format!("d{i}"), "ready")).unwrap();
    }
    let epoch = r.epoch();
    let ask = |conn: &str, epoch: &str| {
        block_on(r.relay.connect(&ConnId(conn.into()), None)).unwrap();
        let msg = json!({"action": "subscribe", "channel": "deploys", "since": 1, "epoch": epoch});
        r.message(conn, &msg.to_string());
        r.gateway().frames(conn)
    };
    let other = ask("wiped", "0123456789abcdef");
    assert_eq!(other, vec![json!({"type":"subscribed","channel":"deploys","seq":3,"reset":true,"epoch":epoch})]);
    let same = ask("kept", &epoch);
    let seqs: Vec<_> = same.iter().map(|m| (m["type"].clone(), m["seq"].clone())).collect();
    assert_eq!(seqs, vec![(json!("event"), json!(2)), (json!("event"), json!(3)), (json!("subscribed"), json!(3))]);
    assert!(same[2].get("reset").is_none());
    // Over HTTP the same: another epoch gets no events and a reset.
    let c = block_on(r.hooks.history(&Channel::parse("deploys").unwrap(), 1, Some("0123456789abcdef"))).unwrap();
    let (h, reset) = (c.history, c.reset);
    assert!(reset && h.events.is_empty() && h.epoch == epoch);
    let c = block_on(r.hooks.history(&Channel::parse("deploys").unwrap(), 1, Some(&epoch))).unwrap();
    let (h, reset) = (c.history, c.reset);
    assert!(!reset && h.events.len() == 2);
}

/// A world whose `deploys` channel keeps a state (`last`, `merge` or `list:N`).
fn stateful(mode: &str) -> World {
    let mut r = relay();
    let mut config = r.hooks.config().clone();
    config.state = hookcast_core::state::StateRules::new(vec![(
        "deploys".parse().unwrap(),
        hookcast_core::state::StateMode::parse(mode).unwrap(),
    )]);
    let config = Arc::new(config);
    r.hooks = Hooks::new(config.clone(), r.log.clone());
    r.relay = Relay::new(config, r.log.clone(), r.live.clone(), r.gw.clone());
    r
}

/// A page with no place in the log, or one history no longer reaches, gets
/// the channel's state first (at the head), then `subscribed` without a
/// reset: it is current. A page whose `since` is retained gets the events
/// after it and no state. Over HTTP the same state comes with the events.
#[test]
fn a_late_page_gets_the_channel_state_first() {
    let r = stateful("merge");
    let merge = |patch: serde_json::Value| {
        let body = serde_json::to_vec(&patch).unwrap();
        ingest(&r, &body).unwrap()
    };
    merge(json!({"id": "d1", "state": "building", "branch": "main"}));
    for i in 2..=5 {
        merge(json!({"id": format!("d{i}"), "state": "ready"}));
    }
    let epoch = r.epoch();
    let want_state = json!({"type":"state","channel":"deploys","seq":5,"mode":"merge",
        "state":{"id":"d5","state":"ready","branch":"main"}});
    // No since: the state, then subscribed.
    subscribe(&r, "fresh", "deploys", None);
    assert_eq!(
        r.gateway().frames("fresh"),
        vec![want_state.clone(), json!({"type":"subscribed","channel":"deploys","seq":5,"epoch":epoch})]
    );
    // Since 1 (history keeps 3 of 5): the state instead of a reset, no stale events.
    subscribe(&r, "stale", "deploys", Some(1));
    assert_eq!(
        r.gateway().frames("stale"),
        vec![want_state.clone(), json!({"type":"subscribed","channel":"deploys","seq":5,"epoch":epoch})]
    );
    // Since 4 is retained: only event 5, no state.
    subscribe(&r, "recent", "deploys", Some(4));
    let kinds: Vec<_> = r.gateway().frames("recent").iter().map(|m| m["type"].clone()).collect();
    assert_eq!(kinds, vec![json!("event"), json!("subscribed")]);
    // Another epoch: the state brings it current.
    block_on(r.relay.connect(&ConnId("wiped".into()), None)).unwrap();
    r.message("wiped", &json!({"action":"subscribe","channel":"deploys","since":1,"epoch":"0123456789abcdef"}).to_string());
    assert_eq!(r.gateway().frames("wiped")[0], want_state);
    // Over HTTP: events after since, the state, and no reset while it covers the gap.
    let (h, reset) = r.history(&Channel::parse("deploys").unwrap(), 1).unwrap();
    assert!(!reset, "the state covers what was missed");
    assert_eq!(h.state.unwrap().value, want_state["state"]);
    // A channel without state is a reset as before.
    subscribe(&r, "other", "news", Some(7));
    assert_eq!(r.gateway().frames("other").last().unwrap()["reset"], true);
}

/// A list keeps its newest N past history; a patch that would grow a merge
/// state past its limit is a 413 that stores nothing.
#[test]
fn list_state_outlives_history_and_merge_state_is_bounded() {
    let r = stateful("list:4");
    for i in 1..=6 {
        ingest(&r, &deploy_body(&format!("d{i}"), "ready")).unwrap();
    }
    subscribe(&r, "p", "deploys", None);
    let f = r.gateway().frames("p");
    assert_eq!((f[0]["type"].as_str(), f[0]["mode"].as_str()), (Some("state"), Some("list")));
    let ids: Vec<_> = f[0]["state"].as_array().unwrap().iter().map(|e| e["data"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec!["d3", "d4", "d5", "d6"], "four newest, oldest first (history keeps 3)");

    let r = stateful("merge");
    let mut config = r.hooks.config().clone();
    config.limits.max_event_bytes = 300;
    let hooks = Hooks::new(Arc::new(config), r.log.clone());
    let send = |field: &str| {
        let body = serde_json::to_vec(&json!({"id": field, "state": "ready", field: "v".repeat(150)})).unwrap();
        block_on(hooks.ingest(
            "netlify",
            Some("application/json"),
            &HookRequest { headers: &netlify_headers(&body), body: &body },
        ))
    };
    send("title").unwrap();
    let e = send("commit_ref").unwrap_err();
    assert_eq!((e.status(), e.code()), (413, "state_too_large"));
    assert!(e.to_string().contains("limit is 300"), "{e}");
    let h = r.history(&Channel::parse("deploys").unwrap(), 0).unwrap().0;
    assert_eq!(h.head, 1, "nothing stored");
}

#[test]
fn a_batch_subscribe_replays_in_one_frame() {
    let r = relay();
    for i in 0..3 {
        ingest(&r, &deploy_body(&format!("d{i}"), "ready")).unwrap();
    }
    let c = ConnId("b".into());
    block_on(r.relay.connect(&c, None)).unwrap();
    r.message("b", r#"{"action":"subscribe","channel":"deploys","since":1,"batch":true}"#);
    let frames = r.gateway().frames("b");
    assert_eq!(frames.len(), 1, "one post for the whole replay");
    let inner: Vec<_> = frames[0]["frames"].as_array().unwrap().iter().map(|f| (f["type"].clone(), f["seq"].clone())).collect();
    assert_eq!(frames[0]["type"], "batch");
    assert_eq!(inner, vec![(json!("event"), json!(2)), (json!("event"), json!(3)), (json!("subscribed"), json!(3))]);
}

#[test]
fn client_messages() {
    let r = relay();
    let c = ConnId("c".into());
    block_on(r.relay.connect(&c, None)).unwrap();
    for (text, want) in [
        (r#"{"action":"ping"}"#.to_string(), json!({"type":"pong"})),
        ("nope".to_string(), json!("bad_json")),
        (r#"{"action":"x"}"#.to_string(), json!("unknown_action")),
        (r#"{"action":"subscribe","channel":"a b"}"#.to_string(), json!("invalid_channel")),
        ("x".repeat(MAX_CLIENT_FRAME + 1), json!("message_too_large")),
    ] {
        block_on(r.relay.message(&c, &text));
        let last = r.gateway().frames("c").pop().unwrap();
        let got = if last["type"] == "error" { last["code"].clone() } else { last };
        assert_eq!(got, want, "{}", &text[..text.len().min(40)]);
    }
    let frames_before = r.gateway().frames("c").len();
    block_on(r.relay.message(&c, r#"{"action":"unsubscribe","channel":"deploys"}"#));
    assert_eq!(r.gateway().frames("c").len(), frames_before, "unsubscribe is silent");
    for i in 0..32 {
        block_on(r.relay.message(&c, &format!(r#"{{"action":"subscribe","channel":"ch{i}"}}"#)));
    }
    block_on(r.relay.message(&c, r#"{"action":"subscribe","channel":"one-too-many"}"#));
    assert_eq!(r.gateway().frames("c").pop().unwrap()["code"], "too_many_subscriptions");
}

#[test]
fn occupancy_is_for_subscribers_and_rate_limited() {
    let offset = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = offset.clone();
    let r = relay().with_clock(Arc::new(move || {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(t.load(Ordering::SeqCst))
    }));
    for i in 0..12 {
        subscribe(&r, &format!("p{i}"), "deploys", None);
    }
    let ask = |c: &str, channel: &str| {
        block_on(r.relay.message(&ConnId(c.into()), &format!(r#"{{"action":"occupancy","channel":"{channel}"}}"#)));
        r.gateway().frames(c).pop().unwrap()
    };
    assert_eq!(ask("p0", "deploys"), json!({"type":"occupancy","channel":"deploys","count":12}));
    let limited = ask("p0", "deploys");
    assert_eq!((limited["type"].as_str(), limited["code"].as_str()), (Some("error"), Some("rate_limited")));
    assert!(limited["message"].as_str().unwrap().contains("9000 ms"), "{limited}");

    // A 13th page joins; another page's ask is its own turn and sees it.
    subscribe(&r, "p12", "deploys", None);
    assert_eq!(ask("p1", "deploys")["count"], 13);
    offset.store(8_999, Ordering::SeqCst);
    assert_eq!(ask("p0", "deploys")["code"], "rate_limited");
    // A tenth of the interval is slack for network jitter on a page asking on schedule.
    offset.store(9_000, Ordering::SeqCst);
    assert_eq!(ask("p0", "deploys")["count"], 13);

    subscribe(&r, "elsewhere", "forms/guestbook", None);
    assert_eq!(ask("elsewhere", "deploys")["code"], "not_subscribed");
    assert_eq!(ask("elsewhere", "a b")["code"], "invalid_channel");
    block_on(r.relay.message(&ConnId("p3".into()), r#"{"action":"unsubscribe","channel":"deploys"}"#));
    assert_eq!(ask("p3", "deploys")["code"], "not_subscribed");
    r.live.fail.store(true, Ordering::SeqCst);
    assert_eq!(ask("p4", "deploys")["code"], "unavailable");
}

#[test]
fn origins() {
    let r = relay();
    assert!(r.relay.origin_allowed(Some("https://site.example")));
    assert!(r.relay.origin_allowed(Some("https://SITE.example/")));
    assert!(r.relay.origin_allowed(None));
    assert!(!r.relay.origin_allowed(Some("https://evil.example")));
    assert_eq!(block_on(r.relay.connect(&ConnId("x".into()), Some("https://evil.example"))), Err(ConnectError::OriginNotAllowed));
}

#[test]
fn origin_patterns() {
    for (pattern, origin, ok) in [
        ("https://site.example", "https://site.example", true),
        ("https://site.example", "HTTPS://Site.Example/", true),
        ("https://site.example", "http://site.example", false),
        ("https://*--site.netlify.app", "https://deploy-preview-12--site.netlify.app", true),
        ("https://*--site.netlify.app", "https://main--site.netlify.app", true),
        ("https://*--site.netlify.app", "https://--site.netlify.app", false),
        ("https://*--site.netlify.app", "https://x.evil--site.netlify.app", false),
        ("https://*--site.netlify.app", "https://a--site.netlify.app.evil.example", false),
        ("https://*--site.netlify.app", "http://a--site.netlify.app", false),
        ("https://*.example.com", "https://www.example.com", true),
        ("https://*.example.com", "https://a.b.example.com", false),
        ("https://*.example.com", "https://example.com", false),
        ("https://*.example.com", "https://evilexample.com", false),
        ("http://localhost:*", "http://localhost:5173", true),
        ("http://localhost:*", "http://localhost", false),
    ] {
        assert_eq!(hookcast_core::policy::origin_matches(pattern, origin), ok, "{pattern} vs {origin}");
    }
}

/// A gateway that fails or loses chosen connections at a chosen frame.
#[derive(Default)]
struct Flaky {
    sent: std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>,
    /// Connection → (the frame it fails at, Gone rather than failed).
    breaks: std::collections::BTreeMap<String, (String, bool)>,
}

impl hookcast_core::ports::Gateway for Flaky {
    async fn send(&self, conn: &ConnId, frame: &str) -> hookcast_core::ports::Delivery {
        use hookcast_core::ports::Delivery;
        if let Some((at, gone)) = self.breaks.get(&conn.0) {
            if at == frame {
                return if *gone { Delivery::Gone } else { Delivery::Failed };
            }
        }
        self.sent.lock().unwrap().entry(conn.0.clone()).or_default().push(frame.to_owned());
        Delivery::Delivered
    }
    async fn close(&self, _: &ConnId) {}
}

/// One work unit of several frames (a busy channel's commit): every page
/// gets them in order; a connection that fails at a frame is sent nothing
/// after it and the retry starts there; a Gone one is forgotten.
#[test]
fn a_unit_of_several_frames_keeps_each_connection_in_order_and_stops_it_at_its_first_failure() {
    use hookcast_core::fanout::ShardRun;
    use hookcast_core::ports::Subscriptions;
    let ch = Channel::parse("busy").unwrap();
    let frames = ["f1", "f2", "f3"];
    let mut gw = Flaky::default();
    gw.breaks.insert("b".into(), ("f2".into(), false));
    gw.breaks.insert("c".into(), ("f1".into(), true));
    let live = Arc::new(Live::default());
    for c in ["a", "b", "c", "d"] {
        block_on(live.add_connection(&ConnId(c.into()), 0)).unwrap();
        block_on(live.subscribe(&ConnId(c.into()), &ch, 10)).unwrap();
    }
    let gw = Arc::new(gw);
    let config = Arc::new(hookcast_testkit::config(&[]));
    let fanout = Fanout::new(config, live.clone(), gw.clone());
    // Pages of one subscriber: frames never run ahead across pages either.
    let run = ShardRun { page: Some(1), ..ShardRun::default() };
    let out = block_on(fanout.fan_out_shard(&ch, &frames, 0, run)).unwrap();
    let sent = gw.sent.lock().unwrap().clone();
    assert_eq!(sent.get("a").unwrap(), &["f1", "f2", "f3"]);
    assert_eq!(sent.get("d").unwrap(), &["f1", "f2", "f3"]);
    assert_eq!(sent.get("b").unwrap(), &["f1"], "nothing after its failure");
    assert!(!sent.contains_key("c"));
    assert_eq!(out.failed, vec![(ConnId("b".into()), 1)], "the retry starts at the frame b lacks");
    assert_eq!((out.report.delivered, out.report.gone, out.report.failed), (7, 1, 1));
    assert_eq!(block_on(all_subscribers(&*live, &ch)).unwrap().len(), 3, "the Gone connection is forgotten");
}

/// One catch-up rule for both readers: at every place (no `since`, each
/// seq, one past the head, another epoch) an HTTP document and a live page
/// agree on the head and on a gap; a page gets the state or the events,
/// never both; a document always carries the state a channel keeps.
#[test]
fn http_history_and_subscribe_answer_by_one_rule() {
    use hookcast_core::catchup::{catch_up, Reader};
    for mode in [None, Some("merge")] {
        let r = match mode {
            Some(m) => stateful(m),
            None => relay(),
        };
        for i in 1..=5 {
            ingest(&r, &deploy_body(&format!("d{i}"), "ready")).unwrap();
        }
        let (config, channel, epoch) = (r.hooks.config(), Channel::parse("deploys").unwrap(), r.epoch());
        let places =
            (0..=6).map(Some).chain([None]).flat_map(|s| [(s, None), (s, Some(epoch.as_str())), (s, Some("0123456789abcdef"))]);
        for (since, ep) in places {
            let ask = |reader| block_on(catch_up(&*r.log, config, &channel, reader, since, ep, 3)).unwrap();
            let (doc, page) = (ask(Reader::Document), ask(Reader::Page));
            let at = format!("mode {mode:?}, since {since:?}, epoch {ep:?}");
            assert_eq!((doc.history.head, &doc.history.epoch), (5, &page.history.epoch), "{at}");
            assert_eq!(doc.history.state.is_some(), mode.is_some(), "a document carries the kept state: {at}");
            assert!(page.history.state.is_none() || page.history.events.is_empty(), "a page gets state or events: {at}");
            if since.is_some() {
                assert_eq!(doc.reset, page.reset, "both readers see the same gap: {at}");
                if page.history.state.is_none() {
                    let seqs = |c: &hookcast_core::catchup::Catchup| c.history.events.iter().map(|e| e.seq).collect::<Vec<_>>();
                    assert_eq!(seqs(&doc), seqs(&page), "the same events after the same place: {at}");
                }
            } else {
                assert!(!page.reset && page.history.events.is_empty(), "no place: only what follows: {at}");
            }
        }
    }
}
