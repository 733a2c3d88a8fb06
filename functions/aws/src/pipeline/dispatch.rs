//! Events → jobs: from a commit (the fast path: the webhook function
//! enqueues its commit's jobs itself, without waiting for the stream's
//! poll), and from the table's stream (the backstop). Both make the same
//! jobs from the same commit ([`Job::for_commit`]): each event item records
//! the seqs committed with it, and the dispatcher reads any of them its
//! stream batch lacks, so SQS drops the backstop's copy of a job the fast
//! path already queued.

use std::collections::BTreeMap;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use hookcast_core::ports::EventLog;
use hookcast_core::protocol::Event;

use super::{Job, JobQueue, PipelineError};

/// The logged event an INSERT of an event item carries, if this record is
/// one, decoded by the event item's own codec ([`crate::event_item`]): the
/// same rules as a history query. An event item that does not decode is an
/// acknowledged event that would never be pushed: an error, never a skip.
pub fn event_of_record(rec: &aws_lambda_events::dynamodb::EventRecord) -> Result<Option<Event>, PipelineError> {
    Ok(committed_event_of_record(rec)?.map(|(e, _)| e))
}

/// The first and last seq of one commit.
type Commit = (u64, u64);

/// The event, and the seqs committed with it (itself alone for an item
/// that does not say).
fn committed_event_of_record(rec: &aws_lambda_events::dynamodb::EventRecord) -> Result<Option<(Event, Commit)>, PipelineError> {
    if rec.event_name != "INSERT" {
        return Ok(None);
    }
    let img =
        serde_json::to_value(&rec.change.new_image).map_err(|e| PipelineError::Job(format!("a stream record's image: {e}")))?;
    let Some(item) = crate::event_item::from_stream_image(&img) else { return Ok(None) };
    if !crate::event_item::is_event(&item) {
        return Ok(None); // heads, pending appends, dedupe keys, counters: not events
    }
    let event = crate::event_item::decode(&item)?;
    let commit =
        crate::event_item::commit_of(&item).filter(|(b, e)| (*b..=*e).contains(&event.seq)).unwrap_or((event.seq, event.seq));
    Ok(Some((event, commit)))
}

/// The jobs of one commit's `events` (one channel's), in seq order.
pub fn jobs_for(mut events: Vec<Event>, shards: u32) -> Vec<Job> {
    events.sort_by(|a, b| (a.channel.as_str(), a.seq).cmp(&(b.channel.as_str(), b.seq)));
    let mut jobs = vec![];
    for run in events.chunk_by(|a, b| a.channel == b.channel) {
        jobs.extend(Job::for_commit(run, shards));
    }
    jobs
}

/// The dispatcher: each commit whose event items this stream batch holds
/// becomes its jobs, one per subscriber shard (and per run of frames), the
/// same jobs its fast path made. DynamoDB Streams orders records per item
/// only, and each event is its own item: within a batch, one channel's
/// commits go out in seq order. A commit's events the batch lacks (in an
/// earlier or later batch) are read from `log`. An event item that cannot
/// be read fails the whole batch before anything is queued: Lambda retries
/// it, bisects it down to that record, and then hands the record to the
/// on-failure queue, which alarms.
pub async fn dispatch<Q: JobQueue, L: EventLog>(
    queue: &Q,
    log: &L,
    shards: u32,
    ev: &StreamEvent,
) -> Result<usize, PipelineError> {
    // Commits by (channel, first seq), with the events this batch has of each.
    let mut commits: BTreeMap<(String, u64), (u64, BTreeMap<u64, Event>)> = BTreeMap::new();
    for rec in &ev.records {
        if let Some((event, (first, last))) = committed_event_of_record(rec)? {
            let c = commits.entry((event.channel.as_str().to_owned(), first)).or_insert_with(|| (last, BTreeMap::new()));
            c.0 = c.0.max(last);
            c.1.insert(event.seq, event);
        }
    }
    let mut jobs = vec![];
    for ((_, first), (last, mut have)) in commits {
        if have.len() as u64 != last - first + 1 {
            let channel = have.values().next().map(|e| e.channel.clone()).expect("a commit with an event");
            let read = log
                .read_events(&channel, first - 1, last, (last - first + 1) as usize)
                .await
                .map_err(|e| PipelineError::Store(format!("reading commit {first}..={last} of {channel}: {e}")))?;
            for e in read {
                have.entry(e.seq).or_insert(e);
            }
            // Events past their retention cannot be read: the jobs carry
            // what there is (their ids then differ from the fast path's;
            // a page drops a seq it already has).
        }
        jobs.extend(Job::for_commit(&have.into_values().collect::<Vec<_>>(), shards));
    }
    if !jobs.is_empty() {
        queue.enqueue(&jobs).await?;
    }
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookcast_core::channel::EventName;
    use hookcast_core::config::Limits;
    use hookcast_core::ports::{Pending, Retention};
    use hookcast_core::Channel;
    use serde_json::json;

    #[derive(Default)]
    struct Queued(std::sync::Mutex<Vec<Job>>);
    impl JobQueue for Queued {
        async fn enqueue(&self, jobs: &[Job]) -> Result<(), PipelineError> {
            self.0.lock().unwrap().extend_from_slice(jobs);
            Ok(())
        }
        async fn hold(&self, _: &str, _: std::time::Duration) -> Result<(), PipelineError> {
            unreachable!()
        }
        async fn dead_letter(&self, _: &Job) -> Result<(), PipelineError> {
            unreachable!()
        }
    }

    /// A stream record of an event item as the committer writes it.
    fn record(e: &Event, commit: (u64, u64)) -> serde_json::Value {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        let image: serde_json::Map<_, _> = crate::event_item::encode(e, 1, 2, commit)
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    A::S(s) => json!({ "S": s }),
                    A::N(n) => json!({ "N": n }),
                    other => panic!("{other:?}"),
                };
                (k, v)
            })
            .collect();
        json!({"eventID": "x", "eventName": "INSERT", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
               "dynamodb": {"NewImage": image, "SequenceNumber": "1", "SizeBytes": 1, "StreamViewType": "NEW_IMAGE"}})
    }

    /// A commit of three events whose items reach the dispatcher in two
    /// stream batches (the stream orders per item only): each batch reads
    /// the commit's other events and makes exactly the jobs the fast path
    /// made, so SQS drops both copies by id; the frames are whole and in order.
    #[tokio::test]
    async fn a_commit_split_over_stream_batches_makes_the_fast_paths_jobs() {
        let log = hookcast_testkit::MemLog::new(Retention::from(&Limits::default()));
        let ch = Channel::parse("busy").unwrap();
        let mut events = vec![];
        for n in 1..=3 {
            let p = Pending {
                channel: ch.clone(),
                event: EventName::parse("e").unwrap(),
                data: json!({ "n": n }),
                at: "2026-12-07T10:00:00.000Z".into(),
                at_ms: 1,
                dedupe_keys: vec![],
                event_ms: None,
                state: None,
            };
            match log.append(&p).await.unwrap() {
                hookcast_core::ports::Appended::Stored(e) => events.push(e),
                other => panic!("{other:?}"),
            }
        }
        let fast = Job::for_commit(&events, 2);
        let ids = |jobs: &[Job]| jobs.iter().map(Job::dedupe_id).collect::<Vec<_>>();
        for batch in [vec![&events[1]], vec![&events[2], &events[0]]] {
            let q = Queued::default();
            let ev: StreamEvent =
                serde_json::from_value(json!({"Records": batch.iter().map(|e| record(e, (1, 3))).collect::<Vec<_>>()})).unwrap();
            assert_eq!(dispatch(&q, &log, 2, &ev).await.unwrap(), 2);
            let jobs = q.0.into_inner().unwrap();
            assert_eq!(ids(&jobs), ids(&fast));
            assert_eq!(jobs, fast);
            assert_eq!(jobs[0].frames.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        }
        // An item from before commits were recorded is a commit of itself.
        let q = Queued::default();
        let mut old = record(&events[1], (2, 2));
        old["dynamodb"]["NewImage"].as_object_mut().unwrap().retain(|k, _| k != "cb" && k != "ce");
        let ev: StreamEvent = serde_json::from_value(json!({ "Records": [old] })).unwrap();
        dispatch(&q, &log, 1, &ev).await.unwrap();
        assert_eq!(q.0.into_inner().unwrap(), Job::for_event(&events[1], 1));
    }

    /// Runs are cut at JOB_FRAME_BYTES, in seq order, the same every time.
    #[test]
    fn a_big_commit_is_cut_into_runs_the_same_way_every_time() {
        let ch = Channel::parse("busy").unwrap();
        let big = "x".repeat(100 * 1024);
        let events: Vec<Event> = (1..=7)
            .map(|seq| Event {
                channel: ch.clone(),
                seq,
                event: EventName::parse("e").unwrap(),
                data: json!({ "blob": big }),
                at: "t".into(),
            })
            .collect();
        let a = Job::for_commit(&events, 3);
        assert_eq!(a, Job::for_commit(&events, 3));
        // 100 KiB frames, 240 KiB a run: two per run, four runs, three shards each.
        assert_eq!(a.len(), 4 * 3);
        let runs: Vec<Vec<u64>> = a.iter().filter(|j| j.shard == 0).map(|j| j.frames.iter().map(|f| f.seq).collect()).collect();
        assert_eq!(runs, vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![7]]);
        for j in &a {
            let body = serde_json::to_string(j).unwrap();
            assert!(body.len() < super::super::JOB_FRAME_BYTES + 4096, "{} bytes", body.len());
            assert_eq!(serde_json::from_str::<Job>(&body).unwrap(), *j);
        }
        let distinct: std::collections::BTreeSet<_> = a.iter().map(Job::dedupe_id).collect();
        assert_eq!(distinct.len(), a.len());
    }
}
