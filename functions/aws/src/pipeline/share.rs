//! The fan-out's share of the account's `@connections` quota
//! (`FanoutMaxWorkers` × `PostsPerSecondPerWorker`), used whole by however
//! many workers are posting.
//!
//! SQS hands a batch to one worker: one event's shard jobs for a large
//! fan-out often arrive together, and a worker held to its own rate would
//! leave the other workers' part of the share unused (10,000 pages took
//! 12.0 s at 832 posts/s with a 2,000/s share). A worker posts at its own
//! rate first; an invocation still posting after [`REGISTER_AFTER`]
//! registers itself (`fanout#workers` / its id, with an expiry), and from
//! [`LOOK_AFTER`] on, every [`LOOK_EVERY`], counts the workers registered
//! and posts at share ÷ that count. Short invocations (a busy channel's
//! small jobs) never touch the table.
//!
//! What it costs and where it is loose: a long invocation writes one small
//! item a second and queries one small partition a second. A worker that
//! starts while another posts alone posts at its own rate unregistered for
//! [`REGISTER_AFTER`], and the other sees it at its next look: the share is
//! exceeded by at most one worker's rate for about a second and a half.
//! The account's 10,000/s (and the default share of 2,000/s) leave room.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::apigw::Pacer;

pub const REGISTER_AFTER: Duration = Duration::from_millis(250);
pub const LOOK_AFTER: Duration = Duration::from_secs(1);
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A registration outlives its last renewal by this much (a worker that
/// died is forgotten this long after).
const EXPIRES_AFTER: Duration = Duration::from_secs(3);
const PK: &str = "fanout#workers";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The workers posting now, through the table.
pub struct Share {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// This instance.
    me: String,
    /// Posts per second for all the workers together.
    total: u32,
    /// This worker's own rate (the share ÷ the most workers).
    own: u32,
}

impl Share {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, own: u32, workers: u32) -> Self {
        let me = format!("{:016x}", rand::random::<u64>());
        Self { client, table: table.to_owned(), me, total: own.saturating_mul(workers.max(1)), own }
    }

    async fn register(&self) -> Result<(), String> {
        let until = now_ms() + EXPIRES_AFTER.as_millis() as u64;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(PK.into()))
            .item("sk", AttributeValue::S(self.me.clone()))
            .item("until_ms", AttributeValue::N(until.to_string()))
            .item("ttl", AttributeValue::N((until / 1000 + 60).to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| crate::attr::sdk_err(e).to_string())
    }

    /// Workers registered and not expired (this one included).
    async fn count(&self) -> Result<u32, String> {
        let now = now_ms();
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(PK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::attr::sdk_err(e).to_string())?;
        let live = out
            .items()
            .iter()
            .filter(|i| {
                i.get("until_ms").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok()).is_some_and(|u| u > now)
            })
            .count() as u32;
        Ok(live.max(1))
    }

    async fn leave(&self) {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(PK.into()))
            .key("sk", AttributeValue::S(self.me.clone()))
            .send()
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %crate::attr::sdk_err(e), "could not unregister a fan-out worker; it expires");
        }
    }

    /// The rate for `workers` posting: the share divided, never below this
    /// worker's own rate.
    pub fn rate_for(&self, workers: u32) -> u32 {
        (self.total / workers.max(1)).max(self.own)
    }

    /// Runs `work` with `pacer` at this worker's part of the share, as
    /// described in the module's notes; the pacer is back at the worker's
    /// own rate when it ends.
    pub async fn while_posting<T>(&self, pacer: &Pacer, work: impl std::future::Future<Output = T>) -> T {
        if self.total <= self.own {
            return work.await;
        }
        tokio::pin!(work);
        let mut registered = false;
        let registering = tokio::time::sleep(REGISTER_AFTER);
        tokio::pin!(registering);
        let look_at = tokio::time::Instant::now() + LOOK_AFTER;
        let mut looking = Box::pin(tokio::time::sleep_until(look_at));
        let out = loop {
            tokio::select! {
                out = &mut work => break out,
                _ = &mut registering, if !registered => {
                    registered = true;
                    if let Err(e) = self.register().await {
                        tracing::warn!(error = %e, "could not register a fan-out worker; it posts at its own rate");
                    }
                }
                _ = &mut looking, if registered => {
                    // Renew, then count (this worker included).
                    let rate = match self.register().await {
                        Ok(()) => self.count().await.map(|n| self.rate_for(n)).unwrap_or(self.own),
                        Err(_) => self.own,
                    };
                    if pacer.rate().await != rate {
                        tracing::info!(rate, "fan-out rate set by the workers posting");
                        pacer.set_rate(rate).await;
                    }
                    looking.as_mut().reset(tokio::time::Instant::now() + LOOK_EVERY);
                }
            }
        };
        if registered {
            pacer.set_rate(self.own).await;
            self.leave().await;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_share_is_divided_by_the_workers_posting_never_below_a_workers_own() {
        let conf =
            aws_sdk_dynamodb::Config::builder().behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest()).build();
        let s = super::Share::new(aws_sdk_dynamodb::Client::from_conf(conf), "t", 1000, 4);
        assert_eq!([s.rate_for(1), s.rate_for(2), s.rate_for(3), s.rate_for(4), s.rate_for(9)], [4000, 2000, 1333, 1000, 1000]);
    }
}
