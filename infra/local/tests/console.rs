//! The console on the local binary, over real sockets: every webhook's
//! answer in the delivery log (a refusal with its status and reason, an
//! acceptance with its channel, seq and audience), a test event and a
//! replay reaching a page, the operator token guarding every route, and
//! `hookcast deliveries` printing what the API gives.

use std::path::Path;
use std::process::Stdio;

use futures::SinkExt;
use hookcast::settings::{self, Overrides, OPERATOR_TOKEN_ENV};
use hookcast_http::console::OperatorToken;
use hookcast_testkit::senders::{fixture, sources_config};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{next, Ws, WAIT};

const TOKEN: &str = "operator-token-for-the-console-tests";
/// The `github` source's secret in [`sources_config`].
const GITHUB_SECRET: &str = "github-e2e-secret-0123456789";
const SUBSCRIBE_SECRET: &str = "console-subscribe-secret-0123456789";

/// The binary on port 0 with the `github` source (channel `releases`, only
/// `release.*` events) and a private channel; the console opened with
/// `token`.
async fn start(dir: &Path, token: Option<&str>) -> hookcast::Running {
    let path = dir.join("hookcast.toml");
    let private = format!("[private]\nsecret = \"{SUBSCRIBE_SECRET}\"\nchannels = [\"team/*\"]\n");
    std::fs::write(&path, format!("{}\n{private}", sources_config(&["github"]))).unwrap();
    let cli = Overrides { port: Some(0), data_dir: Some(dir.join("data")), ..Default::default() };
    let mut s = settings::load_file(&path, &cli).unwrap();
    s.console.operator_token = token.map(|t| OperatorToken::new(t).unwrap());
    hookcast::spawn(&s, false).await.unwrap()
}

/// A page on `/ws` with `query`, subscribed to `releases`.
async fn page(addr: std::net::SocketAddr, query: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws{query}")).await.unwrap();
    ws.send(Message::Text(json!({"action": "subscribe", "channel": "releases"}).to_string().into())).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    ws
}

/// GitHub's release delivery as GitHub sends it, signed with `secret`.
async fn github_release(addr: std::net::SocketAddr, secret: &str, delivery: &str) -> (u16, Value) {
    let body = std::fs::read(fixture("github/release-published.json")).unwrap();
    let headers = vec![
        ("X-GitHub-Event".to_string(), "release".to_string()),
        ("X-GitHub-Delivery".to_string(), delivery.to_string()),
        ("X-Hub-Signature-256".to_string(), hookcast_core::sign::github(secret.as_bytes(), &body)),
        ("User-Agent".to_string(), "GitHub-Hookshot/console-test".to_string()),
    ];
    let (status, answer, _) = common::post(&format!("http://{addr}/hooks/github"), "application/json", &headers, body).await;
    (status, answer)
}

/// A console request with `Authorization: Bearer <token>` (none if `None`)
/// and `extra` headers; its status and body.
async fn console(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}{path}");
    let mut req = if method == "POST" { client.post(url) } else { client.get(url) };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn api(addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = console(addr, "GET", path, Some(TOKEN), &[], None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn api_post(addr: std::net::SocketAddr, path: &str, body: Value) -> Value {
    let (status, answer) = console(addr, "POST", path, Some(TOKEN), &[], Some(&body.to_string())).await;
    assert_eq!(status, 200, "{path}: {answer}");
    serde_json::from_str(&answer).unwrap()
}

async fn deliveries(addr: std::net::SocketAddr) -> Vec<Value> {
    api(addr, "/_console/api/deliveries").await["deliveries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_and_an_accepted_delivery_are_logged_with_why_where_and_who_saw_it() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), Some(TOKEN)).await;
    let addr = running.addr;
    let mut ws = page(addr, "?build=site-v1").await;

    let (status, _) = github_release(addr, "not-the-secret-0123456789", "d-forged").await;
    assert_eq!(status, 401);
    let (status, ack) = github_release(addr, GITHUB_SECRET, "d-real").await;
    assert_eq!((status, ack["seq"].as_u64()), (200, Some(1)), "{ack}");
    let ev = next(&mut ws).await;
    assert_eq!((ev["channel"].as_str(), ev["seq"].as_u64()), (Some("releases"), Some(1)), "{ev}");

    let listed = api(addr, "/_console/api/deliveries").await;
    let text = listed.to_string();
    let entries = listed["deliveries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed:#}");
    let (refused, accepted) = (&entries[0], &entries[1]);
    assert_eq!((refused["outcome"].as_str(), refused["status"].as_u64()), (Some("refused"), Some(401)), "{refused}");
    assert_eq!((refused["source"].as_str(), refused["kind"].as_str()), (Some("github"), Some("github")));
    assert_eq!(refused["code"], "invalid_signature");
    assert!(refused["reason"].as_str().unwrap().contains("cannot tell a different secret from a changed body"), "{refused}");
    assert_eq!(refused["headers"]["x-github-delivery"], "d-forged");
    assert_eq!(refused["headers"]["user-agent"], "GitHub-Hookshot/console-test");
    assert_eq!(accepted["outcome"], "accepted");
    assert_eq!((accepted["channel"].as_str(), accepted["seq"].as_u64()), (Some("releases"), Some(1)), "{accepted}");
    assert_eq!(accepted["event"], "release.published");
    // Never a signature, never the body (only its size).
    assert!(!text.contains("x-hub-signature") && !text.contains("sha256="), "{text}");
    assert!(!text.contains("Codertocat") && !text.contains("0.0.1"), "a body field leaked: {text}");
    assert!(accepted["bytes"].as_u64().unwrap() > 1000);

    // The page that received it is its audience (counted once the
    // fan-out's report is written, just after the frame).
    let id = accepted["id"].as_str().unwrap().to_owned();
    let seen = hookcast_testkit::until(WAIT, "the audience in the log", || async {
        let entry = api(addr, &format!("/_console/api/deliveries/{id}")).await;
        match entry["delivery"]["audience"]["delivered"].as_u64() {
            Some(n) if n >= 1 => Ok(entry),
            _ => Err(entry.to_string()),
        }
    })
    .await;
    assert_eq!(seen["event"]["data"]["release"]["tag_name"], "0.0.1", "the detail reads the event from the channel's log");

    // The channel and the open pages, by build.
    let channel = api(addr, "/_console/api/channels/releases").await;
    assert_eq!((channel["head"].as_u64(), channel["occupancy"].as_u64()), (Some(1), Some(1)), "{channel}");
    let mut plain = page(addr, "").await;
    let sse = reqwest::get(format!("http://{addr}/sse?channel=releases&build=site-v2")).await.unwrap();
    assert_eq!(sse.status(), 200);
    let pages = api(addr, "/_console/api/pages").await;
    assert_eq!(pages["total"], 3, "{pages}");
    let builds = pages["builds"].as_array().unwrap();
    for (build, n) in [("site-v1", 1), ("site-v2", 1), ("", 1)] {
        assert!(builds.contains(&json!({"build": build, "pages": n})), "{build}: {pages}");
    }
    drop(sse);
    plain.close(None).await.unwrap();
    // (The SSE stream is noticed gone at its next write, a keep-alive.)
    hookcast_testkit::until(WAIT, "the closed page to leave the count", || async {
        let pages = api(addr, "/_console/api/pages").await;
        let builds = pages["builds"].as_array().unwrap();
        if !builds.iter().any(|b| b["build"] == "") && builds.contains(&json!({"build": "site-v1", "pages": 1})) {
            Ok(())
        } else {
            Err(pages.to_string())
        }
    })
    .await;
    hookcast_testkit::within(WAIT, "the server to stop", running.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_and_a_replay_reach_a_subscribed_page() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), Some(TOKEN)).await;
    let addr = running.addr;
    let mut ws = page(addr, "").await;

    let sent =
        api_post(addr, "/_console/api/events", json!({"channel": "releases", "event": "console.test", "data": {"n": 1}})).await;
    assert_eq!((sent["delivery"]["kind"].as_str(), sent["delivery"]["seq"].as_u64()), (Some("test"), Some(1)), "{sent}");
    let ev = next(&mut ws).await;
    assert_eq!((ev["event"].as_str(), ev["seq"].as_u64(), &ev["data"]), (Some("console.test"), Some(1), &json!({"n": 1})));

    let (status, _) = github_release(addr, GITHUB_SECRET, "d-to-replay").await;
    assert_eq!(status, 200);
    let original = next(&mut ws).await;
    assert_eq!(original["seq"], 2);
    let id = deliveries(addr).await.last().unwrap()["id"].as_str().unwrap().to_owned();

    let replayed = api_post(addr, "/_console/api/replay", json!({"id": id})).await;
    assert_eq!(replayed["delivery"]["replay_of"], id.as_str(), "{replayed}");
    assert_eq!((replayed["delivery"]["kind"].as_str(), replayed["delivery"]["seq"].as_u64()), (Some("replay"), Some(3)));
    let again = next(&mut ws).await;
    assert_eq!((again["seq"].as_u64(), &again["event"], &again["data"]), (Some(3), &original["event"], &original["data"]));
    let logged = deliveries(addr).await;
    assert_eq!(logged.last().unwrap()["replay_of"], id.as_str(), "the replay is logged: {logged:#?}");

    // Only an accepted delivery can be replayed.
    let (status, _) = github_release(addr, "not-the-secret-0123456789", "d-forged").await;
    assert_eq!(status, 401);
    let refused = deliveries(addr).await.last().unwrap()["id"].as_str().unwrap().to_owned();
    let (status, answer) =
        console(addr, "POST", "/_console/api/replay", Some(TOKEN), &[], Some(&json!({"id": refused}).to_string())).await;
    assert_eq!(status, 409, "{answer}");
    hookcast_testkit::within(WAIT, "the server to stop", running.stop()).await.unwrap();
}

/// Every console route, as (method, path, body).
fn routes(id: &str) -> Vec<(&'static str, String, Option<String>)> {
    vec![
        ("GET", "/_console".into(), None),
        ("GET", "/_console/".into(), None),
        ("GET", "/_console/api/deliveries".into(), None),
        ("GET", "/_console/api/deliveries?limit=5".into(), None),
        ("GET", format!("/_console/api/deliveries/{id}"), None),
        ("GET", "/_console/api/channels/releases".into(), None),
        ("GET", "/_console/api/pages".into(), None),
        ("POST", "/_console/api/events".into(), Some(json!({"channel": "releases", "data": {}}).to_string())),
        ("POST", "/_console/api/replay".into(), Some(json!({"id": id}).to_string())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_route_needs_the_operator_token() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), Some(TOKEN)).await;
    let addr = running.addr;
    let (status, _) = github_release(addr, GITHUB_SECRET, "d-secret-thing").await;
    assert_eq!(status, 200);
    let id = deliveries(addr).await[0]["id"].as_str().unwrap().to_owned();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = hookcast_core::token::Claims { channels: vec!["team/*".into(), "releases".into()], exp: exp as f64 };
    let subscribe_token = hookcast_core::token::mint(SUBSCRIBE_SECRET.as_bytes(), &claims);

    let refused_with: [(&str, Option<&str>); 4] = [
        ("no token", None),
        ("a wrong token", Some("operator-token-for-the-console-test")),
        ("a subscribe token", Some(&subscribe_token)),
        ("a prefix of the token", Some("operator")),
    ];
    for (method, path, body) in routes(&id) {
        for (what, token) in refused_with {
            let (status, answer) = console(addr, method, &path, token, &[], body.as_deref()).await;
            assert_eq!(status, 401, "{method} {path} with {what}: {answer}");
            assert!(!answer.contains(&id) && !answer.contains("d-secret-thing"), "{method} {path} with {what} leaked: {answer}");
        }
        // The operator's browser, led by another site: refused even with
        // the token (the page's empty shell is its 401, which holds no data).
        let cross = [("sec-fetch-site", "cross-site")];
        let (status, answer) = console(addr, method, &path, Some(TOKEN), &cross, body.as_deref()).await;
        let expected = if path.starts_with("/_console/api/") { 403 } else { 401 };
        assert_eq!(status, expected, "{method} {path} cross-site: {answer}");
        // The same request with the token is answered: the 401s were the token's.
        let (status, answer) = console(addr, method, &path, Some(TOKEN), &[], body.as_deref()).await;
        assert_eq!(status, 200, "{method} {path} with the token: {answer}");
    }
    // A write that a form could send is refused.
    for path in ["/_console/api/events", "/_console/api/replay"] {
        let res = reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .bearer_auth(TOKEN)
            .header("content-type", "text/plain")
            .body(json!({"channel": "releases", "id": id}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415, "{path}");
    }
    // The page's script and style are static: no entry, no token in them.
    for asset in ["/_console/console.js", "/_console/console.css"] {
        let (status, text) = console(addr, "GET", asset, None, &[], None).await;
        assert_eq!(status, 200, "{asset}");
        assert!(!text.contains(&id) && !text.contains("d-secret-thing") && !text.contains("releases"), "{asset} carries data");
        assert!(!text.contains(TOKEN), "{asset}");
    }
    hookcast_testkit::within(WAIT, "the server to stop", running.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_operator_token_the_console_is_off_and_says_how_to_turn_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), None).await;
    let id = "1800000000000-00000000deadbeef";
    for (method, path, body) in routes(id) {
        for token in [None, Some(TOKEN)] {
            let (status, answer) = console(running.addr, method, &path, token, &[], body.as_deref()).await;
            assert_eq!(status, 401, "{method} {path}: {answer}");
            if path.contains("/api/") {
                assert!(answer.contains(OPERATOR_TOKEN_ENV), "{method} {path}: {answer}");
            }
        }
    }
    hookcast_testkit::within(WAIT, "the server to stop", running.stop()).await.unwrap();
}

/// `hookcast deliveries` with `args`, and its exit status, stdout and stderr.
async fn run_deliveries(args: &[&str], env_token: Option<&str>) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"));
    cmd.arg("deliveries").args(args).env_remove(OPERATOR_TOKEN_ENV).kill_on_drop(true);
    if let Some(t) = env_token {
        cmd.env(OPERATOR_TOKEN_ENV, t);
    }
    let out = hookcast_testkit::within(WAIT, "hookcast deliveries", cmd.output()).await.unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookcast_deliveries_prints_the_api_s_entries_and_follows_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), Some(TOKEN)).await;
    let addr = running.addr;
    let url = format!("http://{addr}");
    assert_eq!(github_release(addr, "not-the-secret-0123456789", "d-1").await.0, 401);
    assert_eq!(github_release(addr, GITHUB_SECRET, "d-2").await.0, 200);
    assert_eq!(github_release(addr, GITHUB_SECRET, "d-2").await.0, 200, "a duplicate");
    common::fanned_out(&running.state, "the fan-out").await;

    let from_api = deliveries(addr).await;
    assert_eq!(from_api.len(), 3);
    let (code, out, err) = run_deliveries(&["--url", &url, "--token", TOKEN], None).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, from_api.iter().map(Value::to_string).collect::<Vec<_>>(), "each entry as the API gives it");
    // The token from the environment; --limit takes the newest.
    let (code, out, err) = run_deliveries(&["--url", &url, "--limit", "2"], Some(TOKEN)).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), lines[1..]);

    // Refused, and unreachable: one line on stderr, a failing exit.
    let (code, out, err) = run_deliveries(&["--url", &url, "--token", "a-wrong-operator-token-0123"], None).await;
    assert!(code != 0 && out.is_empty(), "{code} {out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("401") && err.contains("operator token"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, _, err) = run_deliveries(&["--url", &format!("http://{closed}"), "--token", TOKEN], None).await;
    assert!(code != 0, "{code}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("could not reach"), "{err}");

    // --follow: what is there, then a delivery made after it started.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["deliveries", "--follow", "--url", &url, "--token", TOKEN])
        .env_remove(OPERATOR_TOKEN_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut followed = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in &lines {
        let got = hookcast_testkit::within(WAIT, "an entry there before", followed.next_line()).await.unwrap().unwrap();
        assert_eq!(&got, line);
    }
    assert_eq!(github_release(addr, GITHUB_SECRET, "d-3").await.0, 200);
    let got = hookcast_testkit::within(WAIT, "the new entry", followed.next_line()).await.unwrap().expect("still following");
    let newest = deliveries(addr).await.last().unwrap().clone();
    assert_eq!(newest["headers"]["x-github-delivery"], "d-3");
    assert_eq!(got, newest.to_string());
    child.kill().await.unwrap();
    hookcast_testkit::within(WAIT, "the server to stop", running.stop()).await.unwrap();
}

/// `hookcast dev` prints the console's URL with a token of its own in the
/// fragment, and that token opens it; an operator token too short to be
/// safe stops `hookcast serve` before it listens, without showing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookcast_dev_prints_a_console_url_whose_token_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(dir.path().join("dev"))
        .env_remove(OPERATOR_TOKEN_ENV)
        .env_remove("HOOKCAST_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (url, mut out) = common::banner(&mut child, "hookcast dev's banner").await;
    let line = hookcast_testkit::within(WAIT, "the console line", async {
        loop {
            let line = out.next_line().await.unwrap().expect("the banner ended without the console");
            if line.trim_start().starts_with("console") {
                return line;
            }
        }
    })
    .await;
    let link = line.split_whitespace().nth(1).unwrap();
    let token = link.strip_prefix(&format!("{url}/_console#token=")).unwrap_or_else(|| panic!("{line}"));
    assert!(token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    let addr: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    assert_eq!(console(addr, "GET", "/_console/api/deliveries", Some(token), &[], None).await.0, 200);
    assert_eq!(console(addr, "GET", "/_console/api/deliveries", None, &[], None).await.0, 401);
    child.kill().await.unwrap();

    let cfg = dir.path().join("hookcast.toml");
    std::fs::write(&cfg, format!("[server]\nport = 0\ndata_dir = \"{}\"\n", dir.path().join("serve").display())).unwrap();
    let short = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env(OPERATOR_TOKEN_ENV, "hunter2-short")
        .kill_on_drop(true)
        .output();
    let short = hookcast_testkit::within(WAIT, "serve with a short token", short).await.unwrap();
    let err = String::from_utf8(short.stderr).unwrap();
    assert!(!short.status.success(), "{err}");
    assert!(err.contains(OPERATOR_TOKEN_ENV) && err.contains("shorter than 16"), "{err}");
    assert!(!err.contains("hunter2") && !String::from_utf8(short.stdout).unwrap().contains("listening"), "{err}");
}
