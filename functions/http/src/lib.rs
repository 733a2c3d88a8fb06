//! The one HTTP routing table for what both hosts serve: `POST /hooks/{source}`,
//! `GET /channels/{channel}/events`, `GET /hookcast.js` and `/hookcast.mjs`.
//! The local binary merges its socket and demo routes onto it; the webhook
//! Lambda runs it as it is (`lambda_http::run(router)`), so the two cannot drift.
//! Every refusal, the framework's own included, is a short JSON error.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hookcast_core::policy::origin_allowed;
use hookcast_core::verify::{Headers, HookRequest};
use hookcast_core::{Channel, EventLog, HookError, Hooks, StoreError};
use serde_json::json;
use tracing::{info, warn};

/// The minified snippet (checked fresh and under 4 KB gzip by the test command).
pub const SNIPPET: &str = include_str!("../../../site-snippet/dist/hookcast.min.js");
/// The ES-module entry; it imports `./hookcast.js` from the same host.
pub const SNIPPET_MODULE: &str = include_str!("../../../site-snippet/hookcast.mjs");

/// What the snippet endpoints serve.
#[derive(Clone)]
pub struct Snippets {
    pub classic: Arc<str>,
    pub module: Arc<str>,
    pub cache_control: &'static str,
}

impl Snippets {
    /// Served by the host the page connects to (the local binary): the
    /// snippet finds `/ws` on its own host.
    pub fn same_host() -> Self {
        Self { classic: SNIPPET.into(), module: SNIPPET_MODULE.into(), cache_control: "no-cache" }
    }
    /// Served from another host than the WebSocket (API Gateway's HTTP API):
    /// the wss:// URL is built in, so a page needs one script tag.
    pub fn with_ws_url(ws_url: &str) -> Self {
        let url = serde_json::to_string(ws_url).unwrap_or_else(|_| "\"\"".into());
        Self::with_default_url(&url, &url)
    }

    /// Served through a CDN in front of both APIs (template.yaml's edge
    /// option): the socket is `path` on the script's own host, where the CDN
    /// routes it to the WebSocket API.
    pub fn on_own_host(path: &str) -> Self {
        let path = serde_json::to_string(path).unwrap_or_else(|_| "\"/\"".into());
        Self::with_default_url(
            &format!("new URL({path},s.src).href.replace(/^http/,\"ws\")"),
            &format!("new URL({path}, import.meta.url).href.replace(/^http/, \"ws\")"),
        )
    }

    /// The snippet with its default URL set: `classic` is an expression in
    /// `s` (the script element), `module` one in the module's scope.
    fn with_default_url(classic: &str, module: &str) -> Self {
        let classic = format!(
            "(function(s){{if(s&&!s.getAttribute(\"data-url\"))s.setAttribute(\"data-url\",{classic})}})(document.currentScript);\n{SNIPPET}"
        );
        let module = SNIPPET_MODULE
            .lines()
            .map(|l| if l.starts_with("const defaultUrl =") { format!("const defaultUrl = {module};") } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
        // Cacheable by browsers and any CDN in front (five minutes, then
        // revalidated by ETag while a stale copy is served): a flood of
        // snippet fetches need not reach the function.
        Self {
            classic: classic.into(),
            module: module.into(),
            cache_control: "public, max-age=300, stale-while-revalidate=86400",
        }
    }
}

/// A strong validator of a script's bytes.
fn etag(body: &str) -> String {
    use sha2::Digest;
    format!("\"{}\"", hex::encode(&sha2::Sha256::digest(body.as_bytes())[..12]))
}

/// Every refusal is a JSON error: a response of 400 or more that is not JSON
/// already (the framework's own rejections) is rewritten as one, its text
/// kept as the message.
pub async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
    let code = status.canonical_reason().unwrap_or("error").to_ascii_lowercase().replace([' ', '-'], "_");
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut out = json_error(status, &code, &message);
    for (k, v) in parts.headers.iter().filter(|(k, _)| *k != header::CONTENT_TYPE && *k != header::CONTENT_LENGTH) {
        out.headers_mut().insert(k.clone(), v.clone());
    }
    out
}

struct Shared<L> {
    hooks: Arc<Hooks<L>>,
    snippets: Snippets,
}

/// The routes both hosts serve, with JSON 404 and 405 fallbacks.
pub fn router<L: EventLog>(hooks: Arc<Hooks<L>>, snippets: Snippets) -> Router {
    let shared = Arc::new(Shared { hooks, snippets });
    Router::new()
        .route("/hooks/{source}", post(hook::<L>).layer(DefaultBodyLimit::disable()))
        .route("/channels/{*path}", get(channel_read::<L>))
        .route("/hookcast.js", get(classic::<L>))
        .route("/hookcast.mjs", get(module::<L>))
        .fallback(|body: Body| async move {
            drain(body).await;
            json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|body: Body| async move {
            drain(body).await;
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method")
        })
        .with_state(shared)
        .layer(axum::middleware::map_response(json_errors))
}

/// A JSON answer: `status` and `body`, `content-type: application/json`.
fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// `{"error": code, "message": message}` with `status`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": code, "message": message}).to_string())
}

/// Every refusal this router answers, turned into its JSON answer in one
/// place: `{"error": code, "message": message}` with its status.
#[derive(Debug)]
pub enum ApiError {
    /// A webhook's refusal, as every host answers it ([`refusal`]).
    Hook(HookError),
    /// The store failed: logged, and answered as [`HookError::Unavailable`]
    /// (never its detail).
    Store(StoreError),
    /// A request this router does not take.
    Request { status: StatusCode, code: &'static str, message: String },
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl ToString) -> Self {
        ApiError::Request { status, code, message: message.to_string() }
    }
}

impl From<HookError> for ApiError {
    fn from(e: HookError) -> Self {
        ApiError::Hook(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Hook(e) => refusal(&e),
            ApiError::Store(e) => {
                warn!(error = %e, "history read failed");
                refusal(&HookError::Unavailable)
            }
            ApiError::Request { status, code, message } => json_error(status, code, &message),
        }
    }
}

/// A refused request as every host answers it: the error's status, its
/// JSON body, and `Retry-After` when waiting helps.
pub fn refusal(e: &HookError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = json_response(status, e.body());
    if let Some(secs) = e.retry_after() {
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// The request's own header map, as verification reads headers.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A script with its validator: `304 Not Modified` (no body) to a client
/// that has these bytes already.
fn script(body: &Arc<str>, cache_control: &'static str, headers: &HeaderMap) -> Response {
    let tag = etag(body);
    let fresh =
        headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let common = [(header::CACHE_CONTROL, cache_control.to_owned()), (header::ETAG, tag)];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, "application/javascript; charset=utf-8")], body.to_string()).into_response()
}

async fn classic<L: EventLog>(State(st): State<Arc<Shared<L>>>, headers: HeaderMap) -> Response {
    script(&st.snippets.classic, st.snippets.cache_control, &headers)
}

async fn module<L: EventLog>(State(st): State<Arc<Shared<L>>>, headers: HeaderMap) -> Response {
    script(&st.snippets.module, st.snippets.cache_control, &headers)
}

async fn hook<L: EventLog>(
    State(st): State<Arc<Shared<L>>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = st.hooks.config().limits.max_body_bytes;
    let deadline = st.hooks.config().limits.body_timeout;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    // A sender trickling its body must not hold the request open for ever.
    let read = tokio::time::timeout(deadline, read_body(body, limit, declared)).await.map_err(|_| {
        let message = format!("the body did not arrive within {} s", deadline.as_secs());
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message)
    })?;
    let bytes = match read {
        Ok(b) => b,
        Err(Some(size)) => return Err(HookError::TooLarge { size, limit }.into()),
        Err(None) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "body_incomplete", "the body ended before it was complete"))
        }
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let req = HookRequest { headers: &RequestHeaders(&headers), body: &bytes };
    // 200 only once the event is durably in the log.
    let m = hookcast_core::metrics::global();
    let done = st.hooks.ingest(&source, content_type, &req).await.inspect_err(|e| {
        info!(source, status = e.status(), code = e.code(), reason = %e, "webhook refused");
        m.webhook(&source, e.code());
    })?;
    if let Some(why) = &done.ignored {
        info!(source, reason = %why, "webhook ignored: nothing published");
        m.webhook(&source, "ignored");
    } else {
        info!(source, channel = %done.channel, seq = done.seq, duplicate = done.duplicate, "webhook accepted");
        m.webhook(&source, if done.duplicate { "duplicate" } else { "accepted" });
        if !done.duplicate {
            m.event_appended();
        }
    }
    let answer = AcceptedAnswer { accepted: &done, ok: true };
    Ok(json_response(StatusCode::OK, serde_json::to_string(&answer).unwrap_or_default()))
}

/// The acknowledgement's body: the [`hookcast_core::Accepted`] fields and `ok`.
#[derive(serde::Serialize)]
struct AcceptedAnswer<'a> {
    #[serde(flatten)]
    accepted: &'a hookcast_core::Accepted,
    ok: bool,
}

/// Reads at most `limit` bytes. Over it, `Err(Some(size))`; a body that
/// breaks off, `Err(None)`. An oversized body up to
/// [`DRAIN_MAX`] is read to its end (and dropped) first, so the sender gets
/// its 413 rather than a connection reset mid-upload.
async fn read_body(body: Body, limit: usize, declared: Option<usize>) -> Result<Vec<u8>, Option<usize>> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return Err(None) };
        seen += chunk.len();
        if seen <= limit && declared.is_none_or(|d| d <= limit) {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_MAX {
            break;
        }
    }
    match declared {
        Some(d) if d > limit => Err(Some(d)),
        _ if seen > limit => Err(Some(seen)),
        _ => Ok(buf),
    }
}

/// Reads a refused request's body (up to [`DRAIN_MAX`], for a few seconds)
/// so its answer is not lost to a reset: closing a socket with unread bytes
/// makes the kernel reset the connection.
async fn drain(body: Body) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read_body(body, 0, None)).await;
}

/// How much of an oversized body is read and dropped before the 413.
const DRAIN_MAX: usize = 8 * 1024 * 1024;

/// `GET /channels/{channel}/events` and `/head`, each its own answer
/// below. Channel names may contain '/' (sent as is or percent-encoded:
/// both reach the same channel), so the route is one wildcard and the
/// suffix says which. A private channel needs a subscribe token (`?token=`
/// or `Authorization: Bearer`).
async fn channel_read<L: EventLog>(
    State(st): State<Arc<Shared<L>>>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let hooks = &st.hooks;
    let answer = async {
        let params = ReadParams::parse(query.as_deref())?;
        let (name, read) = match (path.strip_suffix("/events"), path.strip_suffix("/head")) {
            (Some(name), _) => (name, Read::Events),
            (None, Some(name)) => (name, Read::Head),
            _ => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "use /channels/{channel}/events or /channels/{channel}/head",
                ))
            }
        };
        params.fit(read)?;
        let channel = Channel::parse(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_channel", e))?;
        let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        // Tokens are base64url with dots: nothing in them needs percent-decoding.
        if let Err(e) = hooks.may_read(&channel, bearer.or(params.token.as_deref())) {
            info!(channel = %channel, reason = %e, "history refused");
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", e));
        }
        match read {
            Read::Events => events(hooks, &channel, &params).await,
            Read::Head => head(hooks, &channel).await,
        }
    }
    .await;
    match answer {
        Ok(body) => readable_from(json_response(StatusCode::OK, body), hooks.config(), &headers),
        Err(e) => e.into_response(),
    }
}

/// Which answer a channel read asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    Events,
    Head,
}

/// A channel read's query: each parameter at most once, and only these (a
/// repeated or misspelt one is an error, never silently the first or
/// ignored), checked before the path; `/head` takes only `token` ([`Self::fit`]).
#[derive(Default)]
struct ReadParams {
    since: Option<String>,
    epoch: Option<String>,
    token: Option<String>,
}

impl ReadParams {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query.unwrap_or("")).map_err(|_| invalid("the query string does not decode".into()))?;
        let mut params = ReadParams::default();
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "since" => &mut params.since,
                "epoch" => &mut params.epoch,
                "token" => &mut params.token,
                _ => {
                    let shown: String = k.chars().take(40).collect();
                    return Err(invalid(format!(
                        "unknown query parameter {shown:?}; this endpoint takes since, epoch and token"
                    )));
                }
            };
            if slot.replace(v).is_some() {
                return Err(invalid(format!("{k} is given more than once")));
            }
        }
        Ok(params)
    }

    /// `/head` takes only `token` (the others named in the order the keys sort).
    fn fit(&self, read: Read) -> Result<(), ApiError> {
        let extra = [("epoch", &self.epoch), ("since", &self.since)].into_iter().find(|(_, v)| v.is_some() && read == Read::Head);
        match extra {
            Some((k, _)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("{k} does not apply to /head; it takes token"),
            )),
            None => Ok(()),
        }
    }

    fn since(&self) -> Result<u64, ApiError> {
        match self.since.as_deref().map(str::parse::<u64>) {
            None => Ok(0),
            Some(Ok(n)) => Ok(n),
            Some(Err(_)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_since", "since must be a whole number")),
        }
    }
}

/// `/events`: the one catch-up rule ([`hookcast_core::catchup`]) as a
/// document: retained events after `since`, the channel's state (with its
/// `mode`) if it keeps one, and whether the caller missed events that
/// neither covers (`reset`). `epoch` is the one the caller's `since` was
/// read in (from an earlier answer).
async fn events<L: EventLog>(hooks: &Hooks<L>, channel: &Channel, params: &ReadParams) -> Result<String, ApiError> {
    let since = params.since()?;
    let caught = hooks.history(channel, since, params.epoch.as_deref()).await.map_err(ApiError::Store)?;
    let h = &caught.history;
    let answer = EventsAnswer {
        channel,
        epoch: &h.epoch,
        events: &h.events,
        head: h.head,
        mode: h.state.as_ref().map(|s| s.kind.as_str()),
        next: caught.next,
        reset: caught.reset,
        state: h.state.as_ref().map(|s| &s.value),
    };
    Ok(serde_json::to_string(&answer).unwrap_or_default())
}

/// `/head`: where the channel's log stands (`seq`, `epoch`), what a build
/// stamps into its pages.
async fn head<L: EventLog>(hooks: &Hooks<L>, channel: &Channel) -> Result<String, ApiError> {
    let h = hooks.head(channel).await.map_err(ApiError::Store)?;
    Ok(serde_json::to_string(&HeadAnswer { channel, epoch: &h.epoch, seq: h.head }).unwrap_or_default())
}

/// The `/events` answer: its keys in the order they had (sorted); each
/// event's in the order of the WebSocket frame's.
#[derive(serde::Serialize)]
struct EventsAnswer<'a> {
    channel: &'a Channel,
    epoch: &'a str,
    events: &'a [hookcast_core::Event],
    head: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<u64>,
    reset: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a serde_json::Value>,
}

/// The `/head` answer.
#[derive(serde::Serialize)]
struct HeadAnswer<'a> {
    channel: &'a Channel,
    epoch: &'a str,
    seq: u64,
}

/// Pages on any allowed origin may read a channel from their own origin.
fn readable_from(mut res: Response, config: &hookcast_core::Config, headers: &HeaderMap) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let origins = &config.allowed_origins;
    let allow = if origins.is_empty() || origins.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        origin.filter(|o| origin_allowed(config, Some(o))).and_then(|o| HeaderValue::from_str(o).ok())
    };
    if let Some(a) = allow {
        res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, a);
    }
    res.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
    res
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::Request;
    use hookcast_core::config::{Config, Limits};
    use hookcast_core::ports::Retention;
    use hookcast_testkit::MemLog;
    use tower::ServiceExt;

    use super::*;

    fn app(snippets: Snippets) -> Router {
        let config = Arc::new(Config {
            allowed_origins: vec![],
            limits: Limits::default(),
            sources: BTreeMap::new(),
            private: None,
            state: Default::default(),
        });
        router(Arc::new(Hooks::new(config, Arc::new(MemLog::new(Retention::from(&Limits::default()))))), snippets)
    }

    async fn get(app: &Router, method: &str, uri: &str) -> (u16, String, String) {
        let res = app.clone().oneshot(Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = String::from_utf8(to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
        (status, ct, body)
    }

    #[tokio::test]
    async fn every_refusal_is_json_and_encoded_channels_resolve() {
        let app = app(Snippets::same_host());
        for (method, uri, status, code) in [
            ("GET", "/nope", 404, "not_found"),
            ("GET", "/hooks/netlify", 405, "method_not_allowed"),
            ("DELETE", "/hookcast.js", 405, "method_not_allowed"),
            ("GET", "/channels/a%20b/events", 400, "invalid_channel"),
            ("GET", "/channels/deploys/events?since=x", 400, "invalid_since"),
            ("POST", "/hooks/unknown", 404, "unknown_source"),
        ] {
            let (got, ct, body) = get(&app, method, uri).await;
            assert_eq!((got, ct.as_str()), (status, "application/json"), "{method} {uri}: {body}");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"], code, "{method} {uri}");
        }
        let (plain, _, a) = get(&app, "GET", "/channels/forms/guestbook/events?since=0").await;
        let (encoded, _, b) = get(&app, "GET", "/channels/forms%2Fguestbook/events?since=0").await;
        assert_eq!((plain, encoded), (200, 200));
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn snippets_carry_the_websocket_url_when_served_from_elsewhere() {
        let app = app(Snippets::with_ws_url("wss://abc.execute-api.eu-west-1.amazonaws.com/live"));
        let (_, ct, js) = get(&app, "GET", "/hookcast.js").await;
        assert_eq!(ct, "application/javascript; charset=utf-8");
        assert!(js
            .starts_with("(function(s){if(s&&!s.getAttribute(\"data-url\"))s.setAttribute(\"data-url\",\"wss://abc.execute-api"));
        assert!(js.ends_with(SNIPPET));
        let (_, _, mjs) = get(&app, "GET", "/hookcast.mjs").await;
        assert!(mjs.contains("const defaultUrl = \"wss://abc.execute-api.eu-west-1.amazonaws.com/live\";"), "{mjs}");
        assert!(!mjs.contains("own.host + '/ws'"));
        let (_, _, local) = get(&self::app(Snippets::same_host()), "GET", "/hookcast.mjs").await;
        assert_eq!(local, SNIPPET_MODULE);
    }

    #[tokio::test]
    async fn through_a_cdn_the_socket_is_on_the_scripts_own_host() {
        let app = app(Snippets::on_own_host("/live"));
        let (_, _, js) = get(&app, "GET", "/hookcast.js").await;
        assert!(js.starts_with(
            "(function(s){if(s&&!s.getAttribute(\"data-url\"))s.setAttribute(\"data-url\",new URL(\"/live\",s.src).href.replace(/^http/,\"ws\"))})"
        ));
        let (_, _, mjs) = get(&app, "GET", "/hookcast.mjs").await;
        assert!(mjs.contains("const defaultUrl = new URL(\"/live\", import.meta.url).href.replace(/^http/, \"ws\");"), "{mjs}");
    }
}
