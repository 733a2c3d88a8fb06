#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookcast_aws::run_websocket_function(hookcast_aws::env::Role::Connection, |s, ev| async move {
        hookcast_aws::handlers::ws_connect(&s.relay, &s.guard, s.edge_secret.as_deref(), ev).await
    })
    .await
}
