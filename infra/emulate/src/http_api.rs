//! An HTTP API as API Gateway runs one with Lambda proxy integrations:
//! routes `METHOD /path/{param}` and `/{proxy+}`, payload format 2.0 events,
//! the 30 s integration timeout, the 10 MB payload limit ("Quotas for
//! configuring and running an HTTP API": "Payload size | 10 MB"), and API
//! Gateway's own error bodies: 429 `Too Many Requests` past the route's
//! throttle (`DefaultRouteSettings`, `RouteSettings`) or the account's
//! ([`crate::limits`]), 500 `Internal Server Error` when the function fails
//! or is throttled (a Lambda 429 is not passed on: "If the backend service
//! is throttled ... the API might return an Internal server error"), 503 at
//! the integration timeout. Each request is billed, in 512 KB units.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::runtime::Function;

#[derive(Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub function: Arc<Function>,
    /// The event's `TimeoutInMillis` (50 ms to 30 s; default 30 s).
    pub timeout: Option<Duration>,
}

/// API Gateway's integration timeout for HTTP APIs.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `path` matches the route's path; its path parameters if so.
fn matches(route: &str, path: &str) -> Option<Map<String, Value>> {
    let mut params = Map::new();
    let r: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, seg) in r.iter().enumerate() {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
            let rest = p.get(i..)?.join("/");
            if rest.is_empty() {
                return None;
            }
            params.insert(name.into(), json!(rest));
            return Some(params);
        }
        let got = p.get(i)?;
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if got.is_empty() {
                return None;
            }
            params.insert(name.into(), json!(percent_decode(got)));
        } else if seg != got {
            return None;
        }
    }
    (r.len() == p.len()).then_some(params)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bodies API Gateway passes as text; anything else arrives base64-encoded.
fn is_text(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct.is_empty()
        || ct.starts_with("text/")
        || ct.contains("json")
        || ct.contains("xml")
        || ct.contains("javascript")
        || ct.starts_with("application/x-www-form-urlencoded")
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "application/json"), ("apigw-requestid", "emulated")], json!({ "message": message }).to_string())
        .into_response()
}

/// The payload format 2.0 event for one request.
pub fn event(
    route_key: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    params: Map<String, Value>,
) -> Value {
    let mut hs = Map::new();
    let mut cookies = vec![];
    for (k, v) in headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if k == "cookie" {
            cookies.extend(v.split(';').map(|c| json!(c.trim())));
            continue;
        }
        // Repeated headers are joined with commas.
        match hs.get_mut(k.as_str()) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                hs.insert(k.as_str().to_owned(), json!(v));
            }
        }
    }
    let raw_query = uri.query().unwrap_or("").to_owned();
    let mut qs = Map::new();
    for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(&raw_query).unwrap_or_default() {
        match qs.get_mut(&k) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                qs.insert(k, json!(v));
            }
        }
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = is_text(ct) && std::str::from_utf8(body).is_ok();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut ev = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": uri.path(),
        "rawQueryString": raw_query,
        "headers": hs,
        "requestContext": {
            "accountId": crate::template::ACCOUNT,
            "apiId": "emulated",
            "domainName": headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1"),
            "domainPrefix": "emulated",
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("{:x}", rand::random::<u64>()),
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Dec/2026:00:00:00 +0000",
            "timeEpoch": now,
        },
        "isBase64Encoded": !text && !body.is_empty(),
    });
    if !cookies.is_empty() {
        ev["cookies"] = Value::Array(cookies);
    }
    if !qs.is_empty() {
        ev["queryStringParameters"] = Value::Object(qs);
    }
    if !params.is_empty() {
        ev["pathParameters"] = Value::Object(params);
    }
    if !body.is_empty() {
        ev["body"] = if text {
            json!(String::from_utf8_lossy(body))
        } else {
            json!(base64::engine::general_purpose::STANDARD.encode(body))
        };
    }
    ev
}

/// The function's answer as API Gateway turns it into an HTTP response.
pub fn response(out: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(out) else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    // Payload 2.0: without a statusCode the whole value is a 200 JSON body.
    if v.get("statusCode").is_none() {
        return (StatusCode::OK, [("content-type", "application/json")], v.to_string()).into_response();
    }
    let Some(status) = v["statusCode"].as_u64().and_then(|s| StatusCode::from_u16(s as u16).ok()) else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let body = match v.get("body") {
        Some(Value::String(s)) if v["isBase64Encoded"].as_bool() == Some(true) => {
            match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(b) => b,
                Err(_) => return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            }
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        None | Some(Value::Null) => vec![],
        Some(other) => other.to_string().into_bytes(),
    };
    let mut res = Response::builder().status(status);
    for (k, val) in v["headers"].as_object().into_iter().flatten() {
        let val = crate::template::str_of(val);
        res = res.header(k.as_str(), val);
    }
    for (k, vals) in v["multiValueHeaders"].as_object().into_iter().flatten() {
        for val in vals.as_array().into_iter().flatten() {
            res = res.header(k.as_str(), crate::template::str_of(val));
        }
    }
    for c in v["cookies"].as_array().into_iter().flatten() {
        res = res.header("set-cookie", crate::template::str_of(c));
    }
    res.body(Body::from(body)).unwrap_or_else(|_| gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"))
}

/// HTTP API's own payload limit.
pub const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

/// How the HTTP API is limited and billed.
#[derive(Clone)]
pub struct Options {
    pub timeout: Duration,
    /// Route throttles, and the account's shared bucket (none: unthrottled).
    pub limits: Option<(Arc<crate::limits::Account>, Arc<crate::limits::Routes>)>,
    pub meter: Arc<crate::bill::Meter>,
    /// The API's access log (`AccessLogSettings`), if it keeps one.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// `POST /__emulate/faults` (not an AWS route): what a test asks to break.
    pub faults: Option<Control>,
}

/// A control route's handler: the request's JSON, and the answer or why not.
pub type Control = Arc<dyn Fn(Value) -> Result<Value, ControlError> + Send + Sync>;

/// Why a control request is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A field missing or out of range: which, and what it takes.
    #[error("{field}: {takes}")]
    Field { field: &'static str, takes: &'static str },
    /// The request names something the stack does not have.
    #[error("no {what} {name}")]
    Unknown { what: &'static str, name: String },
}

impl Default for Options {
    fn default() -> Self {
        Self { timeout: INTEGRATION_TIMEOUT, limits: None, meter: Default::default(), access_log: None, faults: None }
    }
}

/// Serves the routes, and the bill so far at `GET /__emulate/bill` (not an AWS route).
pub fn router(routes: Vec<Route>, opts: Options) -> axum::Router {
    let routes = Arc::new(routes);
    let meter = opts.meter.clone();
    let faults = opts.faults.clone();
    axum::Router::new()
        .route("/__emulate/bill", axum::routing::get(move || async move { axum::Json(meter.bill()) }))
        .route(
            "/__emulate/faults",
            axum::routing::post(move |body: axum::Json<Value>| async move {
                match faults.as_ref().map(|f| f(body.0)) {
                    Some(Ok(v)) => (StatusCode::OK, axum::Json(v)).into_response(),
                    Some(Err(e)) => gateway_error(StatusCode::BAD_REQUEST, &e.to_string()),
                    None => gateway_error(StatusCode::NOT_FOUND, "Not Found"),
                }
            }),
        )
        .fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (routes, opts) = (routes.clone(), opts.clone());
            async move {
                let started = std::time::Instant::now();
                let (log, path, m) = (opts.access_log.clone(), uri.path().to_owned(), method.to_string());
                let res = handle(&routes, &opts, method, uri, headers, body).await;
                if let Some(log) = log {
                    let ctx = std::collections::HashMap::from([
                        ("requestId", format!("{:x}", rand::random::<u64>())),
                        ("identity.sourceIp", "127.0.0.1".to_owned()),
                        ("requestTime", crate::access_log::request_time()),
                        ("httpMethod", m),
                        ("path", path),
                        ("status", res.status().as_u16().to_string()),
                        ("responseLatency", started.elapsed().as_millis().to_string()),
                    ]);
                    log.write(&ctx);
                }
                res
            }
        })
        // API Gateway's 10 MB is checked in `handle`, with its own answer.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PAYLOAD + 1))
}

async fn handle(routes: &[Route], opts: &Options, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    {
        use crate::bill::{units, Meter, HTTP_REQUEST_UNIT};
        if body.len() > MAX_PAYLOAD {
            return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
        }
        let path = uri.path().to_owned();
        let found = routes.iter().find_map(|r| {
            (r.method == method.as_str() || r.method == "ANY").then(|| matches(&r.path, &path).map(|p| (r, p))).flatten()
        });
        let Some((route, params)) = found else {
            return gateway_error(StatusCode::NOT_FOUND, "Not Found");
        };
        let key = format!("{} {}", route.method, route.path);
        if let Some((account, throttles)) = &opts.limits {
            if !throttles.take(&key) || !account.requests.take() {
                Meter::add(&opts.meter.apigw_throttled, 1);
                return gateway_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            }
        }
        Meter::add(&opts.meter.http_requests, units(body.len(), HTTP_REQUEST_UNIT));
        let ev = event(&key, &method, &uri, &headers, &body, params);
        let timeout = route.timeout.map_or(opts.timeout, |t| t.min(opts.timeout));
        match tokio::time::timeout(timeout, route.function.invoke(Bytes::from(ev.to_string()))).await {
            Err(_) => gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            Ok(Err(e)) => {
                tracing::warn!(function = %route.function.spec.logical, error = %e, "HTTP API integration failed");
                gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            Ok(Ok(out)) => response(&out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_as_api_gateway_matches_them() {
        assert_eq!(matches("/hooks/{source}", "/hooks/netlify").unwrap()["source"], "netlify");
        assert!(matches("/hooks/{source}", "/hooks/").is_none());
        assert!(matches("/hooks/{source}", "/hooks/a/b").is_none());
        assert_eq!(matches("/channels/{proxy+}", "/channels/a/b/events").unwrap()["proxy"], "a/b/events");
        assert!(matches("/channels/{proxy+}", "/channels/").is_none());
        assert!(matches("/hookcast.js", "/hookcast.js").is_some());
        assert!(matches("/hookcast.js", "/hookcast.mjs").is_none());
    }

    #[test]
    fn events_carry_what_payload_2_carries() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let uri: Uri = "/hooks/n?since=3&x=a%20b".parse().unwrap();
        let ev = event("POST /hooks/{source}", &Method::POST, &uri, &h, &Bytes::from_static(b"{\"a\":1}"), Map::new());
        assert_eq!(ev["headers"]["x-a"], "1,2");
        assert_eq!(ev["queryStringParameters"]["x"], "a b");
        assert_eq!(ev["rawQueryString"], "since=3&x=a%20b");
        assert_eq!(ev["isBase64Encoded"], false);
        assert_eq!(ev["body"], "{\"a\":1}");
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/octet-stream".parse().unwrap());
        let ev = event("POST /x", &Method::POST, &uri, &h, &Bytes::from_static(b"\x00\x01"), Map::new());
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], "AAE=");
    }
}
