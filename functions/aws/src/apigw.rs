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
    /// (tokens, when last counted, posts per second).
    state: tokio::sync::Mutex<(f64, tokio::time::Instant, f64)>,
}

impl Pacer {
    pub fn new(per_second: u32) -> Self {
        let rate = per_second.max(1) as f64;
        // A tenth of a second of burst.
        Self { state: tokio::sync::Mutex::new((rate / 10.0, tokio::time::Instant::now(), rate)) }
    }
    /// From now on, `per_second` (the tokens counted so far are kept).
    pub async fn set_rate(&self, per_second: u32) {
        let mut st = self.state.lock().await;
        let now = tokio::time::Instant::now();
        let (rate, burst) = (st.2, (st.2 / 10.0).max(1.0));
        st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * rate).min(burst);
        st.1 = now;
        st.2 = per_second.max(1) as f64;
    }
    /// Posts per second now.
    pub async fn rate(&self) -> u32 {
        self.state.lock().await.2 as u32
    }
    /// Waits for one token. The lock is held only to do arithmetic.
    pub async fn take(&self) {
        self.take_until(None).await;
    }
    /// Waits for one token, unless it would come at or after `deadline`:
    /// then nothing is taken and the answer is `false`.
    pub async fn take_until(&self, deadline: Option<std::time::Instant>) -> bool {
        let wait = {
            let mut st = self.state.lock().await;
            let now = tokio::time::Instant::now();
            let rate = st.2;
            let burst = (rate / 10.0).max(1.0);
            st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * rate).min(burst);
            st.1 = now;
            let wait = if st.0 >= 1.0 { Duration::ZERO } else { Duration::from_secs_f64((1.0 - st.0) / rate) };
            if deadline.is_some_and(|d| std::time::Instant::now() + wait >= d) {
                return false;
            }
            st.0 -= 1.0;
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        true
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
    /// This instance's pacer, if it has a rate.
    pub fn pacer(&self) -> Option<std::sync::Arc<Pacer>> {
        self.pacer.clone()
    }
}

/// Attempts per post: with the backoff below, up to about 8 s of retrying.
pub const MAX_ATTEMPTS: u32 = 8;
const BASE: Duration = Duration::from_millis(50);
const CAP: Duration = Duration::from_secs(2);

impl Gateway for ApiGwGateway {
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        self.post(conn, frame, None, false).await
    }

    async fn send_until(&self, conn: &ConnId, frame: &str, deadline: std::time::Instant) -> Delivery {
        self.post(conn, frame, Some(deadline), false).await
    }

    /// Posts start in the page's order as the pacer gives tokens, and stop
    /// where its next token would come at or after the deadline: a worker
    /// at any rate ends its page on time, however many posts it may have in flight.
    async fn send_many_until(
        &self,
        conns: Vec<ConnId>,
        frame: &str,
        concurrency: usize,
        deadline: std::time::Instant,
    ) -> Vec<(ConnId, Delivery)> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut out = Vec::with_capacity(conns.len());
        let mut inflight = FuturesUnordered::new();
        let mut pending = conns.into_iter();
        let mut stopped = false;
        loop {
            if !stopped && inflight.len() < concurrency.max(1) {
                let Some(c) = pending.next() else {
                    stopped = true;
                    continue;
                };
                // The next post's token, while those in flight go on.
                let token = async {
                    match &self.pacer {
                        Some(p) => p.take_until(Some(deadline)).await,
                        None => std::time::Instant::now() < deadline,
                    }
                };
                tokio::pin!(token);
                let go = loop {
                    tokio::select! {
                        go = &mut token => break go,
                        Some(done) = inflight.next(), if !inflight.is_empty() => out.push(done),
                    }
                };
                if go {
                    inflight.push(async move {
                        let d = self.post(&c, frame, Some(deadline), true).await;
                        (c, d)
                    });
                } else {
                    stopped = true;
                }
                continue;
            }
            match inflight.next().await {
                Some(done) => out.push(done),
                None => break,
            }
        }
        out
    }

    async fn close(&self, conn: &ConnId) {
        if let Err(e) = self.client.delete_connection().connection_id(&conn.0).send().await {
            warn!(conn = %conn, code = e.code(), "DeleteConnection failed");
        }
    }
}

impl ApiGwGateway {
    /// 429 and 5xx (and transport errors) are retried with capped full-jitter
    /// backoff, never past `deadline`; 410 is Gone at once; anything else is
    /// Failed at once.
    /// `paced`: the first try's token is already taken.
    async fn post(&self, conn: &ConnId, frame: &str, deadline: Option<std::time::Instant>, paced: bool) -> Delivery {
        let past = |wait: Duration| deadline.is_some_and(|d| std::time::Instant::now() + wait >= d);
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(p) = self.pacer.as_ref().filter(|_| attempt > 0 || !paced) {
                if !p.take_until(deadline).await {
                    warn!(conn = %conn, attempts = attempt, "PostToConnection not tried again: the worker's time budget is spent");
                    return Delivery::Failed;
                }
            } else if attempt > 0 && past(Duration::ZERO) {
                return Delivery::Failed;
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
            let wait = hookcast_core::backoff::full_jitter(attempt, BASE, CAP, rand::random());
            if past(wait) {
                warn!(conn = %conn, attempts = attempt + 1, "PostToConnection still failing at the worker's time budget");
                return Delivery::Failed;
            }
            tokio::time::sleep(wait).await;
        }
        Delivery::Failed
    }
}
