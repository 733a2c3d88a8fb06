//! Side by side, in one run, same client: the `hookcast serve` binary, a
//! minimal Node `ws` broadcast server, Socket.IO, and a Node server that
//! writes one pre-encoded frame to every socket (bench/*.js). For each
//! audience size: idle memory per subscribed socket (server RSS), then
//! webhooks published with 1 and with 8 in flight; every subscriber measures
//! publish → delivery latency from a timestamp in the event. Then hookcast's
//! durable webhooks/s (each acknowledged after its fsync'd commit) at 1, 8
//! and 64 in flight, beside this disk's own fsync rate. Loopback only,
//! bounded in count and time.
//!
//!   npm ci && cargo build --release -p hookcast --bins --examples
//!   target/release/examples/bench [--sizes 100,1000,5000,10000] [--repeat 3] [--out DIR]
//!
//! `--open-loop` instead measures the way webhooks really arrive: a timer
//! posts at a fixed rate whatever the acknowledgements do (each publish its
//! own task, its latency counted from its scheduled time, so queueing in the
//! sender is not hidden), at `--rates 20,50,100,200,400` events/s to 1,000
//! and 5,000 subscribers (`--sizes`), 200 events per rate at 1,000 and 100
//! at 5,000; it records p50, p99 and max, and the time to deliver everything
//! against the schedule's own length. Each server and audience is set up
//! once per size and runs every rate in turn.
//!
//! `--acks` measures the webhook's acknowledgement, 8 in flight, idle and
//! then while 1,000 subscribers (`--sizes`) take every event, for each server.
//!
//! With --out, writes DIR/bench.md (the tables) and DIR/bench.svg (the plot);
//! --servers hookcast,node runs a subset (names by prefix); --replot DIR
//! redraws DIR/bench.svg from DIR/bench.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Seek, SeekFrom, Write as _};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-hmac-secret-0123456789";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Target {
    Hookcast,
    NodeWs,
    SocketIo,
    Raw,
}

const TARGETS: [Target; 4] = [Target::Hookcast, Target::NodeWs, Target::SocketIo, Target::Raw];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Hookcast => "hookcast",
            Target::NodeWs => "node ws",
            Target::SocketIo => "socket.io",
            Target::Raw => "raw pre-encoded",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Target::Hookcast => "#d9480f",
            Target::NodeWs => "#1c7ed6",
            Target::SocketIo => "#2f9e44",
            Target::Raw => "#868e96",
        }
    }
    fn script(self) -> &'static str {
        match self {
            Target::Hookcast => "",
            Target::NodeWs => "node-ws-server.js",
            Target::SocketIo => "socketio-server.js",
            Target::Raw => "raw-writer-server.js",
        }
    }
}

struct Server {
    child: Child,
    http: String,
    _dir: tempfile::TempDir,
}

fn release_dir() -> std::path::PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_owned()
}

async fn start(target: Target) -> Server {
    let dir = tempfile::tempdir_in(release_dir()).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut cmd = match target {
        Target::Hookcast => {
            let exe = release_dir().join("hookcast");
            assert!(exe.exists(), "build the binary first: cargo build --release -p hookcast ({})", exe.display());
            let cfg = dir.path().join("hookcast.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[server]\nbind = \"127.0.0.1\"\nport = 0\ndata_dir = \"{}\"\n\n[sources.hmac]\nkind = \"hmac\"\nsecret = \"{SECRET}\"\nchannels = [\"*\"]\nfields = [\"t0\", \"i\"]\n",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let mut c = Command::new(exe);
            c.arg("serve").arg("--config").arg(cfg).env("RUST_LOG", "warn");
            c
        }
        _ => {
            let mut c = Command::new("node");
            c.arg(format!("{root}/bench/{}", target.script())).current_dir(root);
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

/// The publish timestamp in an event frame, found without parsing the whole
/// frame (the client shares the machine with the server; it should cost little).
fn t0(frame: &str) -> Option<u64> {
    let at = frame.find("\"t0\":")? + 5;
    let digits = frame[at..].bytes().take_while(u8::is_ascii_digit).count();
    frame[at..at + digits].parse().ok()
}

/// Publish → delivery latencies, lock-free (10,000 sockets record at once):
/// counts in 100 µs buckets up to 30 s.
struct Histogram(Vec<AtomicU64>);

const BUCKET_US: u64 = 100;

impl Histogram {
    fn new() -> Self {
        Self((0..300_000).map(|_| AtomicU64::new(0)).collect())
    }
    fn record(&self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(self.0.len() - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
    fn reset(&self) {
        self.0.iter().for_each(|b| b.store(0, Ordering::Relaxed));
    }
    /// The largest latency recorded, in ms (its bucket's upper edge).
    fn max(&self) -> f64 {
        self.0
            .iter()
            .rposition(|b| b.load(Ordering::Relaxed) > 0)
            .map_or(f64::NAN, |i| ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0)
    }
    /// The `p` quantile in ms (the bucket's upper edge).
    fn pct(&self, p: f64) -> f64 {
        let counts: Vec<u64> = self.0.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total as f64 - 1.0) * p).round() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

struct Audience {
    received: Arc<AtomicU64>,
    latencies: Arc<Histogram>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn audience(target: Target, http: &str, n: usize, epoch: Instant) -> Audience {
    let ws_url = match target {
        Target::SocketIo => http.replacen("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket",
        _ => http.replacen("http://", "ws://", 1) + "/ws",
    };
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Histogram::new());
    let mut tasks = Vec::new();
    // The client shares the machine with the server: small buffers, as the
    // servers' own (tungstenite's default read buffer is 128 KiB, zeroed per read).
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let ready = Arc::new(AtomicU64::new(0));
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let conns = futures::future::join_all(
            chunk.iter().map(|_| tokio_tungstenite::connect_async_with_config(ws_url.clone(), Some(config), true)),
        )
        .await;
        for c in conns {
            let (mut ws, _) = c.unwrap();
            let (received, latencies, ready) = (received.clone(), latencies.clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                if target != Target::SocketIo {
                    ws.send(Message::Text(r#"{"action":"subscribe","channel":"bench"}"#.into())).await.unwrap();
                }
                while let Some(Ok(m)) = ws.next().await {
                    let Message::Text(t) = m else { continue };
                    let t = t.as_str();
                    if let Some(t0) = t0(t) {
                        latencies.record(micros(epoch).saturating_sub(t0));
                        received.fetch_add(1, Ordering::Relaxed);
                    } else if target == Target::SocketIo {
                        // Engine.IO open, namespace connect, room join, pings.
                        let reply = if t.starts_with("0{") {
                            Some("40")
                        } else if t.starts_with("40") {
                            Some(r#"42["subscribe","bench"]"#)
                        } else if t == "2" {
                            Some("3")
                        } else {
                            if t.starts_with(r#"42["subscribed""#) {
                                ready.fetch_add(1, Ordering::Relaxed);
                            }
                            None
                        };
                        if let Some(r) = reply {
                            if ws.send(Message::Text(r.into())).await.is_err() {
                                return;
                            }
                        }
                    } else if t.contains("\"subscribed\"") {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (ready.load(Ordering::Relaxed) as usize) < n {
        assert!(Instant::now() < deadline, "{}: subscriptions not confirmed", target.name());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Audience { received, latencies, tasks }
}

async fn publish(client: &reqwest::Client, target: Target, http: &str, i: u64, epoch: Instant) {
    let res = publish_at(client, target, http, i, micros(epoch)).await;
    assert!(res.is_ok(), "{}", res.unwrap_err());
}

/// A publish stamped with `t0` (µs since the bench's epoch): its scheduled time in open loop.
async fn publish_at(client: &reqwest::Client, target: Target, http: &str, i: u64, t0: u64) -> Result<(), String> {
    if target == Target::Hookcast {
        return publish_to(client, http, "bench", i, t0).await;
    }
    // The frame hookcast would send, so every server carries the same bytes.
    let body = json!({"type": "event", "channel": "bench", "seq": i, "event": "tick", "data": {"t0": t0, "i": i}, "at": "2026-11-28T00:00:00.000Z"})
        .to_string();
    sent(client.post(format!("{http}/publish")).header("content-type", "application/json").body(body), i).await
}

/// A request sent and answered 2xx, or why not.
async fn sent(req: reqwest::RequestBuilder, i: u64) -> Result<(), String> {
    let res = req.send().await.map_err(|e| format!("publish {i}: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("publish {i}: {}", res.status()));
    }
    Ok(())
}

#[derive(Clone, Copy, Default, Debug)]
struct Row {
    per_sock_kb: f64,
    rate: f64,
    p50: f64,
    p99: f64,
    lost: u64,
}

/// Each (audience, server)'s rows: 1 and 8 in flight.
type Results = BTreeMap<(usize, Target), [Row; 2]>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Webhooks per row: enough deliveries to measure, bounded in time.
fn events_for(n: usize) -> u64 {
    (500_000 / n as u64).clamp(30, 200)
}

async fn fanout_run(client: &reqwest::Client, target: Target, n: usize, epoch: Instant) -> [Row; 2] {
    let server = start(target).await;
    let pid = server.child.id().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(pid);
    let aud = audience(target, &server.http, n, epoch).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_sock_kb = (rss_kb(pid).saturating_sub(before)) as f64 / n as f64;
    let events = events_for(n);
    let mut rows = [Row::default(); 2];
    let mut seq = 0u64;
    for (slot, in_flight) in [1usize, 8].into_iter().enumerate() {
        aud.latencies.reset();
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
                publish(client, target, &server.http, base + i + 1, epoch).await;
            }
        }))
        .await;
        seq += events;
        let want = start_count + events * n as u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while aud.received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let got = aud.received.load(Ordering::Relaxed) - start_count;
        rows[slot] = Row {
            per_sock_kb,
            rate: got as f64 / secs,
            p50: aud.latencies.pct(0.5),
            p99: aud.latencies.pct(0.99),
            lost: events * n as u64 - got,
        };
    }
    for t in aud.tasks {
        t.abort();
    }
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    rows
}

/// One open-loop row: the rate, what was measured, and how long delivering
/// everything took beside the schedule's own length.
#[derive(Clone, Copy, Debug)]
struct OpenRow {
    rate: u32,
    p50: f64,
    p99: f64,
    max: f64,
    schedule_s: f64,
    delivered_s: f64,
    lost: u64,
    /// CPU the server process spent per delivery (all its threads, user + system), µs.
    server_cpu_us: f64,
    /// CPU this bench process (the subscribers' client and the sender) spent per delivery, µs.
    client_cpu_us: f64,
}

/// A process's CPU time so far (user + system, all threads), in µs.
fn cpu_us(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of stat; here, after the state letter, 11 and 12.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1e6 / hz
}

/// Events posted per open-loop rate: 200 at up to 1,000 subscribers, 100 above.
fn open_events(n: usize) -> u64 {
    if n > 1000 {
        100
    } else {
        200
    }
}

/// One server and one audience of `n`, then each rate in turn, open loop.
async fn open_loop_run(client: &reqwest::Client, target: Target, n: usize, rates: &[u32], epoch: Instant) -> Vec<OpenRow> {
    let server = start(target).await;
    let aud = audience(target, &server.http, n, epoch).await;
    let mut rows = Vec::new();
    let mut seq = 0u64;
    for &rate in rates {
        // A breath between rates: the last one's tail must not count here.
        tokio::time::sleep(Duration::from_millis(500)).await;
        aud.latencies.reset();
        let events = open_events(n);
        let start_count = aud.received.load(Ordering::Relaxed);
        let server_pid = server.child.id().unwrap().to_string();
        let (server_cpu0, client_cpu0) = (cpu_us(&server_pid), cpu_us("self"));
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let begin = tokio::time::Instant::now() + Duration::from_millis(20);
        let mut posts = Vec::with_capacity(events as usize);
        for k in 0..events {
            let at = begin + interval * k as u32;
            tokio::time::sleep_until(at).await;
            // Stamped with the scheduled time: a late timer or a slow
            // sender counts against the server's latency, never hides it.
            let t0 = micros(epoch).saturating_sub(tokio::time::Instant::now().saturating_duration_since(at).as_micros() as u64);
            let (client, http) = (client.clone(), server.http.clone());
            seq += 1;
            let i = seq;
            posts.push(tokio::spawn(async move { publish_at(&client, target, &http, i, t0).await }));
        }
        let schedule_s = interval.as_secs_f64() * events as f64;
        let want = start_count + events * n as u64;
        // Not delivered 30 s after the schedule's end: lost.
        let deadline = Instant::now() + Duration::from_secs(30);
        while aud.received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let delivered_s = begin.elapsed().as_secs_f64();
        let (server_cpu, client_cpu) = (cpu_us(&server_pid) - server_cpu0, cpu_us("self") - client_cpu0);
        // A server that resets or refuses a publish under load: that event
        // was never sent, and counts as not delivered to anyone.
        let mut refused = 0u64;
        for p in posts {
            if let Err(e) = p.await.unwrap() {
                refused += 1;
                if refused == 1 {
                    eprintln!("{}: {e}", target.name());
                }
            }
        }
        let got = aud.received.load(Ordering::Relaxed) - start_count;
        let row = OpenRow {
            rate,
            p50: aud.latencies.pct(0.5),
            p99: aud.latencies.pct(0.99),
            max: aud.latencies.max(),
            schedule_s,
            delivered_s,
            lost: (events * n as u64).saturating_sub(got),
            server_cpu_us: server_cpu / got.max(1) as f64,
            client_cpu_us: client_cpu / got.max(1) as f64,
        };
        if refused > 0 {
            eprintln!("{}: {refused} of {events} publishes refused at {rate}/s", target.name());
        }
        println!("{}", open_line(target, n, &row));
        rows.push(row);
    }
    for t in aud.tasks {
        t.abort();
    }
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    rows
}

/// How long the webhook's acknowledgement waits while its own fan-outs run:
/// 8 webhooks in flight (closed loop) to a channel nobody reads, then the
/// same 8 in flight while `n` subscribers take every event. Each request's
/// round trip is recorded; the ack never waits for the fan-out by design, so
/// any difference is CPU the fan-out takes from the request path.
async fn acks(targets: &[Target], n: usize, events: u64, epoch: Instant) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Webhook ack latency: {events} webhooks in rounds of {ACK_ROUND} (each round delivered before the next: a sender that outruns hookcast's fan-out for more than 1,024 events is paced by the store's backlog bound, on purpose), 8 in flight (closed loop), round trip at a sender on its own thread; {n} subscribers (Rust client, a runtime of its own). hookcast's are signed and answered once committed, before the fan-out, and its idle row goes to a channel nobody reads while the subscribers are connected; the Node servers answer `/publish` after their write loop, and their idle row is taken before the subscribers connect. The subscribers' client shares these 2 cores; in the niced rows its threads run at nice 19, standing in for subscribers on other machines.\n"
    );
    let _ = writeln!(
        out,
        "| server | subscribers' client | webhooks go to | ack p50 ms | ack p99 ms | ack max ms | deliveries | p99 ÷ idle |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|");
    print!("{out}");
    for nice in [0, 19] {
        for &target in targets {
            let rows = acks_run(target, n, events, nice, epoch).await;
            print!("{rows}");
            out.push_str(&rows);
        }
    }
    out
}

#[cfg(target_os = "linux")]
fn nice(by: i32) {
    unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, now + by);
    }
}

#[cfg(not(target_os = "linux"))]
fn nice(_: i32) {}

/// Webhooks per round of the ack measurement.
const ACK_ROUND: u64 = 400;

/// One phase of the ack measurement: `events` webhooks in rounds, 8 in
/// flight, each round's deliveries (`per_round` more on `received`) awaited
/// before the next. Returns the ack latencies and the deliveries counted.
async fn ack_phase(
    target: Target,
    http: &str,
    channel: &'static str,
    events: u64,
    received: Option<(&AtomicU64, u64)>,
    epoch: Instant,
) -> (Arc<Histogram>, u64, u64) {
    let start_count = received.map_or(0, |(r, _)| r.load(Ordering::Relaxed));
    let acks = Arc::new(Histogram::new());
    let rounds = events.div_ceil(ACK_ROUND);
    for round in 0..rounds {
        // The sender has a thread and runtime of its own, as a real sender
        // would: its round trips must not queue behind this process's own
        // thousand readers.
        let (http, acks) = (http.to_owned(), acks.clone());
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = reqwest::Client::new();
                let post = |i: u64| {
                    let (client, http) = (&client, &http);
                    async move {
                        if target == Target::Hookcast {
                            publish_to(client, http, channel, i, micros(epoch)).await
                        } else {
                            publish_at(client, target, http, i, micros(epoch)).await
                        }
                    }
                };
                // Warm the connection pool first (not counted).
                futures::future::join_all((0..8u64).map(post)).await;
                let next = AtomicU64::new(0);
                futures::future::join_all((0..8).map(|_| async {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= ACK_ROUND {
                            return;
                        }
                        let t = Instant::now();
                        post(100 + i).await.unwrap();
                        acks.record(t.elapsed().as_micros() as u64);
                    }
                }))
                .await;
            })
        })
        .await
        .unwrap();
        if let Some((received, per_round)) = received {
            let want = start_count + (round + 1) * per_round;
            let deadline = Instant::now() + Duration::from_secs(60);
            while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let (got, want) = match received {
        Some((r, per_round)) => (r.load(Ordering::Relaxed) - start_count, rounds * per_round),
        None => (0, 0),
    };
    (acks, got, want)
}

async fn acks_run(target: Target, n: usize, events: u64, client_nice: i32, epoch: Instant) -> String {
    let server = start(target).await;
    let who = if client_nice == 0 { "same priority".to_owned() } else { format!("nice {client_nice}") };
    let line = |label: &str, acks: &Histogram, got: u64, want: u64, idle: f64| {
        let p99 = acks.pct(0.99);
        format!(
            "| {} | {who} | {label} | {:.1} | {p99:.1} | {:.1} | {got} of {want} | {:.2}× |\n",
            target.name(),
            acks.pct(0.5),
            acks.max(),
            p99 / idle
        )
    };
    let mut out = String::new();
    // The Node servers broadcast every publish to every socket: their idle
    // phase comes before the subscribers connect.
    let mut idle = f64::NAN;
    if target != Target::Hookcast {
        let (acks, got, want) = ack_phase(target, &server.http, "bench", events, None, epoch).await;
        idle = acks.pct(0.99);
        out.push_str(&line("nobody connected (idle)", &acks, got, want, idle));
    }
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || nice(client_nice))
        .enable_all()
        .build()
        .unwrap();
    let http = server.http.clone();
    let aud = clients.spawn(async move { audience(target, &http, n, epoch).await }).await.unwrap();
    if target == Target::Hookcast {
        let (acks, got, want) = ack_phase(target, &server.http, "quiet", events, None, epoch).await;
        idle = acks.pct(0.99);
        out.push_str(&line("a channel nobody reads (idle)", &acks, got, want, idle));
    }
    let per_round = (ACK_ROUND + 8) * n as u64;
    let (acks, got, want) = ack_phase(target, &server.http, "bench", events, Some((&aud.received, per_round)), epoch).await;
    out.push_str(&line("the channel all subscribers read", &acks, got, want, idle));
    for t in aud.tasks {
        t.abort();
    }
    clients.shutdown_background();
    drop(server);
    out
}

/// A signed webhook to hookcast's hmac source on `channel`, stamped with `t0`.
async fn publish_to(client: &reqwest::Client, http: &str, channel: &str, i: u64, t0: u64) -> Result<(), String> {
    let body = json!({"channel": channel, "event": "tick", "data": {"t0": t0, "i": i}}).to_string();
    let sig = hookcast_core::sign::github(SECRET.as_bytes(), body.as_bytes());
    let req = client
        .post(format!("{http}/hooks/hmac"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body);
    sent(req, i).await
}

fn open_line(target: Target, n: usize, r: &OpenRow) -> String {
    format!(
        "| {} | {n} | {} | {:.1} | {:.1} | {:.0} | {:.2} s of {:.2} s | {} | {:.1} | {:.1} |",
        target.name(),
        r.rate,
        r.p50,
        r.p99,
        r.max,
        r.delivered_s,
        r.schedule_s,
        r.lost,
        r.server_cpu_us,
        r.client_cpu_us
    )
}

/// The open-loop table and its plot (p99 against rate, one line per server
/// and size); with `repeat` > 1, each cell is the median of that many runs,
/// servers interleaved, and "not delivered" their sum.
async fn open_loop(
    client: &reqwest::Client,
    sizes: &[usize],
    rates: &[u32],
    servers: &[Target],
    repeat: usize,
    out: Option<std::path::PathBuf>,
    epoch: Instant,
) {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Open loop: one channel, every subscriber on it; a timer posts at a fixed rate whatever the acknowledgements do; latency = scheduled publish → delivery at each subscriber (Rust client, 4 KiB read buffers); {} events per rate; median of {repeat} run(s), servers interleaved. CPU µs/delivery: the server process's CPU time (all threads, user + system) and this bench's (the subscribers' client and the sender) over the rate's run, per delivery.\n",
        sizes.iter().map(|n| format!("{} at {n}", open_events(*n))).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        md,
        "| server | subscribers | events/s | p50 ms | p99 ms | max ms | everything delivered after | not delivered | server CPU µs/delivery | client CPU µs/delivery |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    print!("{md}");
    let mut all: Vec<(usize, Target, Vec<OpenRow>)> = Vec::new();
    for &n in sizes {
        let mut runs: BTreeMap<Target, Vec<Vec<OpenRow>>> = BTreeMap::new();
        for _ in 0..repeat {
            for &target in servers {
                runs.entry(target).or_default().push(open_loop_run(client, target, n, rates, epoch).await);
            }
        }
        for &target in servers {
            let rs = &runs[&target];
            let rows: Vec<OpenRow> = (0..rates.len())
                .map(|i| {
                    let med = |f: fn(&OpenRow) -> f64| median(rs.iter().map(|r| f(&r[i])).collect());
                    OpenRow {
                        rate: rates[i],
                        p50: med(|r| r.p50),
                        p99: med(|r| r.p99),
                        max: med(|r| r.max),
                        schedule_s: rs[0][i].schedule_s,
                        delivered_s: med(|r| r.delivered_s),
                        lost: rs.iter().map(|r| r[i].lost).sum(),
                        server_cpu_us: med(|r| r.server_cpu_us),
                        client_cpu_us: med(|r| r.client_cpu_us),
                    }
                })
                .collect();
            if repeat > 1 {
                println!("median of {repeat}:");
            }
            for r in &rows {
                let line = open_line(target, n, r);
                if repeat > 1 {
                    println!("{line}");
                }
                let _ = writeln!(md, "{line}");
            }
            all.push((n, target, rows));
        }
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("open-loop.md"), &md).unwrap();
        std::fs::write(dir.join("open-loop.svg"), open_svg(rates, &all)).unwrap();
        println!("\nwrote {} and {}", dir.join("open-loop.md").display(), dir.join("open-loop.svg").display());
    }
}

/// p99 (log scale) against the rate: one panel per audience size.
fn open_svg(rates: &[u32], all: &[(usize, Target, Vec<OpenRow>)]) -> String {
    let mut sizes: Vec<usize> = all.iter().map(|(n, _, _)| *n).collect();
    sizes.dedup();
    let (w, h, pad) = (420.0, 300.0, 50.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        w * sizes.len() as f64,
        h + 40.0
    );
    let (lo, hi) = (1.0f64.log10(), 30000.0f64.log10());
    let y = |ms: f64| pad + (h - 2.0 * pad) * (1.0 - (ms.max(1.0).log10() - lo) / (hi - lo));
    for (panel, &n) in sizes.iter().enumerate() {
        let x0 = panel as f64 * w;
        let x = |i: usize| x0 + pad + (w - 2.0 * pad) * i as f64 / (rates.len().max(2) - 1) as f64;
        let _ = write!(svg, r#"<text x="{}" y="20">p99 ms (log), {n} subscribers, by events/s</text>"#, x0 + pad);
        for ms in [1.0, 10.0, 100.0, 1000.0, 10000.0] {
            let _ = write!(
                svg,
                r##"<line x1="{}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}">{ms}</text>"##,
                x0 + pad,
                x0 + w - pad,
                y(ms),
                y(ms),
                x0 + 5.0,
                y(ms) + 4.0
            );
        }
        for (i, r) in rates.iter().enumerate() {
            let _ = write!(svg, r#"<text x="{:.1}" y="{}">{r}</text>"#, x(i) - 8.0, h - pad + 18.0);
        }
        for (k, (_, target, rows)) in all.iter().filter(|(m, _, _)| *m == n).enumerate() {
            let pts: Vec<String> = rows.iter().enumerate().map(|(i, r)| format!("{:.1},{:.1}", x(i), y(r.p99))).collect();
            let _ =
                write!(svg, r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#, target.color(), pts.join(" "));
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" fill="{}">{}</text>"#,
                x0 + pad + 90.0 * k as f64,
                h + 30.0,
                target.color(),
                target.name()
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// This disk's own rate of small durable writes: 4 KiB overwrites of a
/// preallocated file, each followed by fsync (the call SQLite makes per
/// commit; what a WAL commit costs at least).
fn fsync_rate(dir: &std::path::Path) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![0u8; 4 << 20]).unwrap();
    f.sync_all().unwrap();
    let block = [7u8; 4096];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(3) {
        f.seek(SeekFrom::Start((n % 1024) * 4096)).unwrap();
        f.write_all(&block).unwrap();
        f.sync_all().unwrap();
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

/// Durable webhooks/s on one channel, no subscribers: each answered 200
/// only after its commit (WAL, synchronous=FULL).
async fn durable_run(client: &reqwest::Client, in_flight: usize, epoch: Instant) -> (f64, f64) {
    let server = start(Target::Hookcast).await;
    let total: u64 = 3000;
    // Warm the connection pool.
    futures::future::join_all((0..in_flight as u64).map(|i| publish(client, Target::Hookcast, &server.http, i, epoch))).await;
    let commits = |body: &str| {
        body.lines().find(|l| l.starts_with("hookcast_store_commits ")).and_then(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
    };
    let metrics = || async { client.get(format!("{}/metrics", server.http)).send().await.unwrap().text().await.unwrap() };
    let c0 = commits(&metrics().await).unwrap_or(0.0);
    let next = AtomicU64::new(0);
    let t = Instant::now();
    futures::future::join_all((0..in_flight).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                return;
            }
            publish(client, Target::Hookcast, &server.http, 1000 + i, epoch).await;
        }
    }))
    .await;
    let rate = total as f64 / t.elapsed().as_secs_f64();
    let c1 = commits(&metrics().await).unwrap_or(0.0);
    drop(server);
    (rate, total as f64 / (c1 - c0).max(1.0))
}

fn svg(sizes: &[usize], results: &Results) -> String {
    // Four panels, log scale: deliveries/s and p99 latency, 1 and 8 in flight.
    let (w, h, left, panel_w) = (980.0, 720.0, 70.0, 420.0);
    let plot_h = 260.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    type Panel = (&'static str, usize, fn(&Row) -> f64, &'static str);
    let panels: [Panel; 4] = [
        ("deliveries/s, 1 webhook in flight (higher is better)", 0, |r| r.rate, "/s"),
        ("deliveries/s, 8 webhooks in flight (higher is better)", 1, |r| r.rate, "/s"),
        ("publish → delivery p99 ms, 1 in flight (lower is better)", 0, |r| r.p99, " ms"),
        ("publish → delivery p99 ms, 8 in flight (lower is better)", 1, |r| r.p99, " ms"),
    ];
    for (pi, (title, slot, value, unit)) in panels.iter().enumerate() {
        let x0 = left + (pi % 2) as f64 * (panel_w + 70.0);
        let top = 50.0 + (pi / 2) as f64 * 340.0;
        // One scale per row of panels (the same measure), so they compare.
        let vals: Vec<f64> =
            results.values().flat_map(|r| [value(&r[0]), value(&r[1])]).filter(|v| v.is_finite() && *v > 0.0).collect();
        let (lo, hi) = vals.iter().fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let (lo, hi) = (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()));
        let y = |v: f64| top + plot_h - (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * plot_h;
        let _ = write!(s, r#"<text x="{x0}" y="{}" font-weight="bold">{title}</text>"#, top - 20.0);
        let mut tick = lo;
        while tick <= hi * 1.001 {
            let _ = write!(
                s,
                r##"<line x1="{x0}" x2="{}" y1="{y}" y2="{y}" stroke="#dee2e6"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                x0 + panel_w,
                x0 - 6.0,
                y(tick) + 4.0,
                if tick >= 1000.0 { format!("{}k", tick / 1000.0) } else { format!("{tick}") },
                y = y(tick)
            );
            tick *= 10.0;
        }
        let group_w = panel_w / sizes.len() as f64;
        let bar_w = (group_w - 16.0) / TARGETS.len() as f64;
        for (gi, n) in sizes.iter().enumerate() {
            let gx = x0 + gi as f64 * group_w + 8.0;
            for (ti, t) in TARGETS.iter().enumerate() {
                let Some(r) = results.get(&(*n, *t)) else { continue };
                let v = value(&r[*slot]);
                if !v.is_finite() {
                    continue;
                }
                let (bx, by) = (gx + ti as f64 * bar_w, y(v));
                let _ = write!(
                    s,
                    r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {n}: {v:.1}{unit}</title></rect>"#,
                    bar_w - 2.0,
                    top + plot_h - by,
                    t.color(),
                    t.name()
                );
            }
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{n} subscribers</text>"#,
                gx + (group_w - 16.0) / 2.0,
                top + plot_h + 18.0
            );
        }
    }
    for (ti, t) in TARGETS.iter().enumerate() {
        let x = left + ti as f64 * 160.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            h - 30.0,
            t.color(),
            x + 18.0,
            h - 20.0,
            t.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The fan-out rows of a bench.md table, back into results.
fn parse_table(md: &str) -> (Vec<usize>, Results) {
    let mut results: Results = BTreeMap::new();
    for line in md.lines() {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(t) = TARGETS.into_iter().find(|t| cells.first() == Some(&t.name())) else { continue };
        let num = |i: usize| cells.get(i).and_then(|c| c.parse::<f64>().ok()).unwrap_or(f64::NAN);
        let (n, slot) = (num(1) as usize, if num(2) == 1.0 { 0 } else { 1 });
        results.entry((n, t)).or_default()[slot] =
            Row { per_sock_kb: num(3), rate: num(4), p50: num(5), p99: num(6), lost: num(7) as u64 };
    }
    let mut sizes: Vec<usize> = results.keys().map(|(n, _)| *n).collect();
    sizes.dedup();
    (sizes, results)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> = arg("--sizes")
        .map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 5000, 10000]);
    let repeat: usize = arg("--repeat").and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let out = arg("--out").map(std::path::PathBuf::from);
    // --servers hookcast,node: a subset (by name prefix), for a quick look.
    let servers: Vec<Target> = match arg("--servers") {
        Some(list) => TARGETS.into_iter().filter(|t| list.split(',').any(|p| !p.is_empty() && t.name().starts_with(p))).collect(),
        None => TARGETS.to_vec(),
    };
    // --replot DIR: the plot again from DIR/bench.md, without running anything.
    if let Some(dir) = arg("--replot").map(std::path::PathBuf::from) {
        let md = std::fs::read_to_string(dir.join("bench.md")).expect("bench.md");
        let (sizes, results) = parse_table(&md);
        std::fs::write(dir.join("bench.svg"), svg(&sizes, &results)).unwrap();
        return;
    }
    let epoch = Instant::now();
    let client = reqwest::Client::new();
    // --replot-open DIR: DIR/open-loop.svg again from DIR/open-loop.md (rows of several runs may be merged there).
    if let Some(dir) = arg("--replot-open").map(std::path::PathBuf::from) {
        let md = std::fs::read_to_string(dir.join("open-loop.md")).expect("open-loop.md");
        let mut all: Vec<(usize, Target, Vec<OpenRow>)> = Vec::new();
        let mut rates: Vec<u32> = Vec::new();
        for line in md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| server")) {
            let c: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Some(target), Ok(n), Ok(rate), Ok(p99)) =
                (TARGETS.into_iter().find(|t| t.name() == c[1]), c[2].parse::<usize>(), c[3].parse::<u32>(), c[5].parse::<f64>())
            else {
                continue;
            };
            if !rates.contains(&rate) {
                rates.push(rate);
            }
            let row = OpenRow {
                rate,
                p50: 0.0,
                p99,
                max: 0.0,
                schedule_s: 0.0,
                delivered_s: 0.0,
                lost: 0,
                server_cpu_us: 0.0,
                client_cpu_us: 0.0,
            };
            match all.iter_mut().find(|(m, t, _)| *m == n && *t == target) {
                Some((_, _, rows)) => rows.push(row),
                None => all.push((n, target, vec![row])),
            }
        }
        rates.sort();
        std::fs::write(dir.join("open-loop.svg"), open_svg(&rates, &all)).unwrap();
        return;
    }
    // --acks: the webhook's ack p99 idle and while 1,000 subscribers (--sizes) are fanned out.
    if args.iter().any(|a| a == "--acks") {
        let n = arg("--sizes").and_then(|a| a.split(',').next()?.parse().ok()).unwrap_or(1000);
        let md = acks(&servers, n, 2000, epoch).await;
        if let Some(dir) = out {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("acks.md"), md).unwrap();
        }
        return;
    }
    if args.iter().any(|a| a == "--open-loop") {
        let sizes: Vec<usize> =
            arg("--sizes").map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_else(|| vec![1000, 5000]);
        let rates: Vec<u32> = arg("--rates")
            .map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![20, 50, 100, 200, 400]);
        open_loop(&client, &sizes, &rates, &servers, repeat, out, epoch).await;
        return;
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Fan-out: one channel, every subscriber on it; webhooks per row: {}; latency = publish → delivery at each subscriber; median of {repeat} run(s), servers interleaved.\n",
        sizes.iter().map(|n| format!("{} at {n}", events_for(*n))).collect::<Vec<_>>().join(", ")
    );
    let _ =
        writeln!(md, "| server | subscribers | in flight | idle KB/socket | deliveries/s | p50 ms | p99 ms | not delivered |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    print!("{md}");
    let mut results: Results = BTreeMap::new();
    for &n in &sizes {
        let mut runs: BTreeMap<Target, Vec<[Row; 2]>> = BTreeMap::new();
        for _ in 0..repeat {
            for &target in &servers {
                runs.entry(target).or_default().push(fanout_run(&client, target, n, epoch).await);
            }
        }
        for &target in &servers {
            let rs = &runs[&target];
            let mut med = [Row::default(); 2];
            for (slot, m) in med.iter_mut().enumerate() {
                *m = Row {
                    per_sock_kb: median(rs.iter().map(|r| r[slot].per_sock_kb).collect()),
                    rate: median(rs.iter().map(|r| r[slot].rate).collect()),
                    p50: median(rs.iter().map(|r| r[slot].p50).collect()),
                    p99: median(rs.iter().map(|r| r[slot].p99).collect()),
                    lost: rs.iter().map(|r| r[slot].lost).sum(),
                };
                let line = format!(
                    "| {} | {n} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {} |",
                    target.name(),
                    [1, 8][slot],
                    m.per_sock_kb,
                    m.rate,
                    m.p50,
                    m.p99,
                    m.lost
                );
                println!("{line}");
                let _ = writeln!(md, "{line}");
            }
            results.insert((n, target), med);
        }
    }

    let probe = tempfile::tempdir_in(release_dir()).unwrap();
    let fsyncs = fsync_rate(probe.path());
    let mut durable = String::new();
    let _ = writeln!(
        durable,
        "\nDurable webhooks/s: hookcast, one channel, no subscribers, 3,000 signed webhooks, each answered only after its commit (SQLite WAL, synchronous=FULL). This disk: {fsyncs:.0} fsync/s (4 KiB overwrite + fsync, the call SQLite makes per commit).\n"
    );
    let _ = writeln!(durable, "| in flight | webhooks/s | ÷ disk fsync/s | webhooks per commit |");
    let _ = writeln!(durable, "|---:|---:|---:|---:|");
    print!("{durable}");
    for in_flight in [1usize, 8, 64] {
        let mut rs = Vec::new();
        let mut per = Vec::new();
        for _ in 0..repeat {
            let (r, p) = durable_run(&client, in_flight, epoch).await;
            rs.push(r);
            per.push(p);
        }
        let (r, p) = (median(rs), median(per));
        let line = format!("| {in_flight} | {r:.0} | {:.2} | {p:.1} |", r / fsyncs);
        println!("{line}");
        let _ = writeln!(durable, "{line}");
    }
    // The floor under any webhook round trip here: the same client against
    // the Node `ws` server's /publish with nobody to send to (no signature,
    // no store, no fsync), one in flight.
    let floor = {
        let server = start(Target::NodeWs).await;
        for i in 0..100 {
            publish(&client, Target::NodeWs, &server.http, i, epoch).await;
        }
        let t = Instant::now();
        for i in 0..3000 {
            publish(&client, Target::NodeWs, &server.http, i, epoch).await;
        }
        3000.0 / t.elapsed().as_secs_f64()
    };
    let line = format!(
        "\nHTTP round-trip floor (same client, Node `ws` /publish with no subscribers, 1 in flight): {floor:.0} requests/s."
    );
    println!("{line}");
    let _ = writeln!(durable, "{line}");
    md.push_str(&durable);

    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bench.md"), &md).unwrap();
        std::fs::write(dir.join("bench.svg"), svg(&sizes, &results)).unwrap();
        println!("\nwrote {} and {}", dir.join("bench.md").display(), dir.join("bench.svg").display());
    }
}
