//! The local server: WebSocket, webhooks, history, the snippet and (in dev)
//! the demo site, on one port. `app` is separate from binding so tests drive
//! it on port 0. Each room has its own module: the WebSocket session
//! (`socket`), SSE (`sse`), the demo (`demo`), the operator's endpoints
//! (`ops`); this one assembles the router.

mod demo;
mod ops;
mod seat;
mod socket;
mod sse;
mod state;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

pub use state::{AppState, LocalFanout, LocalRelay, SocketLimits};

/// The shared routes (webhooks, history, the snippet: the same table the
/// webhook Lambda runs) plus the local binary's own: `/ws`, `/sse`,
/// `/healthz` and, in dev, the demo site.
pub fn app(state: Arc<AppState>) -> Router {
    let mut local = Router::new()
        .route("/ws", get(socket::ws_upgrade))
        .route("/sse", get(sse::sse))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics));
    if state.demo {
        local = demo::routes(local);
    }
    hookcast_http::router(state.hooks.clone(), hookcast_http::Snippets::same_host())
        .merge(local.with_state(state))
        .layer(axum::middleware::map_response(hookcast_http::json_errors))
}
