//! The operator's endpoints: `/metrics` (Prometheus) and `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hookcast_core::channel::Channel;
use hookcast_http::json_error;
use tracing::warn;

use super::state::AppState;

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
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
pub async fn healthz(State(st): State<Arc<AppState>>) -> Response {
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
