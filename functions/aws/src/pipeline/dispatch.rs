//! Events → jobs: from the table's stream (the backstop), and from a
//! commit (the fast path: the webhook function enqueues its commit's jobs
//! itself, without waiting for the stream's poll).

use aws_lambda_events::dynamodb::Event as StreamEvent;
use hookcast_core::protocol::Event;

use super::{Job, JobQueue, PipelineError};

/// The logged event an INSERT of an event item carries, if this record is
/// one, decoded by the event item's own codec ([`crate::event_item`]): the
/// same rules as a history query. An event item that does not decode is an
/// acknowledged event that would never be pushed: an error, never a skip.
pub fn event_of_record(rec: &aws_lambda_events::dynamodb::EventRecord) -> Result<Option<Event>, PipelineError> {
    if rec.event_name != "INSERT" {
        return Ok(None);
    }
    let img =
        serde_json::to_value(&rec.change.new_image).map_err(|e| PipelineError::Job(format!("a stream record's image: {e}")))?;
    let Some(item) = crate::event_item::from_stream_image(&img) else { return Ok(None) };
    if !crate::event_item::is_event(&item) {
        return Ok(None); // heads, pending appends, dedupe keys, counters: not events
    }
    Ok(Some(crate::event_item::decode(&item)?))
}

/// The jobs of `events`, one per (event, shard), each channel's in seq order.
pub fn jobs_for(mut events: Vec<Event>, shards: u32) -> Vec<Job> {
    events.sort_by(|a, b| (a.channel.as_str(), a.seq).cmp(&(b.channel.as_str(), b.seq)));
    events.iter().flat_map(|e| Job::for_event(e, shards)).collect()
}

/// The dispatcher: each new event item becomes one job per subscriber shard.
/// DynamoDB Streams orders records per item only, and each event is its own
/// item: within a batch, one channel's events go out in seq order. An event
/// item that cannot be read fails the whole batch before anything is queued:
/// Lambda retries it, bisects it down to that record, and then hands the
/// record to the on-failure queue, which alarms.
pub async fn dispatch<Q: JobQueue>(queue: &Q, shards: u32, ev: &StreamEvent) -> Result<usize, PipelineError> {
    let mut events = Vec::new();
    for rec in &ev.records {
        if let Some(event) = event_of_record(rec)? {
            events.push(event);
        }
    }
    let jobs = jobs_for(events, shards);
    if !jobs.is_empty() {
        queue.enqueue(&jobs).await?;
    }
    Ok(jobs.len())
}
