//! End to end over real sockets: the server on port 0, a real WebSocket
//! client, real HTTP webhooks signed as the senders sign them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hookcast::server::AppState;
use hookcast::settings::{self, DevSecrets, Overrides};
use hookcast_core::sign;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{next, send, Ws, WAIT};

fn secrets() -> DevSecrets {
    common::dev_secrets("netlify-test-secret", "zapier-test-token", "hmac-test-secret")
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    state: Arc<AppState>,
}

impl Server {
    async fn start(data_dir: &Path) -> Self {
        let cli = Overrides { port: Some(0), data_dir: Some(data_dir.to_owned()), ..Default::default() };
        Self::start_with(settings::dev_settings(&secrets(), &cli).unwrap()).await
    }
    async fn start_with(s: settings::Settings) -> Self {
        let state = hookcast::state(&s, true).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (addr, serving) = hookcast::bind(&s, state.clone(), async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let done = tokio::spawn(async move { serving.await.unwrap() });
        Server { addr, stop: Some(tx), done: Some(done), state }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    async fn ws(&self) -> Ws {
        common::ws_connect(self.addr).await
    }
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        hookcast_testkit::within(WAIT, "the server to stop", self.done.take().unwrap()).await.unwrap();
        // Sockets end on their own tasks; the data directory is free once they have.
        hookcast::released(&self.state, WAIT).await;
    }
}

async fn subscribe(ws: &mut Ws, channel: &str, since: Option<u64>) -> Value {
    let mut m = json!({"action": "subscribe", "channel": channel});
    if let Some(s) = since {
        m["since"] = json!(s);
    }
    send(ws, m).await;
    next(ws).await
}

async fn post(url: &str, content_type: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, Value) {
    let (status, answer, ct) = common::post(url, content_type, headers, body).await;
    assert_eq!(ct.as_deref(), Some("application/json"), "every answer is JSON");
    (status, answer)
}

fn deploy_body(state: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/netlify/deploy.json")).unwrap();
    v["state"] = json!(state);
    v.to_string().into_bytes()
}

fn netlify_sig(body: &[u8]) -> Vec<(String, String)> {
    vec![("X-Webhook-Signature".into(), sign::netlify(secrets().netlify.as_bytes(), body))]
}

/// A `subscribed` frame or a history answer without its `epoch`, and the
/// epoch (every one carries the log's).
fn epoch_of(v: &Value) -> (Value, String) {
    let mut v = v.clone();
    let epoch = v.as_object_mut().and_then(|o| o.remove("epoch")).and_then(|e| e.as_str().map(str::to_owned));
    let epoch = epoch.unwrap_or_else(|| panic!("no epoch in {v}"));
    assert!(epoch.len() == 16 && epoch.chars().all(|c| c.is_ascii_hexdigit()), "{epoch:?}");
    (v, epoch)
}

async fn head(s: &Server, channel: &str) -> u64 {
    let v: Value = reqwest::get(s.url(&format!("/channels/{channel}/events?since=0"))).await.unwrap().json().await.unwrap();
    v["head"].as_u64().unwrap()
}

#[tokio::test]
async fn signed_netlify_deploy_reaches_a_websocket_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    let (subscribed, _) = epoch_of(&subscribe(&mut ws, "deploys", None).await);
    assert_eq!(subscribed, json!({"type":"subscribed","channel":"deploys","seq":0}));

    let body = deploy_body("ready");
    let (status, ack) = post(&s.url("/hooks/netlify"), "application/json", &netlify_sig(&body), body).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack, json!({"ok": true, "channel": "deploys", "event": "deploy.succeeded", "seq": 1, "duplicate": false}));

    let ev = next(&mut ws).await;
    assert_eq!(ev["type"], "event");
    assert_eq!(ev["channel"], "deploys");
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["event"], "deploy.succeeded");
    assert_eq!(ev["data"]["title"], "Update pricing page");
    assert_eq!(ev["data"]["commit_ref"], "a1b2c3d");
    assert!(ev["data"].get("admin_url").is_none() && ev["data"].get("log_access_attributes").is_none());
    assert!(ev["at"].as_str().unwrap().ends_with('Z'));
    s.stop().await;
}

#[tokio::test]
async fn refused_webhooks_answer_json_errors_and_store_and_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    subscribe(&mut ws, "deploys", None).await;
    subscribe(&mut ws, "news", None).await;

    let good = deploy_body("ready");
    let url = s.url("/hooks/netlify");
    let forged = vec![("X-Webhook-Signature".to_string(), sign::netlify(b"guessed", &good))];
    let malformed = b"{\"state\": \"ready\",".to_vec();
    let huge = vec![b' '; 1024 * 1024 + 1];
    // (what is wrong, status, content type, headers, body, error code)
    type Case<'a> = (&'a str, u16, &'a str, Vec<(String, String)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        ("forged signature", 401, "application/json", forged, good.clone(), "invalid_signature"),
        ("tampered body", 401, "application/json", netlify_sig(&good), deploy_body("error"), "invalid_signature"),
        ("no signature", 401, "application/json", vec![], good.clone(), "invalid_signature"),
        (
            "malformed JSON, validly signed",
            400,
            "application/json",
            netlify_sig(&malformed),
            malformed.clone(),
            "invalid_payload",
        ),
        ("body over 1 MiB", 413, "application/json", netlify_sig(&huge), huge.clone(), "payload_too_large"),
        ("wrong content type, validly signed", 415, "text/plain", netlify_sig(&good), good.clone(), "unsupported_media_type"),
    ];
    for (what, want_status, ct, headers, body, code) in cases {
        let (status, err) = post(&url, ct, &headers, body).await;
        assert_eq!((status, err["error"].as_str().unwrap()), (want_status, code), "{what}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty(), "{what}");
    }
    let (status, err) = post(&s.url("/hooks/unknown"), "application/json", &[], b"{}".to_vec()).await;
    assert_eq!((status, err["error"].as_str().unwrap()), (404, "unknown_source"));
    // A token source publishing outside its allow-list.
    let zap = vec![("x-hookcast-token".to_string(), secrets().zapier)];
    let (status, _) = post(
        &s.url("/hooks/zapier"),
        "application/json",
        &[("x-hookcast-token".into(), "wrong".into())],
        br#"{"channel":"news","event":"x"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, err) =
        post(&s.url("/hooks/zapier"), "application/json", &zap, br#"{"channel":"bad name","event":"x"}"#.to_vec()).await;
    assert_eq!((status, err["error"].as_str().unwrap()), (400, "invalid_payload"));

    assert_eq!(head(&s, "deploys").await, 0, "nothing stored");
    assert_eq!(head(&s, "news").await, 0, "nothing stored");
    // Nothing was sent either: the first frame after all that is this good event.
    let (status, _) = post(&url, "application/json", &netlify_sig(&good), good.clone()).await;
    assert_eq!(status, 200);
    let ev = next(&mut ws).await;
    assert_eq!((ev["channel"].as_str(), ev["seq"].as_u64()), (Some("deploys"), Some(1)));
    s.stop().await;
}

#[tokio::test]
async fn every_signing_kind_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    subscribe(&mut ws, "news", None).await;

    // GitHub-style HMAC.
    let body = br#"{"channel":"news","event":"post.published","data":{"title":"Hello"}}"#.to_vec();
    let h = vec![
        ("X-Hub-Signature-256".into(), sign::github(secrets().hmac.as_bytes(), &body)),
        ("X-GitHub-Delivery".into(), "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
    ];
    let (status, ack) = post(&s.url("/hooks/hmac"), "application/json", &h, body.clone()).await;
    assert_eq!((status, ack["seq"].as_u64()), (200, Some(1)), "{ack}");
    let (_, ack) = post(&s.url("/hooks/hmac"), "application/json", &h, body.clone()).await;
    assert_eq!(ack["duplicate"], true, "a redelivery keeps its X-GitHub-Delivery id");
    // The delivery header is not signed: a captured request posted again under
    // another id is the same signed body, so the same delivery.
    let replay = vec![h[0].clone(), ("X-GitHub-Delivery".into(), "00000000-0000-0000-0000-000000000000".into())];
    let (_, ack) = post(&s.url("/hooks/hmac"), "application/json", &replay, body).await;
    assert_eq!((ack["duplicate"].as_bool(), ack["seq"].as_u64()), (Some(true), Some(1)), "a replay under a new delivery id");
    let ev = next(&mut ws).await;
    assert_eq!((ev["event"].as_str(), ev["data"]["title"].as_str()), (Some("post.published"), Some("Hello")));

    // Standard Webhooks, delivered twice with the same webhook-id: stored once.
    let key = hookcast_core::config::decode_standard_secret(&secrets().standard).unwrap();
    let body = br#"{"channel":"news","event":"post.updated","data":{"title":"Again"}}"#.to_vec();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let h = vec![
        ("webhook-id".into(), "msg_2LJ9".into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), sign::standard(key.expose(), "msg_2LJ9", ts, &body)),
    ];
    let (status, ack) = post(&s.url("/hooks/standard"), "application/json", &h, body.clone()).await;
    assert_eq!((status, ack["seq"].as_u64(), ack["duplicate"].as_bool()), (200, Some(2), Some(false)));
    let (status, ack) = post(&s.url("/hooks/standard"), "application/json", &h, body).await;
    assert_eq!((status, ack["seq"].as_u64(), ack["duplicate"].as_bool()), (200, Some(2), Some(true)));
    assert_eq!(next(&mut ws).await["seq"], 2);

    // Zapier: token header, form-encoded body.
    let h = vec![("x-hookcast-token".into(), secrets().zapier)];
    let form = b"channel=news&event=zap.fired&title=From+Zapier&count=3".to_vec();
    let (status, ack) = post(&s.url("/hooks/zapier"), "application/x-www-form-urlencoded", &h, form).await;
    assert_eq!((status, ack["seq"].as_u64()), (200, Some(3)), "{ack}");
    let ev = next(&mut ws).await;
    assert_eq!(ev["data"], json!({"title": "From Zapier"}), "count is not among the source's fields: it stays behind");

    // Netlify forms: only allow-listed fields reach the page.
    let mut ws2 = s.ws().await;
    subscribe(&mut ws2, "forms/guestbook", None).await;
    let body = include_bytes!("../../../tests/fixtures/netlify/form.json").to_vec();
    let (status, _) = post(&s.url("/hooks/netlify"), "application/json", &netlify_sig(&body), body).await;
    assert_eq!(status, 200);
    let ev = next(&mut ws2).await;
    assert_eq!(ev["channel"], "forms/guestbook");
    assert_eq!(ev["data"]["fields"], json!({"name": "Ada", "message": "Hello!"}));
    assert!(!ev.to_string().contains("203.0.113.9"), "the submitter's IP never reaches pages");
    s.stop().await;
}

/// A Netlify form the source does not list (the dev source lists
/// `guestbook`) publishes nothing, not even that it was sent: answered 200
/// `{"ok":true,"ignored":true,…}`, nothing stored or pushed.
#[tokio::test]
async fn an_unconfigured_netlify_form_is_ignored_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    subscribe(&mut ws, "forms/contact", None).await;
    let body =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/senders/netlify/form-contact.json")).unwrap();
    let (status, ack) = post(&s.url("/hooks/netlify"), "application/json", &netlify_sig(&body), body).await;
    assert_eq!((status, ack["ok"].as_bool(), ack["ignored"].as_bool()), (200, Some(true), Some(true)), "{ack}");
    assert!(ack.get("seq").is_none(), "{ack}");
    assert_eq!(head(&s, "forms/contact").await, 0, "nothing stored");
    assert!(tokio::time::timeout(Duration::from_millis(300), ws.next()).await.is_err(), "nothing pushed");
    s.stop().await;
}

#[tokio::test]
async fn log_survives_a_restart_and_clients_resume_with_since() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    for state in ["building", "ready", "error"] {
        let body = deploy_body(state);
        assert_eq!(post(&s.url("/hooks/netlify"), "application/json", &netlify_sig(&body), body).await.0, 200);
    }
    let before = reqwest::get(s.url("/channels/deploys/events")).await.unwrap().json::<Value>().await.unwrap();
    let (_, epoch) = epoch_of(&before);
    s.stop().await;

    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    send(&mut ws, json!({"action":"subscribe","channel":"deploys","since":1})).await;
    let replay: Vec<Value> = vec![next(&mut ws).await, next(&mut ws).await, next(&mut ws).await];
    assert_eq!(replay[0]["seq"], 2);
    assert_eq!(replay[0]["event"], "deploy.succeeded");
    assert_eq!(replay[1]["seq"], 3);
    assert_eq!(replay[1]["event"], "deploy.failed");
    let (subscribed, after) = epoch_of(&replay[2]);
    assert_eq!(subscribed, json!({"type":"subscribed","channel":"deploys","seq":3}));
    assert_eq!(after, epoch, "the same log after a restart: the same epoch");
    // Dedupe keys survived too: the same deploy+state is a duplicate.
    let body = deploy_body("ready");
    let (_, ack) = post(&s.url("/hooks/netlify"), "application/json", &netlify_sig(&body), body).await;
    assert_eq!((ack["duplicate"].as_bool(), ack["seq"].as_u64()), (Some(true), Some(2)));
    s.stop().await;
}

/// A store wiped and grown again past a page's `since`: the page's old
/// epoch makes its subscribe a reset (nothing replayed from a log it never
/// read), where without epochs it would have taken seq 3 of the new log for
/// seq 3 of the old.
#[tokio::test]
async fn a_wiped_store_is_a_new_epoch_and_old_pages_reset() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    // A preview deploy's channel: `hookcast dev` keeps no state for it, so a
    // gap is a reset (with a state, the state brings the page current:
    // tests/browser/state.test.js).
    let preview = |state: &str| {
        let mut v: Value = serde_json::from_slice(&deploy_body(state)).unwrap();
        v["context"] = json!("deploy-preview");
        v.to_string().into_bytes()
    };
    let body = preview("building");
    assert_eq!(post(&s.url("/hooks/netlify"), "application/json", &netlify_sig(&body), body).await.0, 200);
    let mut ws = s.ws().await;
    let (_, old) = epoch_of(&subscribe(&mut ws, "deploys/deploy-preview", None).await);
    s.stop().await;
    for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("hookcast.db") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let s = Server::start(dir.path()).await;
    for state in ["building", "ready", "error"] {
        let body = preview(state);
        assert_eq!(post(&s.url("/hooks/netlify"), "application/json", &netlify_sig(&body), body).await.0, 200);
    }
    let mut ws = s.ws().await;
    send(&mut ws, json!({"action":"subscribe","channel":"deploys/deploy-preview","since":1,"epoch":old})).await;
    let (reply, new) = epoch_of(&next(&mut ws).await);
    assert_ne!(new, old, "a new file, a new epoch");
    assert_eq!(
        reply,
        json!({"type":"subscribed","channel":"deploys/deploy-preview","seq":3,"reset":true}),
        "no replay from a log it never read"
    );
    send(&mut ws, json!({"action":"subscribe","channel":"deploys/deploy-preview","since":1,"epoch":new})).await;
    assert_eq!(next(&mut ws).await["seq"], 2, "with this log's epoch, since 1 replays");
    s.stop().await;
}

#[tokio::test]
async fn socket_protocol_errors_ping_and_history_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    send(&mut ws, json!({"action":"ping"})).await;
    assert_eq!(next(&mut ws).await, json!({"type":"pong"}));
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_json");
    send(&mut ws, json!({"action":"subscribe","channel":"../etc"})).await;
    assert_eq!(next(&mut ws).await["code"], "invalid_channel");
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_message");
    // Frames much larger than the socket's 4 KiB read chunk still arrive whole:
    // 30 KB is within the protocol's 32 KB (40 KB closes with 1009: hostile.rs).
    send(&mut ws, json!({"action":"ping","pad":"p".repeat(30 * 1024)})).await;
    assert_eq!(next(&mut ws).await, json!({"type":"pong"}));

    let res = reqwest::get(s.url("/channels/deploys/events?since=x")).await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_since");
    let res = reqwest::get(s.url("/channels/forms/guestbook/events")).await.unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*", "dev allows any origin");
    let (history, _) = epoch_of(&res.json::<Value>().await.unwrap());
    assert_eq!(history, json!({"channel":"forms/guestbook","head":0,"reset":false,"events":[]}));
    let res = reqwest::get(s.url("/nope")).await.unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "not_found");
    for path in ["/hookcast.js", "/hookcast.mjs"] {
        let js = reqwest::get(s.url(path)).await.unwrap();
        assert_eq!(js.status().as_u16(), 200, "{path}");
        assert!(js.headers()["content-type"].to_str().unwrap().starts_with("application/javascript"), "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn origins_outside_the_allow_list_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Overrides { port: Some(0), data_dir: Some(dir.path().to_owned()), ..Default::default() };
    let mut settings = settings::dev_settings(&secrets(), &cli).unwrap();
    settings.core.allowed_origins = vec!["https://site.example".into(), "https://*--site.netlify.app".into()];
    let s = Server::start_with(settings).await;
    let req = |origin: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
        r.headers_mut().insert("origin", origin.parse().unwrap());
        r
    };
    // Refused with a close frame a browser can read: 4403 and the origin.
    for evil in ["https://evil.example", "https://x.evil--site.netlify.app", "http://preview--site.netlify.app"] {
        let (mut ws, _) = connect_async(req(evil)).await.unwrap();
        match hookcast_testkit::within(WAIT, format!("the 4403 close for {evil}"), ws.next()).await {
            Some(Ok(Message::Close(Some(c)))) => {
                assert_eq!(u16::from(c.code), 4403, "{evil}");
                assert!(c.reason.contains(evil) && c.reason.contains("allowed_origins"), "{}", c.reason);
            }
            other => panic!("{evil}: expected a 4403 close, got {other:?}"),
        }
    }
    assert_eq!(s.state.live.connections(), 0, "a refused page is never registered");
    for good in ["https://site.example", "https://deploy-preview-12--site.netlify.app"] {
        let (mut ws, _) = connect_async(req(good)).await.unwrap();
        send(&mut ws, json!({"action":"ping"})).await;
        assert_eq!(next(&mut ws).await["type"], "pong", "{good}");
    }

    // History over HTTP names only an allowed origin in CORS.
    let cors = |origin: &'static str| {
        let url = s.url("/channels/deploys/events");
        async move {
            let res = reqwest::Client::new().get(url).header("origin", origin).send().await.unwrap();
            res.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(cors("https://site.example").await.as_deref(), Some("https://site.example"));
    assert_eq!(cors("https://evil.example").await, None);
    s.stop().await;
}

/// `hookcast send`, the real binary, for each signing kind.
#[tokio::test]
async fn hookcast_send_signs_every_kind_as_the_sender_would() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    subscribe(&mut ws, "news", None).await;
    let sec = secrets();
    let runs: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--kind".into(),
                "hmac".into(),
                "--secret".into(),
                sec.hmac.clone(),
                "--data".into(),
                r#"{"title":"hmac"}"#.into(),
            ],
            "hmac",
        ),
        (
            vec![
                "--kind".into(),
                "standard".into(),
                "--secret".into(),
                sec.standard.clone(),
                "--field".into(),
                "title=standard".into(),
            ],
            "standard",
        ),
        (
            vec![
                "--kind".into(),
                "token".into(),
                "--secret".into(),
                sec.zapier.clone(),
                "--form-encoded".into(),
                "--field".into(),
                "title=zapier form".into(),
            ],
            "zapier",
        ),
        (
            vec![
                "--kind".into(),
                "token".into(),
                "--secret".into(),
                sec.zapier.clone(),
                "--field".into(),
                "title=zapier json".into(),
            ],
            "zapier",
        ),
    ];
    for (i, (args, source)) in runs.into_iter().enumerate() {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
            .args(["send", "--url", &s.url(&format!("/hooks/{source}")), "--channel", "news", "--event", "item.added"])
            .args(&args)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{source}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("200 "), "{stdout}");
        let ev = next(&mut ws).await;
        assert_eq!(ev["seq"], i as u64 + 1);
        assert_eq!(ev["event"], "item.added");
        assert!(ev["data"]["title"].as_str().unwrap().starts_with(source), "{ev}");
    }
    // A wrong secret: the command fails and says why.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["send", "--url", &s.url("/hooks/hmac"), "--kind", "hmac", "--secret", "nope", "--channel", "news", "--event", "x"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("401 "));
    s.stop().await;
}

/// Reads SSE messages from a streaming response until `done` says stop.
async fn sse_until(
    res: &mut reqwest::Response,
    buf: &mut String,
    mut done: impl FnMut(&str, &Value) -> bool,
) -> Vec<(Option<String>, Value)> {
    let mut got = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")) {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    data.push_str(v);
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            let v: Value = serde_json::from_str(&data).unwrap();
            let stop = done(id.as_deref().unwrap_or(""), &v);
            got.push((id, v));
            if stop {
                return got;
            }
        }
        let chunk = hookcast_testkit::within(WAIT, "an SSE chunk", res.chunk()).await.unwrap().expect("SSE ended");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn sse_streams_events_and_resumes_from_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let hmac = |body: &[u8]| vec![("X-Hub-Signature-256".to_string(), sign::github(secrets().hmac.as_bytes(), body))];
    let publish = |channel: &'static str, n: u64| {
        let body = json!({"channel": channel, "event": "tick", "data": {"n": n}}).to_string().into_bytes();
        let url = s.url("/hooks/hmac");
        async move { assert_eq!(post(&url, "application/json", &hmac(&body), body.clone()).await.0, 200) }
    };
    let mut res = reqwest::get(s.url("/sse?channel=news&channel=alerts")).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let mut subscribed = 0;
    sse_until(&mut res, &mut buf, |_, v| {
        subscribed += (v["type"] == "subscribed") as u32;
        subscribed == 2
    })
    .await;
    publish("news", 1).await;
    publish("alerts", 1).await;
    let got = sse_until(&mut res, &mut buf, |_, v| v["channel"] == "alerts").await;
    let last_id = got.last().unwrap().0.clone().unwrap();
    assert_eq!(last_id, "alerts=1;news=1", "the id carries every channel's cursor");
    drop(res);

    // Missed while away: replayed after Last-Event-ID, nothing twice.
    publish("news", 2).await;
    publish("news", 3).await;
    publish("alerts", 2).await;
    let mut res = reqwest::Client::new()
        .get(s.url("/sse?channel=news&channel=alerts"))
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let mut subscribed = 0;
    let got = sse_until(&mut res, &mut buf, |_, v| {
        subscribed += (v["type"] == "subscribed") as u32;
        subscribed == 2
    })
    .await;
    let events: Vec<(String, u64)> = got
        .iter()
        .filter(|(_, v)| v["type"] == "event")
        .map(|(_, v)| (v["channel"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap()))
        .collect();
    let mut sorted = events.clone();
    sorted.sort();
    assert_eq!(sorted, vec![("alerts".into(), 2), ("news".into(), 2), ("news".into(), 3)]);

    let bad = reqwest::get(s.url("/sse")).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let bad = reqwest::get(s.url("/sse?channel=a%20b")).await.unwrap();
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_channel");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_webhooks_reach_every_subscriber_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = s.ws().await;
        subscribe(&mut ws, "news", None).await;
        clients.push(ws);
    }
    let posts = (0..60u64).map(|n| {
        let body = json!({"channel": "news", "event": "tick", "data": {"n": n}}).to_string().into_bytes();
        let h = vec![("X-Hub-Signature-256".to_string(), sign::github(secrets().hmac.as_bytes(), &body))];
        let url = s.url("/hooks/hmac");
        async move { post(&url, "application/json", &h, body).await.0 }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == 200));
    for ws in clients.iter_mut() {
        let mut seqs = Vec::new();
        for _ in 0..60 {
            seqs.push(next(ws).await["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, (1..=60).collect::<Vec<_>>(), "in seq order on the wire");
    }
    s.stop().await;
}

/// Equal bodies without a delivery identity are two real events (two identical
/// Zapier alerts); a repeated GitHub delivery id is one.
#[tokio::test]
async fn only_a_senders_delivery_identity_dedupes_never_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut ws = s.ws().await;
    subscribe(&mut ws, "alerts", None).await;
    let zap = vec![("x-hookcast-token".to_string(), secrets().zapier)];
    let body = br#"{"channel":"alerts","event":"zap.fired","data":{"home":1}}"#.to_vec();
    for want in [1, 2] {
        let (status, ack) = post(&s.url("/hooks/zapier"), "application/json", &zap, body.clone()).await;
        assert_eq!((status, ack["seq"].as_u64(), ack["duplicate"].as_bool()), (200, Some(want), Some(false)), "{ack}");
    }
    assert_eq!(next(&mut ws).await["seq"], 1);
    assert_eq!(next(&mut ws).await["seq"], 2);

    let gh = |body: &[u8]| {
        vec![
            ("X-Hub-Signature-256".to_string(), sign::github(secrets().hmac.as_bytes(), body)),
            ("X-GitHub-Delivery".to_string(), "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string()),
        ]
    };
    let body = br#"{"channel":"alerts","event":"release","data":{"v":2}}"#.to_vec();
    let (_, first) = post(&s.url("/hooks/hmac"), "application/json", &gh(&body), body.clone()).await;
    let (_, again) = post(&s.url("/hooks/hmac"), "application/json", &gh(&body), body.clone()).await;
    assert_eq!((first["seq"].as_u64(), first["duplicate"].as_bool()), (Some(3), Some(false)));
    assert_eq!((again["seq"].as_u64(), again["duplicate"].as_bool()), (Some(3), Some(true)));
    assert_eq!(next(&mut ws).await["seq"], 3);
    assert!(tokio::time::timeout(Duration::from_millis(300), ws.next()).await.is_err(), "the retry is not pushed");
    s.stop().await;
}

/// The acknowledgement does not wait for the fan-out: with the dispatcher
/// held back, webhooks are still answered 200 with their seq and nothing is
/// pushed; once it runs, it pushes what the log committed, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_acknowledged_without_waiting_for_fan_out() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Overrides { port: Some(0), data_dir: Some(dir.path().to_owned()), ..Default::default() };
    let st = settings::dev_settings(&secrets(), &cli).unwrap();
    let state = hookcast::state(&st, false).unwrap();
    let held = state.commits.lock().unwrap().take().expect("the commit feed");
    let (tx, rx) = oneshot::channel::<()>();
    let (addr, serving) = hookcast::bind(&st, state.clone(), async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    let done = tokio::spawn(serving);
    let (mut ws, _) = connect_async(format!("ws://{addr}/ws")).await.unwrap();
    subscribe(&mut ws, "news", None).await;
    for n in 1..=3u64 {
        let body = json!({"channel": "news", "event": "tick", "data": {"n": n}}).to_string().into_bytes();
        let h = vec![("X-Hub-Signature-256".to_string(), sign::github(secrets().hmac.as_bytes(), &body))];
        let (status, ack) = post(&format!("http://{addr}/hooks/hmac"), "application/json", &h, body).await;
        assert_eq!((status, ack["seq"].as_u64()), (200, Some(n)), "{ack}");
    }
    assert!(tokio::time::timeout(Duration::from_millis(300), ws.next()).await.is_err(), "nothing pushed without the dispatcher");
    tokio::spawn(hookcast::dispatch::run(state.fanout.clone(), state.log.backlog(), held));
    for n in 1..=3u64 {
        let ev = next(&mut ws).await;
        assert_eq!((ev["seq"].as_u64(), ev["data"]["n"].as_u64()), (Some(n), Some(n)));
    }
    tx.send(()).unwrap();
    hookcast_testkit::within(WAIT, "the server to stop", done).await.unwrap().unwrap();
}

#[tokio::test]
async fn occupancy_counts_the_pages_on_a_channel_and_follows_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let occupancy = json!({"action":"occupancy","channel":"deploys"});
    let mut pages = Vec::new();
    for _ in 0..3 {
        let mut ws = s.ws().await;
        assert_eq!(subscribe(&mut ws, "deploys", None).await["type"], "subscribed");
        pages.push(ws);
    }
    let mut other = s.ws().await;
    subscribe(&mut other, "forms/guestbook", None).await;
    send(&mut other, occupancy.clone()).await;
    assert_eq!(next(&mut other).await["code"], "not_subscribed");

    send(&mut pages[0], occupancy.clone()).await;
    assert_eq!(next(&mut pages[0]).await, json!({"type":"occupancy","channel":"deploys","count":3}));
    send(&mut pages[0], occupancy.clone()).await;
    let limited = next(&mut pages[0]).await;
    assert_eq!(limited["code"], "rate_limited", "{limited}");

    // A page closes: once the server has seen it go, the next ask counts 2.
    let mut gone = pages.pop().unwrap();
    gone.close(None).await.unwrap();
    while gone.next().await.is_some() {}
    let start = tokio::time::Instant::now();
    loop {
        // Another connection's turn each time, or a fresh one.
        let mut asker = s.ws().await;
        subscribe(&mut asker, "deploys", None).await;
        send(&mut asker, occupancy.clone()).await;
        let n = next(&mut asker).await["count"].as_u64().unwrap();
        if n == 3 {
            break; // two pages left, plus the asker
        }
        assert!(start.elapsed() < WAIT, "gave up after {WAIT:?} waiting for the closed page to leave the count; it stayed {n}");
        asker.close(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}
