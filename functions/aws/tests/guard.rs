//! The socket functions' budgets in a real DynamoDB-compatible table:
//! windows counted exactly across instances, a new window starting over,
//! an address's connections counted open until they close.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use hookcast_aws::guard::{Budgets, Guard, TableGuard, Verdict};
use hookcast_core::ports::{ConnId, Retention};

/// Each test's clock: epoch seconds, moved by hand (the tests run at once).
static NOW1: AtomicU64 = AtomicU64::new(1_800_000_000);
static NOW2: AtomicU64 = AtomicU64::new(1_800_000_000);
fn clock1() -> u64 {
    NOW1.load(Ordering::SeqCst)
}
fn clock2() -> u64 {
    NOW2.load(Ordering::SeqCst)
}

fn small() -> Budgets {
    Budgets { frames_per_minute: 10, reply_bytes_per_minute: 1000, connects_per_minute: 5, open_per_address: 7 }
}

/// Guards as separate Lambda instances would hold them: each its own client, one table.
fn guards(n: usize, clock: fn() -> u64) -> (Vec<TableGuard>, String) {
    let store = common::fresh_store(Retention::from(&hookcast_core::config::Limits::default()));
    let table = store.table().to_owned();
    let gs = (0..n)
        .map(|_| {
            TableGuard::new(aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(common::endpoint()))), &table)
                .with_limits(small())
                .with_clock(clock)
        })
        .collect();
    (gs, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_spends_its_minute_exactly_across_instances_then_starts_over() {
    let (gs, _) = guards(4, clock1);
    let conn = ConnId("c1=".into());
    // 4 instances spend one frame each, 5 times at once: exactly 10 pass.
    let tries = (0..20).map(|i| {
        let g = &gs[i % 4];
        let conn = &conn;
        async move { g.spend(conn, 1, 0).await.unwrap() }
    });
    let got = futures::future::join_all(tries).await;
    assert_eq!(got.iter().filter(|v| **v == Verdict::Allowed).count(), 10, "{got:?}");
    assert_eq!(gs[0].spend(&conn, 1, 0).await.unwrap(), Verdict::Over("frames a minute"));
    // Bytes have their own budget in the same window.
    let other = ConnId("c2=".into());
    assert_eq!(gs[1].spend(&other, 1, 900).await.unwrap(), Verdict::Allowed);
    assert_eq!(gs[1].spend(&other, 0, 200).await.unwrap(), Verdict::Over("reply bytes a minute"));
    // The next minute starts over.
    NOW1.fetch_add(60, Ordering::SeqCst);
    assert_eq!(gs[2].spend(&conn, 1, 0).await.unwrap(), Verdict::Allowed);
    assert_eq!(gs[3].spend(&other, 0, 900).await.unwrap(), Verdict::Allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_is_held_to_its_new_and_open_connections() {
    let (gs, _) = guards(2, clock2);
    let conn = |i: u32| ConnId(format!("a{i}="));
    // 5 new connections a minute from one address; another address is apart.
    for i in 0..5 {
        assert_eq!(gs[i as usize % 2].connect(&conn(i), "203.0.113.7").await.unwrap(), Verdict::Allowed, "connection {i}");
    }
    assert_eq!(
        gs[0].connect(&conn(5), "203.0.113.7").await.unwrap(),
        Verdict::Over("new connections a minute from this address")
    );
    assert_eq!(gs[1].connect(&conn(100), "198.51.100.1").await.unwrap(), Verdict::Allowed);
    // Next minute: two more (7 open at once is the limit), then the cap.
    NOW2.fetch_add(60, Ordering::SeqCst);
    for i in 6..8 {
        assert_eq!(gs[0].connect(&conn(i), "203.0.113.7").await.unwrap(), Verdict::Allowed, "connection {i}");
    }
    assert_eq!(gs[1].connect(&conn(8), "203.0.113.7").await.unwrap(), Verdict::Over("connections open from this address"));
    // One closes: a place for one more.
    gs[0].disconnect(&conn(0)).await;
    assert_eq!(gs[1].connect(&conn(9), "203.0.113.7").await.unwrap(), Verdict::Allowed);
    assert_eq!(gs[0].connect(&conn(10), "203.0.113.7").await.unwrap(), Verdict::Over("connections open from this address"));
    // Three hours on, the counts have expired (a lost $disconnect cannot hold a place for ever).
    NOW2.fetch_add(3 * 3600, Ordering::SeqCst);
    assert_eq!(gs[0].connect(&conn(11), "203.0.113.7").await.unwrap(), Verdict::Allowed);
}
