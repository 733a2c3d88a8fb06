//! The fan-out pipeline on AWS, driven by the log:
//!
//! ```text
//! webhook ─TransactWriteItems─▶ table ─stream (new event items)─▶ dispatch
//!   dispatch ─SendMessageBatch─▶ SQS FIFO, one message per (channel, shard),
//!            MessageGroupId = channel#shard
//!   SQS FIFO ─▶ fanout workers: page the shard's subscribers, post, drop 410s
//! ```
//!
//! Order: one channel's event items share a partition key, so the stream
//! carries them in commit (seq) order; the dispatcher keeps that order per
//! channel within its batch, and SQS FIFO delivers a group's messages one
//! batch at a time and in order, across every worker instance. So every
//! socket (it belongs to exactly one shard) receives a channel's seqs in order.
//!
//! Failures: a dispatcher error fails its stream batch, which Lambda retries
//! (FIFO deduplication ids make the resend harmless) and finally sends to the
//! on-failure destination. A worker that cannot list subscribers, or dies,
//! leaves its message to reappear after the visibility timeout (at-least-once;
//! pages drop duplicate seqs), and after `maxReceiveCount` tries it moves to
//! the dead-letter queue, which has an alarm. Posts that still fail after the
//! gateway's own retries are queued again for just those connections.

use std::future::Future;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use hookcast_core::ports::{ConnId, Gateway, Store};
use hookcast_core::protocol::{Event, ServerMsg};
use hookcast_core::relay::Relay;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use tracing::{info, warn};

/// Fan-out retries for connections whose posts failed, after the first try.
pub const MAX_RETRY_ROUNDS: u32 = 3;

/// One unit of fan-out work: one event to one shard of its channel's subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub event: Event,
    pub shard: u32,
    /// A retry for just these connections (their posts failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    #[serde(default)]
    pub round: u32,
}

impl Job {
    /// SQS FIFO's ordering unit (at most 128 characters).
    pub fn group_id(&self) -> String {
        let g = format!("{}#{}", self.event.channel, self.shard);
        if g.len() <= 128 {
            g
        } else {
            hex::encode(sha2::Sha256::digest(g.as_bytes()))
        }
    }
    /// Stable per (channel, seq, shard, round): a redriven stream batch that
    /// sends the same job again within 5 minutes is dropped by SQS.
    pub fn dedupe_id(&self) -> String {
        let raw = format!("{}#{}#{}#{}", self.event.channel, self.event.seq, self.shard, self.round);
        hex::encode(sha2::Sha256::digest(raw.as_bytes()))
    }
}

/// Where jobs go: an SQS FIFO queue on AWS.
pub trait JobQueue: Send + Sync {
    /// All or nothing from the caller's view: `Err` means retry them all
    /// (deduplication ids make a partial resend harmless).
    fn enqueue(&self, jobs: &[Job]) -> impl Future<Output = Result<(), String>> + Send;
}

/// The logged event an INSERT of an event item carries, if this record is one.
pub fn event_of_record(rec: &aws_lambda_events::dynamodb::EventRecord) -> Result<Option<Event>, String> {
    if rec.event_name != "INSERT" {
        return Ok(None);
    }
    let img = serde_json::to_value(&rec.change.new_image).map_err(|e| format!("a stream record's image: {e}"))?;
    let s = |k: &str| img.get(k).and_then(|v| v.get("S")).and_then(Value::as_str);
    let (Some(channel), Some(_)) = (s("pk").and_then(|p| p.strip_prefix("chan#")), s("sk").and_then(|k| k.strip_prefix("ev#")))
    else {
        return Ok(None); // heads, dedupe keys, counters: not events
    };
    // An event item that does not decode is an acknowledged event that would
    // never be pushed: an error, never a skip.
    let bad = |what: &str| {
        format!("event item {:?}/{:?} in the stream: {what}", s("pk").unwrap_or_default(), s("sk").unwrap_or_default())
    };
    let seq = img.get("seq").and_then(|v| v.get("N")?.as_str()?.parse().ok()).ok_or_else(|| bad("no numeric seq"))?;
    Ok(Some(Event {
        channel: hookcast_core::Channel::parse(channel).map_err(|e| bad(&e.to_string()))?,
        seq,
        event: hookcast_core::EventName::parse(s("event").ok_or_else(|| bad("no event name"))?)
            .map_err(|e| bad(&e.to_string()))?,
        data: serde_json::from_str(s("data").ok_or_else(|| bad("no data"))?)
            .map_err(|e| bad(&format!("data is not JSON: {e}")))?,
        at: s("at").ok_or_else(|| bad("no time"))?.to_owned(),
    }))
}

/// The dispatcher: each new event item becomes one job per subscriber shard.
/// Records of one channel keep their stream order. An event item that cannot
/// be read fails the whole batch before anything is queued: Lambda retries
/// it, bisects it down to that record, and then hands the record to the
/// on-failure queue, which alarms.
pub async fn dispatch<Q: JobQueue>(queue: &Q, shards: u32, ev: &StreamEvent) -> Result<usize, String> {
    let mut jobs = Vec::new();
    for rec in &ev.records {
        if let Some(event) = event_of_record(rec)? {
            jobs.extend((0..shards).map(|shard| Job { event: event.clone(), shard, only: None, round: 0 }));
        }
    }
    if !jobs.is_empty() {
        queue.enqueue(&jobs).await?;
    }
    Ok(jobs.len())
}

/// The fan-out worker: one SQS FIFO batch, in order. A message whose
/// subscribers could not be read fails, and so does every later message of
/// its group in this batch (their order must hold), so SQS delivers them again.
pub async fn fan_out_batch<S: Store, G: Gateway, Q: JobQueue>(
    relay: &Relay<S, G>,
    retries: &Q,
    batch: &SqsEvent,
) -> SqsBatchResponse {
    let mut failed_groups: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for msg in &batch.records {
        let id = msg.message_id.clone().unwrap_or_default();
        let fail = |failures: &mut Vec<BatchItemFailure>| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id.clone();
            failures.push(f);
        };
        let job: Job = match msg.body.as_deref().map(serde_json::from_str) {
            Some(Ok(j)) => j,
            // A body we did not write cannot succeed later: drop it, loudly.
            _ => {
                warn!(message_id = %id, "fan-out message is not a job; dropped");
                continue;
            }
        };
        let group = job.group_id();
        if failed_groups.contains(&group) {
            fail(&mut failures);
            continue;
        }
        let frame = ServerMsg::Event(job.event.clone()).to_json();
        let only: Option<Vec<ConnId>> = job.only.as_ref().map(|l| l.iter().cloned().map(ConnId).collect());
        match relay.fan_out_shard(&job.event, &frame, job.shard, only.as_deref()).await {
            Ok(out) => {
                info!(channel = %job.event.channel, seq = job.event.seq, shard = job.shard, round = job.round,
                      delivered = out.report.delivered, gone = out.report.gone, failed = out.report.failed, "fanned out");
                if !out.failed.is_empty() {
                    retry_failed(retries, &job, out.failed).await;
                }
            }
            Err(e) => {
                warn!(error = %e, channel = %job.event.channel, seq = job.event.seq, shard = job.shard, "fan-out failed; SQS will redeliver");
                failed_groups.push(group);
                fail(&mut failures);
            }
        }
    }
    let mut res = SqsBatchResponse::default();
    res.batch_item_failures = failures;
    res
}

/// Queues a retry for just the connections whose posts failed, a bounded
/// number of rounds; after that they catch up when they next resubscribe.
async fn retry_failed<Q: JobQueue>(queue: &Q, job: &Job, failed: Vec<ConnId>) {
    if job.round >= MAX_RETRY_ROUNDS {
        warn!(channel = %job.event.channel, seq = job.event.seq, connections = failed.len(), "posts still failing; giving up on these connections");
        return;
    }
    let retry = Job { only: Some(failed.into_iter().map(|c| c.0).collect()), round: job.round + 1, ..job.clone() };
    if let Err(e) = queue.enqueue(std::slice::from_ref(&retry)).await {
        warn!(error = %e, channel = %job.event.channel, seq = job.event.seq, "could not queue a retry for failed posts");
    }
}

/// SQS FIFO through the real SDK.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }
}

impl JobQueue for SqsQueue {
    /// SendMessageBatch, ten at a time in order; entries SQS refuses are
    /// resent (with their deduplication ids) a few times before giving up.
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), String> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        for chunk in jobs.chunks(10) {
            let mut pending: Vec<(usize, &Job)> = chunk.iter().enumerate().collect();
            for attempt in 0..5u32 {
                let entries = pending
                    .iter()
                    .map(|(i, j)| {
                        let body = serde_json::to_string(j).map_err(|e| e.to_string())?;
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(body)
                            .message_group_id(j.group_id())
                            .message_deduplication_id(j.dedupe_id())
                            .build()
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let res = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| format!("SendMessageBatch: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
                // Resend from the first refused entry on: the ones after it that
                // were taken are dropped as duplicates, and group order holds.
                let Some(first) = res.failed().iter().filter_map(|f| f.id().parse::<usize>().ok()).min() else {
                    pending.clear();
                    break;
                };
                pending.retain(|(i, _)| *i >= first);
                crate::backoff_sleep(attempt, std::time::Duration::from_millis(50), std::time::Duration::from_secs(1)).await;
            }
            if !pending.is_empty() {
                return Err(format!("SQS refused {} of {} messages", pending.len(), chunk.len()));
            }
        }
        Ok(())
    }
}
