//! The WebSocket functions' handlers: translate the API Gateway event, call
//! the core, build the response. The webhook function needs none: it runs
//! `hookcast_http::router`, the same routing table the local binary serves.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use hookcast_core::ports::{forget, ConnId, Delivery, EventLog, Gateway, Subscriptions};
use hookcast_core::relay::{ConnectError, Relay};
use hookcast_core::{ClientMsg, ServerMsg};
use tracing::{info, warn};

use crate::guard::{Guard, Verdict};

fn ws_response(status: i64, body: Option<&str>) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.body = body.map(|b| Body::Text(b.to_owned()));
    r
}

fn conn_id(ev: &ApiGatewayWebsocketProxyRequest) -> Option<ConnId> {
    ev.request_context.connection_id.clone().filter(|c| !c.is_empty()).map(ConnId)
}

/// `$connect`: check Origin and the address's budgets (connections a
/// minute, open at once), record the connection. Never posts: API Gateway
/// answers 410 to any post before `$connect` returns.
///
/// With the edge option's secret (`edge`), a handshake that did not come
/// through CloudFront (and its WAF) is refused before anything else, and
/// the viewer's address is the one budgeted.
pub async fn ws_connect<L: EventLog, S: Subscriptions, G: Gateway, B: Guard>(
    relay: &Relay<L, S, G>,
    guard: &B,
    edge: Option<&str>,
    ev: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(conn) = conn_id(&ev) else {
        return ws_response(400, Some("no connectionId"));
    };
    if !crate::edge::admits(edge, &ev.headers) {
        return ws_response(403, Some("connect through the stack's CloudFront distribution"));
    }
    let origin = ev.headers.get("origin").and_then(|v| v.to_str().ok());
    if !relay.origin_allowed(origin) {
        return ws_response(403, Some("origin not allowed"));
    }
    let source_ip = ev.request_context.identity.source_ip.as_deref().unwrap_or_default();
    let Some(address) = crate::edge::client_address(edge, &ev.headers, source_ip) else {
        warn!(
            "a handshake through the edge without a viewer address: is CloudFront-Viewer-Address in the origin request policy?"
        );
        return ws_response(403, Some("no viewer address from the edge"));
    };
    match guard.connect(&conn, &address).await {
        Ok(Verdict::Allowed) => {}
        // (`connect` says `Closed` of no connection: only `spend` does.)
        Ok(verdict @ (Verdict::Over(_) | Verdict::Closed)) => {
            info!(%address, ?verdict, "connection refused: over its address's budget");
            return ws_response(429, Some("too many connections from this address"));
        }
        Err(e) => {
            warn!(error = %e, "could not check an address's budget");
            return ws_response(500, None);
        }
    }
    match relay.connect(&conn, origin).await {
        Ok(()) => ws_response(200, None),
        Err(ConnectError::OriginNotAllowed) => ws_response(403, Some("origin not allowed")),
        Err(ConnectError::Store(e)) => {
            warn!(error = %e, "could not record a connection");
            ws_response(500, None)
        }
    }
}

pub async fn ws_disconnect<L: EventLog, S: Subscriptions, G: Gateway, B: Guard>(
    relay: &Relay<L, S, G>,
    guard: &B,
    ev: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(conn) = conn_id(&ev) else {
        return ws_response(400, None);
    };
    guard.disconnect(&conn).await;
    if let Err(e) = relay.disconnect(&conn).await {
        // The items expire by TTL anyway.
        warn!(error = %e, conn = %conn, "could not forget a connection");
    }
    ws_response(200, None)
}

/// subscribe / unsubscribe / occupancy, `ping` and `$default`: every
/// frame reaches the function, so that a flood on any route is closed (a
/// route API Gateway answers itself can be flooded for as long as the
/// socket lives, at a price per message). `ping`, and a frame that is not
/// the protocol, spend this instance's count of the connection's frames
/// (no write). Every other frame spends the connection's budget in the
/// table first, and its replies' bytes after (before they go out). Replies
/// are batched: one message carries up to 96 KB of them, whatever the
/// client asked. Every route is two-way: a reply of one message goes back
/// in the integration response; more are posted (PostToConnection), in
/// order. A connection over a budget is closed and forgotten.
pub async fn ws_message<L: EventLog, S: Subscriptions, G: Gateway, B: Guard>(
    relay: &Relay<L, S, G>,
    guard: &B,
    gateway: &G,
    subs: &S,
    ev: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(conn) = conn_id(&ev) else {
        return ws_response(400, None);
    };
    let msg = if ev.is_base64_encoded {
        Err(ServerMsg::error("bad_message", "send JSON text frames; binary frames are not part of the protocol"))
    } else {
        ClientMsg::parse(ev.body.as_deref().unwrap_or("")).map_err(|bad| ServerMsg::error(bad.code, bad.message))
    };
    // A ping or a frame that is not the protocol touches nothing: this
    // instance's count only, and no write for its reply's bytes either.
    let local = matches!(msg, Ok(ClientMsg::Ping) | Err(_));
    let replies = match msg {
        touches_nothing @ (Err(_) | Ok(ClientMsg::Ping)) => {
            if !settled(guard.spend_local(&conn).await, gateway, relay, &conn).await {
                return ws_response(200, None);
            }
            vec![touches_nothing.err().unwrap_or(ServerMsg::Pong)]
        }
        Ok(msg) => {
            let subscribed = match &msg {
                ClientMsg::Subscribe { channel, .. } => Some(channel.to_string()),
                _ => None,
            };
            if !spent(guard, gateway, relay, &conn, 1, 0, subscribed.as_deref()).await {
                return ws_response(200, None);
            }
            relay.apply(&conn, msg).await
        }
    };
    let mut frames = Vec::new();
    for r in replies {
        match r {
            ServerMsg::Batch { frames: inner } => frames.extend(inner),
            one => frames.push(one),
        }
    }
    let posts: Vec<String> =
        if frames.len() > 1 { ServerMsg::batched(frames) } else { frames }.iter().map(ServerMsg::to_json).collect();
    let bytes: u64 = posts.iter().map(|p| p.len() as u64).sum();
    if !local && !spent(guard, gateway, relay, &conn, 0, bytes, None).await {
        return ws_response(200, None);
    }
    // One message goes back in the integration response (no post, no
    // share of the account's API Gateway quota); more are posted in order.
    if let ([only], true) = (posts.as_slice(), two_way(&ev)) {
        return ws_response(200, Some(only));
    }
    for post in posts {
        if gateway.reply(&conn, &post).await == Delivery::Gone {
            forget(subs, &conn).await;
            break;
        }
    }
    ws_response(200, None)
}

/// Whether the frame came on a two-way route (template.yaml gives every
/// message route a route response): API Gateway sends the function's
/// response body back to the client as a message.
fn two_way(ev: &ApiGatewayWebsocketProxyRequest) -> bool {
    matches!(ev.request_context.route_key.as_deref(), Some("subscribe" | "unsubscribe" | "occupancy" | "ping" | "$default"))
}

/// Spends the budget; `false` when the connection was over it (and is now closed and forgotten).
async fn spent<L: EventLog, S: Subscriptions, G: Gateway, B: Guard>(
    guard: &B,
    gateway: &G,
    relay: &Relay<L, S, G>,
    conn: &ConnId,
    frames: u64,
    bytes: u64,
    subscribed: Option<&str>,
) -> bool {
    settled(guard.spend(conn, frames, bytes, subscribed).await, gateway, relay, conn).await
}

/// Acts on a verdict; `false` when the connection was over its budget (and
/// is now closed and forgotten) or closed already.
async fn settled<L: EventLog, S: Subscriptions, G: Gateway>(
    verdict: Result<Verdict, hookcast_core::ports::StoreError>,
    gateway: &G,
    relay: &Relay<L, S, G>,
    conn: &ConnId,
) -> bool {
    match verdict {
        Ok(Verdict::Allowed) => true,
        Ok(Verdict::Over(what)) => {
            info!(conn = %conn, over = what, "connection over its budget: closed");
            gateway.close(conn).await;
            if let Err(e) = relay.disconnect(conn).await {
                warn!(error = %e, conn = %conn, "could not forget a connection over its budget");
            }
            false
        }
        // Closed already (a frame in flight behind the one that closed it).
        Ok(Verdict::Closed) => false,
        // The budget could not be read: the frame is served (the table is
        // what serves it too; it is failing for everyone alike).
        Err(e) => {
            warn!(error = %e, conn = %conn, "could not check a connection's budget");
            true
        }
    }
}
