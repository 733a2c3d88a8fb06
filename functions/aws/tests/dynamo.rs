//! The DynamoDB store passes the same conformance suite as the embedded
//! store, through the real SDK client against a DynamoDB-compatible server.

mod common;

use hookcast_core::ports::{ConnId, Store};
use hookcast_core::testutil::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_store_conformance_suite() {
    conformance::run(common::fresh_store).await;
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
}
