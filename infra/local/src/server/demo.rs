//! The demo site `hookcast dev` serves at `/`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hookcast_core::channel::Channel;
use tracing::warn;

use super::state::AppState;

const DEMO_HTML: &str = include_str!("../../../../site-snippet/demo/index.html");
const DEMO_CSS: &str = include_str!("../../../../site-snippet/demo/demo.css");
const DEMO_JS: &str = include_str!("../../../../site-snippet/demo/demo.js");
const DEMO_MODULE_HTML: &str = include_str!("../../../../site-snippet/demo/module.html");
const DEMO_MODULE_JS: &str = include_str!("../../../../site-snippet/demo/module.js");
const DEMO_ICON: &str = include_str!("../../../../site-snippet/demo/favicon.svg");

/// The demo's routes: the page and its assets.
pub fn routes(router: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    router
        .route("/", get(demo_page))
        .route("/demo.css", get(|| async { asset("text/css; charset=utf-8", DEMO_CSS) }))
        .route("/demo.js", get(|| async { asset("application/javascript; charset=utf-8", DEMO_JS) }))
        .route("/module.html", get(|| async { asset("text/html; charset=utf-8", DEMO_MODULE_HTML) }))
        .route("/module.js", get(|| async { asset("application/javascript; charset=utf-8", DEMO_MODULE_JS) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", DEMO_ICON) }))
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", DEMO_ICON) }))
}

/// The demo page as a static host would render it after its latest deploy:
/// `hookcast dev` stands in for the rebuild the poke/pull pattern refetches.
async fn demo_page(State(st): State<Arc<AppState>>) -> Response {
    let deploys = Channel::parse("deploys").expect("valid literal");
    let latest = match st.hooks.history(&deploys, 0, None).await {
        Ok(c) => c.history.events.into_iter().rev().find(|e| e.event.as_str() == "deploy.succeeded"),
        Err(e) => {
            warn!(error = %e, "demo page rendered without deploy info");
            None
        }
    };
    let (seq, title) = match &latest {
        Some(e) => (format!("#{}", e.seq), e.data["title"].as_str().unwrap_or("").to_owned()),
        None => ("none yet".to_owned(), "send a deploy notification".to_owned()),
    };
    let html = DEMO_HTML.replace("{{build_seq}}", &html_escape(&seq)).replace("{{build_title}}", &html_escape(&title));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
