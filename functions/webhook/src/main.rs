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
    // The snippet is served from the HTTP API's host: build the wss:// URL in.
    let snippets = hookcast_http::Snippets::with_ws_url(&startup.cfg.ws_url());
    // After each answer, what the counters gained goes out as CloudWatch EMF lines.
    let router = hookcast_http::router(Arc::new(startup.hooks()), snippets).layer(axum::middleware::map_response(
        |res: axum::response::Response| async move {
            hookcast_aws::emf::flush();
            res
        },
    ));
    run(router).await
}
