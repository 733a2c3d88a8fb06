//! The AWS fan-out pipeline, measured: one event → `dispatch` (one job per
//! subscriber shard) → FIFO groups → `fanout` workers (the real
//! `pipeline::fan_out_batch`, the real Management API client, each worker
//! paced) → the local `@connections` endpoint adding 20 ms per call behind a
//! 10,000 req/s token bucket (burst 5,000), like an account's default quota.
//!
//! Subscribers are held in memory, sharded as DynamoDB shards them, so the
//! figures are the pipeline's and the quota's, not moto's. With
//! HOOKCAST_DYNAMODB_ENDPOINT set (a moto server), webhook acks (the real
//! `Hooks` over the real DynamoDB client) are timed during the fan-out and
//! while idle, and one channel's append rate is measured.
//!
//!   cargo run --release -p hookcast-emulate --example pipeline-bench [subscribers,...] [shards] [workers] [posts/s per worker]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::SqsEvent;
use hookcast_aws::apigw::ApiGwGateway;
use hookcast_aws::pipeline::{self, Job, JobQueue};
use hookcast_core::config::{Config, Limits};
use hookcast_core::ports::*;
use hookcast_core::protocol::Event;
use hookcast_core::{Channel, Fanout, Live};
use hookcast_emulate::apigw::Options;
use serde_json::json;

/// Subscriptions spread over shards as the DynamoDB store spreads them, each
/// shard the in-memory subscriptions.
struct Sharded {
    shards: Vec<Live>,
    cursors: Mutex<BTreeMap<String, ConnId>>,
}

/// Where a job stopped at its budget: in memory, as DynamoDB keeps it on AWS.
impl pipeline::Cursors for Sharded {
    async fn resume_point(&self, job: &str) -> Result<Option<ConnId>, pipeline::PipelineError> {
        Ok(self.cursors.lock().unwrap().get(job).cloned())
    }
    async fn save_resume_point(&self, job: &str, after: &ConnId) -> Result<(), pipeline::PipelineError> {
        self.cursors.lock().unwrap().insert(job.to_string(), after.clone());
        Ok(())
    }
    async fn count_failure(&self, _: &str) -> Result<u32, pipeline::PipelineError> {
        Ok(1)
    }
}

impl Sharded {
    fn new(shards: usize) -> Self {
        Self { shards: (0..shards).map(|_| Live::new()).collect(), cursors: Mutex::default() }
    }
    /// The DynamoDB store's own shard function, so the bench shards as it does.
    fn of(&self, c: &ConnId) -> &Live {
        &self.shards[hookcast_aws::dynamo::shard_of(c, self.shards.len() as u32) as usize]
    }
}

impl Subscriptions for Sharded {
    async fn add_connection(&self, c: &ConnId, now: u64) -> Result<(), StoreError> {
        self.of(c).add_connection(c, now).await
    }
    async fn remove_connection(&self, c: &ConnId) -> Result<(), StoreError> {
        self.of(c).remove_connection(c).await
    }
    async fn subscribe(&self, c: &ConnId, ch: &Channel, max: usize) -> Result<SubOutcome, StoreError> {
        self.of(c).subscribe(c, ch, max).await
    }
    async fn unsubscribe(&self, c: &ConnId, ch: &Channel) -> Result<(), StoreError> {
        self.of(c).unsubscribe(c, ch).await
    }
    fn shards(&self) -> u32 {
        self.shards.len() as u32
    }
    async fn subscriber_page(
        &self,
        ch: &Channel,
        shard: u32,
        after: Option<&ConnId>,
        limit: usize,
    ) -> Result<SubscriberPage, StoreError> {
        self.shards[shard as usize].subscriber_page(ch, 0, after, limit).await
    }
    async fn count_subscribers(&self, ch: &Channel) -> Result<u64, StoreError> {
        let mut n = 0;
        for s in &self.shards {
            n += s.count_subscribers(ch).await?;
        }
        Ok(n)
    }
    async fn occupancy_turn(&self, c: &ConnId, ch: &Channel, now: u64, every: u64) -> Result<Turn, StoreError> {
        self.of(c).occupancy_turn(c, ch, now, every).await
    }
}

/// SQS FIFO's contract in memory: a group's next job is handed out only
/// when the previous one is done; other groups go in parallel.
#[derive(Default)]
struct Fifo {
    state: Mutex<(VecDeque<Job>, Vec<String>)>,
}

impl JobQueue for Fifo {
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), pipeline::PipelineError> {
        self.state.lock().unwrap().0.extend(jobs.iter().cloned());
        Ok(())
    }
    /// Every job here runs to the end (no budget), so none is handed back.
    async fn hold(&self, _: &str, _: Duration) -> Result<(), pipeline::PipelineError> {
        Ok(())
    }
    async fn dead_letter(&self, _: &Job) -> Result<(), pipeline::PipelineError> {
        Err(pipeline::PipelineError::Queue("the bench has no dead-letter queue".into()))
    }
}

impl Fifo {
    fn take(&self) -> Option<Job> {
        let mut st = self.state.lock().unwrap();
        let (queue, busy) = &mut *st;
        let i = queue.iter().position(|j| !busy.contains(&j.group_id()))?;
        let job = queue.remove(i)?;
        busy.push(job.group_id());
        Some(job)
    }
    fn done(&self, job: &Job) {
        self.state.lock().unwrap().1.retain(|g| *g != job.group_id());
    }
    fn idle(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.0.is_empty() && st.1.is_empty()
    }
}

fn stream_event(events: &[Event]) -> StreamEvent {
    let records: Vec<_> = events
        .iter()
        .map(|e| {
            json!({"eventID": "x", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "dynamodb": {"ApproximateCreationDateTime": 0, "Keys": {}, "SizeBytes": 1, "StreamViewType": "NEW_IMAGE", "NewImage": {
                    "pk": {"S": format!("chan#{}", e.channel)}, "sk": {"S": format!("ev#{:020}", e.seq)}, "seq": {"N": e.seq.to_string()},
                    "event": {"S": e.event}, "data": {"S": e.data.to_string()}, "at": {"S": e.at}}}})
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn sqs_event(job: &Job) -> SqsEvent {
    serde_json::from_value(json!({"Records": [{"messageId": "m", "body": serde_json::to_string(job).unwrap(), "attributes": {}, "messageAttributes": {}}]}))
        .unwrap()
}

fn sdk() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::SharedCredentialsProvider::new(
            aws_sdk_apigatewaymanagement::config::Credentials::new("bench", "bench", None, None, "static"),
        ))
        .build()
}

struct Run {
    secs: f64,
    delivered: u64,
    throttled: u64,
}

/// Pushes `events` on one channel through dispatch → FIFO → `workers` workers; returns when every post is done.
async fn push(emu: &hookcast_emulate::apigw::Emulator, store: &Arc<Sharded>, events: &[Event], workers: usize, rate: u32) -> Run {
    let limits = Limits { fanout_concurrency: 64, ..Limits::default() };
    let config =
        Arc::new(Config { allowed_origins: vec![], limits, sources: BTreeMap::new(), private: None, state: Default::default() });
    let fifo = Arc::new(Fifo::default());
    let (posted0, throttled0) = (emu.counters().posted.load(Ordering::Relaxed), emu.counters().throttled.load(Ordering::Relaxed));
    let start = Instant::now();
    pipeline::dispatch(
        &*fifo,
        &hookcast_testkit::MemLog::new(Retention::from(&Limits::default())),
        store.shards.len() as u32,
        &stream_event(events),
    )
    .await
    .unwrap();
    let runs = (0..workers).map(|_| {
        let fanout = Fanout::new(
            config.clone(),
            store.clone(),
            Arc::new(ApiGwGateway::new(&sdk(), &emu.management_endpoint()).with_rate(rate)),
        );
        let store = store.clone();
        let fifo = fifo.clone();
        async move {
            loop {
                match fifo.take() {
                    Some(job) => {
                        let res = pipeline::fan_out_batch(&fanout, &*store, &*fifo, &sqs_event(&job), None).await;
                        assert!(res.batch_item_failures.is_empty());
                        fifo.done(&job);
                    }
                    None if fifo.idle() => return,
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
    });
    futures::future::join_all(runs).await;
    Run {
        secs: start.elapsed().as_secs_f64(),
        delivered: emu.counters().posted.load(Ordering::Relaxed) - posted0,
        throttled: emu.counters().throttled.load(Ordering::Relaxed) - throttled0,
    }
}

fn event(seq: u64) -> Event {
    Event {
        channel: Channel::parse("bench").unwrap(),
        seq,
        event: hookcast_core::EventName::parse("deploy.succeeded").unwrap(),
        data: json!({"state": "ready", "title": "Benchmark deploy", "branch": "main"}),
        at: "2026-11-23T08:00:00.000Z".into(),
    }
}

fn dynamo_sdk() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(std::env::var("HOOKCAST_DYNAMODB_ENDPOINT").unwrap_or_default())
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("bench", "bench", None, None, "static"),
        ))
        .build()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Webhook acks (Hooks over the real DynamoDB client) every 50 ms until `until` resolves.
async fn ack_latencies(
    hooks: Arc<hookcast_core::Hooks<hookcast_aws::dynamo::DynamoStore>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<f64> {
    let mut out = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = json!({"channel": "acks", "event": "tick", "data": {"n": n}}).to_string().into_bytes();
        let headers = vec![("x-hub-signature-256".to_string(), hookcast_core::sign::github(b"bench-hmac-secret-0123", &body))];
        let t = Instant::now();
        hooks
            .ingest("gh", Some("application/json"), &hookcast_core::verify::HookRequest { headers: &headers, body: &body })
            .await
            .unwrap();
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> =
        args.get(1).map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_else(|| vec![10_000, 100_000]);
    let shards: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let workers: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rate: u32 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let invoke: hookcast_emulate::apigw::Invoke = Arc::new(|_| Box::pin(async { Ok(json!({"statusCode": 200})) }));
    let emu = hookcast_emulate::apigw::start(
        Options {
            latency: hookcast_emulate::apigw::Latency::fixed(Duration::from_millis(20)),
            rate_limit: Some(10_000),
            burst: 5_000,
            ..Options::default()
        },
        invoke,
    )
    .await;
    let hooks = std::env::var("HOOKCAST_DYNAMODB_ENDPOINT").ok().map(|_| {
        let sdk = dynamo_sdk();
        let raw: hookcast_core::config::RawConfig =
            toml::from_str("[sources.gh]\nkind = \"hmac\"\nsecret = \"bench-hmac-secret-0123\"\nchannels = [\"*\"]\nfields = [\"n\", \"w\", \"i\"]\n").unwrap();
        let config = Arc::new(Config::build(raw, &|_| None).unwrap());
        let table = format!("pipeline-bench-{}", std::process::id());
        let store =
            hookcast_aws::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table, Retention::from(&config.limits));
        (config, store)
    });
    let hooks = match hooks {
        Some((config, store)) => {
            store.create_table().await.unwrap();
            Some(Arc::new(hookcast_core::Hooks::new(config, Arc::new(store))))
        }
        None => None,
    };

    println!(
        "pipeline: {shards} shards, {workers} workers x {rate} posts/s; @connections 20 ms per call, 10,000 req/s, burst 5,000"
    );
    println!(
        "{:>12} {:>9} {:>12} {:>10} {:>6} {:>16}",
        "subscribers", "seconds", "posts/s", "delivered", "429s", "ack p50/p99 ms"
    );
    for &n in &sizes {
        let store = Arc::new(Sharded::new(shards as usize));
        let ch = Channel::parse("bench").unwrap();
        let mut sinks = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("bench{i:06}=");
            sinks.push(emu.register_sink(&id));
            store.subscribe(&ConnId(id), &ch, 10).await.unwrap();
        }
        // A quiet account: the bucket is full again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acks = hooks.clone().map(|h| tokio::spawn(ack_latencies(h, stop.clone())));
        let run = push(&emu, &store, &[event(1)], workers, rate).await;
        stop.store(true, Ordering::Relaxed);
        let ack = match acks {
            Some(a) => {
                let mut v = a.await.unwrap();
                format!("{:.1}/{:.1} ({})", pct(&mut v, 0.5), pct(&mut v, 0.99), v.len())
            }
            None => "-".into(),
        };
        let mut copies: HashMap<usize, usize> = HashMap::new();
        for rx in sinks.iter_mut() {
            let mut k = 0;
            while rx.try_recv().is_ok() {
                k += 1;
            }
            *copies.entry(k).or_default() += 1;
        }
        println!(
            "{:>12} {:>9.2} {:>12.0} {:>10} {:>6} {:>16}   copies per page {:?}",
            n,
            run.secs,
            run.delivered as f64 / run.secs,
            run.delivered,
            run.throttled,
            ack,
            copies
        );
        for i in 0..n {
            emu.drop_connection(&format!("bench{i:06}="));
        }
    }

    if let Some(h) = hooks {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let idle = tokio::spawn(ack_latencies(h.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let mut v = idle.await.unwrap();
        println!(
            "webhook ack with no fan-out running: p50 {:.1} ms, p99 {:.1} ms ({} acks)",
            pct(&mut v, 0.5),
            pct(&mut v, 0.99),
            v.len()
        );
        // One channel's append rate, on a fresh table (moto copies a whole
        // table per transaction, so a grown one measures moto, not us).
        for writers in [1usize, 4, 16] {
            let fresh = hookcast_aws::dynamo::DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&dynamo_sdk()),
                format!("pipeline-bench-hot-{}-{writers}", std::process::id()),
                Retention::from(&h.config().limits),
            );
            fresh.create_table().await.unwrap();
            let h = Arc::new(hookcast_core::Hooks::new(Arc::new(h.config().clone()), Arc::new(fresh)));
            let t = Instant::now();
            let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let runs = (0..writers).map(|w| {
                let (h, count) = (h.clone(), count.clone());
                async move {
                    let mut i = 0;
                    while t.elapsed() < Duration::from_secs(4) {
                        i += 1;
                        let body = json!({"channel": "hot", "event": "tick", "data": {"w": w, "i": i}}).to_string().into_bytes();
                        let headers = vec![(
                            "x-hub-signature-256".to_string(),
                            hookcast_core::sign::github(b"bench-hmac-secret-0123", &body),
                        )];
                        h.ingest(
                            "gh",
                            Some("application/json"),
                            &hookcast_core::verify::HookRequest { headers: &headers, body: &body },
                        )
                        .await
                        .unwrap();
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            futures::future::join_all(runs).await;
            println!(
                "one channel, {writers} concurrent webhooks, fresh table on moto: {:.0} appends/s",
                count.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
            );
        }
    }

    // Fan-out side of one channel's event rate: 1,000 subscribers, 40 events back to back, group order kept.
    let store = Arc::new(Sharded::new(shards as usize));
    let ch = Channel::parse("bench").unwrap();
    for i in 0..1000 {
        let id = format!("rate{i:04}=");
        let _rx = emu.register_sink(&id);
        std::mem::forget(_rx);
        store.subscribe(&ConnId(id), &ch, 10).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let events: Vec<Event> = (1..=40).map(event).collect();
    let run = push(&emu, &store, &events, workers, rate).await;
    println!(
        "one channel, 1,000 subscribers, 40 events: {:.1} events/s fanned out ({} posts in {:.2} s, {} 429s)",
        40.0 / run.secs,
        run.delivered,
        run.secs,
        run.throttled
    );
}
