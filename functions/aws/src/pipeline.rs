//! The fan-out pipeline on AWS, driven by the log:
//!
//! ```text
//! webhook ─TransactWriteItems─▶ table ─stream (new event items)─▶ dispatch
//!   dispatch ─SendMessageBatch─▶ SQS FIFO, one message per (channel, shard),
//!            MessageGroupId = channel#shard
//!   SQS FIFO ─▶ fanout workers: page the shard's subscribers, post, drop 410s
//! ```
//!
//! Order: DynamoDB Streams promises order per item only ("the stream
//! records appear in the same sequence as the actual modifications to the
//! item"), and each event is an item of its own, so nothing promises a
//! channel's events arrive in seq order across stream batches. The
//! dispatcher sorts each batch by (channel, seq); SQS FIFO then delivers a
//! group's jobs one batch at a time and in the order sent, across every
//! worker instance. A page that still sees a seq ahead of the next one it
//! needs holds it and asks again with `since` (the snippet's gap repair), so
//! every page shows a channel's events once and in order whatever arrives.
//!
//! Failures: a dispatcher error fails its stream batch, which Lambda retries
//! (FIFO deduplication ids make the resend harmless) and finally sends to the
//! on-failure destination. A job whose subscribers cannot be listed comes
//! back after a backoff, and the group's later jobs in that batch come back
//! with it, untouched (their order must hold). Each receive raises every
//! one's receive count, so the queue's `maxReceiveCount` cannot tell a job
//! that failed from one that waited behind it: the worker counts each job's
//! own failures ([`Cursors::count_failure`]) and, after [`MAX_JOB_FAILURES`],
//! moves that job to the dead-letter queue itself, and its group goes on.
//! The queue's own redrive (a high `maxReceiveCount`) is left for a worker
//! that dies on a message. Posts that still fail after the gateway's own
//! retries are queued again for just those connections.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use hookcast_core::fanout::{Fanout, ShardRun};
use hookcast_core::ports::{ConnId, Gateway, Subscriptions};
use hookcast_core::protocol::{Event, ServerMsg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use tracing::{info, warn};

/// Fan-out retries for connections whose posts failed, after the first try.
pub const MAX_RETRY_ROUNDS: u32 = 3;

/// A job that failed this many times itself (its subscribers could not be
/// read) goes to the dead-letter queue: with [`failure_backoff`], about half
/// an hour of trying.
pub const MAX_JOB_FAILURES: u32 = 20;

/// A fan-out worker's time: no post starts at or after `until`, and a page
/// of subscribers is no longer than `posts_per_second` can reach before it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub until: Instant,
    pub posts_per_second: Option<u32>,
}

impl Budget {
    /// Subscribers worth reading now: what the rate reaches in the time left.
    fn page(&self) -> Option<usize> {
        let left = self.until.saturating_duration_since(Instant::now()).as_secs_f64();
        self.posts_per_second.map(|r| ((f64::from(r) * left).ceil() as usize).max(1))
    }
}

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
    /// A message handed back to the queue comes back after `after`
    /// (`ChangeMessageVisibility`), not after the queue's whole visibility
    /// timeout.
    fn hold(&self, receipt_handle: &str, after: Duration) -> impl Future<Output = Result<(), String>> + Send;
    /// Moves a job that failed [`MAX_JOB_FAILURES`] times to the dead-letter queue.
    fn dead_letter(&self, job: &Job) -> impl Future<Output = Result<(), String>> + Send;
}

/// Where a job that stopped at its time budget resumes when SQS delivers it
/// again (DynamoDB on AWS: a small item per unfinished job, with a TTL).
pub trait Cursors: Send + Sync {
    fn resume_point(&self, job: &str) -> impl Future<Output = Result<Option<ConnId>, String>> + Send;
    fn save_resume_point(&self, job: &str, after: &ConnId) -> impl Future<Output = Result<(), String>> + Send;
    /// Counts one failure of the job itself; how many it has had.
    fn count_failure(&self, job: &str) -> impl Future<Output = Result<u32, String>> + Send;
}

/// How long a job whose subscribers could not be read waits before its next
/// try, after its `failures`th failure: `base` (5 s by default), doubling, at
/// most `max` (2 minutes; the queue's own visibility timeout is the whole
/// function timeout's six times over). `[limits]` `fanout_retry_base_secs`
/// and `fanout_retry_max_secs`.
pub fn failure_backoff(failures: u32, limits: &hookcast_core::config::Limits) -> Duration {
    (limits.fanout_retry_base * (1u32 << failures.saturating_sub(1).min(16))).min(limits.fanout_retry_max)
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
    let mut events = Vec::new();
    for rec in &ev.records {
        if let Some(event) = event_of_record(rec)? {
            events.push(event);
        }
    }
    // DynamoDB Streams orders records per item, and each event is its own
    // item: within a batch, one channel's events go out in seq order.
    events.sort_by(|a, b| (a.channel.as_str(), a.seq).cmp(&(b.channel.as_str(), b.seq)));
    let mut jobs = Vec::new();
    for event in events {
        jobs.extend((0..shards).map(|shard| Job { event: event.clone(), shard, only: None, round: 0 }));
    }
    if !jobs.is_empty() {
        queue.enqueue(&jobs).await?;
    }
    Ok(jobs.len())
}

/// The fan-out worker: one SQS FIFO batch, in order, within a time budget
/// (the caller keeps a reserve before the function's deadline).
///
/// - A message whose subscribers could not be read fails, and so does every
///   later message of its group in this batch (their order must hold); it
///   comes back after [`failure_backoff`], not the queue's visibility timeout.
/// - A shard too big to finish within the budget stops between pages: where
///   it stopped is saved ([`Cursors`]) and its message comes back at once
///   (with the rest of its group), to resume there, so no page gets an event
///   twice and every job ends however many subscribers a shard has.
/// - Messages the budget does not reach come back at once, untouched.
/// - Posts that failed are retried for just those connections, a bounded
///   number of rounds; only the last round's failures count as `Failed`.
pub async fn fan_out_batch<S: Subscriptions, C: Cursors, G: Gateway, Q: JobQueue>(
    fanout: &Fanout<S, G>,
    cursors: &C,
    queue: &Q,
    batch: &SqsEvent,
    budget: Option<Budget>,
) -> SqsBatchResponse {
    let mut failed_groups: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let mut started = false;
    for msg in &batch.records {
        let id = msg.message_id.clone().unwrap_or_default();
        let receipt = msg.receipt_handle.clone().unwrap_or_default();
        let receives: u32 = msg.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        let hand_back = |failures: &mut Vec<BatchItemFailure>, after: Duration| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id.clone();
            failures.push(f);
            let receipt = receipt.clone();
            async move {
                if let Err(e) = queue.hold(&receipt, after).await {
                    warn!(error = %e, "could not shorten a handed-back message's visibility; it returns after the queue's timeout");
                }
            }
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
        if failed_groups.contains(&group) || (started && budget.is_some_and(|b| Instant::now() >= b.until)) {
            hand_back(&mut failures, Duration::ZERO).await;
            continue;
        }
        started = true;
        let key = job.dedupe_id();
        let after = if receives > 1 && job.only.is_none() {
            cursors.resume_point(&key).await.unwrap_or_else(|e| {
                warn!(error = %e, "could not read where this job stopped; it starts over (pages drop the repeats)");
                None
            })
        } else {
            None
        };
        let frame = ServerMsg::Event(job.event.clone()).to_json();
        let only: Option<Vec<ConnId>> = job.only.as_ref().map(|l| l.iter().cloned().map(ConnId).collect());
        let run = ShardRun { only: only.as_deref(), after, budget: budget.map(|b| b.until), page: budget.and_then(|b| b.page()) };
        match fanout.fan_out_shard(&job.event, &frame, job.shard, run).await {
            Ok(out) => {
                info!(channel = %job.event.channel, seq = job.event.seq, shard = job.shard, round = job.round,
                      delivered = out.report.delivered, gone = out.report.gone, failed = out.report.failed,
                      unfinished = out.resume_after.is_some(), "fanned out");
                if !out.failed.is_empty() {
                    retry_failed(queue, &job, out.failed).await;
                }
                if let Some(at) = out.resume_after {
                    if let Err(e) = cursors.save_resume_point(&key, &at).await {
                        warn!(error = %e, "could not save where this job stopped; it starts over (pages drop the repeats)");
                    }
                    failed_groups.push(group);
                    hand_back(&mut failures, Duration::ZERO).await;
                }
            }
            Err(e) => {
                // Its own failures, not its receives: those also count the
                // times it waited behind another job of its group.
                let own = cursors.count_failure(&key).await.unwrap_or_else(|e| {
                    warn!(error = %e, "could not count a job's failure; the queue's redrive still bounds it");
                    0
                });
                if own >= MAX_JOB_FAILURES {
                    match queue.dead_letter(&job).await {
                        Ok(()) => {
                            tracing::error!(error = %e, channel = %job.event.channel, seq = job.event.seq, shard = job.shard, failures = own,
                                "fan-out job failed every try: moved to the dead-letter queue; its group goes on (pages catch up when they resubscribe)");
                            continue;
                        }
                        Err(dle) => {
                            warn!(error = %dle, "could not move a failing job to the dead-letter queue; it is tried again")
                        }
                    }
                }
                warn!(error = %e, channel = %job.event.channel, seq = job.event.seq, shard = job.shard, receives, failures = own, "fan-out failed; SQS will redeliver");
                failed_groups.push(group);
                hand_back(&mut failures, failure_backoff(own.max(1), &fanout.config().limits)).await;
            }
        }
    }
    let mut res = SqsBatchResponse::default();
    res.batch_item_failures = failures;
    res
}

/// Queues a retry for just the connections whose posts failed, a bounded
/// number of rounds; after that they count as failed (the metric the
/// template alarms on) and catch up when they next resubscribe. A retry is
/// queued behind the group's later events: the page holds those until the
/// gap fills or it asks again with `since`.
async fn retry_failed<Q: JobQueue>(queue: &Q, job: &Job, failed: Vec<ConnId>) {
    if job.round >= MAX_RETRY_ROUNDS {
        warn!(channel = %job.event.channel, seq = job.event.seq, connections = failed.len(), "posts still failing; giving up on these connections");
        hookcast_core::metrics::global().deliveries(0, 0, failed.len());
        return;
    }
    let retry = Job { only: Some(failed.into_iter().map(|c| c.0).collect()), round: job.round + 1, ..job.clone() };
    if let Err(e) = queue.enqueue(std::slice::from_ref(&retry)).await {
        warn!(error = %e, channel = %job.event.channel, seq = job.event.seq, "could not queue a retry for failed posts");
        hookcast_core::metrics::global().deliveries(0, 0, retry.only.as_ref().map_or(0, Vec::len));
    }
}

/// SQS's limits on one `SendMessageBatch`: 10 entries, 1 MiB of bodies in
/// all (a little kept back for the ids and attributes).
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 1_000_000;

/// Jobs (in order) as `SendMessageBatch` calls: at most 10 entries and 1 MB
/// of bodies each, and no FIFO group twice in one call, so a resend from the
/// first refused entry keeps every group's order. A job too big for any
/// batch is an error: SQS would refuse it every time.
pub fn batches(jobs: &[Job]) -> Result<Vec<Vec<(&Job, String)>>, String> {
    let mut out: Vec<Vec<(&Job, String)>> = Vec::new();
    let mut cur: Vec<(&Job, String)> = Vec::new();
    let mut bytes = 0;
    for j in jobs {
        let body = serde_json::to_string(j).map_err(|e| e.to_string())?;
        if body.len() > BATCH_BYTES {
            return Err(format!(
                "a fan-out job for {} seq {} is {} bytes, over SQS's message limit",
                j.event.channel,
                j.event.seq,
                body.len()
            ));
        }
        let group = j.group_id();
        let full =
            cur.len() == BATCH_ENTRIES || bytes + body.len() > BATCH_BYTES || cur.iter().any(|(c, _)| c.group_id() == group);
        if full {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += body.len();
        cur.push((j, body));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// SQS FIFO through the real SDK.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    /// The queue's dead-letter queue, read from its redrive policy when first needed.
    dead_letters: tokio::sync::OnceCell<String>,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into(), dead_letters: tokio::sync::OnceCell::new() }
    }

    /// The queue's own dead-letter queue: its `RedrivePolicy`'s target
    /// (GetQueueAttributes, then GetQueueUrl). Nothing in the environment:
    /// the stack cannot name it wrongly.
    async fn dead_letter_url(&self) -> Result<&str, String> {
        use aws_sdk_sqs::types::QueueAttributeName;
        self.dead_letters
            .get_or_try_init(|| async {
                let attrs = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await
                    .map_err(|e| format!("GetQueueAttributes: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
                let policy = attrs
                    .attributes()
                    .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
                    .ok_or("the fan-out queue has no redrive policy, so no dead-letter queue")?;
                let arn = serde_json::from_str::<Value>(policy)
                    .ok()
                    .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_owned))
                    .ok_or("the fan-out queue's redrive policy names no deadLetterTargetArn")?;
                // arn:aws:sqs:<region>:<account>:<name>
                let mut parts = arn.rsplitn(3, ':');
                let (name, account) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                let out = self
                    .client
                    .get_queue_url()
                    .queue_name(name)
                    .queue_owner_aws_account_id(account)
                    .send()
                    .await
                    .map_err(|e| format!("GetQueueUrl {name}: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
                out.queue_url.ok_or_else(|| format!("GetQueueUrl {name}: no URL"))
            })
            .await
            .map(String::as_str)
    }
}

impl JobQueue for SqsQueue {
    /// SendMessageBatch by [`batches`], in order; entries SQS refuses are
    /// resent (with their deduplication ids) a few times before giving up.
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), String> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        for chunk in batches(jobs)? {
            let mut pending: Vec<(usize, &(&Job, String))> = chunk.iter().enumerate().collect();
            for attempt in 0..5u32 {
                let entries = pending
                    .iter()
                    .map(|(i, (j, body))| {
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
                // were taken are dropped as duplicates, and (no group being
                // twice in one call) every group's order holds.
                let Some(first) = res.failed().iter().filter_map(|f| f.id().parse::<usize>().ok()).min() else {
                    pending.clear();
                    break;
                };
                pending.retain(|(i, _)| *i >= first);
                crate::backoff_sleep(attempt, Duration::from_millis(50), Duration::from_secs(1)).await;
            }
            if !pending.is_empty() {
                return Err(format!("SQS refused {} of {} messages", pending.len(), chunk.len()));
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, job: &Job) -> Result<(), String> {
        let url = self.dead_letter_url().await?;
        let body = serde_json::to_string(job).map_err(|e| e.to_string())?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .message_group_id(job.group_id())
            .message_deduplication_id(job.dedupe_id())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("SendMessage (dead letters): {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
    }

    async fn hold(&self, receipt_handle: &str, after: Duration) -> Result<(), String> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(after.as_secs().min(43_200) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("ChangeMessageVisibility: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(channel: &str, seq: u64, shard: u32, bytes: usize) -> Job {
        Job {
            event: Event {
                channel: hookcast_core::Channel::parse(channel).unwrap(),
                seq,
                event: hookcast_core::EventName::parse("e").unwrap(),
                data: serde_json::json!({ "pad": "x".repeat(bytes) }),
                at: "t".into(),
            },
            shard,
            only: None,
            round: 0,
        }
    }

    /// SQS's batch limits hold (10 entries, 1 MB of bodies), no group is
    /// twice in one call, and the jobs keep their order across calls.
    #[test]
    fn send_batches_respect_sqs_limits_and_group_order() {
        let mut jobs = Vec::new();
        for seq in 1..=3 {
            for shard in 0..8 {
                jobs.push(job("a", seq, shard, 10));
            }
        }
        jobs.extend((4..=9).map(|seq| job("big", seq, 0, 300_000)));
        let got = batches(&jobs).unwrap();
        for b in &got {
            assert!(b.len() <= 10);
            assert!(b.iter().map(|(_, body)| body.len()).sum::<usize>() <= 1_000_000);
            let mut groups: Vec<String> = b.iter().map(|(j, _)| j.group_id()).collect();
            groups.sort();
            groups.dedup();
            assert_eq!(groups.len(), b.len(), "a group twice in one call");
        }
        let flat: Vec<&Job> = got.iter().flatten().map(|(j, _)| *j).collect();
        assert_eq!(flat, jobs.iter().collect::<Vec<_>>(), "every job once, in order");
        // 8 shards a call for 3 events; the first 300 KB job joins the third
        // call (another group), the other five go one a call (one group).
        assert_eq!(got.len(), 3 + 5);
        let too_big = [job("x", 1, 0, 1_100_000)];
        assert!(batches(&too_big).unwrap_err().contains("over SQS's message limit"));
    }

    #[test]
    fn a_failing_job_comes_back_in_seconds_not_the_queue_timeout() {
        let limits = hookcast_core::config::Limits::default();
        let secs: Vec<u64> = (1..=8).map(|n| failure_backoff(n, &limits).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 120, 120, 120]);
        assert_eq!(failure_backoff(40, &limits).as_secs(), 120, "no overflow past the cap");
    }
}
