//! The operator's console, on both hosts at `/_console`: the delivery log,
//! a channel view, the open pages by build, a test event and a replay.
//!
//! Who may use it: the holder of the operator token, sent as
//! `Authorization: Bearer` (never a subscribe token, never a cookie). Every
//! data route answers 401 without it, and so does the page itself (its 401
//! body is the page's empty shell, which asks for the token). The shell's
//! script and style are static files with no data in them. Cross-site
//! requests cannot use it: a browser attaches no bearer token on its own, no
//! console route answers CORS, a `Sec-Fetch-Site: cross-site` request is
//! refused, and a write must be `application/json` (which a form cannot send).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hookcast_core::deliveries::{list_with_audience, valid_id, DeliveryLog, Entry, Outcome, Pages};
use hookcast_core::{Channel, EventLog, EventName, Hooks};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::{json_error, ApiError};

const PAGE: &str = include_str!("../../../site-snippet/console/index.html");
const SCRIPT: &str = include_str!("../../../site-snippet/console/console.js");
const STYLE: &str = include_str!("../../../site-snippet/console/console.css");

/// The page's policy: nothing but its own script, style and API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Most entries one `deliveries` read answers.
pub const LIST_MAX: usize = 200;
/// Events a channel view shows.
const CHANNEL_EVENTS: usize = 20;

/// The operator token, kept as its hash: compared by hash, so the check's
/// time does not depend on how much of a guess matches.
#[derive(Clone)]
pub struct OperatorToken([u8; 32]);

impl OperatorToken {
    /// A token shorter than 16 characters is refused (it could be guessed).
    pub fn new(token: &str) -> Option<Self> {
        (token.trim().len() >= 16).then(|| OperatorToken(Sha256::digest(token.trim().as_bytes()).into()))
    }
    fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        given.is_some_and(|g| {
            let h: [u8; 32] = Sha256::digest(g.trim().as_bytes()).into();
            h.iter().zip(self.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        })
    }
}

struct Console<L, D, P> {
    hooks: Arc<Hooks<L>>,
    deliveries: Arc<D>,
    pages: Arc<P>,
    token: Option<OperatorToken>,
}

/// The console's routes. With no token (`None`), every route but the
/// static files answers 401 saying how to set one.
pub fn routes<L: EventLog, D: DeliveryLog, P: Pages>(
    hooks: Arc<Hooks<L>>,
    deliveries: Arc<D>,
    pages: Arc<P>,
    token: Option<OperatorToken>,
) -> Router {
    let st = Arc::new(Console { hooks, deliveries, pages, token });
    Router::new()
        .route("/_console", get(page::<L, D, P>))
        .route("/_console/", get(page::<L, D, P>))
        .route("/_console/console.js", get(|| async { asset("application/javascript; charset=utf-8", SCRIPT) }))
        .route("/_console/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/_console/api/deliveries", get(list::<L, D, P>))
        .route("/_console/api/deliveries/{id}", get(delivery::<L, D, P>))
        .route("/_console/api/channels/{*channel}", get(channel::<L, D, P>))
        .route("/_console/api/pages", get(open_pages::<L, D, P>))
        .route("/_console/api/events", post(test_event::<L, D, P>))
        .route("/_console/api/replay", post(replay::<L, D, P>))
        .with_state(st)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The headers every console answer carries: never cached, never framed.
fn guarded(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    res
}

/// `Ok` for the operator; else the refusal (401, or 403 cross-site).
fn operator<L, D, P>(st: &Console<L, D, P>, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        let refused = json_error(StatusCode::FORBIDDEN, "cross_site", "the console does not answer requests from other sites");
        return Err(Box::new(refused));
    }
    let Some(token) = &st.token else {
        return Err(Box::new(unauthorized("the console is off: no operator token is set (HOOKCAST_OPERATOR_TOKEN)")));
    };
    if token.admits(headers) {
        Ok(())
    } else {
        Err(Box::new(unauthorized("the console needs the operator token: Authorization: Bearer <token>")))
    }
}

fn unauthorized(message: &str) -> Response {
    let mut res = json_error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hookcast console\""));
    res
}

fn ok_json(body: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /_console`: the page's shell (no data in it). 401 without the token,
/// which is how a browser first opens it; its script then reads the token
/// from the URL's fragment (never sent to a server) or asks for it.
async fn page<L: EventLog, D: DeliveryLog, P: Pages>(State(st): State<Arc<Console<L, D, P>>>, headers: HeaderMap) -> Response {
    let status = if operator(&st, &headers).is_ok() { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
    let mut res = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hookcast console\""));
    }
    guarded(res)
}

/// A console answer: the operator check first, then `f`.
async fn answer<L, D, P, F>(st: &Console<L, D, P>, headers: &HeaderMap, f: F) -> Response
where
    F: std::future::Future<Output = Result<Value, ApiError>>,
{
    let res = match operator(st, headers) {
        Err(refused) => *refused,
        Ok(()) => match f.await {
            Ok(body) => ok_json(body),
            Err(e) => e.into_response(),
        },
    };
    guarded(res)
}

fn bad(code: &'static str, message: impl ToString) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn store(e: hookcast_core::StoreError) -> ApiError {
    ApiError::Store(e)
}

/// `GET /_console/api/deliveries?after=<id>&limit=<n>`: entries after the
/// cursor, oldest first (the newest `limit` without one), with the
/// audience of each accepted event; `cursor` is the id to ask after next.
async fn list<L: EventLog, D: DeliveryLog, P: Pages>(
    State(st): State<Arc<Console<L, D, P>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|_| bad("invalid_query", "the query does not decode"))?;
        let (mut after, mut limit) = (None, 100usize);
        for (k, v) in pairs {
            match k.as_str() {
                "after" if valid_id(&v) => after = Some(v),
                "after" => return Err(bad("invalid_query", "after must be an entry id from an earlier answer")),
                "limit" => {
                    limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=LIST_MAX).contains(n))
                        .ok_or_else(|| bad("invalid_query", format!("limit must be 1 to {LIST_MAX}")))?
                }
                _ => return Err(bad("invalid_query", "this endpoint takes after and limit")),
            }
        }
        let entries = list_with_audience(&*st.deliveries, after.as_deref(), limit).await.map_err(store)?;
        let cursor = entries.last().map(|e| e.id.clone()).or(after);
        Ok(json!({ "deliveries": entries, "cursor": cursor }))
    };
    answer(&st, &headers, work).await
}

/// `GET /_console/api/deliveries/{id}`: one entry, with its event's data
/// when the channel's log still holds it.
async fn delivery<L: EventLog, D: DeliveryLog, P: Pages>(
    State(st): State<Arc<Console<L, D, P>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let entry = find(&st, &id).await?;
        let event = match (&entry.channel, entry.seq, entry.outcome) {
            (Some(c), Some(seq), Outcome::Accepted | Outcome::Duplicate) => logged_event(&st.hooks, c, seq).await?,
            _ => None,
        };
        Ok(json!({ "delivery": entry, "event": event }))
    };
    answer(&st, &headers, work).await
}

async fn find<L, D: DeliveryLog, P>(st: &Console<L, D, P>, id: &str) -> Result<Entry, ApiError> {
    if !valid_id(id) {
        return Err(bad("invalid_id", "not a delivery id"));
    }
    let mut entry =
        st.deliveries.get(id).await.map_err(store)?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such delivery (the log keeps the newest only)")
        })?;
    if let (Outcome::Accepted, Some(c), Some(seq)) = (entry.outcome, &entry.channel, entry.seq) {
        entry.audience = Some(st.deliveries.audience(c, seq).await.map_err(store)?);
    }
    Ok(entry)
}

/// The event `seq` of `channel`, if the log still holds it.
async fn logged_event<L: EventLog>(
    hooks: &Hooks<L>,
    channel: &str,
    seq: u64,
) -> Result<Option<hookcast_core::protocol::Event>, ApiError> {
    let Ok(channel) = Channel::parse(channel) else { return Ok(None) };
    let events = hooks.log().read_events(&channel, seq - 1, seq, 1).await.map_err(store)?;
    Ok(events.into_iter().find(|e| e.seq == seq))
}

/// `GET /_console/api/channels/{channel}`: head, epoch, state, the last
/// events and how many pages view it.
async fn channel<L: EventLog, D: DeliveryLog, P: Pages>(
    State(st): State<Arc<Console<L, D, P>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let channel = Channel::parse(&name).map_err(|e| bad("invalid_channel", e))?;
        let h = st.hooks.head(&channel).await.map_err(store)?;
        let since = h.head.saturating_sub(CHANNEL_EVENTS as u64);
        let events = st.hooks.log().read_events(&channel, since, h.head, CHANNEL_EVENTS).await.map_err(store)?;
        let occupancy = st.pages.occupancy(&channel).await.map_err(store)?;
        Ok(json!({
            "channel": channel,
            "epoch": h.epoch,
            "head": h.head,
            "mode": h.state.as_ref().map(|s| s.kind.as_str()),
            "state": h.state.as_ref().map(|s| &s.value),
            "events": events,
            "occupancy": occupancy,
        }))
    };
    answer(&st, &headers, work).await
}

/// `GET /_console/api/pages`: open pages by the build they were stamped with.
async fn open_pages<L: EventLog, D: DeliveryLog, P: Pages>(
    State(st): State<Arc<Console<L, D, P>>>,
    headers: HeaderMap,
) -> Response {
    let work = async {
        let builds = st.pages.builds().await.map_err(store)?;
        let total: u64 = builds.values().sum();
        let mut list: Vec<Value> = builds.into_iter().map(|(b, n)| json!({ "build": b, "pages": n })).collect();
        list.sort_by(|a, b| b["pages"].as_u64().cmp(&a["pages"].as_u64()));
        Ok(json!({ "builds": list, "total": total }))
    };
    answer(&st, &headers, work).await
}

/// A write's body: JSON, at most 128 KB, else a 415 or 400 saying why.
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send application/json"));
    }
    if body.len() > 128 * 1024 {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is over 128 KB"));
    }
    serde_json::from_slice(body).map_err(|e| bad("invalid_json", format!("the body is not JSON: {e}")))
}

/// `POST /_console/api/events` `{"channel","event","data"}`: a test event,
/// published as a webhook's would be and logged as the console's.
async fn test_event<L: EventLog, D: DeliveryLog, P: Pages>(
    State(st): State<Arc<Console<L, D, P>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let work = async {
        let v = json_body(&headers, &body)?;
        let channel = v["channel"].as_str().ok_or_else(|| bad("invalid_payload", "channel is required"))?;
        let channel = Channel::parse(channel).map_err(|e| bad("invalid_channel", e))?;
        let event = EventName::parse(v["event"].as_str().unwrap_or("test")).map_err(|e| bad("invalid_event", e))?;
        let data = v.get("data").cloned().unwrap_or_else(|| json!({}));
        let done = st.hooks.publish(channel, event, data).await?;
        let entry = Entry::console(st.hooks.now(), &done, None);
        record(&*st.deliveries, &entry).await;
        info!(channel = %done.channel, seq = done.seq, "console test event published");
        Ok(json!({ "delivery": entry }))
    };
    answer(&st, &headers, work).await
}

/// `POST /_console/api/replay` `{"id"}`: an accepted delivery's event again,
/// as a new event (new seq) logged as a replay of it.
async fn replay<L: EventLog, D: DeliveryLog, P: Pages>(
    State(st): State<Arc<Console<L, D, P>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let work = async {
        let v = json_body(&headers, &body)?;
        let id = v["id"].as_str().ok_or_else(|| bad("invalid_payload", "id is required"))?;
        let entry = find(&st, id).await?;
        let (Outcome::Accepted, Some(channel), Some(seq)) = (entry.outcome, &entry.channel, entry.seq) else {
            return Err(ApiError::new(StatusCode::CONFLICT, "not_replayable", "only an accepted delivery can be replayed"));
        };
        let original = logged_event(&st.hooks, channel, seq)
            .await?
            .ok_or_else(|| ApiError::new(StatusCode::GONE, "event_expired", "the channel's log no longer holds this event"))?;
        let done = st.hooks.publish(original.channel, original.event, original.data).await?;
        let replayed = Entry::console(st.hooks.now(), &done, Some(&entry.id));
        record(&*st.deliveries, &replayed).await;
        info!(channel = %done.channel, seq = done.seq, of = %entry.id, "console replay published");
        Ok(json!({ "delivery": replayed }))
    };
    answer(&st, &headers, work).await
}

/// Keeps `entry`; a log that fails is logged, never the caller's failure
/// (the event is in the channel's log already).
pub async fn record<D: DeliveryLog>(log: &D, entry: &Entry) {
    if let Err(e) = log.record(entry).await {
        warn!(error = %e, "the delivery log did not keep an entry");
    }
}
