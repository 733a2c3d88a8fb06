//! A job → posts: one SQS FIFO batch, in order, within the worker's budget.

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use hookcast_core::fanout::{Fanout, ShardRun};
use hookcast_core::ports::{ConnId, Gateway, Subscriptions};
use tracing::{info, warn};

use super::{Budget, Cursors, Job, JobQueue, MAX_JOB_FAILURES, MAX_RETRY_ROUNDS};

/// How long a job whose subscribers could not be read waits before its next
/// try, after its `failures`th failure: `base` (5 s by default), doubling, at
/// most `max` (2 minutes; the queue's own visibility timeout is the whole
/// function timeout's six times over). `[limits]` `fanout_retry_base_secs`
/// and `fanout_retry_max_secs`.
pub fn failure_backoff(failures: u32, limits: &hookcast_core::config::Limits) -> Duration {
    (limits.fanout_retry_base * (1u32 << failures.saturating_sub(1).min(16))).min(limits.fanout_retry_max)
}

/// The fan-out worker: one SQS FIFO batch within a time budget (the caller
/// keeps a reserve before the function's deadline). The batch's FIFO groups
/// (channel and shard) run side by side, sharing the instance's posting
/// rate; each group's jobs run in order.
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
    // The batch's messages by group, each group's in the batch's order.
    let mut groups: Vec<(String, Vec<Received>)> = Vec::new();
    for msg in &batch.records {
        let id = msg.message_id.clone().unwrap_or_default();
        let job: Job = match msg.body.as_deref().map(serde_json::from_str) {
            Some(Ok(j)) => j,
            // A body we did not write cannot succeed later: drop it, loudly.
            _ => {
                warn!(message_id = %id, "fan-out message is not a job; dropped");
                continue;
            }
        };
        let received = Received {
            id,
            receipt: msg.receipt_handle.clone().unwrap_or_default(),
            receives: msg.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1),
            job,
        };
        let group = received.job.group_id();
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, list)) => list.push(received),
            None => groups.push((group, vec![received])),
        }
    }
    let runs = groups.iter().map(|(_, list)| run_group(fanout, cursors, queue, list, budget));
    let failures: Vec<BatchItemFailure> = futures::future::join_all(runs).await.into_iter().flatten().collect();
    let mut res = SqsBatchResponse::default();
    res.batch_item_failures = failures;
    res
}

/// One message of a batch, read.
struct Received {
    id: String,
    receipt: String,
    receives: u32,
    job: Job,
}

/// One FIFO group's jobs, in order; the messages to hand back.
async fn run_group<S: Subscriptions, C: Cursors, G: Gateway, Q: JobQueue>(
    fanout: &Fanout<S, G>,
    cursors: &C,
    queue: &Q,
    list: &[Received],
    budget: Option<Budget>,
) -> Vec<BatchItemFailure> {
    let mut failures = Vec::new();
    let hand_back = |failures: &mut Vec<BatchItemFailure>, m: &Received, after: Duration| {
        let mut f = BatchItemFailure::default();
        f.item_identifier = m.id.clone();
        failures.push(f);
        let receipt = m.receipt.clone();
        async move {
            if let Err(e) = queue.hold(&receipt, after).await {
                warn!(error = %e, "could not shorten a handed-back message's visibility; it returns after the queue's timeout");
            }
        }
    };
    let mut stopped = false;
    for (k, m) in list.iter().enumerate() {
        let job = &m.job;
        // The group's first job always starts (every batch makes progress).
        if stopped || (k > 0 && budget.is_some_and(|b| Instant::now() >= b.until)) {
            hand_back(&mut failures, m, Duration::ZERO).await;
            stopped = true;
            continue;
        }
        let key = job.dedupe_id();
        let after = if m.receives > 1 && job.only.is_none() {
            cursors.resume_point(&key).await.unwrap_or_else(|e| {
                warn!(error = %e, "could not read where this job stopped; it starts over (pages drop the repeats)");
                None
            })
        } else {
            None
        };
        let only: Option<Vec<ConnId>> = job.only.as_ref().map(|l| l.iter().cloned().map(ConnId).collect());
        let frames: Vec<&str> = job.frames.iter().map(|f| f.frame.as_str()).collect();
        // Subscribers worth reading now: what the rate reaches in the time
        // left, each taking every frame.
        let page = budget.and_then(|b| b.page()).map(|p| (p / frames.len().max(1)).max(1));
        let run = ShardRun { only: only.as_deref(), after, budget: budget.map(|b| b.until), page };
        match fanout.fan_out_shard(&job.channel, &frames, job.shard, run).await {
            Ok(out) => {
                info!(channel = %job.channel, seq = job.first_seq(), last = job.last_seq(), shard = job.shard, round = job.round,
                      delivered = out.report.delivered, gone = out.report.gone, failed = out.report.failed,
                      unfinished = out.resume_after.is_some(), "fanned out");
                if !out.failed.is_empty() {
                    retry_failed(queue, job, out.failed).await;
                }
                if let Some(at) = out.resume_after {
                    if let Err(e) = cursors.save_resume_point(&key, &at).await {
                        warn!(error = %e, "could not save where this job stopped; it starts over (pages drop the repeats)");
                    }
                    stopped = true;
                    hand_back(&mut failures, m, Duration::ZERO).await;
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
                    match queue.dead_letter(job).await {
                        Ok(()) => {
                            tracing::error!(error = %e, channel = %job.channel, seq = job.first_seq(), shard = job.shard, failures = own,
                                "fan-out job failed every try: moved to the dead-letter queue; its group goes on (pages catch up when they resubscribe)");
                            continue;
                        }
                        Err(dle) => {
                            warn!(error = %dle, "could not move a failing job to the dead-letter queue; it is tried again")
                        }
                    }
                }
                warn!(error = %e, channel = %job.channel, seq = job.first_seq(), shard = job.shard, receives = m.receives, failures = own, "fan-out failed; SQS will redeliver");
                stopped = true;
                hand_back(&mut failures, m, failure_backoff(own.max(1), &fanout.config().limits)).await;
            }
        }
    }
    failures
}

/// Queues a retry for just the connections whose posts failed, each from
/// the first frame it lacks (one retry job per such frame, so none is sent
/// a frame twice), a bounded number of rounds; after that
/// they count as failed (the metric the template alarms on) and catch up
/// when they next resubscribe. A retry is queued behind the group's later
/// events: the page holds those until the gap fills or it asks again with
/// `since`.
async fn retry_failed<Q: JobQueue>(queue: &Q, job: &Job, failed: Vec<(ConnId, usize)>) {
    if job.round >= MAX_RETRY_ROUNDS {
        warn!(channel = %job.channel, seq = job.first_seq(), connections = failed.len(), "posts still failing; giving up on these connections");
        hookcast_core::metrics::global().deliveries(0, 0, failed.len());
        return;
    }
    let retries = retry_jobs(job, failed);
    if let Err(e) = queue.enqueue(&retries).await {
        warn!(error = %e, channel = %job.channel, seq = job.first_seq(), "could not queue a retry for failed posts");
        hookcast_core::metrics::global().deliveries(0, 0, retries.iter().map(|r| r.only.as_ref().map_or(0, Vec::len)).sum());
    }
}

/// The retries for `failed` connections of `job`: one job per first frame
/// lacked, for just the connections that lack it, in frame order.
fn retry_jobs(job: &Job, failed: Vec<(ConnId, usize)>) -> Vec<Job> {
    let mut by_frame: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for (c, at) in failed {
        by_frame.entry(at.min(job.frames.len() - 1)).or_default().push(c.0);
    }
    by_frame
        .into_iter()
        .map(|(at, only)| Job { only: Some(only), round: job.round + 1, frames: job.frames[at..].to_vec(), ..job.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections that failed at different frames are retried each from
    /// the frame it lacks: none is sent a frame it already has.
    #[test]
    fn each_failed_connection_is_retried_from_the_first_frame_it_lacks() {
        use hookcast_core::channel::EventName;
        let events: Vec<hookcast_core::protocol::Event> = (1..=3)
            .map(|seq| hookcast_core::protocol::Event {
                channel: hookcast_core::Channel::parse("busy").unwrap(),
                seq,
                event: EventName::parse("e").unwrap(),
                data: serde_json::json!({}),
                at: "t".into(),
            })
            .collect();
        let job = Job::for_commit(&events, 1).remove(0);
        let c = |s: &str| ConnId(s.into());
        let retries = retry_jobs(&job, vec![(c("a"), 0), (c("b"), 2), (c("c"), 0)]);
        let got: Vec<(Vec<String>, Vec<u64>, u32)> =
            retries.iter().map(|r| (r.only.clone().unwrap(), r.frames.iter().map(|f| f.seq).collect(), r.round)).collect();
        assert_eq!(got, vec![(vec!["a".to_owned(), "c".to_owned()], vec![1, 2, 3], 1), (vec!["b".to_owned()], vec![3], 1)]);
        assert_ne!(retries[0].dedupe_id(), retries[1].dedupe_id(), "SQS keeps both");
    }

    #[test]
    fn a_failing_job_comes_back_in_seconds_not_the_queue_timeout() {
        let limits = hookcast_core::config::Limits::default();
        let secs: Vec<u64> = (1..=8).map(|n| failure_backoff(n, &limits).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 120, 120, 120]);
        assert_eq!(failure_backoff(40, &limits).as_secs(), 120, "no overflow past the cap");
    }
}
