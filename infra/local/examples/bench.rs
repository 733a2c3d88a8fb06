//! Side by side, in one run, same client: the `hookcast serve` binary and a
//! minimal Node `ws` broadcast server (bench/node-ws-server.js). For each
//! audience size: idle memory per subscribed socket (server RSS), then
//! webhooks published with 1 and with 8 in flight; every subscriber measures
//! publish → delivery latency from a timestamp in the event. Loopback only,
//! bounded in count and time.
//!
//!   cargo build --release -p hookcast && cargo run --release -p hookcast --example bench -- [subscribers,...] [events]

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-hmac-secret-0123456789";

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Hookcast,
    NodeWs,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Hookcast => "hookcast",
            Target::NodeWs => "node ws",
        }
    }
}

struct Server {
    child: Child,
    http: String,
    _dir: tempfile::TempDir,
}

async fn start(target: Target) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = match target {
        Target::Hookcast => {
            let exe = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("hookcast");
            assert!(exe.exists(), "build the binary first: cargo build --release -p hookcast ({})", exe.display());
            let cfg = dir.path().join("hookcast.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[server]\nbind = \"127.0.0.1\"\nport = 0\ndata_dir = \"{}\"\n\n[sources.hmac]\nkind = \"hmac\"\nsecret = \"{SECRET}\"\nchannels = [\"*\"]\n",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let mut c = Command::new(exe);
            c.arg("serve").arg("--config").arg(cfg).env("RUST_LOG", "warn");
            c
        }
        Target::NodeWs => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/node-ws-server.js");
            let mut c = Command::new("node");
            c.arg(script).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
            c
        }
    };
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    let http = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, http, _dir: dir }
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

struct Audience {
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn audience(ws_url: &str, n: usize, epoch: Instant) -> Audience {
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let ready = Arc::new(AtomicU64::new(0));
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let conns = futures::future::join_all(chunk.iter().map(|_| tokio_tungstenite::connect_async(ws_url.to_owned()))).await;
        for c in conns {
            let (mut ws, _) = c.unwrap();
            let (received, latencies, ready) = (received.clone(), latencies.clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                ws.send(Message::Text(r#"{"action":"subscribe","channel":"bench"}"#.into())).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    let Message::Text(t) = m else { continue };
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("subscribed") => {
                            ready.fetch_add(1, Ordering::Relaxed);
                        }
                        Some("event") => {
                            if let Some(t0) = v["data"]["t0"].as_u64() {
                                latencies.lock().unwrap().push(micros(epoch).saturating_sub(t0));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {}
                    }
                }
            }));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (ready.load(Ordering::Relaxed) as usize) < n {
        assert!(Instant::now() < deadline, "subscriptions not confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Audience { received, latencies, tasks }
}

async fn publish(client: &reqwest::Client, target: Target, http: &str, i: u64, epoch: Instant) {
    let t0 = micros(epoch);
    let (url, body, headers) = match target {
        Target::Hookcast => {
            let body = json!({"channel": "bench", "event": "tick", "data": {"t0": t0, "i": i}}).to_string();
            let sig = hookcast_core::sign::github(SECRET.as_bytes(), body.as_bytes());
            (format!("{http}/hooks/hmac"), body, vec![("x-hub-signature-256", sig)])
        }
        Target::NodeWs => {
            let body =
                json!({"type": "event", "channel": "bench", "seq": i, "event": "tick", "data": {"t0": t0, "i": i}, "at": ""})
                    .to_string();
            (format!("{http}/publish"), body, vec![])
        }
    };
    let mut req = client.post(url).header("content-type", "application/json").body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> =
        args.get(1).map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_else(|| vec![1000, 5000]);
    let events: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let epoch = Instant::now();
    let client = reqwest::Client::new();
    println!("{events} webhooks per row; latency = publish -> delivery at each subscriber; same client for both servers");
    println!(
        "{:<9} {:>11} {:>9} {:>13} {:>14} {:>9} {:>9} {:>9}",
        "server", "subscribers", "in flight", "idle KB/sock", "deliveries/s", "p50 ms", "p99 ms", "max ms"
    );
    for &n in &sizes {
        for target in [Target::Hookcast, Target::NodeWs] {
            let server = start(target).await;
            let pid = server.child.id().unwrap();
            let ws_url = server.http.replacen("http://", "ws://", 1) + "/ws";
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = rss_kb(pid);
            let aud = audience(&ws_url, n, epoch).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let per_sock = (rss_kb(pid).saturating_sub(before)) as f64 / n as f64;
            let mut seq = 0u64;
            for in_flight in [1usize, 8] {
                aud.latencies.lock().unwrap().clear();
                let start_count = aud.received.load(Ordering::Relaxed);
                let t = Instant::now();
                let next = AtomicU64::new(0);
                let base = seq;
                futures::future::join_all((0..in_flight).map(|_| async {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= events {
                            return;
                        }
                        publish(&client, target, &server.http, base + i + 1, epoch).await;
                    }
                }))
                .await;
                seq += events;
                let want = start_count + events * n as u64;
                let deadline = Instant::now() + Duration::from_secs(120);
                while aud.received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let secs = t.elapsed().as_secs_f64();
                let got = aud.received.load(Ordering::Relaxed) - start_count;
                let mut lat = std::mem::take(&mut *aud.latencies.lock().unwrap());
                let lost = events * n as u64 - got;
                println!(
                    "{:<9} {:>11} {:>9} {:>13.1} {:>14.0} {:>9.1} {:>9.1} {:>9.1}{}",
                    target.name(),
                    n,
                    in_flight,
                    per_sock,
                    got as f64 / secs,
                    pct(&mut lat, 0.5),
                    pct(&mut lat, 0.99),
                    pct(&mut lat, 1.0),
                    if lost > 0 { format!("  ({lost} not delivered)") } else { String::new() }
                );
            }
            for t in aud.tasks {
                t.abort();
            }
            drop(server);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
