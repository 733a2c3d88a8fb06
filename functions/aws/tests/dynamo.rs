//! The DynamoDB store passes the same conformance suite as the embedded
//! store, through the real SDK client against a DynamoDB-compatible server.

mod common;

use hookcast_core::ports::{ConnId, EventLog, SubOutcome, Subscriptions};
use hookcast_core::testutil::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_store_conformance_suite() {
    conformance::run(common::fresh_store).await;
}

/// The per-connection cap is checked inside the subscribe transaction, so
/// parallel subscribes (as from several Lambda instances) cannot exceed it;
/// the occupancy counter moves once per real change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_subscribes_respect_the_cap_and_the_counter() {
    let store = common::fresh_store(conformance::retention()).with_shards(4);
    let c = ConnId("racer".into());
    store.add_connection(&c, conformance::T0).await.unwrap();
    let channels: Vec<_> = (0..8).map(|i| conformance::ch(&format!("r{i}"))).collect();
    let got = futures::future::join_all(channels.iter().map(|ch| store.subscribe(&c, ch, 3))).await;
    let added = got.iter().filter(|r| matches!(r, Ok(SubOutcome::Added))).count();
    assert_eq!(added, 3, "{got:?}");
    let mut total = 0;
    for ch in &channels {
        total += store.count_subscribers(ch).await.unwrap();
    }
    assert_eq!(total, 3);
    // Unsubscribe twice and a racing disconnect: each counter drops once.
    let mine = channels.iter().zip(&got).find(|(_, r)| matches!(r, Ok(SubOutcome::Added))).unwrap().0;
    store.unsubscribe(&c, mine).await.unwrap();
    store.unsubscribe(&c, mine).await.unwrap();
    assert_eq!(store.count_subscribers(mine).await.unwrap(), 0);
    futures::future::join(store.remove_connection(&c), store.remove_connection(&c)).await.0.unwrap();
    for ch in &channels {
        assert_eq!(store.count_subscribers(ch).await.unwrap(), 0, "{ch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_spread_over_shards_and_page_fully() {
    let store = common::fresh_store(conformance::retention()).with_shards(4);
    let ch = conformance::ch("hot");
    for i in 0..300 {
        let c = ConnId(format!("conn-{i}"));
        store.add_connection(&c, conformance::T0).await.unwrap();
        store.subscribe(&c, &ch, 10).await.unwrap();
    }
    let mut per_shard = Vec::new();
    let mut got = Vec::new();
    for shard in 0..store.shards() {
        let mut n = 0;
        let mut after = None;
        loop {
            let page = store.subscriber_page(&ch, shard, after.as_ref(), 40).await.unwrap();
            n += page.conns.len();
            got.extend(page.conns);
            match page.next {
                Some(x) => after = Some(x),
                None => break,
            }
        }
        per_shard.push(n);
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 300);
    assert!(per_shard.iter().all(|n| *n > 30), "spread over shards: {per_shard:?}");
    assert_eq!(store.count_subscribers(&ch).await.unwrap(), 300, "the shards' counters");
}

/// Appends do not prune; reads apply retention, and items past their TTL
/// that DynamoDB has not deleted yet are not returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_filter_items_past_their_ttl() {
    let store = common::fresh_store(conformance::retention());
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Written "two hours ago" with a one-hour max age: its ttl is in the past.
    let old_ms = now_ms - 2 * 3600 * 1000;
    store.append(&conformance::pending("aged", "k1", old_ms)).await.unwrap();
    let h = store.read(&conformance::ch("aged"), 0, 10).await.unwrap();
    assert_eq!((h.events.len(), h.head, h.first_retained), (0, 1, 2), "expired but not yet deleted: filtered");
    store.append(&conformance::pending("aged", "k2", now_ms)).await.unwrap();
    let h = store.read(&conformance::ch("aged"), 0, 10).await.unwrap();
    assert_eq!(h.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
}
