//! hookcast on AWS: the DynamoDB store and API Gateway gateway adapters, the
//! Lambda configuration, and the handlers the Lambda mains call.

pub mod apigw;
pub mod dynamo;
pub mod env;
pub mod handlers;

use hookcast_core::ports::Retention;
use hookcast_core::Relay;

pub type AwsRelay = Relay<dynamo::DynamoStore, apigw::ApiGwGateway>;

/// Sleeps before retry `attempt`: hookcast_core's capped full-jitter backoff.
pub(crate) async fn backoff_sleep(attempt: u32, base: std::time::Duration, cap: std::time::Duration) {
    tokio::time::sleep(hookcast_core::backoff::full_jitter(attempt, base, cap, rand::random())).await;
}

/// Builds the relay once per cold start: SDK config from the environment,
/// both clients, typed config. Used by every Lambda main.
pub async fn relay_from_env() -> Result<(AwsRelay, env::LambdaConfig), String> {
    let cfg = env::LambdaConfig::from_env(&|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    let sdk = aws_config::load_from_env().await;
    let store = dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &cfg.table, Retention::from(&cfg.core.limits))
        .with_shards(cfg.shards);
    let gateway = apigw::ApiGwGateway::new(&sdk, &cfg.ws_endpoint);
    Ok((Relay::new(cfg.core.clone(), store, gateway), cfg))
}

/// Plain-text logs for CloudWatch (it adds the timestamps).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// The whole life of a WebSocket route's Lambda: tracing, config, clients
/// once per cold start, then `handler` per event.
pub async fn run_websocket_function<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(std::sync::Arc<AwsRelay>, aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest) -> Fut,
    Fut: std::future::Future<Output = aws_lambda_events::apigw::ApiGatewayProxyResponse> + Send,
{
    init_tracing();
    let (relay, _) = relay_from_env().await?;
    let relay = std::sync::Arc::new(relay);
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |ev: lambda_runtime::LambdaEvent<aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest>| {
            // Boxed: the handler futures nest deep enough to overflow layout queries.
            let fut = Box::pin(handler(relay.clone(), ev.payload));
            async move { Ok::<_, lambda_runtime::Error>(fut.await) }
        },
    ))
    .await
}
