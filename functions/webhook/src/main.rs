use std::sync::Arc;

use hookcast_aws::env::Role;
use lambda_http::{run, service_fn, Error, Request};

/// Verify, append, acknowledge: this function has no gateway at all; the
/// table's stream drives the fan-out.
#[tokio::main]
async fn main() -> Result<(), Error> {
    hookcast_aws::init_tracing();
    let startup = hookcast_aws::Startup::load(Role::Webhook).await?;
    // The snippet needs the wss:// URL only; this function never posts to it.
    let snippet = hookcast_aws::handlers::snippet_with_url(&startup.cfg.ws_url());
    let state = Arc::new((startup.hooks(), snippet));
    run(service_fn(move |req: Request| {
        let state = state.clone();
        async move { Ok::<_, Error>(hookcast_aws::handlers::http_request(&state.0, &state.1, req).await) }
    }))
    .await
}
