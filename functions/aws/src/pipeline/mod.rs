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

//! Rooms: [`job`] (the unit of work and its wire form), [`dispatch`] (stream
//! records and commits → jobs), [`worker`] (a job → posts, within a budget),
//! [`sqs`] (the FIFO queue through the SDK).

mod dispatch;
mod job;
mod sqs;
mod worker;

pub use dispatch::{dispatch, event_of_record, jobs_for};
pub use job::{Budget, Cursors, Job, JobQueue, PipelineError, MAX_JOB_FAILURES, MAX_RETRY_ROUNDS};
pub use sqs::{batches, SqsQueue};
pub use worker::{failure_backoff, fan_out_batch};
