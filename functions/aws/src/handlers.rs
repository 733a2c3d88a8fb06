//! The WebSocket functions' handlers: translate the API Gateway event, call
//! the core, build the response. The webhook function needs none: it runs
//! `hookcast_http::router`, the same routing table the local binary serves.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use hookcast_core::ports::{ConnId, EventLog, Gateway, Subscriptions};
use hookcast_core::relay::{ConnectError, Relay};
use tracing::warn;

fn ws_response(status: i64, body: Option<&str>) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.body = body.map(|b| Body::Text(b.to_owned()));
    r
}

fn conn_id(ev: &ApiGatewayWebsocketProxyRequest) -> Option<ConnId> {
    ev.request_context.connection_id.clone().filter(|c| !c.is_empty()).map(ConnId)
}

/// `$connect`: check Origin, record the connection. Never posts: API Gateway
/// answers 410 to any post before `$connect` returns.
pub async fn ws_connect<L: EventLog, S: Subscriptions, G: Gateway>(
    relay: &Relay<L, S, G>,
    ev: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(conn) = conn_id(&ev) else {
        return ws_response(400, Some("no connectionId"));
    };
    let origin = ev.headers.get("origin").and_then(|v| v.to_str().ok());
    match relay.connect(&conn, origin).await {
        Ok(()) => ws_response(200, None),
        Err(ConnectError::OriginNotAllowed) => ws_response(403, Some("origin not allowed")),
        Err(ConnectError::Store(e)) => {
            warn!(error = %e, "could not record a connection");
            ws_response(500, None)
        }
    }
}

pub async fn ws_disconnect<L: EventLog, S: Subscriptions, G: Gateway>(
    relay: &Relay<L, S, G>,
    ev: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(conn) = conn_id(&ev) else {
        return ws_response(400, None);
    };
    if let Err(e) = relay.disconnect(&conn).await {
        // The items expire by TTL anyway.
        warn!(error = %e, conn = %conn, "could not forget a connection");
    }
    ws_response(200, None)
}

/// subscribe / unsubscribe / ping / occupancy and `$default`: replies go out through
/// PostToConnection, so the integration response stays empty.
pub async fn ws_message<L: EventLog, S: Subscriptions, G: Gateway>(
    relay: &Relay<L, S, G>,
    ev: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(conn) = conn_id(&ev) else {
        return ws_response(400, None);
    };
    if ev.is_base64_encoded {
        relay.binary_frame(&conn).await;
    } else {
        relay.message(&conn, ev.body.as_deref().unwrap_or("")).await;
    }
    ws_response(200, None)
}
