//! The DynamoDB store passes the same conformance suite as the embedded
//! store, through the real SDK client against a DynamoDB-compatible server.

mod common;

use std::time::Duration;

use hookcast_core::ports::{ConnId, Store};
use hookcast_core::testutil::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_store_conformance_suite() {
    // The suite checks exact counts right after each change: no count cache.
    conformance::run(|r| common::fresh_store(r).with_count_ttl(Duration::ZERO)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn occupancy_counts_are_reused_briefly() {
    let store = common::fresh_store(conformance::retention()).with_count_ttl(Duration::from_secs(60));
    let ch = conformance::ch("popular");
    for i in 0..3 {
        let c = ConnId(format!("conn-{i}"));
        store.add_connection(&c, conformance::T0).await.unwrap();
        store.subscribe(&c, &ch, 10).await.unwrap();
    }
    assert_eq!(store.count_subscribers(&ch).await.unwrap(), 3);
    store.subscribe(&ConnId("conn-3".into()), &ch, 10).await.unwrap();
    assert_eq!(store.count_subscribers(&ch).await.unwrap(), 3, "reused within the TTL");
    let uncached = store.clone().with_count_ttl(Duration::ZERO);
    assert_eq!(uncached.count_subscribers(&ch).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_spread_over_shards_and_page_fully() {
    let store = common::fresh_store(conformance::retention()).with_shards(4);
    let ch = conformance::ch("hot");
    // Enough subscribers that each shard's Query needs several pages? moto pages
    // at 1 MB, so page size is checked by count instead: every one comes back.
    for i in 0..300 {
        let c = ConnId(format!("conn-{i}"));
        store.add_connection(&c, conformance::T0).await.unwrap();
        store.subscribe(&c, &ch, 10).await.unwrap();
    }
    let mut got = store.subscribers(&ch).await.unwrap();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 300);
    assert_eq!(store.count_subscribers(&ch).await.unwrap(), 300, "COUNT over every shard");
}
