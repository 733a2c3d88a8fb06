//! What a WebSocket and an SSE client both take when they connect: a seat
//! under the connection cap and an id.

use axum::http::{header, StatusCode};
use axum::response::Response;
use hookcast_core::ports::ConnId;
use hookcast_http::json_error;
use rand::RngCore;
use tracing::info;

use super::state::AppState;

/// A seat for a new socket, or the refusal when every seat is taken.
pub fn take_seat(st: &AppState) -> Result<crate::gateway::Seat, Box<Response>> {
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

pub fn new_conn_id() -> ConnId {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    ConnId(hex::encode(b))
}
