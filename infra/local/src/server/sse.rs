//! The SSE room: `/sse`, the WebSocket's frames as Server-Sent Events.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hookcast_core::channel::Channel;
use hookcast_core::ports::ConnId;
use hookcast_core::{ClientMsg, HookError, ServerMsg};
use hookcast_http::{json_error, refusal};
use tracing::{info, warn};

use super::seat::{new_conn_id, take_seat};
use super::state::AppState;

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
pub async fn sse(State(st): State<Arc<AppState>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
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
