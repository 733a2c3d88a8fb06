//! The Lambda handlers on AWS's own event shapes, against real parts: a
//! DynamoDB-compatible server, the real SDK clients, and a local API Gateway
//! whose @connections endpoint really delivers to sockets and really says 410.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use futures::{SinkExt, StreamExt};
use hookcast_aws::apigw::ApiGwGateway;
use hookcast_aws::dynamo::DynamoStore;
use hookcast_aws::guard::TableGuard;
use hookcast_aws::{handlers, pipeline, AwsFanout, AwsHooks, AwsRelay};
use hookcast_core::config::{Config, Limits};
use hookcast_core::ports::{all_subscribers, ConnId, Retention, Subscriptions};
use hookcast_core::{sign, Channel, Fanout, Hooks, Relay};
use hookcast_emulate::apigw::{Emulator, Invoke, Options};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const NETLIFY: &str = hookcast_testkit::NETLIFY_SECRET;
const GH: &str = hookcast_testkit::GH_SECRET;
// A ceiling for a stuck run, not a guess: moto serialises every request, and tests share it.
const WAIT: Duration = hookcast_testkit::MOTO;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../tests/fixtures/aws/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn config(origins: &[&str]) -> Config {
    hookcast_testkit::config(origins)
}

struct Stack {
    /// The webhook function's half: no gateway at all.
    hooks: Arc<AwsHooks>,
    /// The socket functions' half.
    relay: Arc<AwsRelay>,
    /// The fan-out workers' half.
    fanout: Arc<AwsFanout>,
    /// The table: log, subscriptions and fan-out cursors.
    store: Arc<DynamoStore>,
    /// The socket functions' budgets, in the same table.
    guard: Arc<TableGuard>,
    emu: Emulator,
    queue_url: String,
    dlq_url: String,
    pump: common::StreamPump,
    shards: u32,
}

/// What API Gateway's HTTP API does with the webhook function: the request
/// in AWS's v2 shape, through lambda_http, into the shared router.
async fn http(hooks: &Arc<AwsHooks>, snippets: hookcast_http::Snippets, req: lambda_http::Request) -> (u16, Value, String) {
    use tower::ServiceExt;
    let res = hookcast_http::router(hooks.clone(), snippets).oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers: serde_json::Map<String, Value> =
        res.headers().iter().map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap()))).collect();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, Value::Object(headers), String::from_utf8(body.to_vec()).unwrap())
}

fn local_snippets() -> hookcast_http::Snippets {
    hookcast_http::Snippets::same_host()
}

/// Emulator → handlers → relay (DynamoDB store, API Gateway gateway) → emulator,
/// and the pipeline: table stream → dispatcher → SQS FIFO → fan-out workers.
async fn stack(opts: Options, origins: &[&str], shards: u32) -> Stack {
    // As on AWS (360 s against a 60 s worker): a live worker is never
    // overtaken by a redelivery, even when moto is slow under load.
    stack_with(opts, origins, shards, 300).await
}

/// `visibility_secs`: how long a received fan-out message stays hidden (on
/// AWS, six times the worker's timeout); short where a test needs redelivery.
async fn stack_with(opts: Options, origins: &[&str], shards: u32, visibility_secs: u32) -> Stack {
    let mut cfg = config(origins);
    // An occupancy ask right after another is refused whatever the machine's
    // speed: an hour between asks, not the default 10 s.
    cfg.limits.occupancy_interval = Duration::from_secs(3600);
    stack_for(opts, cfg, shards, visibility_secs).await
}

async fn stack_for(opts: Options, cfg: Config, shards: u32, visibility_secs: u32) -> Stack {
    // The socket functions' parts, as a cold start builds them: the relay,
    // the budgets in the same table, the gateway and the store.
    type Parts = (Arc<AwsRelay>, Arc<TableGuard>, Arc<ApiGwGateway>, Arc<DynamoStore>);
    let cell: Arc<OnceLock<Parts>> = Arc::new(OnceLock::new());
    let c = cell.clone();
    let invoke: Invoke = Arc::new(move |ev: Value| {
        let c = c.clone();
        Box::pin(async move {
            let (relay, guard, gateway, store) = c.get().expect("the parts are set before the first connection").clone();
            let req: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev).expect("the event has AWS's shape");
            let res = match req.request_context.route_key.as_deref() {
                Some("$connect") => handlers::ws_connect(&*relay, &*guard, None, req).await,
                Some("$disconnect") => handlers::ws_disconnect(&*relay, &*guard, req).await,
                _ => handlers::ws_message(&*relay, &*guard, &*gateway, &*store, req).await,
            };
            Ok(serde_json::to_value(res).unwrap())
        })
    });
    let emu = hookcast_emulate::apigw::start(opts, invoke).await;
    let cfg = Arc::new(cfg);
    let retention = Retention::from(&cfg.limits);
    let store = tokio::task::spawn_blocking(|| ()).await.map(|_| common::fresh_store(retention).with_shards(shards)).unwrap();
    let arn = common::stream_arn(store.table()).await;
    let (queue_url, dlq_url) = common::fifo_queue(visibility_secs, common::template_max_receives()).await;
    let gateway = ApiGwGateway::new(&common::sdk_config(None), &emu.management_endpoint()).with_rate(5000);
    let (store, gateway) = (Arc::new(store), Arc::new(gateway));
    let hooks = Arc::new(Hooks::new(cfg.clone(), store.clone()));
    let relay = Arc::new(Relay::new(cfg.clone(), store.clone(), store.clone(), gateway.clone()));
    let guard =
        Arc::new(TableGuard::new(aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(common::endpoint()))), store.table()));
    let fanout = Arc::new(Fanout::new(cfg, store.clone(), gateway.clone()));
    cell.set((relay.clone(), guard.clone(), gateway, store.clone())).ok().unwrap();
    let pump = common::StreamPump::new(&arn).await;
    Stack { hooks, relay, fanout, store, guard, emu, queue_url, dlq_url, pump, shards }
}

impl Stack {
    /// Dispatches what the stream holds, then runs `workers` fan-out workers
    /// (each its own relay and clients, like separate Lambda instances) until
    /// the queue is empty. Returns the jobs dispatched.
    async fn deliver(&mut self, workers: usize) -> usize {
        self.deliver_within(workers, None).await
    }

    /// As [`Stack::deliver`], each batch given `budget` (the Lambda's time
    /// before its reserve).
    async fn deliver_within(&mut self, workers: usize, budget: Option<Duration>) -> usize {
        let queue = common::sqs_queue(&self.queue_url);
        let jobs = self.pump.drain(&queue, &*self.store, self.shards, 3).await;
        let runs = (0..workers).map(|_| {
            let (fanout, store, url) = (self.fanout.clone(), self.store.clone(), self.queue_url.clone());
            async move {
                let retries = common::sqs_queue(&url);
                // The ceiling is on a queue that stops moving, not on the whole drain, which grows with the work.
                let mut moved = tokio::time::Instant::now();
                loop {
                    let batch = common::receive(&url, 10).await;
                    if batch.records.is_empty() {
                        let depth = common::queue_depth(&url).await;
                        if depth == 0 {
                            return;
                        }
                        assert!(
                            moved.elapsed() < WAIT,
                            "gave up after {WAIT:?} without a message to receive; {depth} messages still waiting or in flight"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    hookcast_testkit::slow(moved.elapsed(), WAIT, &"the next fan-out batch");
                    let budget =
                        budget.map(|b| pipeline::Budget { until: std::time::Instant::now() + b, posts_per_second: None });
                    let res = pipeline::fan_out_batch(&fanout, &*store, &retries, &batch, budget).await;
                    common::complete(&url, &batch, &res).await;
                    moved = tokio::time::Instant::now();
                }
            }
        });
        futures::future::join_all(runs).await;
        jobs
    }
}

fn deploy(id: &str) -> Vec<u8> {
    json!({"id": id, "state": "ready", "title": "From Lambda", "branch": "main", "admin_url": "https://app.netlify.com/x"})
        .to_string()
        .into_bytes()
}

/// The HTTP API v2 fixture, turned into a signed Netlify webhook.
fn webhook_request(body: &[u8]) -> lambda_http::Request {
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!("/hooks/netlify");
    ev["routeKey"] = json!("POST /hooks/{source}");
    ev["requestContext"]["http"]["method"] = json!("POST");
    ev["requestContext"]["http"]["path"] = json!("/hooks/netlify");
    ev["rawQueryString"] = json!("");
    ev["queryStringParameters"] = json!({});
    ev["headers"]["content-type"] = json!("application/json");
    ev["headers"]["x-webhook-signature"] = json!(sign::netlify(NETLIFY.as_bytes(), body));
    ev["body"] = json!(String::from_utf8_lossy(body));
    ev["isBase64Encoded"] = json!(false);
    lambda_http::request::from_str(&ev.to_string()).expect("lambda_http reads the v2 shape")
}

async fn next(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> Value {
    hookcast_testkit::next_json(ws, WAIT, "a frame from API Gateway").await
}

/// The emulator routes exactly the actions template.yaml declares, so a route
/// forgotten in the template fails here rather than after `sam deploy`.
#[test]
fn the_template_routes_every_protocol_action() {
    let template = std::fs::read_to_string(format!("{}/../../template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut keys: Vec<&str> = template.lines().filter_map(|l| l.trim().strip_prefix("RouteKey:")).map(str::trim).collect();
    keys.sort();
    let mut want: Vec<String> = Options::default().routes;
    want.extend(["$connect", "$disconnect", "$default"].map(String::from));
    want.sort();
    assert_eq!(keys, want);
    // Every route reaches a function (a flood of a route API Gateway
    // answered itself could not be closed); ping and $default are two-way,
    // as the emulator's defaults have them.
    assert!(!template.contains("IntegrationType: MOCK"));
    for route in Options::default().reply_routes {
        assert!(
            template.contains(&format!("RouteKey: {route}\n      RouteResponseSelectionExpression: $default\n      Target: !Sub \"integrations/${{MessageIntegration}}\"")),
            "template.yaml's {route} route is two-way, to the message function"
        );
    }
    // The HTTP API sends every path the shared router serves to the webhook function.
    for path in ["/hooks/{source}", "/hookcast.js", "/hookcast.mjs", "/channels/{proxy+}"] {
        let path_line = if path.contains('{') { format!("Path: \"{path}\",") } else { format!("Path: {path},") };
        assert!(template.contains(&path_line), "template.yaml routes {path} to the webhook function");
    }
    for action in ["subscribe", "unsubscribe", "ping", "occupancy"] {
        let msg = json!({"action": action, "channel": "c"}).to_string();
        assert!(hookcast_core::protocol::ClientMsg::parse(&msg).is_ok(), "{action} is a protocol action");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixture_events_drive_connect_and_disconnect() {
    let s = stack(Options::default(), &["https://site.example"], 8).await;
    let mut ev = fixture("example-apigw-websocket-request.json");
    ev["headers"]["Origin"] = json!("https://site.example");
    let req: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev.clone()).unwrap();
    let conn = ConnId(req.request_context.connection_id.clone().unwrap());
    assert_eq!(req.request_context.connected_at, 1547230720092);
    assert_eq!(req.request_context.identity.source_ip.as_deref(), Some("192.168.196.186"));
    assert_eq!(handlers::ws_connect(&*s.relay, &*s.guard, None, req).await.status_code, 200);

    ev["headers"]["Origin"] = json!("https://evil.example");
    let evil: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev).unwrap();
    assert_eq!(handlers::ws_connect(&*s.relay, &*s.guard, None, evil).await.status_code, 403);

    let ch = Channel::parse("deploys").unwrap();
    s.store.subscribe(&conn, &ch, 10).await.unwrap();
    assert_eq!(all_subscribers(&*s.store, &ch).await.unwrap(), vec![conn.clone()]);
    let mut bye = fixture("example-apigw-websocket-request-disconnect-route.json");
    bye["requestContext"]["connectionId"] = json!(conn.0);
    let bye: ApiGatewayWebsocketProxyRequest = serde_json::from_value(bye).unwrap();
    assert_eq!(handlers::ws_disconnect(&*s.relay, &*s.guard, bye).await.status_code, 200);
    assert!(all_subscribers(&*s.store, &ch).await.unwrap().is_empty());

    let mut no_id = fixture("example-apigw-websocket-request-without-method.json");
    no_id["requestContext"]["connectionId"] = Value::Null;
    let no_id: ApiGatewayWebsocketProxyRequest = serde_json::from_value(no_id).unwrap();
    assert_eq!(handlers::ws_connect(&*s.relay, &*s.guard, None, no_id).await.status_code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_subscribes_and_a_webhook_reaches_it_through_post_to_connection() {
    let mut s = stack(Options::default(), &[], 2).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
    ws.send(Message::Text(json!({"action":"subscribe","channel":"deploys"}).to_string().into())).await.unwrap();
    let mut subscribed = next(&mut ws).await;
    // The table's epoch: made once, the same from every instance.
    let epoch = subscribed.as_object_mut().unwrap().remove("epoch").unwrap();
    assert_eq!(subscribed, json!({"type":"subscribed","channel":"deploys","seq":0}));
    let other = common::fresh_store_on(s.store.table(), Retention::from(&Limits::default()));
    let read = hookcast_core::ports::EventLog::read(&other, &Channel::parse("news").unwrap(), 0, 0).await.unwrap();
    assert_eq!(json!(read.epoch), epoch);

    let (status, _, body) = http(&s.hooks, local_snippets(), webhook_request(&deploy("d1"))).await;
    assert_eq!(status, 200);
    let ack: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ack, json!({"ok": true, "channel": "deploys", "event": "deploy.succeeded", "seq": 1, "duplicate": false}));
    // Acknowledged from the log; the pipeline delivers it: one job per shard.
    assert_eq!(s.deliver(1).await, 2);
    let ev = next(&mut ws).await;
    assert_eq!((ev["event"].as_str(), ev["seq"].as_u64()), (Some("deploy.succeeded"), Some(1)));
    assert_eq!(ev["data"]["title"], "From Lambda");

    // Redelivery: acknowledged, not pushed again.
    let (_, _, body) = http(&s.hooks, local_snippets(), webhook_request(&deploy("d1"))).await;
    let ack: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ack["duplicate"], true);
    // Forged: 401 JSON, nothing stored.
    let mut forged = webhook_request(&deploy("d2"));
    forged.headers_mut().insert("x-webhook-signature", sign::netlify(b"wrong", &deploy("d2")).parse().unwrap());
    let (status, headers, _) = http(&s.hooks, local_snippets(), forged).await;
    assert_eq!(status, 401);
    assert_eq!(headers["content-type"], "application/json");

    // ping and $default: answered by the function in its response (every
    // message route is two-way), no post.
    let (invoked, posted) = (s.emu.counters().invocations.load(Relaxed), s.emu.counters().posted.load(Relaxed));
    ws.send(Message::Text(r#"{"action":"ping"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await, json!({"type":"pong"}));
    ws.send(Message::Text(r#"{"action":"dance"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "unknown_action");
    assert_eq!(s.emu.counters().invocations.load(Relaxed), invoked + 2, "each reaches the message function");
    assert_eq!(s.emu.counters().posted.load(Relaxed), posted, "and is answered without a post");
    let (mut late, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
    // On AWS a replay is always batched (one message for up to 96 KB), whatever the client
    // asked; one message goes back in the function's response, with no post.
    let posts = s.emu.counters().posted.load(std::sync::atomic::Ordering::Relaxed);
    late.send(Message::Text(r#"{"action":"subscribe","channel":"deploys","since":0}"#.into())).await.unwrap();
    let batch = next(&mut late).await;
    assert_eq!(batch["type"], "batch");
    assert_eq!(batch["frames"][0]["seq"], 1);
    assert_eq!(batch["frames"][1], json!({"type":"subscribed","channel":"deploys","seq":1,"epoch":epoch}));
    assert_eq!(s.emu.counters().posted.load(std::sync::atomic::Ordering::Relaxed), posts, "no post");
    // Occupancy through its own route: both pages are viewing; asking again at once is refused.
    late.send(Message::Text(r#"{"action":"occupancy","channel":"deploys"}"#.into())).await.unwrap();
    assert_eq!(next(&mut late).await, json!({"type":"occupancy","channel":"deploys","count":2}));
    late.send(Message::Text(r#"{"action":"occupancy","channel":"deploys"}"#.into())).await.unwrap();
    assert_eq!(next(&mut late).await["code"], "rate_limited");
    ws.send(Message::Text(r#"{"action":"occupancy","channel":"elsewhere"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "not_subscribed");
    // A client that reads batches gets its replay and the reply in one message.
    let (mut third, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
    let posts = s.emu.counters().posted.load(std::sync::atomic::Ordering::Relaxed);
    third.send(Message::Text(r#"{"action":"subscribe","channel":"deploys","since":0,"batch":true}"#.into())).await.unwrap();
    let batch = next(&mut third).await;
    assert_eq!(batch["type"], "batch");
    assert_eq!(batch["frames"][0]["seq"], 1);
    assert_eq!(batch["frames"][1], json!({"type":"subscribed","channel":"deploys","seq":1,"epoch":epoch}));
    assert_eq!(s.emu.counters().posted.load(std::sync::atomic::Ordering::Relaxed), posts, "no post");
    third.close(None).await.unwrap();

    // History over the HTTP API, and the snippet with the WebSocket URL built in.
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!("/channels/deploys/events");
    ev["rawQueryString"] = json!("since=0");
    ev["queryStringParameters"] = json!({"since": "0"});
    let req = lambda_http::request::from_str(&ev.to_string()).unwrap();
    let (_, _, body) = http(&s.hooks, local_snippets(), req).await;
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((h["head"].clone(), h["events"][0]["seq"].clone()), (json!(1), json!(1)));
    let deployed = hookcast_http::Snippets::with_ws_url("wss://abc.execute-api.eu-west-1.amazonaws.com/live");
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!("/hookcast.js");
    let (_, _, body) = http(&s.hooks, deployed.clone(), lambda_http::request::from_str(&ev.to_string()).unwrap()).await;
    assert!(
        body.starts_with("(function(s){if(s&&!s.getAttribute(\"data-url\"))s.setAttribute(\"data-url\",\"wss://abc.execute-api")
    );
    assert!(body.ends_with(hookcast_http::SNIPPET));
    // A percent-encoded channel path reaches the channel, as on the local binary.
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!("/channels/forms%2Fguestbook/events");
    ev["rawQueryString"] = json!("since=0");
    ev["queryStringParameters"] = json!({"since": "0"});
    let (status, _, body) = http(&s.hooks, deployed, lambda_http::request::from_str(&ev.to_string()).unwrap()).await;
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["channel"].clone()), (200, json!("forms/guestbook")));

    // Closing the socket runs $disconnect: the subscription is gone from DynamoDB.
    ws.close(None).await.unwrap();
    late.close(None).await.unwrap();
    let ch = Channel::parse("deploys").unwrap();
    hookcast_testkit::until(WAIT, "$disconnect to remove both subscriptions", || async {
        let left = all_subscribers(&*s.store, &ch).await.unwrap();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still subscribed: {left:?}"))
        }
    })
    .await;
}

/// Subscribes `n` connections (sinks in the emulator) to `channel`.
async fn audience(
    s: &Stack,
    channel: &str,
    n: usize,
) -> Vec<(String, tokio::sync::mpsc::UnboundedReceiver<hookcast_emulate::apigw::Message>)> {
    let ch = Channel::parse(channel).unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("conn{i:04}=")).collect();
    for chunk in ids.chunks(50) {
        futures::future::try_join_all(chunk.iter().map(|id| {
            let (store, ch) = (&*s.store, &ch);
            async move {
                let c = ConnId(id.clone());
                store.add_connection(&c, 0).await?;
                store.subscribe(&c, ch, 10).await
            }
        }))
        .await
        .unwrap();
    }
    ids.into_iter()
        .map(|id| {
            let rx = s.emu.register_sink(&id);
            (id, rx)
        })
        .collect()
}

fn seqs(rx: &mut tokio::sync::mpsc::UnboundedReceiver<hookcast_emulate::apigw::Message>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        if let hookcast_emulate::apigw::Message::Text(t) = m {
            out.push(serde_json::from_str::<Value>(t.as_str()).unwrap()["seq"].as_u64().unwrap());
        }
    }
    out
}

fn hmac_request(channel: &str, n: u64) -> lambda_http::Request {
    let body = json!({"channel": channel, "event": "tick", "data": {"n": n}}).to_string().into_bytes();
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!("/hooks/gh");
    ev["requestContext"]["http"]["method"] = json!("POST");
    ev["rawQueryString"] = json!("");
    ev["queryStringParameters"] = json!({});
    ev["headers"]["content-type"] = json!("application/json");
    ev["headers"]["x-hub-signature-256"] = json!(sign::github(GH.as_bytes(), &body));
    ev["headers"]["x-github-delivery"] = json!(format!("delivery-{channel}-{n}"));
    ev["body"] = json!(String::from_utf8_lossy(&body));
    ev["isBase64Encoded"] = json!(false);
    lambda_http::request::from_str(&ev.to_string()).unwrap()
}

/// The webhook is acknowledged once its event is in the log: before any
/// fan-out has run. Then the pipeline reaches every live page once, over 8
/// shards, and deletes exactly the connections API Gateway says are Gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_through_the_pipeline_reaches_every_live_page_once_and_drops_the_gone() {
    let mut s = stack(Options::default(), &[], 8).await;
    let mut sinks = audience(&s, "deploys", 400).await;
    for (id, _) in sinks.iter().step_by(20) {
        s.emu.drop_connection(id);
    }
    let (status, _, _) = http(&s.hooks, local_snippets(), webhook_request(&deploy("big"))).await;
    assert_eq!(status, 200);
    assert!(sinks.iter_mut().all(|(_, rx)| rx.try_recv().is_err()), "acknowledged before any push");
    assert_eq!(s.emu.counters().calls.load(std::sync::atomic::Ordering::Relaxed), 0);

    assert_eq!(s.deliver(2).await, 8, "one job per shard");
    for (i, (_, rx)) in sinks.iter_mut().enumerate() {
        let want: Vec<u64> = if i % 20 == 0 { vec![] } else { vec![1] };
        assert_eq!(seqs(rx), want, "connection {i}");
    }
    let ch = Channel::parse("deploys").unwrap();
    let mut left = all_subscribers(&*s.store, &ch).await.unwrap();
    left.sort();
    let want: Vec<ConnId> =
        sinks.iter().enumerate().filter(|(i, _)| i % 20 != 0).map(|(_, (id, _))| ConnId(id.clone())).collect();
    assert_eq!(left, want, "exactly the Gone connections were deleted");
    assert_eq!(s.store.count_subscribers(&ch).await.unwrap(), 380, "the counter followed");
    assert_eq!(common::queue_depth(&s.dlq_url).await, 0);
}

/// Two webhook "instances" (separate clients) append to one channel at once;
/// two fan-out workers share the queue. Every socket still sees the
/// channel's seqs strictly in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_and_two_workers_keep_every_socket_in_seq_order() {
    let mut s = stack(Options::default(), &[], 4).await;
    let mut sinks = audience(&s, "news", 40).await;
    let other = Arc::new(Hooks::new(
        Arc::new(config(&[])),
        Arc::new(common::fresh_store_on(s.store.table(), Retention::from(&Limits::default()))),
    ));
    let posts = (1..=16u64).map(|n| {
        let hooks = if n % 2 == 0 { s.hooks.clone() } else { other.clone() };
        async move { http(&hooks, local_snippets(), hmac_request("news", n)).await.0 }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|st| *st == 200), "{statuses:?}");
    // Appends that meet commit as a group: one job per shard per commit.
    let jobs = s.deliver(2).await;
    assert!(jobs % 4 == 0 && (4..=16 * 4).contains(&jobs), "{jobs} jobs for 16 events over 4 shards");
    for (i, (_, rx)) in sinks.iter_mut().enumerate() {
        assert_eq!(seqs(rx), (1..=16).collect::<Vec<_>>(), "connection {i}: in order, once each");
    }
}

/// A fan-out worker dies mid-shard (its Lambda times out or crashes): the
/// message was not deleted, so SQS hands it to another worker after the
/// visibility timeout. Every live page gets the event; the only duplicates
/// are pages reached before the crash, and pages drop those by seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_shard_is_redelivered_and_every_page_gets_the_event() {
    let mut s = stack_with(
        Options { latency: hookcast_emulate::apigw::Latency::fixed(Duration::from_millis(10)), ..Options::default() },
        &[],
        1,
        2,
    )
    .await;
    let mut sinks = audience(&s, "deploys", 120).await;
    let (status, _, _) = http(&s.hooks, local_snippets(), webhook_request(&deploy("crash"))).await;
    assert_eq!(status, 200);
    let queue = common::sqs_queue(&s.queue_url);
    assert_eq!(s.pump.drain(&queue, &*s.store, 1, 3).await, 1);

    let batch = common::receive(&s.queue_url, 10).await;
    assert_eq!(batch.records.len(), 1);
    // The doomed worker posts two at a time, so it dies part-way through.
    let slow = Limits { fanout_concurrency: 2, ..Limits::default() };
    let store = Arc::new(common::fresh_store_on(s.store.table(), Retention::from(&Limits::default())));
    let fanout = Fanout::new(
        Arc::new(Config { limits: slow, ..config(&[]) }),
        store.clone(),
        Arc::new(ApiGwGateway::new(&common::sdk_config(None), &s.emu.management_endpoint())),
    );
    let retries = common::sqs_queue(&s.queue_url);
    let worker = tokio::spawn(async move { pipeline::fan_out_batch(&fanout, &*store, &retries, &batch, None).await });
    let posted = || s.emu.counters().posted.load(std::sync::atomic::Ordering::Relaxed);
    // Polled tightly, so the kill lands mid-shard; the ceiling is for a worker that never posts.
    let start = tokio::time::Instant::now();
    while posted() < 30 {
        assert!(
            start.elapsed() < WAIT,
            "gave up after {WAIT:?} waiting for the doomed worker to post 30; it posted {}",
            posted()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    worker.abort();
    let _ = worker.await;
    // Posts the worker had sent when it died still land (API Gateway does
    // not take back a request it received): count them too, once the
    // emulated API has been quiet for a moment.
    let mut before = posted();
    loop {
        assert!(start.elapsed() < WAIT, "the posts in flight never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = posted();
        if now == before {
            break;
        }
        before = now;
    }
    assert!(before < 120, "killed mid-shard ({before} posted)");

    s.deliver(1).await; // the redelivery, after the visibility timeout
    let mut twice = 0;
    for (i, (_, rx)) in sinks.iter_mut().enumerate() {
        let got = seqs(rx);
        assert!(!got.is_empty(), "connection {i} never got the event");
        assert!(got.iter().all(|q| *q == 1) && got.len() <= 2, "connection {i}: {got:?}");
        twice += usize::from(got.len() == 2);
    }
    assert!(twice as u64 <= before, "duplicates only where the dead worker had posted: {twice} > {before}");
}

/// Drives `fanout` over the queue until it is empty (each receive a batch of
/// up to 10, as the event source mapping sends them); returns the receives.
async fn drain_with<S: hookcast_core::ports::Subscriptions>(
    s: &Stack,
    fanout: &Fanout<S, ApiGwGateway>,
    queue: &hookcast_aws::pipeline::SqsQueue,
    budget: Option<Duration>,
) -> usize {
    let (mut receives, mut moved) = (0, tokio::time::Instant::now());
    loop {
        let batch = common::receive(&s.queue_url, 10).await;
        if batch.records.is_empty() {
            let depth = common::queue_depth(&s.queue_url).await;
            if depth == 0 {
                return receives;
            }
            assert!(
                moved.elapsed() < WAIT,
                "gave up after {WAIT:?} without a receive; {depth} jobs waiting, {receives} receives"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        receives += 1;
        moved = tokio::time::Instant::now();
        let budget = budget.map(|b| pipeline::Budget { until: std::time::Instant::now() + b, posts_per_second: None });
        let res = pipeline::fan_out_batch(fanout, &*s.store, queue, &batch, budget).await;
        common::complete(&s.queue_url, &batch, &res).await;
    }
}

fn job(seq: u64) -> pipeline::Job {
    let event = hookcast_core::Event {
        channel: Channel::parse("deploys").unwrap(),
        seq,
        event: hookcast_core::EventName::parse("e").unwrap(),
        data: json!({}),
        at: "t".into(),
    };
    pipeline::Job::for_event(&event, 1).remove(0)
}

/// A group's first job fails 12 times (its subscribers cannot be read), then
/// the store comes back. Each failure hands the group's later jobs back with
/// it, untouched, which raises their receive count too: with the queue's
/// redrive alone (maxReceiveCount 10, before) they walked into the
/// dead-letter queue without ever being tried. The worker counts a job's own
/// failures instead, so nothing is lost: every page gets 1, 2, 3 in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_whose_first_job_fails_twelve_times_loses_none_of_its_later_events() {
    let mut s = stack_with(Options::default(), &[], 1, 300).await;
    let mut sinks = audience(&s, "deploys", 5).await;
    // The failing job comes back after a second each time (the test's patience, not AWS's).
    let mut cfg = config(&[]);
    cfg.limits.fanout_retry_base = Duration::from_secs(1);
    cfg.limits.fanout_retry_max = Duration::from_secs(1);
    let subs =
        Arc::new(hookcast_testkit::Faulty::new(common::fresh_store_on(s.store.table(), Retention::from(&Limits::default()))));
    subs.fail_pages.store(12, std::sync::atomic::Ordering::SeqCst);
    let fanout = Fanout::new(
        Arc::new(cfg),
        subs.clone(),
        Arc::new(ApiGwGateway::new(&common::sdk_config(None), &s.emu.management_endpoint())),
    );
    let queue = common::sqs_queue(&s.queue_url);
    pipeline::JobQueue::enqueue(&queue, &[job(1), job(2), job(3)]).await.unwrap();
    let receives = drain_with(&s, &fanout, &queue, None).await;
    assert_eq!(subs.fail_pages.load(std::sync::atomic::Ordering::SeqCst), 0, "the 12 failures happened");
    assert!(receives > 12, "{receives} receives");
    assert_eq!(common::queue_depth(&s.dlq_url).await, 0, "nothing in the dead-letter queue");
    for (i, (_, rx)) in sinks.iter_mut().enumerate() {
        assert_eq!(seqs(rx), vec![1, 2, 3], "connection {i}");
    }
    let _ = &mut s;
}

/// A job that keeps failing is moved to the dead-letter queue by the worker
/// after MAX_JOB_FAILURES of its own failures (the template alarms on it),
/// and its group goes on: the next job is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_keeps_failing_moves_to_the_dead_letter_queue_and_its_group_goes_on() {
    let mut s = stack_with(Options::default(), &[], 1, 300).await;
    let mut sinks = audience(&s, "deploys", 3).await;
    let mut cfg = config(&[]);
    cfg.limits.fanout_retry_base = Duration::from_secs(1);
    cfg.limits.fanout_retry_max = Duration::from_secs(1);
    let subs =
        Arc::new(hookcast_testkit::Faulty::new(common::fresh_store_on(s.store.table(), Retention::from(&Limits::default()))));
    subs.fail_pages.store(pipeline::MAX_JOB_FAILURES, std::sync::atomic::Ordering::SeqCst);
    let fanout = Fanout::new(
        Arc::new(cfg),
        subs.clone(),
        Arc::new(ApiGwGateway::new(&common::sdk_config(None), &s.emu.management_endpoint())),
    );
    let queue = common::sqs_queue(&s.queue_url);
    pipeline::JobQueue::enqueue(&queue, &[job(1), job(2)]).await.unwrap();
    drain_with(&s, &fanout, &queue, None).await;
    let dead = common::receive(&s.dlq_url, 10).await;
    let dead: Vec<u64> = dead
        .records
        .iter()
        .map(|r| serde_json::from_str::<pipeline::Job>(r.body.as_deref().unwrap()).unwrap().first_seq())
        .collect();
    assert_eq!(dead, vec![1], "the failing job, and only it, in the dead-letter queue");
    for (i, (_, rx)) in sinks.iter_mut().enumerate() {
        assert_eq!(seqs(rx), vec![2], "connection {i}: the group went on");
    }
    let _ = &mut s;
}

/// A shard too big for one invocation's time budget: no post starts past
/// the budget; the worker saves where it stopped and hands the message back
/// at once (the queue's own visibility timeout, 300 s, is beyond the test's
/// patience); the next receive resumes there. Every page gets the event
/// exactly once: nothing is posted twice, nothing goes to the dead-letter
/// queue. The worker posts at 1,000/s, so 1,150 posts take over a second,
/// longer than the 600 ms budget: the job is resumed at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_bigger_than_the_time_budget_resumes_where_it_stopped() {
    use std::sync::atomic::Ordering;
    let s = stack_with(Options::default(), &[], 1, 300).await;
    let n = hookcast_core::fanout::FANOUT_PAGE + 150;
    let mut sinks = audience(&s, "deploys", n).await;
    let gateway = ApiGwGateway::new(&common::sdk_config(None), &s.emu.management_endpoint()).with_rate(1000);
    let fanout = Fanout::new(Arc::new(config(&[])), s.store.clone(), Arc::new(gateway));
    let queue = common::sqs_queue(&s.queue_url);
    pipeline::JobQueue::enqueue(&queue, &[job(1)]).await.unwrap();
    let receives = drain_with(&s, &fanout, &queue, Some(Duration::from_millis(600))).await;
    assert!(receives >= 2, "resumed: {receives} receives");
    for (i, (_, rx)) in sinks.iter_mut().enumerate() {
        assert_eq!(seqs(rx), vec![1], "connection {i}: once");
    }
    assert_eq!(s.emu.counters().calls.load(Ordering::Relaxed), n as u64, "no page was posted to twice");
    assert_eq!(common::queue_depth(&s.dlq_url).await, 0);
}

/// The dispatcher reads AWS's own DynamoDB stream event: items that are not
/// logged events (this fixture's, heads, dedupe keys, counters) make no jobs.
#[tokio::test]
async fn the_dispatcher_ignores_items_that_are_not_events() {
    struct Count(std::sync::Mutex<usize>);
    impl pipeline::JobQueue for Count {
        async fn enqueue(&self, jobs: &[pipeline::Job]) -> Result<(), pipeline::PipelineError> {
            *self.0.lock().unwrap() += jobs.len();
            Ok(())
        }
        async fn hold(&self, _: &str, _: Duration) -> Result<(), pipeline::PipelineError> {
            unreachable!("the dispatcher never hands a message back")
        }
        async fn dead_letter(&self, _: &pipeline::Job) -> Result<(), pipeline::PipelineError> {
            unreachable!("the dispatcher never dead-letters")
        }
    }
    let q = Count(std::sync::Mutex::new(0));
    let none = hookcast_testkit::MemLog::new(Retention::from(&Limits::default()));
    let ev: aws_lambda_events::dynamodb::Event = serde_json::from_value(fixture("example-dynamodb-event.json")).unwrap();
    assert!(!ev.records.is_empty());
    assert_eq!(pipeline::dispatch(&q, &none, 8, &ev).await.unwrap(), 0);
    let mut mine = fixture("example-dynamodb-event.json");
    mine["Records"][0]["dynamodb"]["NewImage"] = json!({
        "pk": {"S": "evs#deploys"}, "sk": {"S": "ev#00000000000000000007"}, "seq": {"N": "7"},
        "event": {"S": "deploy.succeeded"}, "data": {"S": "{\"id\":\"x\"}"}, "at": {"S": "2026-11-23T08:00:00.000Z"}
    });
    let ev: aws_lambda_events::dynamodb::Event = serde_json::from_value(mine.clone()).unwrap();
    assert_eq!(pipeline::dispatch(&q, &none, 8, &ev).await.unwrap(), 8);
    let e = pipeline::event_of_record(&ev.records[0]).unwrap().expect("an event");
    assert_eq!((e.channel.as_str(), e.seq, e.data["id"].as_str()), ("deploys", 7, Some("x")));

    // An event item that does not decode is never skipped: the batch fails
    // (Lambda retries, bisects, then sends it to the on-failure queue) and
    // nothing of it is queued.
    let queued = *q.0.lock().unwrap();
    for (field, broken) in
        [("data", json!({"S": "{not json"})), ("seq", json!({"S": "seven"})), ("event", json!({"S": "no spaces"}))]
    {
        let mut bad = mine.clone();
        bad["Records"][0]["dynamodb"]["NewImage"][field] = broken;
        let mut two = bad.clone();
        two["Records"] = json!([mine["Records"][0].clone(), bad["Records"][0].clone()]);
        let ev: aws_lambda_events::dynamodb::Event = serde_json::from_value(two).unwrap();
        let err = pipeline::dispatch(&q, &none, 8, &ev).await.expect_err(field).to_string();
        assert!(err.contains("evs#deploys") && err.contains("ev#00000000000000000007"), "{field}: {err}");
    }
    assert_eq!(*q.0.lock().unwrap(), queued, "a failed batch queues nothing");
}

/// An HTTP API v2 event for any request (a non-UTF-8 body travels base64-encoded, as API Gateway sends it).
fn v2_request(method: &str, path_and_query: &str, headers: &[(String, String)], body: &[u8]) -> lambda_http::Request {
    use base64::Engine;
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["rawQueryString"] = json!(query);
    let params: serde_json::Map<String, Value> =
        query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), json!(v))).collect();
    ev["queryStringParameters"] = Value::Object(params);
    ev["headers"] = json!({});
    for (k, v) in headers {
        ev["headers"][k.to_ascii_lowercase()] = json!(v);
    }
    match std::str::from_utf8(body) {
        Ok(text) => {
            ev["body"] = json!(text);
            ev["isBase64Encoded"] = json!(false);
        }
        Err(_) => {
            ev["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
            ev["isBase64Encoded"] = json!(true);
        }
    }
    lambda_http::request::from_str(&ev.to_string()).expect("lambda_http reads the v2 shape")
}

/// The shared bad-input table through the Lambda handlers: webhooks and
/// history through the webhook function's router (AWS's v2 event shape, the
/// DynamoDB store), frames through API Gateway to the socket functions.
/// Each refusal has its status (or error frame), and nothing is stored or posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bad_input_table_is_refused_by_the_lambda_handlers_and_leaves_no_trace() {
    use hookcast_testkit::hostile;
    let raw: hookcast_core::config::RawConfig = toml::from_str(hostile::CONFIG_TOML).unwrap();
    let cfg = Config::build(raw, &|_| None).unwrap();
    let mut s = stack_for(Options::default(), cfg, 1, 300).await;
    let posted = |s: &Stack| s.emu.counters().posted.load(std::sync::atomic::Ordering::Relaxed);
    let before = posted(&s);
    let cases = hostile::http_cases();
    for case in &cases {
        // The HTTP API takes at most 10 MB; the table's biggest body is far below.
        let (status, headers, body) =
            http(&s.hooks, local_snippets(), v2_request(case.method, &case.path, &case.headers, &case.body)).await;
        assert_eq!((status, headers["content-type"].as_str()), (case.status, Some("application/json")), "{}: {body}", case.name);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{}: not JSON: {body}", case.name));
        assert_eq!(v["error"], case.code, "{}: {body}", case.name);
    }
    for c in hostile::CHANNELS {
        let h = hookcast_core::EventLog::read(s.hooks.log(), &Channel::parse(c).unwrap(), 0, 1).await.unwrap();
        assert_eq!(h.head, 0, "{c}: a refused request stored something");
    }
    assert_eq!(s.deliver(1).await, 0, "the table's stream carries no event");
    assert_eq!(posted(&s), before, "nothing was posted to a connection");

    let frames = hostile::frame_cases();
    let (mut ws, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
    for case in &frames {
        ws.send(Message::Text(case.frame.clone().into())).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(case.code)), "{}: {reply}", case.name);
    }
    ws.send(Message::Binary(vec![0, 1, 2].into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_message", "binary frames are answered as locally");
    ws.send(Message::Text(json!({"action": "ping", "pad": "p".repeat(40 * 1024)}).to_string().into())).await.unwrap();
    match hookcast_testkit::within(WAIT, "the 1009 close of a 40 KB frame", ws.next()).await {
        Some(Ok(Message::Close(Some(c)))) => assert_eq!(u16::from(c.code), 1009),
        other => panic!("a 40 KB frame: {other:?}"),
    }
    eprintln!(
        "bad-input table through the Lambda handlers: {} HTTP cases, {} frame cases + binary + 1009",
        cases.len(),
        frames.len()
    );
}

/// `hookcast listen` through API Gateway: a CI step waiting for the deploy
/// on the stack sees it arrive through the pipeline, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hookcast_listen_waits_for_a_deploy_through_the_stack() {
    let mut s = stack(Options::default(), &[], 1).await;
    let args = hookcast::listen::ListenArgs {
        url: s.emu.ws_url(),
        channels: vec!["deploys".parse().unwrap()],
        until: Some("deploy.succeeded".into()),
        // A ceiling: moto is slow under load; the wait ends when the deploy arrives.
        timeout: "600s".into(),
        since: None,
        token: None,
        origin: None,
    };
    let (tx, mut following) = tokio::sync::mpsc::unbounded_channel::<String>();
    /// Forwards what listen says, line by line, so the test knows when it follows.
    struct Lines(tokio::sync::mpsc::UnboundedSender<String>, Vec<u8>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.extend_from_slice(b);
            while let Some(end) = self.1.iter().position(|c| *c == b'\n') {
                let line: Vec<u8> = self.1.drain(..=end).collect();
                let _ = self.0.send(String::from_utf8_lossy(&line).into_owned());
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let listening = tokio::spawn(async move {
        let mut out = Vec::new();
        let outcome = hookcast::listen::run(&args, &mut out, &mut Lines(tx, Vec::new())).await;
        (outcome, String::from_utf8(out).unwrap())
    });
    loop {
        let said = hookcast_testkit::within(WAIT, "listen to follow deploys", following.recv())
            .await
            .expect("listen stopped before following");
        if said.contains("following deploys") {
            break;
        }
    }
    let (status, _, _) = http(&s.hooks, local_snippets(), webhook_request(&deploy("listen-1"))).await;
    assert_eq!(status, 200);
    s.deliver(1).await;
    let (outcome, out) = hookcast_testkit::within(4 * WAIT, "listen to see the deploy and exit", listening).await.unwrap();
    assert_eq!(outcome.unwrap(), hookcast::listen::Outcome::Done);
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((line["event"].as_str(), line["seq"].as_u64()), (Some("deploy.succeeded"), Some(1)));
}

/// Every sender kind through the Lambda handlers (issue 22): each real
/// payload, signed by an independent Python signer, through the webhook
/// function's router in AWS's v2 shape into DynamoDB, then the stream,
/// dispatcher, SQS FIFO and fan-out worker to a page on the emulated
/// WebSocket API, with the configured channel, event and data; the same
/// body signed with another secret is refused and reaches no page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sender_s_real_body_reaches_a_page_through_the_lambda_handlers() {
    use hookcast_testkit::senders;
    let raw: hookcast_core::config::RawConfig = toml::from_str(&senders::config_toml()).unwrap();
    let cfg = Config::build(raw, &|_| None).unwrap();
    let mut s = stack_for(Options::default(), cfg, 1, 300).await;
    let cases = senders::cases();
    let (mut ws, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
    let mut channels: Vec<&str> = cases.iter().map(|c| c.channel).collect();
    channels.dedup();
    for ch in &channels {
        ws.send(Message::Text(json!({"action": "subscribe", "channel": ch}).to_string().into())).await.unwrap();
        assert_eq!(next(&mut ws).await["type"], "subscribed", "{ch}");
    }
    for case in &cases {
        let what = format!("{} ({})", case.source, case.fixture);
        let file = senders::fixture(case.fixture);
        let body = std::fs::read(&file).unwrap();
        let with_type = |mut h: Vec<(String, String)>| {
            h.push(("content-type".into(), case.content_type.into()));
            h
        };
        let wrong = if matches!(case.scheme, "svix" | "webhook") {
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        } else {
            "not-the-secret-0123456789"
        };
        let forged = with_type(senders::sign(case.scheme, wrong, &file, &case.extra));
        let path = format!("/hooks/{}", case.source);
        let (status, _, answer) = http(&s.hooks, local_snippets(), v2_request("POST", &path, &forged, &body)).await;
        assert_eq!(status, 401, "{what} forged: {answer}");

        let headers = with_type(senders::sign(case.scheme, case.secret, &file, &case.extra));
        let (status, _, answer) = http(&s.hooks, local_snippets(), v2_request("POST", &path, &headers, &body)).await;
        assert_eq!(status, 200, "{what}: {answer}");
        s.deliver(1).await;
        let ev = next(&mut ws).await;
        assert_eq!((ev["channel"].as_str(), ev["event"].as_str()), (Some(case.channel), Some(case.event)), "{what}: {ev}");
        assert_eq!(ev["data"], case.data, "{what}");
    }
}

/// A client past its budget (60 frames a minute that reach a function) is
/// closed with DeleteConnection and forgotten: its subscriptions are gone,
/// so it costs nothing more, whatever it sends. A page's own few frames
/// are far inside it. (Red before: all 80 subscribes answered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_over_its_budget_is_closed_and_forgotten() {
    let s = stack(Options::default(), &[], 1).await;
    let frame = |i: usize| Message::Text(json!({"action": "subscribe", "channel": format!("c{}", i % 20)}).to_string().into());
    // The budget is per clock minute: a run that crosses a minute's turn
    // starts a second budget half way, proves nothing, and is run again
    // (a new connection) in the next minute.
    let minute = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60;
    let (mut answered, mut closed) = (0, false);
    for attempt in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
        let began = minute();
        (answered, closed) = (0, false);
        for i in 0..80 {
            if ws.send(frame(i)).await.is_err() {
                closed = true;
                break;
            }
            match hookcast_testkit::within(WAIT, "an answer or the close", ws.next()).await {
                Some(Ok(Message::Text(_))) => answered += 1,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    closed = true;
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
        if minute() == began {
            break;
        }
        eprintln!("attempt {attempt} crossed a minute's turn: {answered} answered, closed {closed}; again");
        // Its subscriptions go with its $disconnect (the check below waits for that too).
        let _closing = ws.close(None).await;
    }
    assert!(closed, "the connection was left open after {answered} answers");
    assert_eq!(answered, hookcast_aws::guard::FRAMES_PER_MINUTE as usize, "every frame inside the budget answered");
    // Forgotten after the close (the handler goes on once DeleteConnection answers).
    hookcast_testkit::until(WAIT, "the closed connection's subscriptions to go", || async {
        for c in 0..20 {
            let ch = Channel::parse(&format!("c{c}")).unwrap();
            if !all_subscribers(&*s.store, &ch).await.unwrap().is_empty() {
                return Err(format!("c{c} still has the closed connection"));
            }
        }
        Ok(())
    })
    .await;
}
