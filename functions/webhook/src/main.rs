use std::sync::Arc;

use hookcast_aws::env::Role;
use lambda_http::{run, Error};

/// Verify, append, acknowledge: the shared HTTP router over the DynamoDB
/// event log, and the operator's console. This function has no gateway at
/// all; the commit's enqueue and the table's stream drive the fan-out.
#[tokio::main]
async fn main() -> Result<(), Error> {
    hookcast_aws::init_tracing();
    let startup = hookcast_aws::Startup::load(Role::Webhook).await?;
    // The snippet is served from the HTTP API's host: build the wss:// URL
    // in; through the edge option's CloudFront, the socket is on the
    // script's own host.
    let snippets = match startup.cfg.edge_secret {
        Some(_) => hookcast_http::Snippets::on_own_host(&startup.cfg.ws_path()),
        None => hookcast_http::Snippets::with_ws_url(&startup.cfg.ws_url()),
    };
    let edge: Option<Arc<str>> = startup.cfg.edge_secret.as_deref().map(Arc::from);
    let unready = Arc::new(startup.cfg.unready.clone());
    // Every delivery's answer goes to the delivery log in the table, which
    // the console at /_console reads (behind the stack's OperatorSecret).
    let hooks = Arc::new(startup.hooks());
    let deliveries = Arc::new(startup.deliveries());
    let token = startup.cfg.operator_token.as_deref().and_then(hookcast_http::console::OperatorToken::new);
    let console = hookcast_http::console::routes(hooks.clone(), deliveries.clone(), Arc::new(startup.pages()), token);
    // What the not-ready refusal below logs: the source's kind, and its cap.
    let kinds: Arc<std::collections::BTreeMap<String, &'static str>> =
        Arc::new(startup.cfg.core.sources.iter().map(|(name, s)| (name.clone(), s.kind_name())).collect());
    let (unready_log, unready_cap) = (deliveries.clone(), Arc::new(hookcast_aws::LogCap::default()));
    // After each answer, what the counters gained goes out as CloudWatch EMF lines.
    let router = hookcast_http::router(hooks.clone(), deliveries, snippets)
        .merge(console)
        .layer(axum::middleware::map_response(|res: axum::response::Response| async move {
            hookcast_aws::emf::flush();
            res
        }))
        // A source whose secret the stack does not hold yet: its deliveries
        // are refused saying where the secret goes (and logged, for the
        // console); the rest goes on.
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let (unready, kinds, log, cap, hooks) =
                (unready.clone(), kinds.clone(), unready_log.clone(), unready_cap.clone(), hooks.clone());
            async move {
                match hookcast_aws::unready_refusal(&unready, req.uri().path()) {
                    None => next.run(req).await,
                    Some((status, body)) => {
                        let now = hooks.now();
                        if cap.take(now) {
                            let path = req.uri().path();
                            let kind = path.strip_prefix("/hooks/").and_then(|s| kinds.get(s).copied()).unwrap_or("");
                            let headers: Vec<(String, String)> = req
                                .headers()
                                .iter()
                                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                                .collect();
                            if let Some(entry) = hookcast_aws::unready_entry(&unready, path, kind, &headers, now) {
                                hookcast_http::console::record(&*log, &entry).await;
                            }
                        }
                        use axum::response::IntoResponse;
                        let status =
                            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                        let headers =
                            [(axum::http::header::CONTENT_TYPE, "application/json"), (axum::http::header::RETRY_AFTER, "60")];
                        (status, headers, body).into_response()
                    }
                }
            }
        }))
        // With the edge option, a request that did not come through
        // CloudFront (and its WAF) is refused before anything reads it.
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let edge = edge.clone();
            async move {
                if hookcast_aws::edge::admits(edge.as_deref(), req.headers()) {
                    next.run(req).await
                } else {
                    use axum::response::IntoResponse;
                    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
                    (axum::http::StatusCode::FORBIDDEN, json, hookcast_aws::edge::REFUSED).into_response()
                }
            }
        }));
    run(router).await
}
