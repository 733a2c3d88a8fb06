//! The socket functions' budgets in a real DynamoDB-compatible table:
//! windows counted exactly across instances, a new window starting over,
//! an address's connections counted open until they close (exactly, when
//! they arrive at once), a connection over its budget closed once however
//! many frames are in flight behind it, and an address whose connections
//! keep being closed refused for the rest of the hour.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use hookcast_aws::guard::{Budgets, Guard, TableGuard, Verdict};
use hookcast_core::ports::{ConnId, Retention};

/// Each test's clock: epoch seconds, moved by hand (the tests run at once).
static NOW1: AtomicU64 = AtomicU64::new(1_800_000_000);
static NOW2: AtomicU64 = AtomicU64::new(1_800_000_000);
static NOW3: AtomicU64 = AtomicU64::new(1_800_000_000);
static NOW4: AtomicU64 = AtomicU64::new(1_800_000_000);
static NOW5: AtomicU64 = AtomicU64::new(1_800_000_000);
fn clock1() -> u64 {
    NOW1.load(Ordering::SeqCst)
}
fn clock2() -> u64 {
    NOW2.load(Ordering::SeqCst)
}
fn clock3() -> u64 {
    NOW3.load(Ordering::SeqCst)
}
fn clock4() -> u64 {
    NOW4.load(Ordering::SeqCst)
}
fn clock5() -> u64 {
    NOW5.load(Ordering::SeqCst)
}

fn small() -> Budgets {
    Budgets {
        frames_per_minute: 10,
        reply_bytes_per_minute: 1000,
        connects_per_minute: 5,
        open_per_address: 7,
        strikes_per_hour: 2,
        subscribes_per_channel_minute: 3,
    }
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
        async move { g.spend(conn, 1, 0, None).await.unwrap() }
    });
    let got = futures::future::join_all(tries).await;
    assert_eq!(got.iter().filter(|v| **v == Verdict::Allowed).count(), 10, "{got:?}");
    // Over it, the connection is closed for good.
    assert_eq!(gs[0].spend(&conn, 1, 0, None).await.unwrap(), Verdict::Closed);
    // Bytes have their own budget in the same window.
    let other = ConnId("c2=".into());
    assert_eq!(gs[1].spend(&other, 1, 900, None).await.unwrap(), Verdict::Allowed);
    assert_eq!(gs[1].spend(&other, 0, 200, None).await.unwrap(), Verdict::Over("reply bytes a minute"));
    // A connection that spent its whole minute, and no more, starts over the next.
    let full = ConnId("c3=".into());
    for i in 0..10 {
        assert_eq!(gs[i % 4].spend(&full, 1, 100, None).await.unwrap(), Verdict::Allowed, "frame {i}");
    }
    NOW1.fetch_add(60, Ordering::SeqCst);
    assert_eq!(gs[2].spend(&full, 1, 0, None).await.unwrap(), Verdict::Allowed);
    assert_eq!(gs[3].spend(&full, 0, 900, None).await.unwrap(), Verdict::Allowed);
    assert_eq!(gs[3].spend(&conn, 1, 0, None).await.unwrap(), Verdict::Closed);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_arriving_at_once_never_pass_the_open_limit() {
    let (gs, _) = guards(4, clock3);
    let budgets = Budgets { connects_per_minute: 100, open_per_address: 7, ..small() };
    let gs: Vec<_> = gs.into_iter().map(|g| g.with_limits(budgets)).collect();
    // 30 at once from one address, through 4 instances: exactly 7 open.
    let tries = (0..30).map(|i| {
        let g = &gs[i % 4];
        async move { g.connect(&ConnId(format!("o{i}=")), "192.0.2.9").await.unwrap() }
    });
    let got = futures::future::join_all(tries).await;
    assert_eq!(got.iter().filter(|v| **v == Verdict::Allowed).count(), 7, "{got:?}");
    assert!(got.iter().all(|v| matches!(v, Verdict::Allowed | Verdict::Over("connections open from this address"))), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_over_its_budget_is_closed_once_and_its_address_struck() {
    let (gs, _) = guards(4, clock4);
    let address = "198.51.100.77";
    let conn = |i: u32| ConnId(format!("x{i}="));
    for round in 0..2u32 {
        assert_eq!(gs[0].connect(&conn(round), address).await.unwrap(), Verdict::Allowed);
        // 40 frames at once through 4 instances: 10 served, one closes it,
        // every other answers `Closed` (nothing to close, nothing to post).
        let tries = (0..40).map(|i| {
            let g = &gs[i % 4];
            let c = conn(round);
            async move { g.spend(&c, 1, 0, None).await.unwrap() }
        });
        let got = futures::future::join_all(tries).await;
        let count = |v: Verdict| got.iter().filter(|g| **g == v).count();
        assert_eq!(count(Verdict::Allowed), 10, "{got:?}");
        assert_eq!(count(Verdict::Over("frames a minute")), 1, "{got:?}");
        assert_eq!(count(Verdict::Closed), 29, "{got:?}");
        // A new minute does not reopen it.
        NOW4.fetch_add(60, Ordering::SeqCst);
        assert_eq!(gs[3].spend(&conn(round), 1, 0, None).await.unwrap(), Verdict::Closed);
        gs[1].disconnect(&conn(round)).await;
    }
    // Two connections closed over their budget this hour (the limit here):
    // the address opens no more until the hour turns; another address can.
    assert_eq!(
        gs[2].connect(&conn(9), address).await.unwrap(),
        Verdict::Over("connections closed over their budget this hour from this address")
    );
    assert_eq!(gs[2].connect(&conn(10), "198.51.100.78").await.unwrap(), Verdict::Allowed);
    NOW4.fetch_add(3600, Ordering::SeqCst);
    assert_eq!(gs[2].connect(&conn(11), address).await.unwrap(), Verdict::Allowed);
    // A frame still in flight after $disconnect finds the connection closed.
    gs[0].disconnect(&conn(11)).await;
    assert_eq!(gs[3].spend(&conn(11), 1, 0, None).await.unwrap(), Verdict::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pings_are_counted_by_the_instance_and_a_flood_of_them_is_closed_for_every_instance() {
    let (gs, _) = guards(2, clock3);
    let conn = ConnId("p1=".into());
    assert_eq!(gs[0].connect(&conn, "203.0.113.50").await.unwrap(), Verdict::Allowed);
    let mut got = vec![];
    for _ in 0..15 {
        got.push(gs[0].spend_local(&conn).await.unwrap());
    }
    assert_eq!(got[..10], [Verdict::Allowed; 10], "{got:?}");
    assert_eq!(got[10], Verdict::Over("frames a minute"), "{got:?}");
    assert_eq!(got[11..], [Verdict::Closed; 4], "{got:?}");
    // Closed in the table: the other instance finds it so, for pings and the rest.
    assert_eq!(gs[1].spend_local(&conn).await.unwrap(), Verdict::Allowed, "another instance counts its own pings");
    assert_eq!(gs[1].spend(&conn, 1, 0, None).await.unwrap(), Verdict::Closed);
    assert_eq!(gs[1].spend_local(&conn).await.unwrap(), Verdict::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribes_to_one_channel_have_a_budget_of_their_own_that_starts_over_each_minute() {
    let (gs, _) = guards(2, clock5);
    let page = ConnId("s1=".into());
    // A page subscribing to its channels: one each, well within budget.
    for ch in ["deploys", "zaps/a", "zaps/b", "forms/guestbook"] {
        assert_eq!(gs[0].spend(&page, 1, 0, Some(ch)).await.unwrap(), Verdict::Allowed, "{ch}");
    }
    // Repairing a gap on two channels, twice more this minute: allowed (3 each).
    for ch in ["deploys", "deploys", "zaps/a", "zaps/a"] {
        assert_eq!(gs[1].spend(&page, 1, 0, Some(ch)).await.unwrap(), Verdict::Allowed, "{ch}");
    }
    // The next minute, every channel's count starts over (not only the one
    // whose subscribe turned the window).
    NOW5.fetch_add(60, Ordering::SeqCst);
    for ch in ["deploys", "deploys", "deploys", "zaps/a", "zaps/a", "zaps/a"] {
        assert_eq!(gs[0].spend(&page, 1, 0, Some(ch)).await.unwrap(), Verdict::Allowed, "{ch}");
    }
    // A replay repeated on one channel: the fourth this minute closes it,
    // long before its 10 frames.
    let replayer = ConnId("s2=".into());
    for _ in 0..3 {
        assert_eq!(gs[1].spend(&replayer, 1, 0, Some("zaps/busy")).await.unwrap(), Verdict::Allowed);
    }
    assert_eq!(
        gs[0].spend(&replayer, 1, 0, Some("zaps/busy")).await.unwrap(),
        Verdict::Over("frames or subscribes to one channel a minute")
    );
}
