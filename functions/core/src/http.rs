//! HTTP answers for the webhook and history endpoints, framework-free, so the
//! local server (axum) and the Lambda function (lambda_http) answer alike.

use serde_json::json;
use tracing::{info, warn};

use crate::channel::Channel;
use crate::error::HookError;
use crate::hooks::Hooks;
use crate::policy::origin_allowed;
use crate::ports::EventLog;
use crate::verify::HookRequest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(status: u16, body: String) -> Self {
        Self { status, headers: vec![("content-type", "application/json".into())], body }
    }
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, json!({"error": code, "message": message}).to_string())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl From<&HookError> for HttpResponse {
    fn from(e: &HookError) -> Self {
        let mut r = Self::json(e.status(), e.body());
        if let Some(secs) = e.retry_after() {
            r.headers.push(("retry-after", secs.to_string()));
        }
        r
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `POST /hooks/{source}`: 200 only once the event is durably in the log.
pub async fn webhook<L: EventLog>(hooks: &Hooks<L>, source: &str, headers: &[(String, String)], body: &[u8]) -> HttpResponse {
    let content_type = header(headers, "content-type");
    match hooks.ingest(source, content_type, &HookRequest { headers, body }).await {
        Ok(done) => {
            info!(source, channel = %done.channel, seq = done.seq, duplicate = done.duplicate, "webhook accepted");
            let m = crate::metrics::global();
            m.webhook(source, if done.duplicate { "duplicate" } else { "accepted" });
            if !done.duplicate {
                m.event_appended();
            }
            let mut v = serde_json::to_value(&done).unwrap_or_default();
            v["ok"] = json!(true);
            HttpResponse::json(200, v.to_string())
        }
        Err(e) => {
            info!(source, status = e.status(), code = e.code(), reason = %e, "webhook refused");
            crate::metrics::global().webhook(source, e.code());
            HttpResponse::from(&e)
        }
    }
}

/// `GET /channels/{channel}/events?since=N`, given the `{channel}/events` part.
/// `token` is a subscribe token (`?token=` or `Authorization: Bearer`), needed for private channels.
pub async fn history<L: EventLog>(
    hooks: &Hooks<L>,
    channel_and_events: &str,
    since: Option<&str>,
    origin: Option<&str>,
    token: Option<&str>,
) -> HttpResponse {
    let Some(name) = channel_and_events.strip_suffix("/events") else {
        return HttpResponse::error(404, "not_found", "use /channels/{channel}/events");
    };
    let channel = match Channel::parse(name) {
        Ok(c) => c,
        Err(e) => return HttpResponse::error(400, "invalid_channel", &e.to_string()),
    };
    if let Err(e) = hooks.may_read(&channel, token) {
        info!(channel = %channel, reason = %e, "history refused");
        return HttpResponse::error(403, "forbidden", &e.to_string());
    }
    let since = match since.map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return HttpResponse::error(400, "invalid_since", "since must be a whole number"),
    };
    match hooks.history(&channel, since).await {
        Ok((h, reset)) => {
            let body = json!({"channel": channel, "head": h.head, "reset": reset, "events": h.events});
            let mut r = HttpResponse::json(200, body.to_string());
            // Pages on any allowed origin may catch up over HTTP.
            let origins = &hooks.config().allowed_origins;
            let allow = if origins.is_empty() || origins.iter().any(|o| o == "*") {
                Some("*".to_owned())
            } else {
                origin.filter(|o| origin_allowed(hooks.config(), Some(o))).map(str::to_owned)
            };
            if let Some(a) = allow {
                r.headers.push(("access-control-allow-origin", a));
            }
            r.headers.push(("vary", "origin".into()));
            r
        }
        Err(e) => {
            warn!(error = %e, "history read failed");
            HttpResponse::from(&HookError::Unavailable)
        }
    }
}
