//! What channel state costs an append: the webhook path (verify, normalise,
//! append with the state carried on in the same commit, fsync'd) over the
//! embedded store on this disk, for a channel without state, with a `merge`
//! state of about 1 KB and of about 50 KB, and with a `list:20` of 1 KB
//! events. For each: append latency one at a time (p50, p99) and durable
//! webhooks/s with 32 in flight. Then DynamoDB write units per append,
//! estimated from the items the append writes (a transaction costs 2 units
//! per KB of each item, rounded up per item).
//!
//!   cargo run --release -p hookcast --example state-bench [-- --events 400]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hookcast::store::SqliteStore;
use hookcast_core::config::{Config, Limits};
use hookcast_core::ports::{EventLog, Retention};
use hookcast_core::state::{StateMode, StateRules};
use hookcast_core::verify::HookRequest;
use hookcast_core::{sign, Channel, Hooks};
use serde_json::json;

struct Case {
    name: &'static str,
    mode: Option<StateMode>,
    /// Bytes the state holds before the measured appends.
    prefill: usize,
    /// Bytes of each measured event's data.
    event_bytes: usize,
}

const CASES: [Case; 5] = [
    Case { name: "no state", mode: None, prefill: 0, event_bytes: 64 },
    Case { name: "no state, 3 KB events", mode: None, prefill: 0, event_bytes: 3200 },
    Case { name: "merge, 1 KB state", mode: Some(StateMode::Merge), prefill: 1024, event_bytes: 64 },
    Case { name: "merge, 50 KB state", mode: Some(StateMode::Merge), prefill: 50 * 1024, event_bytes: 64 },
    Case { name: "list:20 of 1 KB events", mode: Some(StateMode::List(20)), prefill: 0, event_bytes: 1024 },
];

fn config(mode: Option<StateMode>) -> Config {
    // The patches' keys, k0 to k15 (a source forwards listed fields only).
    let fields: Vec<String> = (0..16).map(|k| format!("\"k{k}\"")).collect();
    let toml = format!(
        "[sources.app]\nkind = \"hmac\"\nsecret = \"{}\"\nchannels = [\"*\"]\nfields = [{}]\n",
        "bench-state-secret-0123456789",
        fields.join(", ")
    );
    let mut c = Config::build(toml::from_str(&toml).unwrap(), &|_| None).unwrap();
    if let Some(m) = mode {
        c.state = StateRules::new(vec![("bench".parse().unwrap(), m)]);
    }
    c
}

async fn webhook(hooks: &Hooks<SqliteStore>, data: serde_json::Value) -> Duration {
    let body = json!({"channel": "bench", "event": "tick", "data": data}).to_string();
    let headers = vec![("x-hub-signature-256".to_owned(), sign::github(b"bench-state-secret-0123456789", body.as_bytes()))];
    let t = Instant::now();
    hooks
        .ingest("app", Some("application/json"), &HookRequest { headers: &headers, body: body.as_bytes() })
        .await
        .expect("accepted");
    t.elapsed()
}

fn patch(i: usize, bytes: usize) -> serde_json::Value {
    json!({ format!("k{}", i % 16): "x".repeat(bytes.saturating_sub(16)) })
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// DynamoDB bills an item by the UTF-8 lengths of its attribute names and values.
fn item_kb(attrs: &[(&str, usize)]) -> u64 {
    let bytes: usize = attrs.iter().map(|(k, v)| k.len() + v).sum();
    bytes.div_ceil(1024) as u64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize =
        args.iter().position(|a| a == "--events").and_then(|i| args.get(i + 1)).map_or(400, |v| v.parse().unwrap());
    println!("state bench: {events} webhooks per case, SQLite WAL synchronous=FULL on this disk; {}", chrono_free_now());
    println!();
    println!("| channel | state after | append p50 (1 in flight) | p99 | durable webhooks/s (32 in flight) | DynamoDB write units per append (est.) |");
    println!("|---|---|---|---|---|---|");
    for case in &CASES {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { history_max_events: 1000, ..Limits::default() };
        let store = Arc::new(SqliteStore::open(&dir.path().join("h.db"), Retention::from(&limits)).unwrap());
        let hooks = Arc::new(Hooks::new(Arc::new(Config { limits, ..config(case.mode) }), store.clone()));
        // Fill the state to its size: 16 keys of prefill/16 bytes each.
        if case.prefill > 0 {
            for k in 0..16 {
                webhook(&hooks, json!({ format!("k{k}"): "p".repeat(case.prefill / 16 - 16) })).await;
            }
        }
        let mut lat = Vec::with_capacity(events);
        for i in 0..events {
            lat.push(webhook(&hooks, patch(i, if case.prefill > 0 { case.prefill / 16 } else { case.event_bytes })).await);
        }
        lat.sort();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..32 {
            let hooks = hooks.clone();
            let n = events / 32 + 1;
            let bytes = if case.prefill > 0 { case.prefill / 16 } else { case.event_bytes };
            tasks.push(tokio::spawn(async move {
                for i in 0..n {
                    webhook(&hooks, patch(w * 1000 + i, bytes)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rate = (32 * (events / 32 + 1)) as f64 / t.elapsed().as_secs_f64();
        let h = store.read(&Channel::parse("bench").unwrap(), 0, 0).await.unwrap();
        let state_bytes = h.state.as_ref().map_or(0, |s| s.value.to_string().len());
        // The append's items on DynamoDB: the head (seq, last_at_ms and the
        // state), the event, the dedupe key (GitHub sends a delivery id).
        let data_bytes = patch(0, if case.prefill > 0 { case.prefill / 16 } else { case.event_bytes }).to_string().len();
        let head =
            item_kb(&[("pk", 12), ("sk", 4), ("seq", 4), ("last_at_ms", 8), ("state_kind", 5), ("state_json", state_bytes)]);
        let event = item_kb(&[
            ("pk", 12),
            ("sk", 15),
            ("seq", 4),
            ("event", 4),
            ("data", data_bytes),
            ("at", 24),
            ("at_ms", 8),
            ("ttl", 6),
        ]);
        let dedupe = item_kb(&[("pk", 48), ("sk", 6), ("seq", 4), ("channel", 5), ("expires_ms", 8), ("ttl", 6)]);
        let wcu = 2 * (head + event + dedupe);
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.0} | {wcu} ({head} KB head, {event} KB event, {dedupe} KB key; x2 in a transaction) |",
            case.name,
            if state_bytes > 0 { format!("{:.1} KB", state_bytes as f64 / 1024.0) } else { "none".into() },
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            rate,
        );
    }
}

fn chrono_free_now() -> String {
    let s = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    format!("unix time {s}")
}
