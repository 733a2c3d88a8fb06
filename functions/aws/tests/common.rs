//! Shared test setup: the real SDK clients pointed at local servers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::config::{Credentials, Region};
use hookcast_aws::dynamo::DynamoStore;
use hookcast_core::ports::Retention;

/// A DynamoDB-compatible server; ./tests/run starts moto_server and sets this.
pub fn endpoint() -> String {
    std::env::var("HOOKCAST_DYNAMODB_ENDPOINT").expect(
        "HOOKCAST_DYNAMODB_ENDPOINT is not set: run ./tests/run (it starts moto_server), \
         or point it at any DynamoDB-compatible server",
    )
}

pub fn sdk_config(endpoint: Option<String>) -> aws_config::SdkConfig {
    let mut b = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "static",
        )));
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    b.build()
}

static TABLES: AtomicU32 = AtomicU32::new(0);

/// A store on a fresh table (needs a multi-thread runtime).
pub fn fresh_store(retention: Retention) -> DynamoStore {
    let n = TABLES.fetch_add(1, Ordering::SeqCst);
    let table = format!("hookcast-test-{}-{n}", std::process::id());
    let client = aws_sdk_dynamodb::Client::new(&sdk_config(Some(endpoint())));
    let store = DynamoStore::new(client, table, retention);
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(store.create_table())).unwrap();
    store
}

/// The fresh table's stream ARN (template.yaml: NEW_IMAGE).
pub async fn stream_arn(store_table: &str) -> String {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config(Some(endpoint())));
    let t = client.describe_table().table_name(store_table).send().await.unwrap();
    t.table.and_then(|t| t.latest_stream_arn).expect("the table has a stream")
}

/// A fresh SQS FIFO queue (as template.yaml's FanoutQueue) with a dead-letter
/// queue after `max_receives`; returns (queue url, dlq url).
/// The fan-out queue's `maxReceiveCount` in template.yaml: the tests' queues redrive as the stack's does.
pub fn template_max_receives() -> u32 {
    let t = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).expect("template.yaml");
    let at = t.find("maxReceiveCount:").expect("template.yaml sets the fan-out queue's maxReceiveCount");
    t[at + "maxReceiveCount:".len()..].split_whitespace().next().and_then(|n| n.parse().ok()).expect("a number")
}

pub async fn fifo_queue(visibility_secs: u32, max_receives: u32) -> (String, String) {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(Some(endpoint())));
    let n = TABLES.fetch_add(1, Ordering::SeqCst);
    let dlq = sqs
        .create_queue()
        .queue_name(format!("hookcast-dlq-{}-{n}.fifo", std::process::id()))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let url = sqs
        .create_queue()
        .queue_name(format!("hookcast-fanout-{}-{n}.fifo", std::process::id()))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, visibility_secs.to_string())
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (url, dlq)
}

pub fn sqs_queue(url: &str) -> hookcast_aws::pipeline::SqsQueue {
    hookcast_aws::pipeline::SqsQueue::new(aws_sdk_sqs::Client::new(&sdk_config(Some(endpoint()))), url)
}

fn stream_value(v: &aws_sdk_dynamodbstreams::types::AttributeValue) -> serde_json::Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue as A;
    match v {
        A::S(s) => serde_json::json!({"S": s}),
        A::N(n) => serde_json::json!({"N": n}),
        A::Bool(b) => serde_json::json!({"BOOL": b}),
        A::M(m) => {
            serde_json::json!({"M": m.iter().map(|(k, v)| (k.clone(), stream_value(v))).collect::<serde_json::Map<_, _>>()})
        }
        _ => serde_json::json!({"NULL": true}),
    }
}

/// What Lambda's event source mapping does for a DynamoDB stream, here over
/// the real Streams API: per shard, in order, batches of records handed to
/// the dispatcher as AWS's event JSON; a failed batch is retried as it was.
/// Like the real mapping it checkpoints the last sequence number per shard
/// and asks for a fresh iterator after it on every poll (moto also needs
/// this: a cancelled transaction replaces its table, orphaning old iterators).
pub struct StreamPump {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// Shard → the last sequence number handed to the dispatcher.
    checkpoints: std::collections::BTreeMap<String, Option<String>>,
}

impl StreamPump {
    pub async fn new(arn: &str) -> Self {
        let client = aws_sdk_dynamodbstreams::Client::new(&sdk_config(Some(endpoint())));
        Self { client, arn: arn.to_owned(), checkpoints: Default::default() }
    }
    async fn iterator(&self, shard: &str, after: Option<&str>) -> Option<String> {
        use aws_sdk_dynamodbstreams::types::ShardIteratorType as T;
        let req = self.client.get_shard_iterator().stream_arn(&self.arn).shard_id(shard);
        let req = match after {
            Some(seq) => req.shard_iterator_type(T::AfterSequenceNumber).sequence_number(seq),
            None => req.shard_iterator_type(T::TrimHorizon),
        };
        req.send().await.unwrap().shard_iterator
    }
    /// The next batch of every shard as Lambda's event, and how to advance past it.
    pub async fn next_batches(&mut self) -> Vec<(String, aws_lambda_events::dynamodb::Event, Option<String>)> {
        let d = self.client.describe_stream().stream_arn(&self.arn).send().await.unwrap();
        for shard in d.stream_description.unwrap().shards.unwrap_or_default() {
            self.checkpoints.entry(shard.shard_id.unwrap()).or_insert(None);
        }
        let mut out = Vec::new();
        for (shard, last) in &self.checkpoints {
            let Some(it) = self.iterator(shard, last.as_deref()).await else {
                continue;
            };
            let got = self.client.get_records().shard_iterator(it).limit(100).send().await.unwrap();
            let newest =
                got.records.as_deref().unwrap_or_default().last().and_then(|r| r.dynamodb.as_ref()?.sequence_number.clone());
            let records: Vec<serde_json::Value> = got
                .records
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    let d = r.dynamodb.as_ref().unwrap();
                    let img = |m: Option<&std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>| {
                        m.map(|m| m.iter().map(|(k, v)| (k.clone(), stream_value(v))).collect::<serde_json::Map<_, _>>())
                            .unwrap_or_default()
                    };
                    serde_json::json!({
                        "eventID": r.event_id, "eventName": r.event_name.as_ref().map(|n| n.as_str()),
                        "eventVersion": "1.1", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                        "dynamodb": {
                            "ApproximateCreationDateTime": d.approximate_creation_date_time.map(|t| t.secs()).unwrap_or(0),
                            "Keys": img(d.keys.as_ref()), "NewImage": img(d.new_image.as_ref()),
                            "SequenceNumber": d.sequence_number, "SizeBytes": d.size_bytes.unwrap_or(0),
                            "StreamViewType": "NEW_IMAGE"
                        },
                        "eventSourceARN": self.arn
                    })
                })
                .collect();
            let ev: aws_lambda_events::dynamodb::Event =
                serde_json::from_value(serde_json::json!({ "Records": records })).expect("AWS's DynamoDB stream event shape");
            out.push((shard.clone(), ev, newest.or_else(|| last.clone())));
        }
        out
    }
    /// Runs the dispatcher over everything in the stream now; a failed batch
    /// is retried (as Lambda does) up to `tries` times. Returns jobs queued.
    pub async fn drain<Q: hookcast_aws::pipeline::JobQueue, L: hookcast_core::ports::EventLog>(
        &mut self,
        queue: &Q,
        log: &L,
        shards: u32,
        tries: u32,
    ) -> usize {
        let mut jobs = 0;
        loop {
            let batches = self.next_batches().await;
            let mut any = false;
            for (shard, ev, next) in batches {
                if ev.records.is_empty() {
                    continue;
                }
                any = true;
                let mut attempt = 0;
                loop {
                    match hookcast_aws::pipeline::dispatch(queue, log, shards, &ev).await {
                        Ok(n) => {
                            jobs += n;
                            break;
                        }
                        Err(e) if attempt + 1 < tries => {
                            attempt += 1;
                            eprintln!("dispatch failed ({e}); retrying the batch");
                        }
                        Err(e) => panic!("dispatch failed {tries} times: {e}"),
                    }
                }
                self.checkpoints.insert(shard, next);
            }
            if !any {
                return jobs;
            }
        }
    }
}

/// One SQS FIFO receive, as the Lambda event a fan-out worker gets.
pub async fn receive(url: &str, max: i32) -> aws_lambda_events::sqs::SqsEvent {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(Some(endpoint())));
    let got = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let records: Vec<serde_json::Value> = got
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let attrs: serde_json::Map<String, serde_json::Value> = m
                .attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), serde_json::json!(v)))
                .collect();
            serde_json::json!({
                "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                "md5OfBody": m.md5_of_body, "attributes": attrs, "messageAttributes": {},
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fanout.fifo", "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("AWS's SQS event shape")
}

/// What the event source mapping does after the function returns: delete
/// every message not reported as failed; failed ones reappear after the
/// visibility timeout.
pub async fn complete(url: &str, batch: &aws_lambda_events::sqs::SqsEvent, res: &aws_lambda_events::sqs::SqsBatchResponse) {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(Some(endpoint())));
    let failed: Vec<&str> = res.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    for m in &batch.records {
        if !failed.contains(&m.message_id.as_deref().unwrap_or_default()) {
            sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle.clone().unwrap()).send().await.unwrap();
        }
    }
}

/// Messages waiting or in flight in a queue.
pub async fn queue_depth(url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as Q;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(Some(endpoint())));
    let a = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Q::ApproximateNumberOfMessages)
        .attribute_names(Q::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let n = |k: Q| a.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(Q::ApproximateNumberOfMessages) + n(Q::ApproximateNumberOfMessagesNotVisible)
}

/// A second client on an existing table: another "instance".
pub fn fresh_store_on(table: &str, retention: Retention) -> DynamoStore {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config(Some(endpoint())));
    DynamoStore::new(client, table, retention)
}

/// A DynamoDB front as strict as DynamoDB where moto is kinder (the one
/// `hookcast emulate` runs: two writes to one item at once conflict).
pub async fn conflict_front() -> hookcast_emulate::front::Front {
    hookcast_emulate::front::start(&endpoint(), hookcast_emulate::front::FrontOptions::default(), Default::default())
        .await
        .expect("the front binds")
}
