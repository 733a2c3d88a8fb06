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
            // Retries are ours (below): the SDK's standard mode spends a shared
            // retry quota and drops most of a throttled fan-out; adaptive mode
            // slows the client long after the throttling ends.
            .retry_config(RetryConfig::disabled())
            .build();
        Self { client: Client::from_conf(conf) }
    }
}

/// Attempts per post: with the backoff below, up to about 8 s of retrying.
pub const MAX_ATTEMPTS: u32 = 8;
const BASE: Duration = Duration::from_millis(50);
const CAP: Duration = Duration::from_secs(2);

impl Gateway for ApiGwGateway {
    /// 429 and 5xx (and transport errors) are retried with capped full-jitter
    /// backoff; 410 is Gone at once; anything else is Failed at once.
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        for attempt in 0..MAX_ATTEMPTS {
            let res = self.client.post_to_connection().connection_id(&conn.0).data(Blob::new(frame.as_bytes())).send().await;
            let e = match res {
                Ok(_) => return Delivery::Delivered,
                Err(e) => e,
            };
            let status = e.raw_response().map(|r| r.status().as_u16());
            if matches!(e.as_service_error(), Some(PostToConnectionError::GoneException(_))) || status == Some(410) {
                return Delivery::Gone;
            }
            let retryable = matches!(status, None | Some(429) | Some(500..=599));
            if !retryable || attempt + 1 == MAX_ATTEMPTS {
                warn!(conn = %conn, status, code = e.code(), attempts = attempt + 1, "PostToConnection failed");
                return Delivery::Failed;
            }
            crate::backoff_sleep(attempt, BASE, CAP).await;
        }
        Delivery::Failed
    }

    async fn close(&self, conn: &ConnId) {
        if let Err(e) = self.client.delete_connection().connection_id(&conn.0).send().await {
            warn!(conn = %conn, code = e.code(), "DeleteConnection failed");
        }
    }
}
