//! Lambda handlers: translate the API Gateway event, call the core, build the
//! response. Each takes the relay (narrow ports) and the typed event.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use hookcast_core::http::{self, HttpResponse};
use hookcast_core::ports::{ConnId, EventLog, Gateway, Store};
use hookcast_core::relay::{ConnectError, Relay};
use hookcast_core::Hooks;
use tracing::warn;

/// The minified snippet; the webhook function serves it with the deployed
/// WebSocket URL built in.
pub const SNIPPET: &str = include_str!("../../../site-snippet/dist/hookcast.min.js");

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
pub async fn ws_connect<S: Store, G: Gateway>(
    relay: &Relay<S, G>,
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

pub async fn ws_disconnect<S: Store, G: Gateway>(
    relay: &Relay<S, G>,
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
pub async fn ws_message<S: Store, G: Gateway>(
    relay: &Relay<S, G>,
    ev: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(conn) = conn_id(&ev) else {
        return ws_response(400, None);
    };
    let body = ev.body.as_deref().unwrap_or("");
    let text = if ev.is_base64_encoded {
        // Binary frames are not part of the protocol; the relay explains.
        "binary frames are not part of the protocol"
    } else {
        body
    };
    relay.message(&conn, text).await;
    ws_response(200, None)
}

/// The snippet with the WebSocket URL built in: a page needs one script tag.
pub fn snippet_with_url(ws_url: &str) -> String {
    let url = serde_json::to_string(ws_url).unwrap_or_else(|_| "\"\"".into());
    format!("(function(s){{if(s&&!s.getAttribute(\"data-url\"))s.setAttribute(\"data-url\",{url})}})(document.currentScript);\n{SNIPPET}")
}

/// The webhook function's HTTP API (payload v2) routes.
pub async fn http<L: EventLog>(
    hooks: &Hooks<L>,
    snippet: &str,
    method: &str,
    path: &str,
    query_since: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
) -> HttpResponse {
    let origin = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("origin")).map(|(_, v)| v.as_str());
    match (method, path) {
        ("POST", p) if p.starts_with("/hooks/") => http::webhook(hooks, &p["/hooks/".len()..], headers, body).await,
        ("GET", "/hookcast.js") => HttpResponse {
            status: 200,
            headers: vec![
                ("content-type", "application/javascript; charset=utf-8".into()),
                ("cache-control", "public, max-age=300".into()),
            ],
            body: snippet.to_owned(),
        },
        ("GET", p) if p.starts_with("/channels/") => http::history(hooks, &p["/channels/".len()..], query_since, origin).await,
        _ => HttpResponse::not_found(),
    }
}

/// The webhook function's whole request → response translation.
pub async fn http_request<L: EventLog>(
    hooks: &Hooks<L>,
    snippet: &str,
    req: lambda_http::Request,
) -> lambda_http::Response<lambda_http::Body> {
    use lambda_http::RequestExt;
    let since = req.query_string_parameters_ref().and_then(|q| q.first("since")).map(str::to_owned);
    let headers: Vec<(String, String)> =
        req.headers().iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned()))).collect();
    let r =
        http(hooks, snippet, req.method().as_str(), req.raw_http_path(), since.as_deref(), &headers, req.body().as_ref()).await;
    let mut res = lambda_http::Response::builder().status(r.status);
    for (k, v) in r.headers {
        res = res.header(k, v);
    }
    res.body(lambda_http::Body::Text(r.body)).unwrap_or_else(|_| {
        let mut fallback = lambda_http::Response::new(lambda_http::Body::Empty);
        *fallback.status_mut() = lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}
