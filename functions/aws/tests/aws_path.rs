//! The Lambda handlers on AWS's own event shapes, against real parts: a
//! DynamoDB-compatible server, the real SDK clients, and a local API Gateway
//! whose @connections endpoint really delivers to sockets and really says 410.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apigw_local::{Emulator, Invoke, Options};
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use futures::{SinkExt, StreamExt};
use hookcast_aws::apigw::ApiGwGateway;
use hookcast_aws::{handlers, AwsRelay};
use hookcast_core::config::{Config, Limits, Source, SourceKind};
use hookcast_core::ports::{ConnId, Retention, Store};
use hookcast_core::secret::Secret;
use hookcast_core::{sign, Channel, Relay};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const NETLIFY: &str = "netlify-jws-secret";
const WAIT: Duration = Duration::from_secs(15);

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../tests/fixtures/aws/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn config(origins: &[&str]) -> Config {
    let mut sources = BTreeMap::new();
    sources.insert(
        "netlify".into(),
        Source { name: "netlify".into(), kind: SourceKind::Netlify { secret: Secret::new(NETLIFY), forms: BTreeMap::new() }, channels: vec![] },
    );
    Config { allowed_origins: origins.iter().map(|s| s.to_string()).collect(), limits: Limits::default(), sources }
}

struct Stack {
    relay: Arc<AwsRelay>,
    emu: Emulator,
}

/// Emulator → handlers → relay (DynamoDB store, API Gateway gateway) → emulator.
async fn stack(opts: Options, origins: &[&str]) -> Stack {
    let cell: Arc<OnceLock<Arc<AwsRelay>>> = Arc::new(OnceLock::new());
    let c = cell.clone();
    let invoke: Invoke = Arc::new(move |ev: Value| {
        let c = c.clone();
        Box::pin(async move {
            let relay = c.get().expect("relay is set before the first connection").clone();
            let req: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev).expect("the event has AWS's shape");
            let res = match req.request_context.route_key.as_deref() {
                Some("$connect") => handlers::ws_connect(&relay, req).await,
                Some("$disconnect") => handlers::ws_disconnect(&relay, req).await,
                _ => handlers::ws_message(&relay, req).await,
            };
            serde_json::to_value(res).unwrap()
        })
    });
    let emu = apigw_local::start(opts, invoke).await;
    let cfg = config(origins);
    let store = tokio::task::spawn_blocking(|| ()).await.map(|_| common::fresh_store(Retention::from(&cfg.limits))).unwrap();
    let gateway = ApiGwGateway::new(&common::sdk_config(None), &emu.management_endpoint());
    let relay = Arc::new(Relay::new(cfg, store, gateway));
    cell.set(relay.clone()).ok().unwrap();
    Stack { relay, emu }
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
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("timed out").expect("closed").unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed {c:?}"),
            _ => {}
        }
    }
}

/// The emulator routes exactly the actions template.yaml declares, so a route
/// forgotten in the template fails here rather than after `sam deploy`.
#[test]
fn the_template_routes_every_protocol_action() {
    let template = std::fs::read_to_string(format!("{}/../../template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut keys: Vec<&str> =
        template.lines().filter_map(|l| l.trim().strip_prefix("RouteKey:")).map(str::trim).collect();
    keys.sort();
    let mut want: Vec<String> = Options::default().routes;
    want.extend(["$connect", "$disconnect", "$default"].map(String::from));
    want.sort();
    assert_eq!(keys, want);
    for action in ["subscribe", "unsubscribe", "ping", "occupancy"] {
        let msg = json!({"action": action, "channel": "c"}).to_string();
        assert!(hookcast_core::protocol::ClientMsg::parse(&msg).is_ok(), "{action} is a protocol action");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixture_events_drive_connect_and_disconnect() {
    let s = stack(Options::default(), &["https://site.example"]).await;
    let mut ev = fixture("example-apigw-websocket-request.json");
    ev["headers"]["Origin"] = json!("https://site.example");
    let req: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev.clone()).unwrap();
    let conn = ConnId(req.request_context.connection_id.clone().unwrap());
    assert_eq!(req.request_context.connected_at, 1547230720092);
    assert_eq!(req.request_context.identity.source_ip.as_deref(), Some("192.168.196.186"));
    assert_eq!(handlers::ws_connect(&s.relay, req).await.status_code, 200);

    ev["headers"]["Origin"] = json!("https://evil.example");
    let evil: ApiGatewayWebsocketProxyRequest = serde_json::from_value(ev).unwrap();
    assert_eq!(handlers::ws_connect(&s.relay, evil).await.status_code, 403);

    let ch = Channel::parse("deploys").unwrap();
    s.relay.store().subscribe(&conn, &ch, 10).await.unwrap();
    assert_eq!(s.relay.store().subscribers(&ch).await.unwrap(), vec![conn.clone()]);
    let mut bye = fixture("example-apigw-websocket-request-disconnect-route.json");
    bye["requestContext"]["connectionId"] = json!(conn.0);
    let bye: ApiGatewayWebsocketProxyRequest = serde_json::from_value(bye).unwrap();
    assert_eq!(handlers::ws_disconnect(&s.relay, bye).await.status_code, 200);
    assert!(s.relay.store().subscribers(&ch).await.unwrap().is_empty());

    let mut no_id = fixture("example-apigw-websocket-request-without-method.json");
    no_id["requestContext"]["connectionId"] = Value::Null;
    let no_id: ApiGatewayWebsocketProxyRequest = serde_json::from_value(no_id).unwrap();
    assert_eq!(handlers::ws_connect(&s.relay, no_id).await.status_code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_subscribes_and_a_webhook_reaches_it_through_post_to_connection() {
    let s = stack(Options::default(), &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
    ws.send(Message::Text(json!({"action":"subscribe","channel":"deploys"}).to_string().into())).await.unwrap();
    assert_eq!(next(&mut ws).await, json!({"type":"subscribed","channel":"deploys","seq":0}));

    let res = handlers::http_request(&s.relay, "", webhook_request(&deploy("d1"))).await;
    assert_eq!(res.status(), 200);
    let ack: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
    assert_eq!((ack["seq"].clone(), ack["delivered"].clone()), (json!(1), json!(1)));
    let ev = next(&mut ws).await;
    assert_eq!((ev["event"].as_str(), ev["seq"].as_u64()), (Some("deploy.succeeded"), Some(1)));
    assert_eq!(ev["data"]["title"], "From Lambda");

    // Redelivery: acknowledged, not pushed again.
    let res = handlers::http_request(&s.relay, "", webhook_request(&deploy("d1"))).await;
    let ack: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
    assert_eq!(ack["duplicate"], true);
    // Forged: 401 JSON, nothing stored.
    let mut forged = webhook_request(&deploy("d2"));
    forged.headers_mut().insert("x-webhook-signature", sign::netlify(b"wrong", &deploy("d2")).parse().unwrap());
    let res = handlers::http_request(&s.relay, "", forged).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/json");

    // ping, $default and resume with since, all answered through @connections.
    ws.send(Message::Text(r#"{"action":"ping"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await, json!({"type":"pong"}));
    ws.send(Message::Text(r#"{"action":"dance"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "unknown_action");
    let (mut late, _) = tokio_tungstenite::connect_async(s.emu.ws_url()).await.unwrap();
    late.send(Message::Text(r#"{"action":"subscribe","channel":"deploys","since":0}"#.into())).await.unwrap();
    assert_eq!(next(&mut late).await["seq"], 1);
    assert_eq!(next(&mut late).await, json!({"type":"subscribed","channel":"deploys","seq":1}));
    // Occupancy through its own route: both pages are viewing; asking again at once is refused.
    late.send(Message::Text(r#"{"action":"occupancy","channel":"deploys"}"#.into())).await.unwrap();
    assert_eq!(next(&mut late).await, json!({"type":"occupancy","channel":"deploys","count":2}));
    late.send(Message::Text(r#"{"action":"occupancy","channel":"deploys"}"#.into())).await.unwrap();
    assert_eq!(next(&mut late).await["code"], "rate_limited");
    ws.send(Message::Text(r#"{"action":"occupancy","channel":"elsewhere"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "not_subscribed");

    // History over the HTTP API, and the snippet with the WebSocket URL built in.
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!("/channels/deploys/events");
    ev["rawQueryString"] = json!("since=0");
    ev["queryStringParameters"] = json!({"since": "0"});
    let req = lambda_http::request::from_str(&ev.to_string()).unwrap();
    let res = handlers::http_request(&s.relay, "", req).await;
    let h: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
    assert_eq!((h["head"].clone(), h["events"][0]["seq"].clone()), (json!(1), json!(1)));
    let js = handlers::snippet_with_url("wss://abc.execute-api.eu-west-1.amazonaws.com/live");
    let mut ev = fixture("example-apigw-v2-request-no-authorizer.json");
    ev["rawPath"] = json!("/hookcast.js");
    let res = handlers::http_request(&s.relay, &js, lambda_http::request::from_str(&ev.to_string()).unwrap()).await;
    let body = String::from_utf8_lossy(res.body().as_ref()).into_owned();
    assert!(body.starts_with("(function(s){if(s&&!s.getAttribute(\"data-url\"))s.setAttribute(\"data-url\",\"wss://abc.execute-api"));
    assert!(body.ends_with(handlers::SNIPPET));

    // Closing the socket runs $disconnect: the subscription is gone from DynamoDB.
    ws.close(None).await.unwrap();
    late.close(None).await.unwrap();
    let ch = Channel::parse("deploys").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s.relay.store().subscribers(&ch).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "subscriptions not removed on $disconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_to_2000_subscribers_of_whom_5_percent_are_gone() {
    let s = stack(Options::default(), &[]).await;
    let ch = Channel::parse("deploys").unwrap();
    let t0 = std::time::Instant::now();
    let ids: Vec<String> = (0..2000).map(|i| format!("conn{i:04}=")).collect();
    let mut sinks = Vec::new();
    for chunk in ids.chunks(100) {
        futures::future::try_join_all(chunk.iter().map(|id| {
            let (relay, ch) = (&s.relay, &ch);
            async move {
                let c = ConnId(id.clone());
                relay.store().add_connection(&c, 0).await?;
                relay.store().subscribe(&c, ch, 10).await
            }
        }))
        .await
        .unwrap();
    }
    eprintln!("PHASE setup {:?}", t0.elapsed());
    for id in &ids {
        sinks.push(s.emu.register_sink(id));
    }
    // Every 20th page has gone away without a $disconnect reaching us.
    let gone: Vec<&String> = ids.iter().step_by(20).collect();
    for id in &gone {
        s.emu.drop_connection(id);
    }

    let t1 = std::time::Instant::now();
    let res = handlers::http_request(&s.relay, "", webhook_request(&deploy("big"))).await;
    eprintln!("PHASE ingest {:?}", t1.elapsed());
    assert_eq!(res.status(), 200);
    let ack: Value = serde_json::from_slice(res.body().as_ref()).unwrap();
    assert_eq!((ack["delivered"].as_u64(), ack["gone"].as_u64(), ack["failed"].as_u64()), (Some(1900), Some(100), Some(0)));

    for (i, rx) in sinks.iter_mut().enumerate() {
        let mut got = Vec::new();
        while let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        let want = if i % 20 == 0 { 0 } else { 1 };
        assert_eq!(got.len(), want, "connection {i}");
    }
    let mut left = s.relay.store().subscribers(&ch).await.unwrap();
    left.sort();
    let want: Vec<ConnId> = ids.iter().enumerate().filter(|(i, _)| i % 20 != 0).map(|(_, id)| ConnId(id.clone())).collect();
    assert_eq!(left, want, "exactly the Gone connections were deleted");
}
