use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    hookcast_aws::init_tracing();
    let (relay, _) = hookcast_aws::relay_from_env().await?;
    let relay = Arc::new(relay);
    run(service_fn(move |ev: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        let relay = relay.clone();
        async move { Ok::<_, Error>(hookcast_aws::handlers::ws_disconnect(&relay, ev.payload).await) }
    }))
    .await
}
