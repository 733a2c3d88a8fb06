use std::sync::Arc;

use hookcast_aws::env::Role;
use lambda_http::{run, Error};

/// Verify, append, acknowledge: the shared HTTP router over the DynamoDB
/// event log. This function has no gateway at all; the table's stream drives
/// the fan-out.
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
    // After each answer, what the counters gained goes out as CloudWatch EMF lines.
    let router = hookcast_http::router(Arc::new(startup.hooks()), snippets)
        .layer(axum::middleware::map_response(|res: axum::response::Response| async move {
            hookcast_aws::emf::flush();
            res
        }))
        // A source whose secret the stack does not hold yet: its deliveries
        // are refused saying where the secret goes; the rest goes on.
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let unready = unready.clone();
            async move {
                match hookcast_aws::unready_refusal(&unready, req.uri().path()) {
                    None => next.run(req).await,
                    Some((status, body)) => {
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
