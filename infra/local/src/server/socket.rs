//! The WebSocket room: the upgrade, and one socket's session (its reader,
//! its writer, pings, pacing, the close handshake).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hookcast_core::relay::MAX_CLIENT_FRAME;
use hookcast_http::json_error;
use tracing::{debug, info, warn};

use super::seat::{new_conn_id, take_seat};
use super::state::AppState;
use crate::gateway::Frame;

/// Per-socket read chunk; larger client frames are read in several chunks.
const READ_BUFFER: usize = 1024;
/// tungstenite's own writes (pongs, a close reply) buffered at most.
const CONTROL_WRITE_BUFFER: usize = 4 * 1024;

/// Client messages: a burst of this many, then this many a second.
const MESSAGE_BURST: f64 = 100.0;
const MESSAGES_PER_SEC: f64 = 20.0;
/// How long a client may leave its replies unread before it is closed.
const REPLY_DRAIN_LIMIT: Duration = Duration::from_secs(20);

pub async fn ws_upgrade(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
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
    let mut stream = tokio_tungstenite::WebSocketStream::from_raw_socket(
        crate::tungstenite_io::Tungstenite(queued.clone()),
        Role::Server,
        Some(config),
    )
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
