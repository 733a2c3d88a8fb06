//! The DynamoDB store passes the same conformance suites as the embedded
//! log (events) and the in-memory subscriptions, through the real SDK client
//! against a DynamoDB-compatible server: the table is both.

mod common;

use hookcast_core::ports::{ConnId, EventLog, SubOutcome, Subscriptions};
use hookcast_testkit::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_store_conformance_suite() {
    conformance::log(common::fresh_store).await;
    conformance::subscriptions(common::fresh_store).await;
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

/// Every read the store makes with a Query is strongly consistent: a page of
/// subscribers read just after a subscribe includes it (an eventually
/// consistent read may not, and that page would skip a brand-new page for
/// the whole event). Seen in the requests the real SDK client sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_pages_and_history_are_read_consistently() {
    use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
    use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
    use aws_sdk_dynamodb::operation::query::QueryInput;
    use std::sync::{Arc, Mutex};

    /// Each Query's key condition and `ConsistentRead`.
    type Seen = Arc<Mutex<Vec<(String, Option<bool>)>>>;
    #[derive(Debug)]
    struct Queries(Seen);
    impl Intercept for Queries {
        fn name(&self) -> &'static str {
            "queries"
        }
        fn read_before_execution(
            &self,
            ctx: &BeforeSerializationInterceptorContextRef<'_>,
            _: &mut ConfigBag,
        ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
            if let Some(q) = ctx.input().downcast_ref::<QueryInput>() {
                let what = format!(
                    "{:?} {:?}",
                    q.key_condition_expression(),
                    q.expression_attribute_values().and_then(|v| v.get(":pk"))
                );
                self.0.lock().unwrap().push((what, q.consistent_read()));
            }
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let conf = aws_sdk_dynamodb::Config::from(&common::sdk_config(Some(common::endpoint())))
        .to_builder()
        .interceptor(Queries(seen.clone()))
        .build();
    let table = common::fresh_store(conformance::retention()).table().to_owned();
    let store =
        hookcast_aws::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), table, conformance::retention())
            .with_shards(2);
    let ch = conformance::ch("fresh");
    let c = ConnId("newcomer".into());
    store.add_connection(&c, conformance::T0).await.unwrap();
    store.subscribe(&c, &ch, 10).await.unwrap();
    let mut found = Vec::new();
    for shard in 0..2 {
        found.extend(store.subscriber_page(&ch, shard, None, 100).await.unwrap().conns);
    }
    assert_eq!(found, vec![c.clone()]);
    store.append(&conformance::pending("fresh", "k1", conformance::T0)).await.unwrap();
    store.read(&ch, 0, 10).await.unwrap();
    store.remove_connection(&c).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 3, "{seen:?}");
    for (what, consistent) in seen.iter() {
        assert_eq!(*consistent, Some(true), "an eventually consistent Query: {what}");
    }
}

/// Against a front as strict as DynamoDB (common::conflict_front: a write to
/// an item another request is writing conflicts, where moto serialises):
/// 50 pages subscribing to one channel at once, and one page subscribing to
/// three channels at once (as the snippet does, one Lambda each), all end up
/// subscribed, and the counters are exact after they all leave at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribes_survive_transaction_conflicts() {
    use std::sync::atomic::Ordering;
    let front = common::conflict_front().await;
    let table = common::fresh_store(conformance::retention()).table().to_owned();
    let client = aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(front.url.clone())));
    let store = hookcast_aws::dynamo::DynamoStore::new(client, table, conformance::retention()).with_shards(8);
    let ch = conformance::ch("hot");
    let pages: Vec<ConnId> = (0..50).map(|i| ConnId(format!("page-{i:02}"))).collect();
    for c in &pages {
        store.add_connection(c, conformance::T0).await.unwrap();
    }
    let got = futures::future::join_all(pages.iter().map(|c| store.subscribe(c, &ch, 10))).await;
    let failed: Vec<_> = got.iter().zip(&pages).filter(|(r, _)| !matches!(r, Ok(SubOutcome::Added))).collect();
    assert!(failed.is_empty(), "{} of 50 subscribes did not take; the first: {:?}", failed.len(), failed.first());
    assert_eq!(store.count_subscribers(&ch).await.unwrap(), 50);

    let snippet = ConnId("three-channels".into());
    store.add_connection(&snippet, conformance::T0).await.unwrap();
    let three: Vec<_> = ["a", "b", "c"].map(conformance::ch).into();
    let got = futures::future::join_all(three.iter().map(|c| store.subscribe(&snippet, c, 10))).await;
    assert!(got.iter().all(|r| matches!(r, Ok(SubOutcome::Added))), "{got:?}");
    for c in &three {
        assert_eq!(store.count_subscribers(c).await.unwrap(), 1, "{c}");
    }

    // One page subscribing to one channel five times at once (a snippet
    // re-sends a subscribe after a gap): the same two items in each
    // transaction, so they collide; one takes, the rest are repeats.
    let again = futures::future::join_all((0..5).map(|_| store.subscribe(&snippet, &three[0], 10))).await;
    assert!(again.iter().all(|r| matches!(r, Ok(SubOutcome::AlreadySubscribed))), "{again:?}");
    let eager = ConnId("eager".into());
    store.add_connection(&eager, conformance::T0).await.unwrap();
    let got = futures::future::join_all((0..5).map(|_| store.subscribe(&eager, &three[1], 10))).await;
    let added = got.iter().filter(|r| matches!(r, Ok(SubOutcome::Added))).count();
    assert_eq!(added, 1, "exactly one of five identical subscribes takes: {got:?}");
    assert!(got.iter().all(|r| matches!(r, Ok(SubOutcome::Added | SubOutcome::AlreadySubscribed))), "{got:?}");
    assert_eq!(store.count_subscribers(&three[1]).await.unwrap(), 2);

    let left = futures::future::join_all(pages.iter().chain([&snippet, &eager]).map(|c| store.remove_connection(c))).await;
    assert!(left.iter().all(Result::is_ok), "{left:?}");
    for c in three.iter().chain([&ch]) {
        assert_eq!(store.count_subscribers(c).await.unwrap(), 0, "{c}");
    }
    let n = front.counters.conflicts.load(Ordering::Relaxed);
    assert!(n > 0, "the front never answered a conflict: this test would prove nothing");
    eprintln!("concurrent subscribes: {n} conflicts answered by the front, every subscribe and removal took");
}

/// Seq allocation against the conflict-faithful front: appends racing on one
/// channel from several instances (each its own store, as each Lambda is)
/// all take a seq, gaplessly; a delivery seen before costs a warm instance
/// one request; an append that can never succeed fails at once instead of
/// retrying until the sender's timeout.
/// Appends racing on one channel from many instances are committed in
/// groups by whichever holds the channel's lease: every one gets a seq,
/// gapless, and none is cancelled by another (before: one optimistic
/// transaction per append, and the front answered dozens of conflicts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_race_on_one_channel_without_waste() {
    use hookcast_core::ports::Appended;
    use std::sync::atomic::Ordering;
    let front = common::conflict_front().await;
    let table = common::fresh_store(conformance::retention()).table().to_owned();
    let instance = || {
        let client = aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(front.url.clone())));
        hookcast_aws::dynamo::DynamoStore::new(client, table.clone(), conformance::retention())
    };
    let instances: Vec<_> = (0..8).map(|_| instance()).collect();
    let ch = "race";
    let deliveries: Vec<_> = (0..40).map(|i| conformance::pending(ch, &format!("d-{i}"), conformance::T0 + i as u64)).collect();
    let got = futures::future::join_all(deliveries.iter().enumerate().map(|(i, p)| instances[i % 8].append(p))).await;
    let mut seqs: Vec<u64> = got
        .iter()
        .map(|r| match r {
            Ok(Appended::Stored(e)) => e.seq,
            other => panic!("every append takes a seq: {other:?}"),
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "gapless, no seq twice");
    let conflicts = front.counters.conflicts.load(Ordering::Relaxed);
    assert_eq!(conflicts, 0, "group commit: no append cancels another");

    // A redelivery of a seen delivery: a duplicate with the seq it was given.
    let again = instances[0].append(&conformance::pending(ch, "d-7", conformance::T0 + 100)).await.unwrap();
    let Ok(Appended::Stored(first)) = &got[7] else { unreachable!() };
    assert!(matches!(again, Appended::Duplicate { seq } if seq == first.seq), "{again:?} (first given {})", first.seq);

    // An event item already at the next seq (written by hand): no commit can
    // ever succeed, so the append is withdrawn and refused within its budget.
    let raw = aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(common::endpoint())));
    raw.put_item()
        .table_name(&table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("evs#stuck".into()))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S(format!("ev#{:020}", 1)))
        .send()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let stuck = instance().append(&conformance::pending("stuck", "s-1", conformance::T0)).await;
    assert!(stuck.is_err(), "{stuck:?}");
    assert!(started.elapsed() < hookcast_testkit::MOTO, "refused within its budget, not hung");
    // Nothing of it is left pending: a later committer would not commit it.
    for shard in 0..2 {
        let left = raw
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", aws_sdk_dynamodb::types::AttributeValue::S(format!("pend#stuck#{shard}")))
            .send()
            .await
            .unwrap();
        assert_eq!(left.items.unwrap_or_default().len(), 0, "pending shard {shard}");
    }
    eprintln!("40 racing appends over 8 instances: gapless, {conflicts} conflicts");
}

/// Occupancy does not drift (issue 19 items 8 and 14). API Gateway's
/// `$disconnect` is best-effort: pages whose disconnect never came stop
/// counting once no subscription of their hour can still be alive (before,
/// they counted for ever). And a subscription's end finds its own shard after
/// `Shards` changed (before, it looked in the shard today's count gives, and
/// left the subscriber item for the fan-out to post to).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn occupancy_forgets_lost_disconnects_and_shards_can_change() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NOW: AtomicU64 = AtomicU64::new(0);
    fn clock() -> u64 {
        NOW.load(Ordering::Relaxed)
    }
    NOW.store(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(), Ordering::Relaxed);
    let four = common::fresh_store(conformance::retention()).with_shards(4).with_clock(clock);
    let ch = conformance::ch("lobby");
    for i in 0..3 {
        let c = ConnId(format!("lost-{i}"));
        four.add_connection(&c, conformance::T0).await.unwrap();
        assert!(matches!(four.subscribe(&c, &ch, 10).await, Ok(SubOutcome::Added)));
    }
    // A page whose shard under 4 shards is not its shard under 8.
    let moved = (0..)
        .map(|i| ConnId(format!("moved-{i}")))
        .find(|c| hookcast_aws::dynamo::shard_of(c, 4) != hookcast_aws::dynamo::shard_of(c, 8))
        .unwrap();
    four.add_connection(&moved, conformance::T0).await.unwrap();
    four.subscribe(&moved, &ch, 10).await.unwrap();
    assert_eq!(four.count_subscribers(&ch).await.unwrap(), 4);

    // Redeployed with Shards = 8: the page leaves, and is gone from its shard.
    let eight = common::fresh_store_on(four.table(), conformance::retention()).with_shards(8).with_clock(clock);
    eight.unsubscribe(&moved, &ch).await.unwrap();
    let old_shard = hookcast_aws::dynamo::shard_of(&moved, 4);
    let page = eight.subscriber_page(&ch, old_shard, None, 1000).await.unwrap();
    assert!(!page.conns.contains(&moved), "{moved:?} is still a subscriber of shard {old_shard}: pushes would go to it");
    assert_eq!(eight.count_subscribers(&ch).await.unwrap(), 3, "the lost pages still count: they may be alive");

    // Three hours and eleven minutes on, no subscription of that hour can be
    // alive (API Gateway closes every socket at 2 hours).
    NOW.fetch_add(3 * 3600 + 11 * 60, Ordering::Relaxed);
    assert_eq!(eight.count_subscribers(&ch).await.unwrap(), 0, "pages whose $disconnect never came still count");
    let fresh = ConnId("fresh".into());
    eight.add_connection(&fresh, conformance::T0).await.unwrap();
    eight.subscribe(&fresh, &ch, 10).await.unwrap();
    assert_eq!(eight.count_subscribers(&ch).await.unwrap(), 1);
    eight.remove_connection(&fresh).await.unwrap();
    assert_eq!(eight.count_subscribers(&ch).await.unwrap(), 0);
}

/// The channel's head carries a `ttl` that each append renews (`state_ttl`
/// after it): DynamoDB deletes a quiet channel's state with its head. A
/// channel whose head AWS has deleted starts again at seq 1 over its
/// expired event items, and its keys still refuse a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_head_expires_with_its_state_and_the_channel_starts_again() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use hookcast_core::ports::{Appended, Pending};
    use hookcast_core::state::{StateMode, StateSpec};
    let r = conformance::retention();
    let store = common::fresh_store(r);
    let raw = aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(common::endpoint())));
    let head_ttl = || async {
        let got = raw
            .get_item()
            .table_name(store.table())
            .key("pk", AttributeValue::S("chan#quiet".into()))
            .key("sk", AttributeValue::S("head".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        got.item.and_then(|i| i.get("ttl").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok()))
    };
    let last = StateSpec { mode: StateMode::Last, max_bytes: 10_000 };
    let ttl_ms = r.state_ttl.as_millis() as u64;
    let old = conformance::now_ms() - ttl_ms - 600_000;
    store.append(&Pending { state: Some(last), ..conformance::pending("quiet", "q1", old) }).await.unwrap();
    assert_eq!(head_ttl().await, Some((old + ttl_ms) / 1000 + 1));
    let later = old + 60_000;
    store.append(&Pending { state: Some(last), ..conformance::pending("quiet", "q2", later) }).await.unwrap();
    assert_eq!(head_ttl().await, Some((later + ttl_ms) / 1000 + 1), "renewed by the append");
    // Past its TTL: no state is read, from this instance or a cold one.
    assert!(store.read(&conformance::ch("quiet"), 0, 0).await.unwrap().state.is_none());
    let cold = common::fresh_store_on(store.table(), r);
    assert!(cold.read(&conformance::ch("quiet"), 0, 0).await.unwrap().state.is_none());

    // AWS deletes the head; its events (max_age ≤ state_ttl) expired before it.
    raw.delete_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S("chan#quiet".into()))
        .key("sk", AttributeValue::S("head".into()))
        .send()
        .await
        .unwrap();
    let fresh = common::fresh_store_on(store.table(), r);
    let now = conformance::now_ms();
    let got = fresh.append(&Pending { state: Some(last), ..conformance::pending("quiet", "q3", now) }).await.unwrap();
    assert!(matches!(got, Appended::Stored(ref e) if e.seq == 1), "over the expired ev#1: {got:?}");
    let h = fresh.read(&conformance::ch("quiet"), 0, 10).await.unwrap();
    assert_eq!((h.head, h.events.len()), (1, 1));
    assert_eq!(h.state.unwrap().value["data"]["key"], "q3");
    assert!(matches!(fresh.append(&conformance::pending("quiet", "q3", now)).await.unwrap(), Appended::Duplicate { seq: 1 }));
}

/// A `last` state too large to cache beside the head (over 8 KB) is read
/// again before an append that may keep it: an older event arriving on the
/// warm instance does not take the state back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_last_state_is_read_again_to_keep_the_newer_event() {
    use hookcast_core::ports::Pending;
    use hookcast_core::state::{StateMode, StateSpec};
    let store = common::fresh_store(conformance::retention());
    let last = StateSpec { mode: StateMode::Last, max_bytes: 100_000 };
    let big = |key: &str, event_ms: u64| Pending {
        data: serde_json::json!({"key": key, "pad": "x".repeat(9 * 1024)}),
        event_ms: Some(event_ms),
        state: Some(last),
        ..conformance::pending("big", key, conformance::T0)
    };
    store.append(&big("newer", 2_000)).await.unwrap();
    store.append(&big("older", 1_000)).await.unwrap();
    let h = store.read(&conformance::ch("big"), 0, 0).await.unwrap();
    assert_eq!((h.head, h.state.unwrap().value["data"]["key"].clone()), (2, serde_json::json!("newer")));
}
