use std::sync::Arc;

use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    hookcast_aws::init_tracing();
    let (relay, cfg) = hookcast_aws::relay_from_env().await?;
    let snippet = hookcast_aws::handlers::snippet_with_url(&cfg.ws_url());
    let state = Arc::new((relay, snippet));
    run(service_fn(move |req: Request| {
        let state = state.clone();
        async move { Ok::<_, Error>(hookcast_aws::handlers::http_request(&state.0, &state.1, req).await) }
    }))
    .await
}
