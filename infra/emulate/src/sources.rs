//! Event sources as Lambda polls them. A DynamoDB stream: each shard read
//! in order from its checkpoint at most four times a second, up to 1,000
//! records a read, records that fail the filter criteria dropped (never
//! invoked), batches of at most `BatchSize`, one batch in flight per shard; a
//! failing batch is bisected (if asked), retried up to
//! `MaximumRetryAttempts`, then described to the on-failure destination and
//! passed. An SQS queue: up to `MaximumConcurrency` pollers, batches of
//! `BatchSize`, partial batch responses; what is not deleted comes back
//! after the visibility timeout, and the queue's redrive policy moves it to
//! the dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Value};

use crate::aws::Aws;
use crate::runtime::Function;

#[derive(Clone, Debug)]
pub struct StreamSource {
    pub stream_arn: String,
    pub trim_horizon: bool,
    pub batch_size: usize,
    pub bisect: bool,
    /// -1: until the records expire.
    pub max_retries: i64,
    /// The on-failure destination (an SQS queue URL).
    pub on_failure: Option<String>,
    pub filters: Vec<Value>,
    pub report_item_failures: bool,
    /// `MaximumBatchingWindowInSeconds`: how long records gather before a
    /// batch goes out short of `BatchSize`.
    pub batching_window: Duration,
    /// `MaximumRecordAgeInSeconds`: older records are not sent to the
    /// function but to the on-failure destination (-1: no limit).
    pub max_record_age: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct QueueSource {
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: usize,
    pub report_item_failures: bool,
    pub max_concurrency: usize,
    /// `MaximumBatchingWindowInSeconds`: how long a poller gathers messages
    /// before a batch goes out short of `BatchSize`.
    pub batching_window: Duration,
    /// The queue's visibility timeout: a throttled batch is retried until
    /// it runs out ("Lambda continues to retry the message until the
    /// message's timestamp exceeds your queue's visibility timeout").
    pub visibility: Duration,
}

/// How a throttled invocation is retried by an event source: backing off,
/// as Lambda does ("Lambda gradually backs off retries").
fn throttle_backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// A filter pattern that uses what [`matches`] does not model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("an empty filter rule")]
    EmptyRule,
    #[error("the filter rule {0:?} is not modelled by hookcast emulate")]
    Rule(String),
    #[error("a filter pattern value must be a list or a mapping, not {0}")]
    Value(Value),
}

/// Checks a filter pattern uses only what [`matches`] models.
pub fn check_pattern(p: &Value) -> Result<(), PatternError> {
    match p {
        Value::Object(m) => m.values().try_for_each(check_pattern),
        Value::Array(a) => a.iter().try_for_each(|x| match x {
            Value::Object(o) => {
                let (k, _) = o.iter().next().ok_or(PatternError::EmptyRule)?;
                if ["prefix", "exists", "anything-but"].contains(&k.as_str()) {
                    Ok(())
                } else {
                    Err(PatternError::Rule(k.clone()))
                }
            }
            _ => Ok(()),
        }),
        _ => Err(PatternError::Value(p.clone())),
    }
}

/// EventBridge-style pattern matching, as Lambda's filter criteria do it.
pub fn matches(pattern: &Value, v: &Value) -> bool {
    match pattern {
        Value::Object(m) => m.iter().all(|(k, p)| {
            let field = v.get(k).unwrap_or(&Value::Null);
            match p {
                Value::Object(_) => field.is_object() && matches(p, field),
                Value::Array(rules) => rules.iter().any(|r| rule(r, v.get(k))),
                _ => false,
            }
        }),
        _ => false,
    }
}

fn rule(r: &Value, field: Option<&Value>) -> bool {
    match r {
        Value::Object(o) => match o.iter().next() {
            Some((k, arg)) if k == "prefix" => {
                field.and_then(Value::as_str).zip(arg.as_str()).is_some_and(|(f, p)| f.starts_with(p))
            }
            Some((k, arg)) if k == "exists" => arg.as_bool() == Some(field.is_some()),
            Some((k, arg)) if k == "anything-but" => {
                let list = arg.as_array().cloned().unwrap_or_else(|| vec![arg.clone()]);
                field.is_some_and(|f| !list.contains(f))
            }
            _ => false,
        },
        scalar => field.is_some_and(|f| f == scalar),
    }
}

/// Polls one stream for one function until the task is dropped.
pub async fn poll_stream(aws: Aws, src: StreamSource, function: Arc<Function>) {
    let mut shards_seen: Vec<String> = vec![];
    // Dropped with this future: the shard pollers stop with the stack.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        match aws.streams("DescribeStream", json!({"StreamArn": src.stream_arn})).await {
            Ok(d) => {
                for s in d["StreamDescription"]["Shards"].as_array().into_iter().flatten() {
                    let id = s["ShardId"].as_str().unwrap_or_default().to_owned();
                    if !id.is_empty() && !shards_seen.contains(&id) {
                        shards_seen.push(id.clone());
                        tasks.spawn(poll_shard(aws.clone(), src.clone(), function.clone(), id));
                    }
                }
            }
            Err(e) => tracing::warn!(stream = %src.stream_arn, error = %e, "DescribeStream failed"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Lambda's polling rate per stream shard.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// DynamoDB Streams' GetRecords maximum.
const GET_RECORDS_LIMIT: u32 = 1000;

async fn poll_shard(aws: Aws, src: StreamSource, function: Arc<Function>, shard: String) {
    let kind = if src.trim_horizon { "TRIM_HORIZON" } else { "LATEST" };
    let mut iterator: Option<String> = None;
    let mut polled: Option<tokio::time::Instant> = None;
    // Records gathering for the batching window, and since when.
    let mut pending: Vec<Value> = vec![];
    let mut gathering: Option<tokio::time::Instant> = None;
    loop {
        // Lambda polls each shard at most four times a second, whatever it found.
        if let Some(at) = polled {
            tokio::time::sleep_until(at + POLL_EVERY).await;
        }
        polled = Some(tokio::time::Instant::now());
        if iterator.is_none() {
            match aws
                .streams("GetShardIterator", json!({"StreamArn": src.stream_arn, "ShardId": shard, "ShardIteratorType": kind}))
                .await
            {
                Ok(v) => iterator = v["ShardIterator"].as_str().map(str::to_owned),
                Err(e) => {
                    tracing::warn!(%shard, error = %e, "GetShardIterator failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(it) = iterator.clone() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // As Lambda's poller: a read takes up to DynamoDB Streams' 1,000
        // records; those the filters drop never reach the function, and
        // the rest go in batches of BatchSize, in order.
        let got = aws.streams("GetRecords", json!({"ShardIterator": it, "Limit": GET_RECORDS_LIMIT})).await;
        let v = match got {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%shard, error = %e, "GetRecords failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let records: Vec<Value> = v["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                r["eventSourceARN"] = json!(src.stream_arn);
                r
            })
            .filter(|r| src.filters.is_empty() || src.filters.iter().any(|p| matches(p, r)))
            .collect();
        iterator = v["NextShardIterator"].as_str().map(str::to_owned);
        tracing::debug!(%shard, got = v["Records"].as_array().map_or(0, Vec::len), passed = records.len(), "GetRecords");
        if pending.is_empty() && !records.is_empty() {
            gathering = Some(tokio::time::Instant::now());
        }
        pending.extend(records);
        // Full batches go at once; a short one when the batching window has
        // passed (at once without one), or when the shard has closed.
        let window_over = gathering.is_some_and(|g| g.elapsed() >= src.batching_window);
        let ready =
            if window_over || iterator.is_none() { pending.len() } else { pending.len() - pending.len() % src.batch_size.max(1) };
        let out: Vec<Value> = pending.drain(..ready).collect();
        if pending.is_empty() {
            gathering = None;
        }
        for batch in out.chunks(src.batch_size.max(1)) {
            let (fresh, aged) = split_by_age(batch, src.max_record_age);
            if !aged.is_empty() {
                on_failure(&aws, &src, &function, &shard, &aged, 0, "RecordAgeExceeded").await;
            }
            if !fresh.is_empty() {
                Box::pin(deliver(&aws, &src, &function, &shard, fresh)).await;
            }
        }
        if iterator.is_none() {
            // A closed shard: nothing more will come from it.
            return;
        }
    }
}

/// Records within `MaximumRecordAgeInSeconds` of their creation, and those past it.
fn split_by_age(batch: &[Value], max_age: Option<Duration>) -> (Vec<Value>, Vec<Value>) {
    let Some(max_age) = max_age else {
        return (batch.to_vec(), vec![]);
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    batch.iter().cloned().partition(|r| {
        r["dynamodb"]["ApproximateCreationDateTime"].as_f64().is_none_or(|created| now - created <= max_age.as_secs_f64())
    })
}

/// Delivers one batch: bisected on error (if asked), retried, then described
/// to the on-failure destination. Order: the first half is settled first.
async fn deliver(aws: &Aws, src: &StreamSource, function: &Arc<Function>, shard: &str, batch: Vec<Value>) {
    let mut attempts: i64 = 0;
    loop {
        let payload = Bytes::from(json!({ "Records": batch }).to_string());
        tracing::debug!(%shard, records = batch.len(), "stream batch: invoking");
        let mut throttles = 0;
        let out = loop {
            match function.invoke(payload.clone()).await {
                // A throttle is not the function's error: the same batch again, later.
                Err(e) if e.throttled() => {
                    tokio::time::sleep(throttle_backoff(throttles)).await;
                    throttles += 1;
                }
                out => break out,
            }
        };
        tracing::debug!(%shard, ok = out.is_ok(), "stream batch: invoked");
        let failed_from = match &out {
            Ok(body) if src.report_item_failures => {
                // A partial batch response names the first failed sequence number.
                let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                v["batchItemFailures"]
                    .as_array()
                    .and_then(|f| f.first())
                    .and_then(|f| f["itemIdentifier"].as_str())
                    .map(|seq| batch.iter().position(|r| r["dynamodb"]["SequenceNumber"].as_str() == Some(seq)).unwrap_or(0))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(function = %function.spec.logical, error = %e, records = batch.len(), "stream batch failed");
                Some(0)
            }
        };
        let Some(from) = failed_from else { return };
        if from > 0 {
            // Checkpoint past what succeeded; retry the rest.
            Box::pin(deliver(aws, src, function, shard, batch[from..].to_vec())).await;
            return;
        }
        if src.bisect && batch.len() > 1 {
            let right = batch[batch.len() / 2..].to_vec();
            let left = batch[..batch.len() / 2].to_vec();
            Box::pin(deliver(aws, src, function, shard, left)).await;
            Box::pin(deliver(aws, src, function, shard, right)).await;
            return;
        }
        attempts += 1;
        if src.max_retries >= 0 && attempts > src.max_retries {
            on_failure(aws, src, function, shard, &batch, attempts, "RetryAttemptsExhausted").await;
            return;
        }
        let wait = Duration::from_millis((100u64 << attempts.min(6)).min(5_000));
        tokio::time::sleep(wait).await;
    }
}

async fn on_failure(
    aws: &Aws,
    src: &StreamSource,
    function: &Function,
    shard: &str,
    batch: &[Value],
    attempts: i64,
    condition: &str,
) {
    let seq = |r: &Value| r["dynamodb"]["SequenceNumber"].as_str().unwrap_or_default().to_owned();
    let arrival = |r: &Value| r["dynamodb"]["ApproximateCreationDateTime"].clone();
    let record = json!({
        "requestContext": {
            "requestId": format!("{:x}", rand::random::<u64>()),
            "functionArn": function.spec.arn,
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": batch.first().map(seq),
            "endSequenceNumber": batch.last().map(seq),
            "approximateArrivalOfFirstRecord": batch.first().map(arrival),
            "approximateArrivalOfLastRecord": batch.last().map(arrival),
            "batchSize": batch.len(),
            "streamArn": src.stream_arn,
        },
    });
    match &src.on_failure {
        Some(url) => {
            if let Err(e) = aws.sqs("SendMessage", json!({"QueueUrl": url, "MessageBody": record.to_string()})).await {
                tracing::error!(error = %e, "could not send a failed stream batch to its on-failure destination");
            }
        }
        None => {
            tracing::error!(batch = %record, "a stream batch failed every retry and has no on-failure destination: discarded")
        }
    }
}

/// The SQS message as Lambda's SQS event record.
fn sqs_record(m: &Value, src: &QueueSource, region: &str) -> Value {
    let mut attrs = m["Attributes"].clone();
    if !attrs.is_object() {
        attrs = json!({});
    }
    let mut mattrs = serde_json::Map::new();
    for (k, a) in m["MessageAttributes"].as_object().into_iter().flatten() {
        mattrs.insert(
            k.clone(),
            json!({
                "stringValue": a["StringValue"], "binaryValue": a["BinaryValue"],
                "stringListValues": [], "binaryListValues": [], "dataType": a["DataType"],
            }),
        );
    }
    json!({
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": attrs, "messageAttributes": mattrs, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": src.queue_arn, "awsRegion": region,
    })
}

/// Polls one queue with `MaximumConcurrency` pollers until dropped.
pub async fn poll_queue(aws: Aws, src: QueueSource, function: Arc<Function>) {
    // Dropped with this future: the pollers stop with the stack.
    let mut pollers = tokio::task::JoinSet::new();
    for _ in 0..src.max_concurrency.max(1) {
        pollers.spawn(queue_poller(aws.clone(), src.clone(), function.clone()));
    }
    while pollers.join_next().await.is_some() {}
}

async fn queue_poller(aws: Aws, src: QueueSource, function: Arc<Function>) {
    loop {
        // A batch: up to BatchSize messages, gathered for at most the batching window.
        let mut messages: Vec<Value> = vec![];
        let gathering = tokio::time::Instant::now();
        loop {
            let want = src.batch_size.saturating_sub(messages.len()).clamp(1, 10);
            let got = aws
                .sqs(
                    "ReceiveMessage",
                    json!({
                        "QueueUrl": src.queue_url, "MaxNumberOfMessages": want,
                        // Short polls: moto serialises requests (tests/aws/moto_server.py), and
                        // its long poll would hold them all, with a stale view of the FIFO
                        // groups in flight. Lambda long-polls; the difference is latency only.
                        "WaitTimeSeconds": 0,
                        "AttributeNames": ["All"], "MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"],
                    }),
                )
                .await;
            let got = match got {
                Ok(v) => v["Messages"].as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(queue = %src.queue_url, error = %e, "ReceiveMessage failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    vec![]
                }
            };
            let empty = got.is_empty();
            messages.extend(got);
            if messages.len() >= src.batch_size || gathering.elapsed() >= src.batching_window {
                break;
            }
            if empty {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let received = tokio::time::Instant::now();
        let records: Vec<Value> = messages.iter().map(|m| sqs_record(m, &src, &aws.region)).collect();
        let payload = Bytes::from(json!({ "Records": records }).to_string());
        let mut throttles = 0;
        let out = loop {
            match function.invoke(payload.clone()).await {
                // Throttled: the same batch again, backing off, while the
                // messages are still ours (within their visibility timeout).
                Err(e) if e.throttled() && received.elapsed() + throttle_backoff(throttles) < src.visibility => {
                    tokio::time::sleep(throttle_backoff(throttles)).await;
                    throttles += 1;
                }
                out => break out,
            }
        };
        let failed: Vec<String> = match out {
            Err(e) => {
                tracing::warn!(function = %function.spec.logical, error = %e, messages = records.len(), "SQS batch failed: it returns after the visibility timeout");
                continue;
            }
            Ok(_) if !src.report_item_failures => vec![],
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(v) if v.get("batchItemFailures").is_none_or(Value::is_array) => v["batchItemFailures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                    .collect(),
                // An answer Lambda cannot read fails the whole batch.
                _ => continue,
            },
        };
        let done: Vec<Value> = messages
            .iter()
            .filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m["MessageId"].as_str()))
            .enumerate()
            .map(|(i, m)| json!({"Id": i.to_string(), "ReceiptHandle": m["ReceiptHandle"]}))
            .collect();
        for chunk in done.chunks(10) {
            if let Err(e) = aws.sqs("DeleteMessageBatch", json!({"QueueUrl": src.queue_url, "Entries": chunk})).await {
                tracing::warn!(queue = %src.queue_url, error = %e, "DeleteMessageBatch failed: those messages return");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_patterns_match_as_lambda_matches_them() {
        let p: Value =
            serde_json::from_str(r#"{"eventName":["INSERT"],"dynamodb":{"Keys":{"sk":{"S":[{"prefix":"ev#"}]}}}}"#).unwrap();
        check_pattern(&p).unwrap();
        let rec = |name: &str, sk: &str| json!({"eventName": name, "dynamodb": {"Keys": {"pk": {"S": "c"}, "sk": {"S": sk}}}});
        assert!(matches(&p, &rec("INSERT", "ev#00001")));
        assert!(!matches(&p, &rec("MODIFY", "ev#00001")));
        assert!(!matches(&p, &rec("INSERT", "head")));
        assert!(!matches(&p, &json!({"eventName": "INSERT"})));
        assert!(check_pattern(&json!({"a": [{"numeric": [">", 1]}]})).is_err());
        assert!(matches(&json!({"a": [{"exists": false}]}), &json!({"b": 1})));
        assert!(matches(&json!({"a": [{"anything-but": ["x"]}]}), &json!({"a": "y"})));
    }
}
