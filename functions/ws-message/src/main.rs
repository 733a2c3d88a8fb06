#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookcast_aws::run_websocket_function(hookcast_aws::env::Role::Message, |s, ev| async move {
        hookcast_aws::handlers::ws_message(&s.relay, &s.guard, &*s.gateway, &*s.store, ev).await
    })
    .await
}
