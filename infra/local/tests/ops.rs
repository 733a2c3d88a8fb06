//! What an operator expects: `/healthz` checks the store, `/metrics` is
//! Prometheus text a scraper can parse, logs can be JSON lines.

use std::collections::HashMap;
use std::process::Stdio;

use futures::{SinkExt, StreamExt};
use hookcast::settings::{self, Overrides};
use hookcast_core::sign;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

mod common;

/// Parses the Prometheus text format: `name{labels} value` per sample.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(key.chars().next().is_some_and(|c| c.is_ascii_alphabetic()), "{line}");
        out.insert(key.to_owned(), value);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_metrics_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = common::dev_secrets("ops-netlify-secret-0123", "ops-zapier-token-0123", "ops-hmac-secret-0123");
    let cli = Overrides { port: Some(0), data_dir: Some(dir.path().to_owned()), ..Default::default() };
    let running = hookcast::spawn(&settings::dev_settings(&secrets, &cli).unwrap(), false).await.unwrap();
    let addr = running.addr;
    let http = format!("http://{addr}");

    let health = reqwest::get(format!("{http}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["ok"], true);

    let mut ws = common::ws_connect(addr).await;
    ws.send(Message::Text(json!({"action": "subscribe", "channel": "news"}).to_string().into())).await.unwrap();
    hookcast_testkit::within(hookcast_testkit::LOCAL, "the subscribe reply", ws.next()).await.unwrap().unwrap();
    let client = reqwest::Client::new();
    let body = json!({"channel": "news", "event": "post", "data": {}}).to_string();
    for secret in [&secrets.hmac, &"a-wrong-secret-0123".to_string()] {
        client
            .post(format!("{http}/hooks/hmac"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign::github(secret.as_bytes(), body.as_bytes()))
            .body(body.clone())
            .send()
            .await
            .unwrap();
    }
    hookcast_testkit::within(hookcast_testkit::LOCAL, "the event on the socket", ws.next()).await.unwrap().unwrap();
    // The frame is written before the fan-out counts it: wait for the
    // fan-out to finish, not for the frame (a busy machine shows the gap).
    common::fanned_out(&running.state, "the fan-out to finish").await;

    let res = reqwest::get(format!("{http}/metrics")).await.unwrap();
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let m = parse(&res.text().await.unwrap());
    assert_eq!(m[r#"hookcast_webhooks_total{source="hmac",outcome="accepted"}"#], 1.0);
    assert_eq!(m[r#"hookcast_webhooks_total{source="hmac",outcome="invalid_signature"}"#], 1.0);
    assert_eq!(m["hookcast_events_total"], 1.0);
    assert_eq!(m[r#"hookcast_deliveries_total{result="delivered"}"#], 1.0);
    assert_eq!(m["hookcast_open_sockets"], 1.0);
    assert_eq!(m["hookcast_subscriptions"], 1.0);
    assert_eq!(m["hookcast_publish_to_delivery_seconds_count"], 1.0);
    assert_eq!(m[r#"hookcast_publish_to_delivery_seconds_bucket{le="+Inf"}"#], 1.0);
    assert!(
        m[r#"hookcast_publish_to_delivery_seconds_bucket{le="30"}"#]
            >= m[r#"hookcast_publish_to_delivery_seconds_bucket{le="0.005"}"#]
    );
    hookcast_testkit::within(hookcast_testkit::LOCAL, "the server to stop", running.stop()).await.unwrap();

    // JSON logs: every line an object with a level and a message.
    let cfg = dir.path().join("hookcast.toml");
    std::fs::write(&cfg, format!("[server]\nport = 0\ndata_dir = \"{}\"\n", dir.path().join("json").display())).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "hookcast=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (url, _out) = common::banner(&mut child, "hookcast serve's banner").await;
    reqwest::Client::new().post(format!("{url}/hooks/nope")).body("{}").send().await.unwrap();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = hookcast_testkit::within(hookcast_testkit::LOCAL, "a JSON log line", err.next_line()).await.unwrap().unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
    assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    child.kill().await.unwrap();
}

/// A private exact channel name leaves its sub-channels public: `hookcast
/// serve` says so in its banner and its log (private `orders` does not
/// cover `orders/1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_exact_name_with_public_sub_channels_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hookcast.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nport = 0\ndata_dir = \"{}\"\n[private]\nsecret = \"private-ops-secret-0123\"\nchannels = [\"orders\", \"team/*\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookcast"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "hookcast=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = hookcast_testkit::within(hookcast_testkit::LOCAL, "the banner's warning", async {
        let mut seen = Vec::new();
        while let Some(line) = out.next_line().await.unwrap() {
            if line.contains("webhooks:") {
                break;
            }
            seen.push(line);
        }
        seen
    })
    .await;
    let warned: Vec<&String> = printed.iter().filter(|l| l.trim_start().starts_with("warning")).collect();
    assert!(warned.iter().any(|l| l.contains("\"orders\" is an exact name") && l.contains("orders/1")), "banner: {printed:#?}");
    assert!(!warned.iter().any(|l| l.contains("team")), "team/* covers its sub-channels: {warned:?}");
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let logged = hookcast_testkit::within(hookcast_testkit::LOCAL, "the warning in the log", async {
        loop {
            let line = err.next_line().await.unwrap().expect("the log ended without the warning");
            if line.contains("is an exact name") {
                return line;
            }
        }
    })
    .await;
    assert!(logged.contains("WARN"), "{logged}");
    child.kill().await.unwrap();
}
