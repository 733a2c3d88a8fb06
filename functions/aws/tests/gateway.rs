//! The API Gateway gateway over HTTP against the local @connections endpoint:
//! 429s are retried with backoff, 410 is Gone, DeleteConnection closes.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hookcast_aws::apigw::ApiGwGateway;
use hookcast_core::ports::{ConnId, Delivery, Gateway};
use hookcast_emulate::apigw::Options;

fn ok_invoke() -> hookcast_emulate::apigw::Invoke {
    Arc::new(|_| Box::pin(async { Ok(serde_json::json!({"statusCode": 200})) }))
}

#[tokio::test]
async fn throttling_is_retried_gone_is_gone_and_close_closes() {
    let emu = hookcast_emulate::apigw::start(Options { throttle_first: 2, ..Options::default() }, ok_invoke()).await;
    let mut rx = emu.register_sink("conn-a=");
    let gw = ApiGwGateway::new(&common::sdk_config(None), &emu.management_endpoint());
    let a = ConnId("conn-a=".into());

    assert_eq!(gw.send(&a, "hello").await, Delivery::Delivered);
    assert_eq!(emu.counters().throttled.load(Ordering::Relaxed), 2, "two 429s, then the retry went through");
    match rx.try_recv().unwrap() {
        hookcast_emulate::apigw::Message::Text(t) => assert_eq!(t.as_str(), "hello"),
        other => panic!("{other:?}"),
    }
    assert!(rx.try_recv().is_err(), "delivered once");

    assert_eq!(gw.send(&ConnId("nobody=".into()), "x").await, Delivery::Gone);
    gw.close(&a).await;
    assert!(matches!(rx.try_recv().unwrap(), hookcast_emulate::apigw::Message::Close(_)));
    assert_eq!(gw.send(&a, "after close").await, Delivery::Gone);
}

#[tokio::test]
async fn persistent_throttling_is_a_failure_not_gone() {
    let emu = hookcast_emulate::apigw::start(Options { throttle_first: 100, ..Options::default() }, ok_invoke()).await;
    let _rx = emu.register_sink("conn-b=");
    let gw = ApiGwGateway::new(&common::sdk_config(None), &emu.management_endpoint());
    assert_eq!(gw.send(&ConnId("conn-b=".into()), "x").await, Delivery::Failed);
    assert_eq!(
        emu.counters().throttled.load(Ordering::Relaxed),
        hookcast_aws::apigw::MAX_ATTEMPTS as u64,
        "every attempt was made"
    );
}

/// API Gateway refuses a post over its 128 KB message limit (413): that is a
/// failure to report, not a Gone connection and not worth retrying; one just
/// under the limit goes through.
#[tokio::test]
async fn a_post_over_the_message_limit_fails_without_retries() {
    let emu = hookcast_emulate::apigw::start(Options::default(), ok_invoke()).await;
    let mut rx = emu.register_sink("conn-c=");
    let gw = ApiGwGateway::new(&common::sdk_config(None), &emu.management_endpoint());
    let c = ConnId("conn-c=".into());
    let limit = hookcast_emulate::apigw::MESSAGE_LIMIT;
    assert_eq!(gw.send(&c, &"x".repeat(limit + 1)).await, Delivery::Failed);
    assert_eq!(emu.counters().calls.load(Ordering::Relaxed), 1, "a 413 is not retried");
    assert!(rx.try_recv().is_err(), "nothing reached the socket");
    assert_eq!(gw.send(&c, &"x".repeat(limit)).await, Delivery::Delivered);
    assert!(rx.try_recv().is_ok());
}
