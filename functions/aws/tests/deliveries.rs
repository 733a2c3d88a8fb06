//! The delivery log in a real DynamoDB-compatible table, through the SDK:
//! entries spread over their shards and listed back in id order (the newest
//! `limit`, or after a cursor), found by id, kept exactly as recorded, each
//! with the table's TTL a day on; audiences added up from writers at once
//! and read back together; entries past their age neither listed nor found.

mod common;

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use hookcast_aws::deliveries::{entry_pk, DynamoDeliveries, DELIVERY_SHARDS};
use hookcast_core::deliveries::{list_with_audience, DeliveryLog, Entry};
use hookcast_core::fanout::FanoutReport;
use hookcast_core::ports::Retention;
use hookcast_core::{Accepted, Channel, EventName};

const DAY: u64 = 24 * 3600;

fn client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(common::endpoint())))
}

/// A delivery log on a fresh table, and the table's name.
fn fresh() -> (DynamoDeliveries, String) {
    let store = common::fresh_store(Retention::from(&hookcast_core::config::Limits::default()));
    let table = store.table().to_owned();
    (DynamoDeliveries::new(client(), &table, Default::default()), table)
}

fn accepted(channel: &str, seq: u64, at: SystemTime) -> Entry {
    let done = Accepted {
        channel: Channel::parse(channel).unwrap(),
        event: EventName::parse("thing.happened").unwrap(),
        seq,
        duplicate: false,
        ignored: None,
    };
    Entry::console(at, &done, None)
}

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

async fn raw_item(table: &str, pk: &str, sk: &str) -> Option<std::collections::HashMap<String, AttributeValue>> {
    let key = [("pk".to_owned(), AttributeValue::S(pk.into())), ("sk".to_owned(), AttributeValue::S(sk.into()))];
    client().get_item().table_name(table).set_key(Some(key.into_iter().collect())).send().await.unwrap().item
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, k: &str) -> u64 {
    item[k].as_n().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_spread_over_shards_and_list_back_in_id_order() {
    let (log, _) = fresh();
    let t0 = SystemTime::now() - Duration::from_secs(60);
    // 40 entries, a millisecond apart, recorded out of order and at once.
    let made: Vec<Entry> = (0..40).map(|i| accepted("a", i + 1, t0 + Duration::from_millis(i))).collect();
    let order: Vec<usize> = (0..40).map(|i| (i * 7) % 40).collect();
    let results = futures::future::join_all(order.iter().map(|&i| log.record(&made[i]))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let shards: std::collections::BTreeSet<String> = made.iter().map(|e| entry_pk(&e.id)).collect();
    assert!(shards.len() >= DELIVERY_SHARDS as usize / 2, "40 entries on only {shards:?}");

    assert_eq!(ids(&log.list(None, 100).await.unwrap()), ids(&made), "every shard, merged in id order");
    assert_eq!(ids(&log.list(None, 5).await.unwrap()), ids(&made[35..]), "the newest 5, oldest first");
    assert_eq!(ids(&log.list(Some(&made[9].id), 100).await.unwrap()), ids(&made[10..]), "after is exclusive");
    assert_eq!(ids(&log.list(Some(&made[9].id), 3).await.unwrap()), ids(&made[10..13]), "the oldest 3 after it");
    assert!(log.list(Some(&made[39].id), 10).await.unwrap().is_empty());
    assert_eq!(ids(&log.list(Some("0000000000000-0000000000000000"), 100).await.unwrap()), ids(&made));
    assert!(log.list(None, 0).await.unwrap().is_empty());
    // Paging through from the start with the cursor sees each once.
    let (mut seen, mut cursor) = (vec![], "0000000000000-0000000000000000".to_owned());
    loop {
        let page = log.list(Some(&cursor), 7).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.id.clone();
        seen.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(seen, ids(&made));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_comes_back_exactly_and_expires_a_day_after_its_time() {
    let (log, table) = fresh();
    let now = SystemTime::now();
    let headers: Vec<(String, String)> =
        vec![("X-GitHub-Event".into(), "release".into()), ("User-Agent".into(), "GitHub-Hookshot/ü✓".into())];
    let e = hookcast_core::HookError::Unauthorized("signature does not match the body".into());
    let refused = Entry::refused(now, "gh", "github", &e, &headers, 1234);
    let mut replay = accepted("forms/guestbook", 7, now);
    replay.replay_of = Some(refused.id.clone());
    for entry in [&refused, &replay] {
        log.record(entry).await.unwrap();
        assert_eq!(log.get(&entry.id).await.unwrap().as_ref(), Some(entry));
    }
    assert_eq!(log.list(None, 10).await.unwrap(), vec![refused.clone(), replay]);
    assert_eq!(log.get("1800000000000-00000000deadbeef").await.unwrap(), None);
    // The table's TTL attribute: the entry's time plus the log's max age (24 h).
    let item = raw_item(&table, &entry_pk(&refused.id), &refused.id).await.expect("stored under its shard");
    assert_eq!(number(&item, "ttl"), refused.at_ms / 1000 + DAY);
    // One past its age is skipped by every read before DynamoDB deletes it.
    let old = accepted("a", 1, now - Duration::from_secs(DAY + 60));
    log.record(&old).await.unwrap();
    assert!(raw_item(&table, &entry_pk(&old.id), &old.id).await.is_some(), "stored");
    assert_eq!(log.get(&old.id).await.unwrap(), None);
    assert_eq!(log.list(None, 10).await.unwrap().len(), 2);
    assert_eq!(log.list(Some("0000000000000-0000000000000000"), 10).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audiences_add_up_from_writers_at_once_and_read_back_together() {
    let (log, table) = fresh();
    // A second instance: its own client, the same table.
    let other = DynamoDeliveries::new(client(), &table, Default::default());
    let unit = FanoutReport { delivered: 3, gone: 1, failed: 0 };
    let adds = (0..40).map(|i| {
        let w = if i % 2 == 0 { &log } else { &other };
        w.add_audience("forms/guestbook", 5, unit)
    });
    let results = futures::future::join_all(adds).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    log.add_audience("forms/guestbook", 5, FanoutReport { delivered: 0, gone: 0, failed: 2 }).await.unwrap();
    assert_eq!(other.audience("forms/guestbook", 5).await.unwrap(), FanoutReport { delivered: 120, gone: 40, failed: 2 });
    let item = raw_item(&table, "aud#forms/guestbook", &format!("{:020}", 5)).await.unwrap();
    let ttl = number(&item, "ttl");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + DAY - 60..=now + DAY + 60).contains(&ttl), "ttl {ttl}, now {now}");
    // A unit that reached nobody writes nothing.
    log.add_audience("quiet", 1, FanoutReport::default()).await.unwrap();
    assert!(raw_item(&table, "aud#quiet", &format!("{:020}", 1)).await.is_none());
    assert_eq!(log.audience("quiet", 1).await.unwrap(), FanoutReport::default());

    // Read together: more than one BatchGetItem's 100 keys, a key asked
    // twice, events never fanned out; answered in the order asked.
    for seq in 1..=150u64 {
        log.add_audience("many", seq, FanoutReport { delivered: seq as usize, gone: 0, failed: 0 }).await.unwrap();
    }
    let mut asked: Vec<(String, u64)> = (1..=150).rev().map(|seq| ("many".to_owned(), seq)).collect();
    asked.push(("many".into(), 7));
    asked.push(("many".into(), 999));
    asked.push(("forms/guestbook".into(), 5));
    let got = log.audiences(&asked).await.unwrap();
    let delivered: Vec<usize> = got.iter().map(|r| r.delivered).collect();
    let mut want: Vec<usize> = (1..=150).rev().collect();
    want.extend([7, 0, 120]);
    assert_eq!(delivered, want);

    // The console's list fills each accepted entry's audience from it.
    let now = SystemTime::now();
    let entries = [accepted("many", 42, now), accepted("many", 43, now), accepted("unheard", 1, now)];
    for e in &entries {
        log.record(e).await.unwrap();
    }
    let listed = list_with_audience(&log, None, 10).await.unwrap();
    let audiences: Vec<usize> = listed.iter().map(|e| e.audience.unwrap().delivered).collect();
    assert_eq!(audiences, [42, 43, 0]);
}

/// The console asks for the newest entries a few times a second: after one
/// whole read, an instance reads only the last seconds of each shard (half
/// a read unit a shard when nothing came), and still shows what another
/// instance records, late ones within the window included; an audience read
/// long after its event is not read again, a recent one is, every 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polling_the_newest_entries_reads_what_is_new_only() {
    use hookcast_core::deliveries::Bounds;
    let (writer, table) = fresh();
    let meter = std::sync::Arc::new(hookcast_emulate::bill::Meter::default());
    let front = hookcast_emulate::front::start(&common::endpoint(), Default::default(), meter.clone()).await.unwrap();
    let metered = aws_sdk_dynamodb::Client::new(&common::sdk_config(Some(front.url.clone())));
    let console = DynamoDeliveries::new(metered, &table, Bounds::default());
    let read_units = || meter.dynamodb_rru_halves.load(std::sync::atomic::Ordering::SeqCst) as f64 / 2.0;
    let now = SystemTime::now();
    // A full log's worth: 100 accepted deliveries from 20 minutes ago on, each heard by 2 pages.
    let old: Vec<Entry> = (0..100).map(|i| accepted("busy", i + 1, now - Duration::from_secs(1200 - i))).collect();
    for e in &old {
        writer.record(e).await.unwrap();
        writer.add_audience("busy", e.seq.unwrap(), FanoutReport { delivered: 2, gone: 0, failed: 0 }).await.unwrap();
    }
    let before = read_units();
    let first = list_with_audience(&console, None, 100).await.unwrap();
    assert_eq!(ids(&first), ids(&old));
    assert!(first.iter().all(|e| e.audience.unwrap().delivered == 2));
    let whole = read_units() - before;

    // Nothing new: each shard's last seconds, and no audience read again (their events are long done).
    let before = read_units();
    let again = list_with_audience(&console, None, 100).await.unwrap();
    assert_eq!(again, first);
    let quiet = read_units() - before;
    assert!(quiet <= f64::from(DELIVERY_SHARDS) / 2.0, "a quiet poll read {quiet} units (the whole read {whole})");
    assert!(whole >= 10.0 * quiet, "the whole read {whole} units, a quiet poll {quiet}");

    // Another instance records one now and one stamped 5 s ago that shows up late: both on the next poll.
    let fresh_one = accepted("busy", 101, SystemTime::now());
    let late_one = accepted("busy", 102, SystemTime::now() - Duration::from_secs(5));
    writer.record(&fresh_one).await.unwrap();
    writer.record(&late_one).await.unwrap();
    writer.add_audience("busy", 101, FanoutReport { delivered: 1, gone: 0, failed: 0 }).await.unwrap();
    let polled = list_with_audience(&console, None, 100).await.unwrap();
    let mut want: Vec<&str> = ids(&old[2..]);
    want.extend([late_one.id.as_str(), fresh_one.id.as_str()]);
    want.sort();
    assert_eq!(ids(&polled), want);
    // Polled again at once: the young audience was read a moment ago.
    let before = read_units();
    list_with_audience(&console, None, 100).await.unwrap();
    let at_once = read_units() - before;
    assert!(at_once <= f64::from(DELIVERY_SHARDS) / 2.0, "an immediate poll read {at_once} units");
    // A recent event's audience is read again, a moment later: it may still be growing.
    writer.add_audience("busy", 101, FanoutReport { delivered: 4, gone: 0, failed: 0 }).await.unwrap();
    tokio::time::sleep(hookcast_aws::deliveries::AUDIENCE_REREAD).await;
    let polled = list_with_audience(&console, None, 100).await.unwrap();
    let heard = polled.iter().find(|e| e.seq == Some(101)).unwrap().audience.unwrap();
    assert_eq!(heard.delivered, 5);
    // A cursor read is the table's, whole.
    assert_eq!(ids(&console.list(Some(&old[97].id), 10).await.unwrap()).len(), 4);
}

/// A flood of refusals costs the log at most 5 writes a second per
/// instance; the next entry written says how many were not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_entries_are_written_5_a_second_and_the_next_says_how_many_were_not() {
    use hookcast_aws::deliveries::REFUSED_WRITTEN_PER_SEC;
    let (log, _) = fresh();
    let second = (SystemTime::now() - Duration::from_secs(30)).duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let at = |s: u64, ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
    let e = hookcast_core::HookError::Unauthorized("signature does not match the body".into());
    let refused = |t| Entry::refused(t, "gh", "github", &e, &Vec::<(String, String)>::new(), 10);
    for i in 0..12 {
        log.record(&refused(at(second, i * 10))).await.unwrap();
    }
    // Accepted deliveries are never held back.
    log.record(&accepted("a", 1, at(second, 500))).await.unwrap();
    log.record(&refused(at(second + 1, 0))).await.unwrap();
    let listed = log.list(None, 100).await.unwrap();
    let kinds: Vec<&str> = listed.iter().map(|e| e.outcome.as_str()).collect();
    let mut want = vec!["refused"; REFUSED_WRITTEN_PER_SEC as usize];
    want.extend(["accepted", "refused"]);
    assert_eq!(kinds, want);
    let last = listed.last().unwrap().reason.as_deref().unwrap();
    assert!(last.ends_with("(7 refused deliveries before this one were not logged: over 5/s on this instance)"), "{last}");
}
