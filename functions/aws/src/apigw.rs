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
    pacer: Option<std::sync::Arc<Pacer>>,
}

/// A token bucket for this instance's posts: the account's PostToConnection
/// quota (10,000/s) is shared by every API, so fan-out takes a set share.
pub struct Pacer {
    rate: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl Pacer {
    pub fn new(per_second: u32) -> Self {
        let rate = per_second.max(1) as f64;
        // A tenth of a second of burst.
        Self { rate, state: tokio::sync::Mutex::new((rate / 10.0, tokio::time::Instant::now())) }
    }
    /// Waits for one token. The lock is held only to do arithmetic.
    pub async fn take(&self) {
        let wait = {
            let mut st = self.state.lock().await;
            let now = tokio::time::Instant::now();
            let burst = (self.rate / 10.0).max(1.0);
            st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * self.rate).min(burst);
            st.1 = now;
            st.0 -= 1.0;
            if st.0 >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-st.0 / self.rate)
        };
        tokio::time::sleep(wait).await;
    }
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
        Self { client: Client::from_conf(conf), pacer: None }
    }
    /// At most `per_second` posts per second from this instance.
    pub fn with_rate(mut self, per_second: u32) -> Self {
        self.pacer = Some(std::sync::Arc::new(Pacer::new(per_second)));
        self
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
            if let Some(p) = &self.pacer {
                p.take().await;
            }
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
