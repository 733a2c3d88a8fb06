//! The fan-out pipeline on AWS:
//!
//! ```text
//! webhook ─commit (commit.rs)─▶ table
//!   └─ fast path: the committer enqueues the commit's jobs itself
//! table ─stream (new event items)─▶ dispatch: the same jobs (the backstop;
//!   SQS FIFO drops the copies by their deduplication ids)
//!   SendMessageBatch ─▶ SQS FIFO, one message per (commit, shard),
//!            MessageGroupId = channel#shard
//!   SQS FIFO ─▶ fanout workers: page the shard's subscribers, post each
//!            frame in order, drop 410s
//! ```
//!
//! Order: a channel's commits are made one at a time under its lease, and
//! the committer enqueues each commit's jobs before it commits the next, so
//! each group's jobs are queued in seq order. The backstop's copies follow
//! later (dropped as duplicates, or past SQS's 5-minute window, dropped by
//! the page as seqs it has). DynamoDB Streams promises order per item
//! only; the dispatcher sorts each batch's commits by seq. SQS FIFO then
//! delivers a group's jobs one batch at a time and in the order sent, across
//! every worker instance. A page that still sees a seq ahead of the next
//! one it needs holds it and asks again with `since` (the snippet's gap
//! repair), so every page shows a channel's events once and in order
//! whatever arrives.
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

//! Rooms: [`job`] (the unit of work and its wire form), [`dispatch`] (stream
//! records and commits → jobs), [`worker`] (a batch's jobs → posts, within a
//! budget), [`share`] (the workers posting divide the fan-out's share),
//! [`sqs`] (the FIFO queue through the SDK).

mod dispatch;
mod job;
mod share;
mod sqs;
mod worker;

pub use dispatch::{dispatch, event_of_record, jobs_for};
pub use job::{Budget, Cursors, Frame, Job, JobQueue, PipelineError, JOB_FRAME_BYTES, MAX_JOB_FAILURES, MAX_RETRY_ROUNDS};
pub use share::Share;
pub use sqs::{batches, SqsQueue};
pub use worker::{failure_backoff, fan_out_batch};
