//! The unit of fan-out work, encoded once where it is made: the event's
//! frame travels as the bytes a page receives, so no hop serialises the
//! payload again.

use std::future::Future;
use std::time::{Duration, Instant};

use hookcast_core::ports::ConnId;
use hookcast_core::protocol::{Event, ServerMsg};
use hookcast_core::Channel;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Fan-out retries for connections whose posts failed, after the first try.
pub const MAX_RETRY_ROUNDS: u32 = 3;

/// A job that failed this many times itself (its subscribers could not be
/// read) goes to the dead-letter queue: with [`super::failure_backoff`],
/// about half an hour of trying.
pub const MAX_JOB_FAILURES: u32 = 20;

/// What can go wrong on the pipeline's way, by where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// A stream record that should be an event does not decode.
    #[error(transparent)]
    Decode(#[from] crate::event_item::DecodeError),
    /// A job SQS would refuse every time (too big).
    #[error("{0}")]
    Job(String),
    /// The queue refused or failed.
    #[error("{0}")]
    Queue(String),
    /// The table holding cursors and failure counts failed.
    #[error("{0}")]
    Cursor(String),
    /// The table failed to give a commit's events back.
    #[error("{0}")]
    Store(String),
}

/// A fan-out worker's time: no post starts at or after `until`, and a page
/// of subscribers is no longer than `posts_per_second` can reach before it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub until: Instant,
    pub posts_per_second: Option<u32>,
}

impl Budget {
    /// Subscribers worth reading now: what the rate reaches in the time left.
    pub(super) fn page(&self) -> Option<usize> {
        let left = self.until.saturating_duration_since(Instant::now()).as_secs_f64();
        self.posts_per_second.map(|r| ((f64::from(r) * left).ceil() as usize).max(1))
    }
}

/// One event's frame in a job: its seq, and the frame a page receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub seq: u64,
    pub frame: String,
}

/// A job's frames at most, as JSON inside its message (a frame bigger than
/// this travels alone): well inside SQS's 1 MiB message, and few 64 KB
/// billing chunks.
pub const JOB_FRAME_BYTES: usize = 240 * 1024;

/// One unit of fan-out work: the events of one commit (or a part of it, in
/// seq order) to one shard of their channel's subscribers. Each frame is
/// the event as a page receives it, encoded once where the job is made.
/// A busy channel commits many events at once: one job carries them all,
/// so the queue and the workers see one message per commit and shard, not
/// one per event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub channel: Channel,
    pub shard: u32,
    pub frames: Vec<Frame>,
    /// A retry for just these connections (their posts failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    #[serde(default)]
    pub round: u32,
}

/// A job as the queue holds it: today's form, or the one before (one whole
/// event), so jobs queued before an upgrade still go out after it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Frames {
        channel: Channel,
        shard: u32,
        frames: Vec<Frame>,
        #[serde(default)]
        only: Option<Vec<String>>,
        #[serde(default)]
        round: u32,
    },
    Whole {
        event: Event,
        shard: u32,
        #[serde(default)]
        only: Option<Vec<String>>,
        #[serde(default)]
        round: u32,
    },
}

impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Frames { channel, shard, frames, only, round } => {
                if frames.is_empty() {
                    return Err(serde::de::Error::custom("a job without frames"));
                }
                Job { channel, shard, frames, only, round }
            }
            Wire::Whole { event, shard, only, round } => {
                let (channel, seq) = (event.channel.clone(), event.seq);
                let frames = vec![Frame { seq, frame: ServerMsg::Event(event).to_json() }];
                Job { channel, shard, frames, only, round }
            }
        })
    }
}

impl Job {
    /// The jobs of one commit's events (one channel's, in seq order): the
    /// frames cut into runs of at most [`JOB_FRAME_BYTES`], each run a job
    /// for every shard, sharing one encoding of each frame. Deterministic:
    /// the commit's fast path and the stream's backstop make the same jobs
    /// from the same events, so SQS drops the second copy by its id.
    pub fn for_commit(events: &[Event], shards: u32) -> Vec<Job> {
        let Some(first) = events.first() else { return vec![] };
        let mut runs: Vec<Vec<Frame>> = vec![];
        let mut bytes = 0;
        for e in events {
            debug_assert_eq!(e.channel, first.channel);
            let frame = ServerMsg::Event(e.clone()).to_json();
            // As the message holds it: a JSON string, escapes and all.
            let size = serde_json::to_string(&frame).map_or(frame.len(), |s| s.len()) + 16;
            if runs.is_empty() || bytes + size > JOB_FRAME_BYTES {
                runs.push(vec![]);
                bytes = 0;
            }
            bytes += size;
            runs.last_mut().expect("a run").push(Frame { seq: e.seq, frame });
        }
        runs.into_iter()
            .flat_map(|frames| {
                (0..shards).map(move |shard| Job {
                    channel: first.channel.clone(),
                    shard,
                    frames: frames.clone(),
                    only: None,
                    round: 0,
                })
            })
            .collect()
    }
    /// One event's jobs (a commit of one).
    pub fn for_event(event: &Event, shards: u32) -> Vec<Job> {
        Self::for_commit(std::slice::from_ref(event), shards)
    }
    pub fn first_seq(&self) -> u64 {
        self.frames.first().map_or(0, |f| f.seq)
    }
    pub fn last_seq(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.seq)
    }
    /// SQS FIFO's ordering unit (at most 128 characters).
    pub fn group_id(&self) -> String {
        let g = format!("{}#{}", self.channel, self.shard);
        if g.len() <= 128 {
            g
        } else {
            hex::encode(sha2::Sha256::digest(g.as_bytes()))
        }
    }
    /// Stable per (channel, seqs, shard, round, connections): the same job sent again
    /// within 5 minutes (the commit's fast path and the stream's backstop,
    /// a redriven stream batch) is dropped by SQS.
    /// A retry's connections are part of it: two retries of one job's frames
    /// for different connections (a job resumed past its budget fails some
    /// in each part) are both kept.
    pub fn dedupe_id(&self) -> String {
        let mut raw = format!("{}#{}-{}#{}#{}", self.channel, self.first_seq(), self.last_seq(), self.shard, self.round);
        if let Some(only) = &self.only {
            raw.push('#');
            raw.push_str(&only.join(","));
        }
        hex::encode(sha2::Sha256::digest(raw.as_bytes()))
    }
}

/// Where jobs go: an SQS FIFO queue on AWS.
pub trait JobQueue: Send + Sync {
    /// All or nothing from the caller's view: `Err` means retry them all
    /// (deduplication ids make a partial resend harmless).
    fn enqueue(&self, jobs: &[Job]) -> impl Future<Output = Result<(), PipelineError>> + Send;
    /// A message handed back to the queue comes back after `after`
    /// (`ChangeMessageVisibility`), not after the queue's whole visibility
    /// timeout.
    fn hold(&self, receipt_handle: &str, after: Duration) -> impl Future<Output = Result<(), PipelineError>> + Send;
    /// Moves a job that failed [`MAX_JOB_FAILURES`] times to the dead-letter queue.
    fn dead_letter(&self, job: &Job) -> impl Future<Output = Result<(), PipelineError>> + Send;
}

/// Where a job that stopped at its time budget resumes when SQS delivers it
/// again (DynamoDB on AWS: a small item per unfinished job, with a TTL).
pub trait Cursors: Send + Sync {
    fn resume_point(&self, job: &str) -> impl Future<Output = Result<Option<ConnId>, PipelineError>> + Send;
    fn save_resume_point(&self, job: &str, after: &ConnId) -> impl Future<Output = Result<(), PipelineError>> + Send;
    /// Counts one failure of the job itself; how many it has had.
    fn count_failure(&self, job: &str) -> impl Future<Output = Result<u32, PipelineError>> + Send;
}
