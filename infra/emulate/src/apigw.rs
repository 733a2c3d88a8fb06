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
//!   `PayloadTooLargeException`). Latency per call (a distribution: AWS
//!   publishes no figure; `hookcast emulate` takes 20 ms at the median and
//!   60 ms at the 99th percentile, "tens of milliseconds" as seen from
//!   Lambda) and the account's throttle, which answers 429
//!   `LimitExceededException`.
//! - With `limits` (on in `hookcast emulate`), API Gateway's throttles
//!   ([`crate::limits`]): the route's (stage settings), the account's shared
//!   request bucket (every frame routed, every `$connect`, every
//!   `@connections` call) and 500 new connections a second. A throttled
//!   frame is answered `{"message":"Too Many Requests",…}` and never
//!   reaches its integration; a throttled handshake gets 429.
//! - When an integration fails (the function errs, times out or is
//!   throttled), the client gets API Gateway's own frame,
//!   `{"message": "Internal server error", "connectionId": …, "requestId": …}`,
//!   and the connection stays open.
//! - Every frame received and every message sent (32 KB units) and every
//!   connection's time go on the bill ([`crate::bill`]).

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

use crate::bill::Meter;

/// Runs a route's integration: the function's answer, or `Err` when the
/// integration failed (an error, a timeout, a throttle).
pub type Invoke =
    Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Result<Value, crate::runtime::InvokeError>> + Send>> + Send + Sync>;

/// How long an `@connections` call takes: log-normal between a median and a 99th percentile.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub median: Duration,
    pub p99: Duration,
}

impl Latency {
    pub const ZERO: Latency = Latency { median: Duration::ZERO, p99: Duration::ZERO };
    pub fn fixed(d: Duration) -> Self {
        Self { median: d, p99: d }
    }
    pub fn sample(&self) -> Duration {
        if self.p99 <= self.median {
            return self.median;
        }
        // 2.326 standard deviations is the 99th percentile of a normal.
        let sigma = (self.p99.as_secs_f64() / self.median.as_secs_f64()).ln() / 2.326;
        let (u1, u2): (f64, f64) = (rand::random::<f64>().max(1e-12), rand::random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64(self.median.as_secs_f64() * (sigma * z).exp()).min(self.p99 * 4)
    }
}

#[derive(Clone)]
pub struct Options {
    pub stage: String,
    /// Routes besides `$connect`, `$disconnect` and `$default`.
    pub routes: Vec<String>,
    /// Added to every @connections call.
    pub latency: Latency,
    /// @connections calls allowed per second; beyond that, 429.
    pub rate_limit: Option<u32>,
    /// Token-bucket burst for `rate_limit` (API Gateway's account default: 5,000).
    pub burst: u32,
    /// Answer 429 to this many @connections calls first (deterministic retry tests).
    pub throttle_first: u64,
    /// Routes API Gateway answers itself (MOCK integration + route response),
    /// with the reply: no Lambda is invoked.
    pub mock_routes: Vec<(String, String)>,
    /// Two-way routes (a route response on a Lambda proxy integration):
    /// API Gateway sends the function's response body to the client, as a
    /// frame, when it has one.
    pub reply_routes: Vec<String>,
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
    /// API Gateway's throttles: the account's buckets and the stage's routes.
    pub limits: Option<(Arc<crate::limits::Account>, Arc<crate::limits::Routes>)>,
    /// Where messages and connection time are billed.
    pub meter: Arc<crate::bill::Meter>,
    /// The stage's access log (`AccessLogSettings`), if it keeps one.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// `arn:aws:execute-api:<region>:<account>:<api id>`: what a function's
    /// role must allow `execute-api:ManageConnections` on, per call.
    pub api_arn: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stage: "live".into(),
            routes: vec!["subscribe".into(), "unsubscribe".into(), "ping".into(), "occupancy".into()],
            latency: Latency::ZERO,
            rate_limit: None,
            burst: 5000,
            throttle_first: 0,
            mock_routes: vec![],
            // template.yaml's message routes are all two-way.
            reply_routes: ["subscribe", "unsubscribe", "occupancy", "ping", "$default"].map(String::from).to_vec(),
            concurrent_frames: false,
            disconnect_on_loss: true,
            idle_limit: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(7200),
            limits: None,
            meter: Default::default(),
            access_log: None,
            api_arn: "arn:aws:execute-api:us-east-1:123456789012:emulated".into(),
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
    conns: Mutex<HashMap<String, Conn>>,
    bucket: Mutex<Bucket>,
    counters: Counters,
    faults: Mutex<Vec<Fault>>,
}

/// What a test asks the WebSocket API to do to the next frames of a route
/// (or, for `@connections`, the next posts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// The frame is lost: no integration, no answer.
    Drop,
    /// The integration fails: API Gateway's `Internal server error` frame.
    Error,
    /// API Gateway throttles it: `Too Many Requests` (429 for `@connections`).
    Throttle,
}

#[derive(Debug, Clone)]
struct Fault {
    route: String,
    mode: FaultMode,
    left: u32,
}

/// An open connection: where its frames go, and since when it is open (billed).
struct Conn {
    tx: mpsc::UnboundedSender<Message>,
    opened: Instant,
    /// The client's address (`identity.sourceIp`).
    ip: String,
}

impl Inner {
    fn sender(&self, conn: &str) -> Option<mpsc::UnboundedSender<Message>> {
        self.conns.lock().unwrap().get(conn).map(|c| c.tx.clone())
    }
    /// Sends a frame of API Gateway's own to a client (a message sent: billed).
    fn tell(&self, conn: &str, msg: Message) {
        if let Some(tx) = self.sender(conn) {
            if let Message::Text(t) = &msg {
                crate::bill::Meter::add(
                    &self.opts.meter.ws_messages_out,
                    crate::bill::units(t.len(), crate::bill::WS_MESSAGE_UNIT),
                );
            }
            let _closing = tx.send(msg);
        }
    }
    /// Forgets a connection, billing its time.
    fn forget(&self, conn: &str) -> Option<mpsc::UnboundedSender<Message>> {
        let c = self.conns.lock().unwrap().remove(conn)?;
        crate::bill::Meter::add(&self.opts.meter.ws_connection_ms, c.opened.elapsed().as_millis() as u64);
        Some(c.tx)
    }
    /// One line in the stage's access log, if it keeps one.
    fn log(&self, event_type: &str, route: &str, conn: &str, status: u16, error: Option<&str>) {
        let ip = self.conns.lock().unwrap().get(conn).map(|c| c.ip.clone());
        self.log_from(ip.as_deref().unwrap_or("-"), event_type, route, conn, status, error)
    }
    fn log_from(&self, ip: &str, event_type: &str, route: &str, conn: &str, status: u16, error: Option<&str>) {
        if let Some(log) = &self.opts.access_log {
            let ctx = std::collections::HashMap::from([
                ("requestId", format!("{:x}", rand::random::<u64>())),
                ("identity.sourceIp", ip.to_owned()),
                ("requestTime", crate::access_log::request_time()),
                ("eventType", event_type.to_owned()),
                ("routeKey", route.to_owned()),
                ("status", status.to_string()),
                ("connectionId", conn.to_owned()),
                ("stage", self.opts.stage.clone()),
            ]);
            let mut ctx = ctx;
            if let Some(e) = error {
                ctx.insert("error.message", e.to_owned());
            }
            log.write(&ctx);
        }
    }
    /// The fault a test set for this route's next frame, if any (used up).
    fn fault(&self, route: &str) -> Option<FaultMode> {
        let mut f = self.faults.lock().unwrap();
        let i = f.iter().position(|x| x.route == route && x.left > 0)?;
        f[i].left -= 1;
        let mode = f[i].mode;
        f.retain(|x| x.left > 0);
        Some(mode)
    }
    /// A token from the route's bucket and then the account's, when throttles are on.
    fn admit_route(&self, route: &str) -> bool {
        match &self.opts.limits {
            None => true,
            Some((account, routes)) => routes.take(route) && account.requests.take(),
        }
    }
}

fn gateway_frame(message: &str, conn: &str) -> Message {
    let request_id = format!("{:x}", rand::random::<u64>());
    Message::Text(json!({"message": message, "connectionId": conn, "requestId": request_id}).to_string().into())
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
        self.0.conns.lock().unwrap().insert(id.to_owned(), Conn { tx, opened: Instant::now(), ip: "127.0.0.1".into() });
        rx
    }
    pub fn drop_connection(&self, id: &str) {
        self.0.forget(id);
    }
    /// Makes the next `count` frames of `route` (or `@connections` posts) fail as `mode`.
    pub fn add_fault(&self, route: &str, mode: FaultMode, count: u32) {
        self.0.faults.lock().unwrap().push(Fault { route: route.to_owned(), mode, left: count });
    }
    /// Milliseconds the open connections have been open, all together (the bill's).
    pub fn open_connection_ms(&self) -> u64 {
        self.0.conns.lock().unwrap().values().map(|c| c.opened.elapsed().as_millis() as u64).sum()
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
        faults: Mutex::default(),
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

/// The client's address as API Gateway reports it. Every client here is on
/// loopback; a test stands for many clients on many addresses with the
/// `X-Emulate-Source-Ip` header on its handshake (not an AWS header).
pub fn source_ip(headers: &HeaderMap) -> String {
    headers
        .get("x-emulate-source-ip")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
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
        "identity": {"sourceIp": source_ip(headers), "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok())},
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
    if let Some((account, routes)) = &inner.opts.limits {
        if !account.new_connections.take() || !routes.take("$connect") || !account.requests.take() {
            Meter::add(&inner.opts.meter.apigw_throttled, 1);
            inner.log_from(&source_ip(&headers), "CONNECT", "$connect", "-", 429, Some("Too Many Requests"));
            return (StatusCode::TOO_MANY_REQUESTS, [("content-type", "application/json")], r#"{"message":"Too Many Requests"}"#)
                .into_response();
        }
    }
    let conn = new_connection_id();
    let connected_at = now_ms();
    let res = (inner.invoke)(event(&inner, "$connect", "CONNECT", &conn, connected_at, &headers, None)).await;
    let status = match res {
        Ok(v) => v["statusCode"].as_u64().unwrap_or(500) as u16,
        Err(e) => {
            tracing::warn!(error = %e, "$connect integration failed");
            500
        }
    };
    inner.log_from(
        &source_ip(&headers),
        "CONNECT",
        "$connect",
        &conn,
        status,
        (status == 500).then_some("Internal server error"),
    );
    if status != 200 {
        return StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN).into_response();
    }
    ws.on_upgrade(move |socket| run(inner, socket, conn, connected_at, headers))
}

async fn run(inner: Arc<Inner>, socket: WebSocket, conn: String, connected_at: i64, headers: HeaderMap) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    inner.conns.lock().unwrap().insert(conn.clone(), Conn { tx, opened: Instant::now(), ip: source_ip(&headers) });
    Meter::add(&inner.opts.meter.ws_connections, 1);
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
        let route = ev["requestContext"]["routeKey"].as_str().unwrap_or("$default").to_owned();
        let fut = (inner.invoke)(ev);
        let (inner, conn) = (inner.clone(), conn.clone());
        async move {
            match fut.await {
                Err(e) => {
                    tracing::debug!(error = %e, "a message's integration failed: API Gateway tells the client");
                    inner.tell(&conn, gateway_frame("Internal server error", &conn));
                    inner.log("MESSAGE", &route, &conn, 500, Some("Internal server error"));
                }
                Ok(out) => {
                    let body = out["body"].as_str().filter(|b| !b.is_empty());
                    if let Some(body) = body.filter(|_| inner.opts.reply_routes.contains(&route)) {
                        inner.tell(&conn, Message::Text(body.to_owned().into()));
                    }
                    inner.log("MESSAGE", &route, &conn, 200, None)
                }
            }
        }
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            *last_frame.lock().unwrap() = Instant::now();
            if let Message::Text(t) = &msg {
                Meter::add(&inner.opts.meter.ws_messages_in, crate::bill::units(t.len(), crate::bill::WS_MESSAGE_UNIT));
            } else if let Message::Binary(b) = &msg {
                Meter::add(&inner.opts.meter.ws_messages_in, crate::bill::units(b.len(), crate::bill::WS_MESSAGE_UNIT));
            }
            // Binary frames reach $default base64-encoded.
            let (text, binary) = match msg {
                Message::Text(t) => (t.to_string(), false),
                Message::Binary(b) => (base64::engine::general_purpose::STANDARD.encode(&b), true),
                Message::Close(frame) => {
                    // Echo the close, as API Gateway completes the handshake.
                    if let Some(tx) = inner.sender(&conn) {
                        let _closing = tx.send(Message::Close(frame));
                    }
                    clean_close.store(true, Ordering::Relaxed);
                    break;
                }
                _ => continue,
            };
            // As API Gateway: frames over 32 KB close the connection (1009).
            if text.len() > FRAME_LIMIT && !binary || binary && text.len() > FRAME_LIMIT * 4 / 3 + 4 {
                if let Some(tx) = inner.sender(&conn) {
                    let frame = axum::extract::ws::CloseFrame { code: 1009, reason: "Message too big".into() };
                    let _closing = tx.send(Message::Close(Some(frame)));
                }
                clean_close.store(true, Ordering::Relaxed);
                break;
            }
            let route = if binary {
                "$default".to_owned()
            } else {
                let action = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["action"].as_str().map(str::to_owned));
                action.filter(|a| inner.opts.routes.contains(a)).unwrap_or_else(|| "$default".into())
            };
            let fault = inner.fault(&route);
            if !inner.admit_route(&route) || fault == Some(FaultMode::Throttle) {
                Meter::add(&inner.opts.meter.apigw_throttled, 1);
                inner.tell(&conn, gateway_frame("Too Many Requests", &conn));
                inner.log("MESSAGE", &route, &conn, 429, Some("Too Many Requests"));
                continue;
            }
            match fault {
                Some(FaultMode::Drop) => continue,
                Some(FaultMode::Error) => {
                    inner.tell(&conn, gateway_frame("Internal server error", &conn));
                    inner.log("MESSAGE", &route, &conn, 500, Some("Internal server error"));
                    continue;
                }
                _ => {}
            }
            let ev = if binary {
                let mut ev = event(&inner, "$default", "MESSAGE", &conn, connected_at, &headers, Some(&text));
                ev["isBase64Encoded"] = json!(true);
                ev
            } else {
                // Route selection: $request.body.action.
                if let Some((_, reply)) = inner.opts.mock_routes.iter().find(|(r, _)| *r == route) {
                    inner.tell(&conn, Message::Text(reply.clone().into()));
                    inner.log("MESSAGE", &route, &conn, 200, None);
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
        inner.forget(&conn);
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
        if let Some(tx) = inner.sender(&conn) {
            let frame = axum::extract::ws::CloseFrame { code: 1001, reason: "Going away".into() };
            let _closing = tx.send(Message::Close(Some(frame)));
        }
        clean_close.store(true, Ordering::Relaxed);
        std::future::pending::<()>().await
    };
    tokio::select! { _ = writer => {}, _ = reader => {}, _ = limits => {} }
    inner.forget(&conn);
    if clean_close.load(Ordering::Relaxed) || inner.opts.disconnect_on_loss {
        let status = match (inner.invoke)(event(&inner, "$disconnect", "DISCONNECT", &conn, connected_at, &headers, None)).await {
            Ok(_) => 200,
            Err(e) => {
                tracing::debug!(error = %e, "$disconnect integration failed");
                500
            }
        };
        inner.log_from(&source_ip(&headers), "DISCONNECT", "$disconnect", &conn, status, None);
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

/// A function's call its role does not allow: 403, as API Gateway answers it.
fn refused(inner: &Inner, headers: &HeaderMap, method: &str, id: &str) -> Option<Response> {
    let resource = format!("{}/{}/{method}/@connections/{id}", inner.opts.api_arn, inner.opts.stage);
    let ask = crate::iam::Ask::new("execute-api:ManageConnections", resource);
    let refused = crate::iam::refusal(crate::iam::access_key_of(headers).as_deref(), &[ask])?;
    Some(aws_error(StatusCode::FORBIDDEN, "AccessDeniedException", &refused))
}

async fn post_to_connection(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(no) = refused(&inner, &headers, "POST", &id) {
        return no;
    }
    let wait = inner.opts.latency.sample();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let calls = inner.counters.calls.fetch_add(1, Ordering::Relaxed);
    let account = inner.opts.limits.as_ref().is_none_or(|(a, _)| a.requests.take());
    let injected = inner.fault("@connections") == Some(FaultMode::Throttle);
    if calls < inner.opts.throttle_first || !take_token(&inner) || !account || injected {
        Meter::add(&inner.opts.meter.apigw_throttled, 1);
        inner.counters.throttled.fetch_add(1, Ordering::Relaxed);
        return aws_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException", "Rate exceeded");
    }
    // API Gateway's WebSocket message limit: a post over it is refused,
    // whether or not the connection exists.
    if body.len() > MESSAGE_LIMIT {
        return aws_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", "Message too long");
    }
    let tx = inner.sender(&id);
    let text = String::from_utf8_lossy(&body).into_owned();
    match tx {
        Some(tx) if tx.send(Message::Text(text.into())).is_ok() => {
            inner.counters.posted.fetch_add(1, Ordering::Relaxed);
            Meter::add(&inner.opts.meter.ws_messages_out, crate::bill::units(body.len(), crate::bill::WS_MESSAGE_UNIT));
            StatusCode::OK.into_response()
        }
        _ => {
            inner.counters.gone.fetch_add(1, Ordering::Relaxed);
            aws_error(StatusCode::GONE, "GoneException", "")
        }
    }
}

async fn delete_connection(State(inner): State<Arc<Inner>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(&inner, &headers, "DELETE", &id) {
        return no;
    }
    let tx = inner.forget(&id);
    match tx {
        Some(tx) => {
            let _closed = tx.send(Message::Close(None));
            StatusCode::NO_CONTENT.into_response()
        }
        None => aws_error(StatusCode::GONE, "GoneException", ""),
    }
}

async fn get_connection(State(inner): State<Arc<Inner>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(&inner, &headers, "GET", &id) {
        return no;
    }
    if inner.conns.lock().unwrap().contains_key(&id) {
        json!({"connectedAt": "2026-11-23T08:00:00.000Z", "identity": {"sourceIp": "127.0.0.1"}}).to_string().into_response()
    } else {
        aws_error(StatusCode::GONE, "GoneException", "")
    }
}
