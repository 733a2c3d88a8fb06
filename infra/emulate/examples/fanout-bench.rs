//! Fan-out benchmark: one event to 10,000 connections through the real
//! API Gateway Management client, against the local @connections endpoint
//! injecting 20 ms per call and throttling at 10,000 requests/s (burst 5,000),
//! like an account's default limit. Subscribers come from the in-memory
//! subscriptions so the numbers are the gateway fan-out alone.
//!
//!   cargo run --release -p hookcast-emulate --example fanout-bench [connections] [concurrency,...] [rate/s]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookcast_aws::apigw::ApiGwGateway;
use hookcast_core::config::{Config, Limits};
use hookcast_core::ports::{ConnId, Subscriptions};
use hookcast_core::protocol::Event;
use hookcast_core::{Channel, Fanout, Live};
use hookcast_emulate::apigw::Options;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let levels: Vec<usize> =
        args.get(2).map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_else(|| vec![16, 64, 256, 512]);
    let rate: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10_000);

    let invoke: hookcast_emulate::apigw::Invoke = Arc::new(|_| Box::pin(async { Ok(serde_json::json!({"statusCode": 200})) }));
    let emu = hookcast_emulate::apigw::start(
        Options {
            latency: hookcast_emulate::apigw::Latency::fixed(Duration::from_millis(20)),
            rate_limit: Some(rate),
            burst: rate / 2,
            ..Options::default()
        },
        invoke,
    )
    .await;
    let ids: Vec<String> = (0..n).map(|i| format!("bench{i:05}=")).collect();
    let mut sinks: Vec<_> = ids.iter().map(|id| emu.register_sink(id)).collect();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::SharedCredentialsProvider::new(
            aws_sdk_apigatewaymanagement::config::Credentials::new("bench", "bench", None, None, "static"),
        ))
        .build();
    let event = Event {
        channel: Channel::parse("bench").unwrap(),
        seq: 1,
        event: hookcast_core::EventName::parse("deploy.succeeded").unwrap(),
        data: serde_json::json!({"state": "ready", "title": "Benchmark deploy", "branch": "main"}),
        at: "2026-11-23T08:00:00.000Z".into(),
    };
    println!("fan-out of one event to {n} connections; @connections: 20 ms per call, {rate} req/s, burst {}", rate / 2);
    println!(
        "{:>11} {:>9} {:>10} {:>9} {:>7} {:>10} {:>11}",
        "concurrency", "seconds", "msgs/s", "delivered", "failed", "429s seen", "dup/lost"
    );
    for c in levels {
        // Refill the bucket between runs, as a quiet account would.
        tokio::time::sleep(Duration::from_millis(600).max(Duration::from_secs_f64(0.6 * 10_000.0 / rate as f64))).await;
        let limits = Limits { fanout_concurrency: c, ..Limits::default() };
        let live = Arc::new(Live::new());
        let ch = Channel::parse("bench").unwrap();
        for id in &ids {
            live.subscribe(&ConnId(id.clone()), &ch, 10).await.unwrap();
        }
        let config =
            Config { allowed_origins: vec![], limits, sources: BTreeMap::new(), private: None, state: Default::default() };
        let fanout = Fanout::new(Arc::new(config), live, Arc::new(ApiGwGateway::new(&sdk, &emu.management_endpoint())));
        let throttled_before = emu.counters().throttled.load(Ordering::Relaxed);
        let start = Instant::now();
        let report = fanout.fan_out(&event).await.expect("in-memory subscribers");
        let secs = start.elapsed().as_secs_f64();
        let throttled = emu.counters().throttled.load(Ordering::Relaxed) - throttled_before;
        let mut odd = 0;
        for rx in sinks.iter_mut() {
            let mut got = 0;
            while rx.try_recv().is_ok() {
                got += 1;
            }
            if got > 1 {
                odd += got - 1;
            }
        }
        let lost = n - report.delivered - report.failed;
        println!(
            "{:>11} {:>9.2} {:>10.0} {:>9} {:>7} {:>10} {:>5}/{:<5}",
            c,
            secs,
            report.delivered as f64 / secs,
            report.delivered,
            report.failed,
            throttled,
            odd,
            lost
        );
    }
}
