//! A DynamoDB front as strict as DynamoDB where moto is kinder. moto runs
//! requests one at a time, so its transactions never collide; DynamoDB
//! cancels a `TransactWriteItems` with `TransactionConflict` when another
//! request is writing one of its items at that moment, and refuses a plain
//! write (`TransactionConflictException`) to an item a transaction holds.
//! Here every write takes `hold` (25 ms by default: longer than a DynamoDB
//! transaction usually takes) from its arrival, and its items count as
//! "being written" for that long. Writes then reach moto one at a time, in
//! arrival order, so each sees exactly the writes that arrived before it, as
//! on a table whose writes take `hold`. The time a write spends queued
//! behind others in moto does not count: moto is far slower than DynamoDB,
//! and counting its queue would make every concurrent write to a busy item
//! conflict, which a table serving many writers in parallel does not do.
//! It can also throttle (`ProvisionedThroughput…`) beyond a rate, as a table
//! at its limits does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Clone, Copy)]
pub struct FrontOptions {
    /// Requests per second beyond which the front answers as DynamoDB does
    /// when throttled.
    pub throttle_rate: Option<u32>,
    /// How long after its arrival a write holds its items.
    pub hold: Duration,
}

impl Default for FrontOptions {
    fn default() -> Self {
        Self { throttle_rate: None, hold: Duration::from_millis(25) }
    }
}

#[derive(Default)]
pub struct FrontCounters {
    pub conflicts: AtomicU64,
    pub throttled: AtomicU64,
    pub requests: AtomicU64,
    /// Writes moto executed, and their time in moto and queued before it (µs).
    pub writes: AtomicU64,
    pub write_service_us: AtomicU64,
    pub write_queued_us: AtomicU64,
}

pub struct Front {
    pub url: String,
    pub counters: Arc<FrontCounters>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Front {
    /// Waits until no item is held: a write sent after this meets no
    /// conflict unless another is sent with it.
    pub async fn settled(&self) {
        loop {
            let now = Instant::now();
            if self.state.busy.lock().unwrap().values_mut().all(|h| !h.clashes(now, true)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
        self.writer.abort();
    }
}

/// What holds one item now: writes that arrived within `hold`, as (until,
/// a transaction).
#[derive(Default)]
struct Hold {
    windows: Vec<(Instant, bool)>,
}

impl Hold {
    /// Whether a write (a transaction when `txn`) arriving at `now` collides:
    /// a transaction with any write, a plain write with a transaction.
    fn clashes(&mut self, now: Instant, txn: bool) -> bool {
        self.windows.retain(|(until, _)| *until > now);
        if txn {
            !self.windows.is_empty()
        } else {
            self.windows.iter().any(|(_, t)| *t)
        }
    }
}

/// A write on its way to moto, and where its answer goes.
type Write = (reqwest::RequestBuilder, Instant, tokio::sync::oneshot::Sender<reqwest::Result<reqwest::Response>>);

struct State {
    busy: Mutex<HashMap<String, Hold>>,
    /// Writes go to moto one at a time (it serialises them anyway).
    writes: tokio::sync::mpsc::UnboundedSender<Write>,
    counters: Arc<FrontCounters>,
    bucket: Mutex<(f64, Instant)>,
    opts: FrontOptions,
    upstream: String,
    http: reqwest::Client,
}

/// The items a write request touches, as "table pk sk".
fn items_of(target: &str, body: &Value) -> Vec<String> {
    let id = |table: &Value, k: &Value| {
        // The whole key, whatever its attribute names: sorted for a stable id.
        let mut parts: Vec<String> = k.as_object().into_iter().flatten().map(|(n, v)| format!("{n}={v}")).collect();
        parts.sort();
        format!("{table} {}", parts.join(" "))
    };
    let key_of = |table: &Value, item: &Value| {
        // A Put carries the whole item: its key is the pk and sk attributes.
        let mut k = serde_json::Map::new();
        for name in ["pk", "sk"] {
            if let Some(v) = item.get(name) {
                k.insert(name.into(), v.clone());
            }
        }
        id(table, &Value::Object(k))
    };
    match target {
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let (op, v) = t.as_object()?.iter().next()?;
                Some(if op == "Put" { key_of(&v["TableName"], &v["Item"]) } else { id(&v["TableName"], &v["Key"]) })
            })
            .collect(),
        "PutItem" => vec![key_of(&body["TableName"], &body["Item"])],
        "UpdateItem" | "DeleteItem" => vec![id(&body["TableName"], &body["Key"])],
        "BatchWriteItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(table, reqs)| {
                let table = json!(table);
                reqs.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        if let Some(p) = r.get("PutRequest") {
                            Some(key_of(&table, &p["Item"]))
                        } else {
                            r.get("DeleteRequest").map(|d| id(&table, &d["Key"]))
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => vec![],
    }
}

fn reply(status: u16, v: Value) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(axum::body::Body::from(v.to_string()))
        .expect("a valid response")
}

fn take_token(s: &State) -> bool {
    let Some(rate) = s.opts.throttle_rate else {
        return true;
    };
    let mut b = s.bucket.lock().unwrap();
    let now = Instant::now();
    b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * f64::from(rate)).min(f64::from(rate));
    b.1 = now;
    if b.0 >= 1.0 {
        b.0 -= 1.0;
        true
    } else {
        false
    }
}

async fn handle(s: Arc<State>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    let full_target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let dynamodb = full_target.starts_with("DynamoDB_");
    let target = full_target.rsplit('.').next().unwrap_or("");
    if dynamodb && !take_token(&s) {
        s.counters.throttled.fetch_add(1, Ordering::Relaxed);
        return reply(
            400,
            json!({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                   "message": "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}),
        );
    }
    let json_body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let txn = target == "TransactWriteItems";
    let items = if dynamodb { items_of(target, &json_body) } else { vec![] };
    let mut req = s.http.post(&s.upstream).body(body.clone());
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    // Queued for moto under the same lock that admitted it: writes reach
    // moto exactly in the order they were admitted.
    let mut answer = None;
    let conflict = {
        let now = Instant::now();
        let mut busy = s.busy.lock().unwrap();
        if busy.len() > 1_000 {
            busy.retain(|_, h| h.clashes(now, true));
        }
        let clash = items.iter().any(|i| busy.get_mut(i).is_some_and(|h| h.clashes(now, txn)));
        if !clash {
            for i in &items {
                busy.entry(i.clone()).or_default().windows.push((now + s.opts.hold, txn));
            }
            if !items.is_empty() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                // The writer task lives as long as the front.
                let _ = s.writes.send((req.try_clone().expect("a buffered body"), now, tx));
                answer = Some(rx);
            }
        }
        clash
    };
    if conflict {
        s.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        return if txn {
            let reasons: Vec<Value> = json_body["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|_| json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}))
                .collect();
            reply(
                400,
                json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                    "message": "Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]",
                    "CancellationReasons": reasons,
                }),
            )
        } else {
            reply(
                400,
                json!({"__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException", "message": "Transaction is ongoing for the item"}),
            )
        };
    }
    let res = match answer {
        None => req.send().await,
        Some(rx) => match rx.await {
            Ok(res) => res,
            Err(_) => {
                return reply(
                    500,
                    json!({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "the front stopped"}),
                )
            }
        },
    };
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            return reply(
                500,
                json!({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": format!("upstream: {e}")}),
            )
        }
    };
    let mut out = axum::response::Response::builder().status(res.status().as_u16());
    for (k, v) in res.headers() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            out = out.header(k, v);
        }
    }
    let bytes = res.bytes().await.unwrap_or_default();
    out.body(axum::body::Body::from(bytes)).expect("a valid response")
}

/// Starts the front on 127.0.0.1:0 before `upstream` (moto's URL).
pub async fn start(upstream: &str, opts: FrontOptions) -> std::io::Result<Front> {
    let counters = Arc::new(FrontCounters::default());
    let (writes, mut queued) = tokio::sync::mpsc::unbounded_channel::<Write>();
    let timed = counters.clone();
    let writer = tokio::spawn(async move {
        while let Some((req, admitted, answer)) = queued.recv().await {
            let started = Instant::now();
            let res = req.send().await;
            let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            timed.writes.fetch_add(1, Ordering::Relaxed);
            timed.write_service_us.fetch_add(us(started.elapsed()), Ordering::Relaxed);
            timed.write_queued_us.fetch_add(us(started - admitted), Ordering::Relaxed);
            let _ = answer.send(res);
        }
    });
    let state = Arc::new(State {
        busy: Mutex::default(),
        writes,
        counters: counters.clone(),
        bucket: Mutex::new((f64::from(opts.throttle_rate.unwrap_or(0)), Instant::now())),
        opts,
        upstream: upstream.to_owned(),
        http: reqwest::Client::new(),
    });
    let seen = counters.clone();
    let app = axum::Router::new()
        // What the front counted, for tests and benchmarks (DynamoDB uses POST / only).
        .route(
            "/__emulate/counters",
            axum::routing::get(move || async move {
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                axum::Json(json!({"conflicts": get(&seen.conflicts), "throttled": get(&seen.throttled), "requests": get(&seen.requests)}))
            }),
        )
        .fallback({
            let state = state.clone();
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| handle(state.clone(), headers, body)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _stopped = axum::serve(listener, app).await;
    });
    Ok(Front { url, counters, state, task, writer })
}
