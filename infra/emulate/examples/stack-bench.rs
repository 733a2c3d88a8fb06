//! The AWS stack through `hookcast emulate`, measured (issue 19's bench):
//! each bootstrap's size and cold-start init time on the local Runtime API,
//! webhook → delivery latency to real WebSocket pages (open loop: events at a
//! fixed rate), how many subscribes per second one channel takes with the
//! conflict-faithful DynamoDB front, and how long one event takes to reach
//! 10,000 subscribers with every @connections call slowed to 20 ms.
//!
//! ```sh
//! cargo run --release -p hookcast-emulate --example stack-bench -- --build-dir .aws-sam/build
//! ```
//! moto comes from .tools/venv (tests/run installs it) unless --aws-endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use hookcast_emulate::aws::Aws;
use hookcast_emulate::runtime::Function;
use hookcast_emulate::stack::{start, EmulateArgs, Stack};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ZAPIER: &str = "bench-zapier-token-0123456789";
const ORIGIN: &str = "http://127.0.0.1";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    emu: EmulateArgs,
    /// Cold starts per function.
    #[arg(long, default_value_t = 20)]
    cold_starts: usize,
    /// Pages (WebSocket clients) for the delivery latency.
    #[arg(long, default_value_t = 100)]
    pages: usize,
    /// Events for the delivery latency, sent at --rate per second.
    #[arg(long, default_value_t = 200)]
    events: usize,
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Concurrent subscribes to one channel.
    #[arg(long, default_value_t = 200)]
    subscribes: usize,
    /// Subscribers for the large fan-out, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    subscribers: Vec<usize>,
    /// Every @connections call's latency in the large fan-out.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    fanout_latency: Duration,
    /// Append sweep: webhooks per second to one channel (open loop), each rate for --sweep-secs.
    #[arg(long, value_delimiter = ',', default_value = "20,50,100,200,400")]
    sweep: Vec<f64>,
    #[arg(long, default_value_t = 5.0)]
    sweep_secs: f64,
    /// The merge state's size in the sweep, one run of the sweep per size.
    #[arg(long, value_delimiter = ',', default_value = "1024,51200")]
    state_bytes: Vec<usize>,
    /// Idle pages held open for the cost of a connection-minute, and for how long.
    #[arg(long, default_value_t = 100)]
    idle_pages: usize,
    #[arg(long, default_value_t = 60.0)]
    idle_secs: f64,
    /// Skip the large fan-out (it takes minutes).
    #[arg(long)]
    no_fanout: bool,
}

/// The Zapier source, publishing the fields the bench sends; every zaps/
/// channel keeps a merge state.
const SOURCES: &str = "[sources.netlify]\nkind = \"netlify\"\n[sources.zapier]\nkind = \"token\"\nheader = \"x-hookcast-token\"\nchannels = [\"zaps/*\"]\nfields = [\"i\", \"t\", \"s\", \"hello\"]\n";

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        pct(&v, 1.0),
        v.len()
    )
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Pages come from addresses of their own (`X-Emulate-Source-Ip`), as
/// visitors do: one address may open 60 connections a minute.
static PAGES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn connect(url: &str) -> Socket {
    let mut req = url.into_client_request().expect("a ws URL");
    req.headers_mut().insert("origin", ORIGIN.parse().expect("a header"));
    let n = PAGES.fetch_add(1, Ordering::Relaxed);
    let address = format!("10.{}.{}.{}", 100 + (n >> 16) % 100, (n >> 8) & 255, n & 255);
    req.headers_mut().insert("x-emulate-source-ip", address.parse().expect("a header"));
    tokio_tungstenite::connect_async(req).await.expect("the emulated WebSocket API answers").0
}

/// Frames as JSON values, batches unwrapped.
fn frames(m: &Message) -> Vec<Value> {
    let Message::Text(t) = m else { return vec![] };
    let v: Value = serde_json::from_str(t).unwrap_or(Value::Null);
    if v["type"] == "batch" {
        v["frames"].as_array().cloned().unwrap_or_default()
    } else {
        vec![v]
    }
}

async fn subscribe(ws: &mut Socket, channel: &str) {
    ws.send(Message::text(json!({"action": "subscribe", "channel": channel}).to_string())).await.expect("send");
    while let Some(Ok(m)) = ws.next().await {
        for f in frames(&m) {
            if f["type"] == "subscribed" && f["channel"] == channel {
                return;
            }
            assert!(f["type"] != "error", "subscribe refused: {f}");
        }
    }
    panic!("the socket closed before {channel} was subscribed");
}

/// Posts one Zap; a 503 (not committed in time), or API Gateway's 500 or
/// 429 (the function throttled), is retried after a second, as a sender
/// retries it (same body), up to 10 times. Returns the time to the answer,
/// the refusals, and whether it was acknowledged in the end.
async fn zap(http: &reqwest::Client, base: &str, channel: &str, data: Value) -> (f64, usize, bool) {
    let t = Instant::now();
    let mut refused = 0;
    loop {
        let res = http
            .post(format!("{base}/hooks/zapier"))
            .header("x-hookcast-token", ZAPIER)
            .json(&json!({"channel": channel, "event": "bench", "data": data}))
            .send()
            .await
            .expect("the HTTP API answers");
        if matches!(res.status().as_u16(), 429 | 500 | 503) && refused < 10 {
            refused += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let ok = res.status() == 200;
        if !ok && !matches!(res.status().as_u16(), 429 | 500 | 503) {
            panic!("{}: {}", res.status(), res.text().await.unwrap_or_default());
        }
        return (t.elapsed().as_secs_f64() * 1000.0, refused, ok);
    }
}

/// What the DynamoDB front saw of moto's writes since `before`.
fn moto_writes(s: &Stack, before: (u64, u64, u64)) -> String {
    let c = &s.front.counters;
    let n = c.writes.load(Ordering::Relaxed) - before.0;
    let service = (c.write_service_us.load(Ordering::Relaxed) - before.1) as f64 / 1000.0;
    let queued = (c.write_queued_us.load(Ordering::Relaxed) - before.2) as f64 / 1000.0;
    let d = n.max(1) as f64;
    format!("moto executed {n} writes: {:.1} ms each on average, after {:.1} ms queued", service / d, queued / d)
}

fn write_marks(s: &Stack) -> (u64, u64, u64) {
    let c = &s.front.counters;
    (c.writes.load(Ordering::Relaxed), c.write_service_us.load(Ordering::Relaxed), c.write_queued_us.load(Ordering::Relaxed))
}

async fn stack(cli: &Cli, latency: Duration) -> Stack {
    let mut args = cli.emu.clone();
    args.connections_latency = latency;
    args.connections_latency_p99 = latency;
    if args.parameter_overrides.is_empty() {
        args.parameter_overrides = vec![
            "NetlifySecret=bench-netlify-secret-0123456789".into(),
            format!("ZapierToken={ZAPIER}"),
            format!("AllowedOrigins={ORIGIN}"),
            "AlertEmail=none".into(),
            // A busy channel's senders need more than the default 10 set aside.
            // Concurrency is rate x latency, and moto makes latency long.
            "WebhookReservedConcurrency=400".into(),
        ];
    }
    if args.config.is_none() {
        // The site's hookcast.toml: these sources, and a merge state on every zap channel.
        let file = std::env::temp_dir().join(format!("hookcast-stack-bench-{}.toml", std::process::id()));
        std::fs::write(&file, format!("{SOURCES}[state]\n\"zaps/*\" = \"merge\"\n")).expect("a temporary hookcast.toml");
        args.config = Some(file);
    }
    start(&args).await.unwrap_or_else(|e| panic!("emulate: {e}"))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    let http = reqwest::Client::new();
    let s = stack(&cli, Duration::ZERO).await;
    let mut names: Vec<_> = s.functions.keys().cloned().collect();
    names.sort();

    println!("## bootstraps and init (cold starts on the local Runtime API, {} each)", cli.cold_starts);
    for name in &names {
        let spec = s.functions[name].spec.clone();
        let size = std::fs::metadata(&spec.bootstrap).map(|m| m.len()).unwrap_or(0);
        let mut inits = vec![];
        for _ in 0..cli.cold_starts {
            let f = Function::new(spec.clone());
            let t = Instant::now();
            f.warm().await.unwrap_or_else(|e| panic!("{e}"));
            inits.push(t.elapsed().as_secs_f64() * 1000.0);
            f.stop();
        }
        println!("{name:<22} {:>6.2} MB  init {}", size as f64 / 1e6, summary(inits));
    }

    sweep(&cli, &s, &http).await;

    println!("\n## webhook -> delivery: {} events at {}/s (open loop) to {} pages", cli.events, cli.rate, cli.pages);
    let bill0 = s.meter.bill();
    let channel = "zaps/bench";
    let mut pages = vec![];
    for _ in 0..cli.pages {
        let mut ws = connect(&s.websocket).await;
        subscribe(&mut ws, channel).await;
        pages.push(ws);
    }
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(cli.pages * cli.events)));
    let got = Arc::new(AtomicUsize::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for mut ws in pages {
        let (latencies, got, want) = (latencies.clone(), got.clone(), cli.events);
        readers.spawn(async move {
            let mut mine = 0;
            while mine < want {
                let Some(Ok(m)) = ws.next().await else { break };
                let at = now_us();
                for f in frames(&m) {
                    if f["type"] == "event" {
                        let sent = f["data"]["t"].as_u64().unwrap_or(at);
                        latencies.lock().unwrap().push(at.saturating_sub(sent) as f64 / 1000.0);
                        got.fetch_add(1, Ordering::Relaxed);
                        mine += 1;
                    }
                }
            }
            ws
        });
    }
    let marks = write_marks(&s);
    let c0 = s.front.counters.conflicts.load(Ordering::Relaxed);
    let mut posts = tokio::task::JoinSet::new();
    let every = Duration::from_secs_f64(1.0 / cli.rate);
    let t0 = tokio::time::Instant::now();
    for i in 0..cli.events {
        tokio::time::sleep_until(t0 + every * i as u32).await;
        let (http, base) = (http.clone(), s.http.clone());
        posts.spawn(async move { zap(&http, &base, channel, json!({"i": i, "t": now_us()})).await });
    }
    let (mut post_ms, mut refused, mut acked) = (vec![], 0, 0);
    while let Some(r) = posts.join_next().await {
        let (ms, n, ok) = r.expect("a post");
        post_ms.push(ms);
        refused += n;
        acked += usize::from(ok);
    }
    // Each page's reader stops at --events; one given up by its sender never arrives.
    let want = cli.pages * acked;
    let ceiling = Instant::now() + Duration::from_secs(600);
    while got.load(Ordering::Relaxed) < want && Instant::now() < ceiling {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("webhook POST (HTTP API -> webhook function -> append, 503/500/429 retried after 1 s): {}", summary(post_ms));
    println!(
        "acknowledged {acked} of {}; refused and retried: {refused}; TransactionConflict answered: {}; {}",
        cli.events,
        s.front.counters.conflicts.load(Ordering::Relaxed) - c0,
        moto_writes(&s, marks)
    );
    let l = latencies.lock().unwrap().clone();
    let pushes = l.len();
    println!("delivered {} of {want}; webhook -> page: {}", l.len(), summary(l));
    println!("{}", cost_line(&bill0, &s.meter.bill(), pushes));
    readers.abort_all();
    while let Some(Ok(ws)) = readers.join_next().await {
        drop(ws);
    }

    idle(&cli, &s).await;

    println!("\n## {} concurrent subscribes to one channel (the conflict-faithful front)", cli.subscribes);
    let mut socks = vec![];
    for _ in 0..cli.subscribes {
        socks.push(connect(&s.websocket).await);
    }
    let c0 = s.front.counters.conflicts.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in socks {
        tasks.spawn(async move {
            subscribe(&mut ws, "zaps/herd").await;
            ws
        });
    }
    let mut kept = vec![];
    while let Some(r) = tasks.join_next().await {
        kept.push(r.expect("a subscribe"));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} subscribes in {:.2} s: {:.0}/s; the front answered {} TransactionConflict",
        cli.subscribes,
        secs,
        cli.subscribes as f64 / secs,
        s.front.counters.conflicts.load(Ordering::Relaxed) - c0
    );
    drop(kept);
    let table = s.functions[&names[0]].spec.env.iter().find(|(k, _)| k == "HOOKCAST_TABLE").map(|(_, v)| v.clone());
    let shards: u32 = s.functions[&names[0]]
        .spec
        .env
        .iter()
        .find(|(k, _)| k == "HOOKCAST_SHARDS")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(8);
    drop(s);
    if cli.no_fanout {
        return;
    }

    for &n in &cli.subscribers {
        wide(&cli, &http, n, table.clone(), shards, &names).await;
    }
}

/// One event to `n` subscribers, every @connections call --fanout-latency,
/// against the floor: n / (fan-out workers x each one's rate).
async fn wide(cli: &Cli, http: &reqwest::Client, subscribers: usize, table: Option<String>, shards: u32, names: &[String]) {
    println!("\n## one event to {} subscribers, every @connections call {} ms", subscribers, cli.fanout_latency.as_millis());
    let s = stack(cli, cli.fanout_latency).await;
    let table = s.functions[&names[0]].spec.env.iter().find(|(k, _)| k == "HOOKCAST_TABLE").map(|(_, v)| v.clone()).or(table);
    let table = table.expect("the functions name their table");
    // This stack's own AWS endpoint: the last one's moto stopped with it.
    let aws = Aws::new(&s.aws, &cli.emu.region);
    let channel = "zaps/wide";
    // Subscribers written as subscribe leaves them (the subscriber item in its
    // shard and the shard's count), 25 to a BatchWriteItem; each a sink in
    // the emulated API that counts what it is sent.
    let mut sinks = vec![];
    let mut counts = vec![0u64; shards as usize];
    let mut batch = vec![];
    for i in 0..subscribers {
        let id = format!("bench{i:06}=");
        let shard = fnv(&id) % shards;
        counts[shard as usize] += 1;
        sinks.push(s.ws.register_sink(&id));
        batch.push(json!({"PutRequest": {"Item": {
            "pk": {"S": format!("subs#{channel}#{shard}")}, "sk": {"S": id}, "ttl": {"N": (now_us() / 1_000_000 + 7200).to_string()}}}}));
        if batch.len() == 25 || i + 1 == subscribers {
            aws.dynamodb("BatchWriteItem", json!({"RequestItems": {&table: std::mem::take(&mut batch)}}))
                .await
                .expect("BatchWriteItem");
        }
    }
    for (shard, n) in counts.iter().enumerate() {
        // The store's hourly counter (`<shard>#<hour>`, expiring an hour plus a connection's life later).
        let hour = now_us() / 1_000_000 / 3600;
        let item = json!({"pk": {"S": format!("count#{channel}")}, "sk": {"S": format!("{shard}#{hour}")}, "n": {"N": n.to_string()},
            "ttl": {"N": ((hour + 1) * 3600 + 7800).to_string()}});
        aws.dynamodb("PutItem", json!({"TableName": table, "Item": item})).await.expect("PutItem");
    }
    let posted0 = s.ws.counters().posted.load(Ordering::Relaxed);
    let env_of = |k: &str| -> f64 {
        s.functions
            .get("FanoutFunction")
            .and_then(|f| f.spec.env.iter().find(|(n, _)| n == k))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let floor = subscribers as f64 / (env_of("HOOKCAST_FANOUT_WORKERS") * env_of("HOOKCAST_POSTS_PER_SECOND"));
    let bill0 = s.meter.bill();
    let t = Instant::now();
    let _ = zap(http, &s.http, channel, json!({"hello": "everyone"})).await;
    let ceiling = Instant::now() + Duration::from_secs(1800);
    let mut last = (0, Instant::now());
    loop {
        let n = s.ws.counters().posted.load(Ordering::Relaxed) - posted0;
        if n as usize >= subscribers || Instant::now() > ceiling {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(120) {
            println!("stalled at {n} posts");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = s.ws.counters().posted.load(Ordering::Relaxed) - posted0;
    let took = t.elapsed().as_secs_f64();
    println!(
        "{n} of {} reached in {took:.1} s ({:.0} posts/s over {shards} shards; floor {floor:.1} s, {:.2}x it); @connections calls {}, throttled {}",
        subscribers,
        n as f64 / took,
        took / floor,
        s.ws.counters().calls.load(Ordering::Relaxed),
        s.ws.counters().throttled.load(Ordering::Relaxed)
    );
    println!("{}", cost_line(&bill0, &s.meter.bill(), n as usize));
    drop(sinks);
}

/// What a section cost, from the bill's lines (list prices): per million
/// pushes, and which services it went to.
fn cost_line(before: &Value, after: &Value, pushes: usize) -> String {
    let total = after["total"].as_f64().unwrap_or(0.0) - before["total"].as_f64().unwrap_or(0.0);
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    let lines = |b: &Value| b["lines"].as_array().cloned().unwrap_or_default();
    for (a, b) in lines(after).iter().zip(lines(before).iter()) {
        *by.entry(a["service"].as_str().unwrap_or("?").to_owned()).or_default() +=
            a["cost"].as_f64().unwrap_or(0.0) - b["cost"].as_f64().unwrap_or(0.0);
    }
    let parts: Vec<String> = by.iter().filter(|(_, c)| **c > 0.0).map(|(k, c)| format!("{k} ${c:.6}")).collect();
    format!(
        "cost (bill delta): ${total:.6} for {pushes} pushes = ${:.2} per million pushes ({})",
        total / pushes.max(1) as f64 * 1e6,
        parts.join(", ")
    )
}

/// What a page costs while it only listens: pages connect and subscribe,
/// stay for --idle-secs, and leave; the bill's delta over each part.
async fn idle(cli: &Cli, s: &Stack) {
    println!("\n## {} idle pages held {:.0} s (the cost of a connection-minute)", cli.idle_pages, cli.idle_secs);
    let b0 = s.meter.bill();
    let mut pages = vec![];
    for _ in 0..cli.idle_pages {
        let mut ws = connect(&s.websocket).await;
        subscribe(&mut ws, "zaps/idle").await;
        pages.push(ws);
    }
    let b1 = s.meter.bill();
    tokio::time::sleep(Duration::from_secs_f64(cli.idle_secs)).await;
    let b2 = s.meter.bill();
    for mut ws in pages {
        let _ = ws.close(None).await;
    }
    // $disconnect is invoked after the close (best effort, as on AWS): give it time to be billed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b3 = s.meter.bill();
    let total = |b: &Value| b["total"].as_f64().unwrap_or(0.0);
    let minutes = cli.idle_pages as f64 * cli.idle_secs / 60.0;
    println!(
        "connect + subscribe + disconnect: ${:.8} a page; held: ${:.6} for {minutes:.0} connection-minutes = ${:.2} per million connection-minutes",
        (total(&b1) - total(&b0) + total(&b3) - total(&b2)) / cli.idle_pages as f64,
        total(&b2) - total(&b1),
        (total(&b2) - total(&b1)) / minutes * 1e6
    );
}

/// moto's own ceiling for the calls an append makes, closed loop with 8 in
/// flight: every emulated figure below is bounded by it.
async fn moto_ceiling(s: &Stack) -> String {
    let aws = Arc::new(Aws::new(&s.aws, "us-east-1"));
    let table = s.functions.values().find_map(|f| f.spec.env.iter().find(|(k, _)| k == "HOOKCAST_TABLE").map(|(_, v)| v.clone()));
    let table = table.expect("the functions name their table");
    let done = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (aws, table, done) = (aws.clone(), table.clone(), done.clone());
        tasks.spawn(async move {
            let mut i = 0;
            while Instant::now() < until {
                let item =
                    json!({"pk": {"S": format!("bench#moto#{w}")}, "sk": {"S": format!("{i:08}")}, "v": {"S": "x".repeat(1000)}});
                let put = json!({"TransactItems": [{"Put": {"TableName": table, "Item": item}}]});
                aws.dynamodb("TransactWriteItems", put).await.expect("TransactWriteItems");
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    format!("moto alone: {:.0} TransactWriteItems/s (1 KB item, 8 in flight)", done.load(Ordering::Relaxed) as f64 / 3.0)
}

/// Appends to one channel at each rate of the sweep (open loop), with a
/// merge state of each size: the POST's latency, how many were refused
/// (503, retried as senders retry), conflicts and the rate achieved.
async fn sweep(cli: &Cli, s: &Stack, http: &reqwest::Client) {
    println!("\n## appends to one channel (open loop, merge state), {:.0} s per rate", cli.sweep_secs);
    println!("{}", moto_ceiling(s).await);
    for (k, bytes) in cli.state_bytes.iter().enumerate() {
        // The state folds patches of 50 keys, each bytes/50 long: it stays near `bytes`.
        let value = "x".repeat(bytes / 50);
        for (r, rate) in cli.sweep.iter().enumerate() {
            let channel = format!("zaps/sweep{k}x{r}");
            let n = (rate * cli.sweep_secs).round() as usize;
            let (marks, c0) = (write_marks(s), s.front.counters.conflicts.load(Ordering::Relaxed));
            let ops0 = s.front.counters.ops();
            let every = Duration::from_secs_f64(1.0 / rate);
            let t0 = tokio::time::Instant::now();
            let mut posts = tokio::task::JoinSet::new();
            for i in 0..n {
                tokio::time::sleep_until(t0 + every * i as u32).await;
                let (http, base, channel) = (http.clone(), s.http.clone(), channel.clone());
                let data = json!({"i": i, "s": {format!("k{}", i % 50): value}});
                posts.spawn(async move { zap(&http, &base, &channel, data).await });
            }
            let (mut ms, mut refused, mut given_up) = (vec![], 0, 0);
            while let Some(r) = posts.join_next().await {
                let (m, n, ok) = r.expect("a post");
                ms.push(m);
                refused += n;
                given_up += usize::from(!ok);
            }
            let took = t0.elapsed().as_secs_f64();
            let mut sorted = ms.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            println!(
                "state {:>6} B  {rate:>5.0}/s: achieved {:>5.0}/s  p50 {:>7.1} ms  p99 {:>7.1} ms  refused {refused:>4}  given up {given_up}  conflicts {:>3}  ({})",
                bytes,
                n as f64 / took,
                pct(&sorted, 0.5),
                pct(&sorted, 0.99),
                s.front.counters.conflicts.load(Ordering::Relaxed) - c0,
                moto_writes(s, marks)
            );
            let ops = s.front.counters.ops();
            let per: Vec<String> = ops
                .iter()
                .map(|(op, c)| (op, c - ops0.get(op).copied().unwrap_or(0)))
                .filter(|(_, c)| *c > 0)
                .map(|(op, c)| format!("{op} {:.1}", c as f64 / n as f64))
                .collect();
            println!("    AWS requests per webhook: {}", per.join(", "));
        }
    }
}

/// The store's shard hash (functions/aws/src/dynamo.rs `shard_of`, FNV-1a).
fn fnv(id: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}
