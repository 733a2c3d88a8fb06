//! An API Gateway WebSocket API, so the Lambda handlers run against real
//! sockets without AWS:
//! - `GET /{stage}` upgrades; the `$connect` handler runs first and its status
//!   decides; frames are routed on `$request.body.action` (else `$default`),
//!   each frame its own invocation, run concurrently as API Gateway runs
//!   them (`concurrent_frames`, on in `hookcast emulate`); frames over 32 KB
//!   close the connection (1009); a connection closes after its idle limit (10 min) or its
//!   lifetime (2 h); closing runs `$disconnect`, which is best-effort: with
//!   `disconnect_on_loss` off, a connection lost without a close frame never
//!   gets one. Events have the shape AWS sends.
//! - `POST /{stage}/@connections/{id}` writes to that socket, or answers 410
//!   `GoneException` (also for a connection whose `$connect` has not returned);
//!   `DELETE` closes it. A post over 128 KB is refused (413
//!   `PayloadTooLargeException`). Optional latency per call and a requests-per-second
//!   throttle that answers 429 `LimitExceededException`, as API Gateway does.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
pub use axum::extract::ws::Message;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub type Invoke = Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Value> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    pub stage: String,
    /// Routes besides `$connect`, `$disconnect` and `$default`.
    pub routes: Vec<String>,
    /// Added to every @connections call.
    pub latency: Duration,
    /// @connections calls allowed per second; beyond that, 429.
    pub rate_limit: Option<u32>,
    /// Token-bucket burst for `rate_limit` (API Gateway's account default: 5,000).
    pub burst: u32,
    /// Answer 429 to this many @connections calls first (deterministic retry tests).
    pub throttle_first: u64,
    /// Routes API Gateway answers itself (MOCK integration + route response),
    /// with the reply: no Lambda is invoked.
    pub mock_routes: Vec<(String, String)>,
    /// Each frame its own concurrent invocation (API Gateway); off: one
    /// after another, in arrival order (kinder than AWS).
    pub concurrent_frames: bool,
    /// Invoke `$disconnect` for a connection lost without a close frame
    /// (API Gateway does, eventually and not always).
    pub disconnect_on_loss: bool,
    /// A connection with no frame from its client for this long closes (API Gateway: 10 minutes).
    pub idle_limit: Duration,
    /// A connection's whole life (API Gateway: 2 hours).
    pub max_lifetime: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stage: "live".into(),
            routes: vec!["subscribe".into(), "unsubscribe".into(), "ping".into(), "occupancy".into()],
            latency: Duration::ZERO,
            rate_limit: None,
            burst: 5000,
            throttle_first: 0,
            // template.yaml's PingIntegration answers ping this way.
            mock_routes: vec![("ping".into(), r#"{"type":"pong"}"#.into())],
            concurrent_frames: false,
            disconnect_on_loss: true,
            idle_limit: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(7200),
        }
    }
}

#[derive(Default)]
pub struct Counters {
    /// Lambda invocations (every route but the mocked ones).
    pub invocations: AtomicU64,
    pub calls: AtomicU64,
    pub posted: AtomicU64,
    pub gone: AtomicU64,
    pub throttled: AtomicU64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Inner {
    opts: Options,
    invoke: Invoke,
    addr: Mutex<Option<SocketAddr>>,
    conns: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
    bucket: Mutex<Bucket>,
    counters: Counters,
}

#[derive(Clone)]
pub struct Emulator(Arc<Inner>);

impl Emulator {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/{}", self.addr(), self.0.opts.stage)
    }
    /// The Management API endpoint, as the SDK's `endpoint_url`.
    pub fn management_endpoint(&self) -> String {
        format!("http://{}/{}", self.addr(), self.0.opts.stage)
    }
    pub fn addr(&self) -> SocketAddr {
        self.0.addr.lock().unwrap().expect("bound")
    }
    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }
    pub fn open_connections(&self) -> usize {
        self.0.conns.lock().unwrap().len()
    }
    /// Registers a connection that only counts deliveries (for benchmarks with
    /// thousands of connections and no socket each).
    pub fn register_sink(&self, id: &str) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.conns.lock().unwrap().insert(id.to_owned(), tx);
        rx
    }
    pub fn drop_connection(&self, id: &str) {
        self.0.conns.lock().unwrap().remove(id);
    }
}

/// Binds on 127.0.0.1:0 and serves until the returned emulator is dropped
/// with its runtime.
pub async fn start(opts: Options, invoke: Invoke) -> Emulator {
    let burst = opts.burst as f64;
    let inner = Arc::new(Inner {
        opts,
        invoke,
        addr: Mutex::new(None),
        conns: Mutex::default(),
        bucket: Mutex::new(Bucket { tokens: burst, last: Instant::now() }),
        counters: Counters::default(),
    });
    let stage = inner.opts.stage.clone();
    let app = Router::new()
        .route(&format!("/{stage}"), get(upgrade))
        .route(&format!("/{stage}/@connections/{{id}}"), post(post_to_connection).delete(delete_connection).get(get_connection))
        .route("/__emulate/counters", get(counters))
        .with_state(inner.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    *inner.addr.lock().unwrap() = Some(listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "emulator stopped");
        }
    });
    Emulator(inner)
}

/// What the emulator counted, for tests and benchmarks (not an AWS API).
async fn counters(State(inner): State<Arc<Inner>>) -> Response {
    let c = &inner.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    axum::Json(json!({
        "invocations": get(&c.invocations), "calls": get(&c.calls), "posted": get(&c.posted),
        "gone": get(&c.gone), "throttled": get(&c.throttled),
        "open": inner.conns.lock().unwrap().len(),
    }))
    .into_response()
}

/// API Gateway's WebSocket frame limit.
const FRAME_LIMIT: usize = 32 * 1024;
/// API Gateway's WebSocket message limit (what one `@connections` post may carry).
pub const MESSAGE_LIMIT: usize = 128 * 1024;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn new_connection_id() -> String {
    // API Gateway's ids look like "TWegAcC4EowCHnA=": 10 random bytes, base64.
    let mut b = [0u8; 10];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An event with the fields API Gateway sends (see aws_lambda_events' fixtures).
fn event(
    inner: &Inner,
    route: &str,
    event_type: &str,
    conn: &str,
    connected_at: i64,
    headers: &HeaderMap,
    body: Option<&str>,
) -> Value {
    let addr = inner.addr.lock().unwrap().map(|a| a.to_string()).unwrap_or_default();
    let mut hs = serde_json::Map::new();
    let mut multi = serde_json::Map::new();
    for (k, v) in headers {
        if let Ok(v) = v.to_str() {
            hs.insert(k.as_str().to_owned(), json!(v));
            multi.insert(k.as_str().to_owned(), json!([v]));
        }
    }
    let mut ctx = json!({
        "routeKey": route, "eventType": event_type, "extendedRequestId": conn, "requestTime": "23/Nov/2026:08:00:00 +0000",
        "messageDirection": "IN", "stage": inner.opts.stage, "connectedAt": connected_at, "requestTimeEpoch": now_ms(),
        "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok())},
        "requestId": conn, "domainName": addr, "connectionId": conn, "apiId": "local"
    });
    if event_type == "MESSAGE" {
        ctx["messageId"] = json!(conn);
    }
    if event_type == "DISCONNECT" {
        ctx["disconnectStatusCode"] = json!(1005);
        ctx["disconnectReason"] = json!("Client-side close frame status not set");
    }
    let mut ev = json!({"requestContext": ctx, "isBase64Encoded": false});
    if event_type != "MESSAGE" {
        ev["headers"] = Value::Object(hs);
        ev["multiValueHeaders"] = Value::Object(multi);
    }
    if let Some(b) = body {
        ev["body"] = json!(b);
    }
    ev
}

async fn upgrade(State(inner): State<Arc<Inner>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let conn = new_connection_id();
    let connected_at = now_ms();
    let res = (inner.invoke)(event(&inner, "$connect", "CONNECT", &conn, connected_at, &headers, None)).await;
    let status = res["statusCode"].as_u64().unwrap_or(500) as u16;
    if status != 200 {
        return StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN).into_response();
    }
    ws.on_upgrade(move |socket| run(inner, socket, conn, connected_at, headers))
}

async fn run(inner: Arc<Inner>, socket: WebSocket, conn: String, connected_at: i64, headers: HeaderMap) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    inner.conns.lock().unwrap().insert(conn.clone(), tx);
    let (mut sink, mut stream) = socket.split();
    let writer = async {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    };
    let last_frame = Arc::new(Mutex::new(Instant::now()));
    let clean_close = std::sync::atomic::AtomicBool::new(false);
    let invoke_frame = |ev: Value| {
        inner.counters.invocations.fetch_add(1, Ordering::Relaxed);
        let fut = (inner.invoke)(ev);
        async move {
            fut.await;
        }
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            *last_frame.lock().unwrap() = Instant::now();
            // Binary frames reach $default base64-encoded.
            let (text, binary) = match msg {
                Message::Text(t) => (t.to_string(), false),
                Message::Binary(b) => (base64::engine::general_purpose::STANDARD.encode(&b), true),
                Message::Close(frame) => {
                    // Echo the close, as API Gateway completes the handshake.
                    if let Some(tx) = inner.conns.lock().unwrap().get(&conn) {
                        let _closing = tx.send(Message::Close(frame));
                    }
                    clean_close.store(true, Ordering::Relaxed);
                    break;
                }
                _ => continue,
            };
            // As API Gateway: frames over 32 KB close the connection (1009).
            if text.len() > FRAME_LIMIT && !binary || binary && text.len() > FRAME_LIMIT * 4 / 3 + 4 {
                if let Some(tx) = inner.conns.lock().unwrap().get(&conn) {
                    let frame = axum::extract::ws::CloseFrame { code: 1009, reason: "Message too big".into() };
                    let _closing = tx.send(Message::Close(Some(frame)));
                }
                clean_close.store(true, Ordering::Relaxed);
                break;
            }
            let ev = if binary {
                let mut ev = event(&inner, "$default", "MESSAGE", &conn, connected_at, &headers, Some(&text));
                ev["isBase64Encoded"] = json!(true);
                ev
            } else {
                // Route selection: $request.body.action.
                let action = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["action"].as_str().map(str::to_owned));
                let route = action.filter(|a| inner.opts.routes.contains(a)).unwrap_or_else(|| "$default".into());
                if let Some((_, reply)) = inner.opts.mock_routes.iter().find(|(r, _)| *r == route) {
                    if let Some(tx) = inner.conns.lock().unwrap().get(&conn) {
                        let _closing = tx.send(Message::Text(reply.clone().into()));
                    }
                    continue;
                }
                event(&inner, &route, "MESSAGE", &conn, connected_at, &headers, Some(&text))
            };
            if inner.opts.concurrent_frames {
                tokio::spawn(invoke_frame(ev));
            } else {
                invoke_frame(ev).await;
            }
        }
        // The writer sends what is queued (a close frame included), then ends.
        inner.conns.lock().unwrap().remove(&conn);
        std::future::pending::<()>().await
    };
    let limits = async {
        let born = Instant::now();
        loop {
            let idle_until = *last_frame.lock().unwrap() + inner.opts.idle_limit;
            let until = idle_until.min(born + inner.opts.max_lifetime);
            if Instant::now() >= until {
                break;
            }
            tokio::time::sleep_until(until.into()).await;
        }
        // API Gateway closes with 1001 ("Going away") at its limits.
        if let Some(tx) = inner.conns.lock().unwrap().get(&conn) {
            let frame = axum::extract::ws::CloseFrame { code: 1001, reason: "Going away".into() };
            let _closing = tx.send(Message::Close(Some(frame)));
        }
        clean_close.store(true, Ordering::Relaxed);
        std::future::pending::<()>().await
    };
    tokio::select! { _ = writer => {}, _ = reader => {}, _ = limits => {} }
    inner.conns.lock().unwrap().remove(&conn);
    if clean_close.load(Ordering::Relaxed) || inner.opts.disconnect_on_loss {
        (inner.invoke)(event(&inner, "$disconnect", "DISCONNECT", &conn, connected_at, &headers, None)).await;
    }
}

fn aws_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, [("x-amzn-errortype", error_type), ("content-type", "application/json")], json!({"message": message}).to_string())
        .into_response()
}

fn take_token(inner: &Inner) -> bool {
    let Some(rate) = inner.opts.rate_limit else {
        return true;
    };
    let mut b = inner.bucket.lock().unwrap();
    let now = Instant::now();
    b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate as f64).min(inner.opts.burst as f64);
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

async fn post_to_connection(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> Response {
    if !inner.opts.latency.is_zero() {
        tokio::time::sleep(inner.opts.latency).await;
    }
    let calls = inner.counters.calls.fetch_add(1, Ordering::Relaxed);
    if calls < inner.opts.throttle_first || !take_token(&inner) {
        inner.counters.throttled.fetch_add(1, Ordering::Relaxed);
        return aws_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException", "Rate exceeded");
    }
    // API Gateway's WebSocket message limit: a post over it is refused,
    // whether or not the connection exists.
    if body.len() > MESSAGE_LIMIT {
        return aws_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", "Message too long");
    }
    let tx = inner.conns.lock().unwrap().get(&id).cloned();
    let text = String::from_utf8_lossy(&body).into_owned();
    match tx {
        Some(tx) if tx.send(Message::Text(text.into())).is_ok() => {
            inner.counters.posted.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
        _ => {
            inner.counters.gone.fetch_add(1, Ordering::Relaxed);
            aws_error(StatusCode::GONE, "GoneException", "")
        }
    }
}

async fn delete_connection(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let tx = inner.conns.lock().unwrap().remove(&id);
    match tx {
        Some(tx) => {
            let _closed = tx.send(Message::Close(None));
            StatusCode::NO_CONTENT.into_response()
        }
        None => aws_error(StatusCode::GONE, "GoneException", ""),
    }
}

async fn get_connection(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    if inner.conns.lock().unwrap().contains_key(&id) {
        json!({"connectedAt": "2026-11-23T08:00:00.000Z", "identity": {"sourceIp": "127.0.0.1"}}).to_string().into_response()
    } else {
        aws_error(StatusCode::GONE, "GoneException", "")
    }
}
