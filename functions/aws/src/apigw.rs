//! The gateway over the API Gateway Management API: PostToConnection →
//! Delivered / Gone (410) / Failed; the SDK retries 429 and 5xx with backoff.

use std::time::Duration;

use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::error::ProvideErrorMetadata;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use hookcast_core::ports::{ConnId, Delivery, Gateway};
use tracing::warn;

#[derive(Clone)]
pub struct ApiGwGateway {
    client: Client,
}

impl ApiGwGateway {
    /// `endpoint`: `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`
    /// (template.yaml passes it as HOOKCAST_WS_ENDPOINT).
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            // Adaptive: once throttled, the client paces itself instead of
            // spending the standard retry quota and dropping a fan-out.
            .retry_config(RetryConfig::adaptive().with_max_attempts(4).with_initial_backoff(Duration::from_millis(50)))
            .build();
        Self { client: Client::from_conf(conf) }
    }
}

impl Gateway for ApiGwGateway {
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        let res = self.client.post_to_connection().connection_id(&conn.0).data(Blob::new(frame.as_bytes())).send().await;
        match res {
            Ok(_) => Delivery::Delivered,
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if matches!(e.as_service_error(), Some(PostToConnectionError::GoneException(_))) || status == Some(410) {
                    Delivery::Gone
                } else {
                    warn!(conn = %conn, status, code = e.code(), "PostToConnection failed");
                    Delivery::Failed
                }
            }
        }
    }

    async fn close(&self, conn: &ConnId) {
        if let Err(e) = self.client.delete_connection().connection_id(&conn.0).send().await {
            warn!(conn = %conn, code = e.code(), "DeleteConnection failed");
        }
    }
}
