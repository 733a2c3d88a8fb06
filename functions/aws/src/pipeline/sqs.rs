//! The fan-out queue through the real SDK: SQS FIFO's batch limits and
//! group order kept, refused entries resent, the dead-letter queue found
//! from the queue's own redrive policy.

use std::time::Duration;

use serde_json::Value;

use super::{Job, JobQueue, PipelineError};

/// SQS's limits on one `SendMessageBatch`: 10 entries, 1 MiB of bodies in
/// all (a little kept back for the ids and attributes).
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 1_000_000;

/// Jobs (in order) as `SendMessageBatch` calls: at most 10 entries and 1 MB
/// of bodies each, and no FIFO group twice in one call, so a resend from the
/// first refused entry keeps every group's order. A job too big for any
/// batch is an error: SQS would refuse it every time.
pub fn batches(jobs: &[Job]) -> Result<Vec<Vec<(&Job, String)>>, PipelineError> {
    let mut out: Vec<Vec<(&Job, String)>> = Vec::new();
    let mut cur: Vec<(&Job, String)> = Vec::new();
    let mut bytes = 0;
    for j in jobs {
        let body = serde_json::to_string(j).map_err(|e| PipelineError::Job(e.to_string()))?;
        if body.len() > BATCH_BYTES {
            return Err(PipelineError::Job(format!(
                "a fan-out job for {} seq {} is {} bytes, over SQS's message limit",
                j.channel,
                j.first_seq(),
                body.len()
            )));
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
    async fn dead_letter_url(&self) -> Result<&str, PipelineError> {
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
            .map_err(PipelineError::Queue)
    }
}

impl JobQueue for SqsQueue {
    /// SendMessageBatch by [`batches`], in order; entries SQS refuses are
    /// resent (with their deduplication ids) a few times before giving up.
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), PipelineError> {
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
                            .map_err(|e| PipelineError::Job(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, PipelineError>>()?;
                let res = self.client.send_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await.map_err(
                    |e| PipelineError::Queue(format!("SendMessageBatch: {}", aws_sdk_sqs::error::DisplayErrorContext(&e))),
                )?;
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
                return Err(PipelineError::Queue(format!("SQS refused {} of {} messages", pending.len(), chunk.len())));
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, job: &Job) -> Result<(), PipelineError> {
        let url = self.dead_letter_url().await?;
        let body = serde_json::to_string(job).map_err(|e| PipelineError::Job(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .message_group_id(job.group_id())
            .message_deduplication_id(job.dedupe_id())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                PipelineError::Queue(format!("SendMessage (dead letters): {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
            })
    }

    async fn hold(&self, receipt_handle: &str, after: Duration) -> Result<(), PipelineError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(after.as_secs().min(43_200) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                PipelineError::Queue(format!("ChangeMessageVisibility: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookcast_core::protocol::Event;

    fn job(channel: &str, seq: u64, shard: u32, bytes: usize) -> Job {
        let event = Event {
            channel: hookcast_core::Channel::parse(channel).unwrap(),
            seq,
            event: hookcast_core::EventName::parse("e").unwrap(),
            data: serde_json::json!({ "pad": "x".repeat(bytes) }),
            at: "t".into(),
        };
        let mut j = Job::for_event(&event, shard + 1).pop().unwrap();
        j.shard = shard;
        j
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
        assert!(batches(&too_big).unwrap_err().to_string().contains("over SQS's message limit"));
    }
}
