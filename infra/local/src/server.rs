//! The local server: WebSocket, webhooks, history, the snippet and (in dev)
//! the demo site, on one port. `app` is separate from binding so tests drive
//! it on port 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use hookcast_core::channel::Channel;
use hookcast_core::ports::ConnId;
use hookcast_core::relay::{Relay, MAX_CLIENT_FRAME};
use hookcast_core::{ClientMsg, Fanout, Live, ServerMsg};
use hookcast_core::{HookError, Hooks};
use hookcast_http::{json_error, refusal};
use rand::RngCore;
use tracing::{debug, info, warn};

use crate::gateway::{Frame, LocalGateway};
use crate::store::SqliteStore;

const DEMO_HTML: &str = include_str!("../../../site-snippet/demo/index.html");
const DEMO_CSS: &str = include_str!("../../../site-snippet/demo/demo.css");
const DEMO_JS: &str = include_str!("../../../site-snippet/demo/demo.js");
const DEMO_MODULE_HTML: &str = include_str!("../../../site-snippet/demo/module.html");
const DEMO_MODULE_JS: &str = include_str!("../../../site-snippet/demo/module.js");
const DEMO_ICON: &str = include_str!("../../../site-snippet/demo/favicon.svg");

/// Per-socket read chunk; larger client frames are read in several chunks.
const READ_BUFFER: usize = 1024;
/// tungstenite's own writes (pongs, a close reply) buffered at most.
const CONTROL_WRITE_BUFFER: usize = 4 * 1024;

pub type LocalRelay = Relay<SqliteStore, Live, LocalGateway>;
pub type LocalFanout = Fanout<Live, LocalGateway>;

pub struct AppState {
    /// The webhook path: verify, append, acknowledge.
    pub hooks: Arc<Hooks<SqliteStore>>,
    /// The socket side: client frames, replays, connects.
    pub relay: Arc<LocalRelay>,
    /// The push to subscribers (the dispatcher calls it).
    pub fanout: Arc<LocalFanout>,
    /// The parts, shared with the engines above.
    pub log: Arc<SqliteStore>,
    pub live: Arc<Live>,
    pub gateway: Arc<LocalGateway>,
    /// Serve the demo site at `/` (hookcast dev).
    pub demo: bool,
    /// Set on shutdown: endless responses (SSE) end so graceful shutdown can finish.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The store's commit feed, until `bind` hands it to the dispatcher.
    pub commits: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<hookcast_core::Event>>>,
    /// Held while the server runs: no second instance on this data dir.
    pub data_dir_lock: std::fs::File,
    pub sockets: SocketLimits,
}

#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Open WebSocket and SSE clients at most.
    pub max_open: usize,
    pub ping_every: Duration,
    /// Nothing heard for this long (pongs included): the client vanished.
    pub idle_limit: Duration,
}

/// Client messages: a burst of this many, then this many a second.
const MESSAGE_BURST: f64 = 100.0;
const MESSAGES_PER_SEC: f64 = 20.0;
/// How long a client may leave its replies unread before it is closed.
const REPLY_DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// The shared routes (webhooks, history, the snippet: the same table the
/// webhook Lambda runs) plus the local binary's own: `/ws`, `/sse`,
/// `/healthz` and, in dev, the demo site.
pub fn app(state: Arc<AppState>) -> Router {
    let mut local = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/sse", get(sse))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    if state.demo {
        local = local
            .route("/", get(demo_page))
            .route("/demo.css", get(|| async { asset("text/css; charset=utf-8", DEMO_CSS) }))
            .route("/demo.js", get(|| async { asset("application/javascript; charset=utf-8", DEMO_JS) }))
            .route("/module.html", get(|| async { asset("text/html; charset=utf-8", DEMO_MODULE_HTML) }))
            .route("/module.js", get(|| async { asset("application/javascript; charset=utf-8", DEMO_MODULE_JS) }))
            .route("/favicon.svg", get(|| async { asset("image/svg+xml", DEMO_ICON) }))
            .route("/favicon.ico", get(|| async { asset("image/svg+xml", DEMO_ICON) }));
    }
    hookcast_http::router(state.hooks.clone(), hookcast_http::Snippets::same_host())
        .merge(local.with_state(state))
        .layer(axum::middleware::map_response(hookcast_http::json_errors))
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let (sockets, subscriptions) = (st.gateway.open_sockets() as u64, st.live.subscriptions() as u64);
    let body = hookcast_core::metrics::global().render(&[
        ("hookcast_open_sockets", "WebSocket and SSE clients connected.", sockets),
        ("hookcast_subscriptions", "Channel subscriptions held by connected clients.", subscriptions),
        ("hookcast_fanout_backlog", "Events committed and not yet fanned out.", st.log.backlog().events() as u64),
        ("hookcast_store_commits", "Write transactions committed (one fsync each) since start.", st.log.commits()),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// `GET /healthz`: 200 when the store answers a read within 2 s, else 503.
async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let probe = Channel::parse("deploys").expect("valid literal");
    let read = tokio::time::timeout(Duration::from_secs(2), hookcast_core::EventLog::read(st.hooks.log(), &probe, 0, 1)).await;
    match read {
        Ok(Ok(_)) => {
            let body = serde_json::json!({"ok": true, "sockets": st.gateway.open_sockets()});
            ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Ok(Err(e)) => {
            warn!(error = %e, "health check: the store failed");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the event store does not answer")
        }
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the event store did not answer within 2 s"),
    }
}

/// The demo page as a static host would render it after its latest deploy:
/// `hookcast dev` stands in for the rebuild the poke/pull pattern refetches.
async fn demo_page(State(st): State<Arc<AppState>>) -> Response {
    let deploys = Channel::parse("deploys").expect("valid literal");
    let latest = match st.hooks.history(&deploys, 0, None).await {
        Ok(c) => c.history.events.into_iter().rev().find(|e| e.event.as_str() == "deploy.succeeded"),
        Err(e) => {
            warn!(error = %e, "demo page rendered without deploy info");
            None
        }
    };
    let (seq, title) = match &latest {
        Some(e) => (format!("#{}", e.seq), e.data["title"].as_str().unwrap_or("").to_owned()),
        None => ("none yet".to_owned(), "send a deploy notification".to_owned()),
    };
    let html = DEMO_HTML.replace("{{build_seq}}", &html_escape(&seq)).replace("{{build_title}}", &html_escape(&title));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// A seat for a new socket, or the refusal when every seat is taken.
fn take_seat(st: &AppState) -> Result<crate::gateway::Seat, Box<Response>> {
    st.gateway.take_seat(st.sockets.max_open).ok_or_else(|| {
        info!(max = st.sockets.max_open, "socket refused: at the connection limit");
        let mut r = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server is at its connection limit; retry shortly",
        );
        r.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        Box::new(r)
    })
}

async fn ws_upgrade(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let accept = match crate::wire::accept_key(&parts.method, &parts.headers) {
        Ok(key) => key,
        Err((status, why)) => {
            return json_error(status, "websocket_upgrade_required", &format!("{why}; connect with a WebSocket client"))
        }
    };
    let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return json_error(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_upgrade_required",
            "this connection cannot be upgraded; connect with a WebSocket client over HTTP/1.1",
        );
    };
    let headers = parts.headers;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let (refused, seat) = if st.relay.origin_allowed(origin) {
        match take_seat(&st) {
            Ok(seat) => (None, Some(seat)),
            Err(refusal) => return *refusal,
        }
    } else {
        let origin = origin.unwrap_or_default().chars().take(200).collect::<String>();
        info!(%origin, allowed = ?st.relay.config().allowed_origins, "socket refused: origin not allowed");
        // A browser cannot read a refused handshake's status, so the refusal
        // is a close frame it can read: 4403 and why. Nothing is registered.
        (Some(format!("origin {origin} is not in allowed_origins")), None)
    };
    let origin = origin.map(str::to_owned);
    // The socket lives on the push runtime from the moment it is upgraded.
    crate::push::handle().spawn(async move {
        let io = match upgrade.await {
            Ok(upgraded) => hyper_util::rt::TokioIo::new(upgraded),
            Err(e) => return debug!(error = %e, "the WebSocket upgrade did not complete"),
        };
        match refused {
            Some(reason) => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut io = io;
                let bye = crate::wire::close_frame(4403, &reason);
                // The close frame, then our end of the stream, then what the
                // page sent (its first frames, its close reply) read and
                // dropped: a socket closed with unread data is reset, and a
                // browser that sees the reset before the close frame reports
                // 1006 and retries instead of "refused".
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    io.write_all(&bye).await?;
                    io.flush().await?;
                    io.shutdown().await?;
                    let mut sink = [0u8; 1024];
                    while io.read(&mut sink).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                })
                .await;
            }
            None => run_socket(st, crate::wire::Wire::new(io), origin).await,
        }
        drop(seat);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn new_conn_id() -> ConnId {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    ConnId(hex::encode(b))
}

/// Why the server ends a socket: the close code and reason it sends.
type Closing = Option<(u16, &'static str)>;

fn close(code: u16, reason: &'static str) -> Closing {
    Some((code, reason))
}

/// A token bucket for one client's messages.
struct Pace {
    tokens: f64,
    at: Instant,
}

impl Pace {
    fn new() -> Self {
        Self { tokens: MESSAGE_BURST, at: Instant::now() }
    }
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * MESSAGES_PER_SEC).min(MESSAGE_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

async fn run_socket(st: Arc<AppState>, wire: crate::wire::Wire, origin: Option<String>) {
    use tokio_tungstenite::tungstenite::{self, protocol::Role, Message};
    let id = new_conn_id();
    let gateway = &st.gateway;
    let out = gateway.register(&id);
    let (mut frames, queued) = (out.frames, out.queued);
    queued.attach(wire);
    if let Err(e) = st.relay.connect(&id, origin.as_deref()).await {
        warn!(error = %e, "could not record a connection");
        gateway.unregister(&id);
        return;
    }
    debug!(conn = %id, "connected");
    // Buffers sized to the protocol, not tungstenite's 128 KiB defaults:
    // client frames are small (at most 32 KB), and an idle socket should
    // cost little. Frames up to twice the limit are read so the refusal can
    // say why (1009). tungstenite writes only pongs and close replies.
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(2 * MAX_CLIENT_FRAME))
        .max_frame_size(Some(2 * MAX_CLIENT_FRAME))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(CONTROL_WRITE_BUFFER);
    let mut stream =
        tokio_tungstenite::WebSocketStream::from_raw_socket(crate::wire::Tungstenite(queued.clone()), Role::Server, Some(config))
            .await;
    let started = Instant::now();
    // Milliseconds since `started` at which the client was last heard.
    let heard = std::sync::atomic::AtomicU64::new(0);
    let limits = st.sockets;
    let mut stop = st.shutdown.subscribe();

    // Each side returns the close frame to end with, if any.
    let writer = async {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + limits.ping_every, limits.ping_every);
        // Made once, not per wake: each of these registers a waiter when polled.
        let closing = queued.closing();
        tokio::pin!(closing);
        let stopping = async { stop.wait_for(|s| *s).await.map(|_| ()) };
        tokio::pin!(stopping);
        loop {
            // Frames the fan-out could not write straight away go out here,
            // all that waited in one write; a write stuck on a client that
            // stopped reading is left when the close signal comes.
            tokio::select! {
                biased;
                _ = &mut closing => return close(1013, "too slow; resume with since"),
                _ = &mut stopping => return close(1012, "server restarting; resume with since"),
                _ = frames.drain() => return None,
                _ = ping.tick() => {
                    let silent = started.elapsed().saturating_sub(Duration::from_millis(heard.load(std::sync::atomic::Ordering::Relaxed)));
                    if silent > limits.idle_limit {
                        debug!(conn = %id, ?silent, "no pong: the client vanished");
                        return None;
                    }
                    queued.push(Frame::control(crate::wire::ping_frame()), true, false);
                }
            }
        }
    };
    let reader = async {
        let mut pace = Pace::new();
        while let Some(msg) = stream.next().await {
            heard.store(started.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
            match msg {
                Ok(Message::Text(t)) => {
                    if t.len() > MAX_CLIENT_FRAME {
                        return close(1009, "message too big: at most 32768 bytes");
                    }
                    if !pace.take() {
                        return close(1008, "too many messages; slow down");
                    }
                    st.relay.message(&id, t.as_str()).await;
                    // Pacing: the next message waits until this one's replies
                    // have gone out, so a client cannot queue replays unread.
                    if tokio::time::timeout(REPLY_DRAIN_LIMIT, queued.replies_drained()).await.is_err() {
                        return close(1013, "replies not read; resume with since");
                    }
                }
                Ok(Message::Binary(_)) => {
                    if !pace.take() {
                        return close(1008, "too many messages; slow down");
                    }
                    st.relay.binary_frame(&id).await;
                }
                Ok(Message::Close(_)) => return None,
                Err(tungstenite::Error::Capacity(_)) => return close(1009, "message too big: at most 32768 bytes"),
                Err(_) => return None,
                Ok(_) => {} // ping/pong are answered by the WebSocket layer
            }
        }
        None
    };
    let ending = tokio::select! {
        c = writer => c,
        c = reader => c,
    };
    gateway.unregister(&id);
    // The last words, queued behind what waits: our close, or tungstenite's
    // reply to the client's.
    if let Some((code, reason)) = ending {
        debug!(conn = %id, code, reason, "closing");
        queued.push(Frame::control(crate::wire::close_frame(code, reason)), true, true);
    } else {
        let _ = futures::SinkExt::flush(&mut stream).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), frames.drain()).await;
    if ending.is_some() {
        // The close handshake: what the client still sends is read and
        // dropped until its close comes. Closing with its bytes unread would
        // end the connection with a reset, which can destroy our close frame
        // before the client reads it.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(m)) = stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
    if let Err(e) = st.relay.disconnect(&id).await {
        warn!(error = %e, conn = %id, "could not forget a connection");
    }
    debug!(conn = %id, "disconnected");
}

/// Each SSE event's id: every channel's last seq, so one `Last-Event-ID`
/// resumes them all: `deploys=42;forms/guestbook=7`.
fn cursor_id(cursor: &std::collections::BTreeMap<String, u64>) -> String {
    cursor.iter().map(|(c, s)| format!("{c}={s}")).collect::<Vec<_>>().join(";")
}

fn parse_cursor(id: &str) -> std::collections::BTreeMap<String, u64> {
    id.split(';').filter_map(|part| part.rsplit_once('=')).filter_map(|(c, s)| Some((c.to_owned(), s.parse().ok()?))).collect()
}

/// Forgets the SSE client when its stream is dropped (the client went away).
struct SseGuard {
    st: Arc<AppState>,
    id: ConnId,
    /// Dropped with the stream: ends the budget watcher.
    _watch: tokio::sync::oneshot::Sender<()>,
    _seat: crate::gateway::Seat,
}

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.st.gateway.unregister(&self.id);
        let (st, id) = (self.st.clone(), self.id.clone());
        tokio::spawn(async move {
            if let Err(e) = st.relay.disconnect(&id).await {
                warn!(error = %e, conn = %id, "could not forget an SSE client");
            }
        });
    }
}

/// `GET /sse?channel=a&channel=b`: the WebSocket's frames as Server-Sent
/// Events, for clients that cannot hold a WebSocket; resumes from `Last-Event-ID`.
async fn sse(State(st): State<Arc<AppState>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};

    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    // A subscribe token for private channels: `?token=` (EventSource cannot set headers).
    let token = pairs.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone());
    let mut channels = Vec::new();
    for (_, name) in pairs.iter().filter(|(k, _)| k == "channel") {
        match Channel::parse(name) {
            Ok(c) => channels.push(c),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, "invalid_channel", &e.to_string()),
        }
    }
    if channels.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "missing_channel", "add ?channel=name (repeatable)");
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !st.relay.origin_allowed(origin) {
        info!(origin, allowed = ?st.relay.config().allowed_origins, "SSE refused: origin not allowed");
        return json_error(StatusCode::FORBIDDEN, "origin_not_allowed", "this origin may not connect");
    }
    let seat = match take_seat(&st) {
        Ok(seat) => seat,
        Err(refusal) => return *refusal,
    };
    let cursor = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(parse_cursor).unwrap_or_default();
    let id = new_conn_id();
    let out = st.gateway.register(&id);
    if let Err(e) = st.relay.connect(&id, origin).await {
        warn!(error = %e, "could not record an SSE client");
        st.gateway.unregister(&id);
        return refusal(&HookError::Unavailable);
    }
    // Past its byte budget (a client that reads nothing), the client is
    // forgotten at once, as a WebSocket is closed with 1013: its stream may
    // not be polled again until the connection's write stall drops it.
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let (st, id, queued) = (st.clone(), id.clone(), out.queued.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = queued.closing() => {
                    info!(conn = %id, "SSE client over its byte budget: forgotten; it resumes with Last-Event-ID");
                    st.gateway.unregister(&id);
                    if let Err(e) = st.relay.disconnect(&id).await {
                        warn!(error = %e, conn = %id, "could not forget an SSE client");
                    }
                }
                _ = gone_rx => {}
            }
        });
    }
    let guard = SseGuard { st: st.clone(), id: id.clone(), _watch: gone_tx, _seat: seat };
    for channel in channels {
        let since = cursor.get(channel.as_str()).copied();
        st.relay.command(&id, ClientMsg::Subscribe { channel, since, batch: false, token: token.clone(), epoch: None }).await;
    }
    let stop = st.shutdown.subscribe();
    let stream = futures::stream::unfold((out, cursor, guard, stop), |(mut out, mut cursor, guard, mut stop)| async move {
        let frame = tokio::select! {
            f = out.frames.recv() => f?,
            _ = out.queued.closing() => return None,
            _ = stop.wait_for(|s| *s) => return None,
        };
        let frame = frame.payload().to_owned();
        let mut ev = SseEvent::default();
        // An event or a state moves its channel's cursor (SSE subscribes without batches).
        let moved = match serde_json::from_str::<ServerMsg>(&frame) {
            Ok(ServerMsg::Event(e)) => Some((e.channel, e.seq)),
            Ok(ServerMsg::State { channel, seq, .. }) => Some((channel, seq)),
            _ => None,
        };
        if let Some((channel, seq)) = moved {
            cursor.insert(channel.to_string(), seq);
            ev = ev.id(cursor_id(&cursor));
        }
        Some((Ok::<_, std::convert::Infallible>(ev.data(frame.as_str())), (out, cursor, guard, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
