//! The delivery log on this machine: `deliveries.db` beside the event
//! store's file, its own SQLite file so that the log an operator reads never
//! takes a lock an append waits on.
//!
//! One writer thread commits whatever has queued in one transaction (as the
//! event store's writer does): an entry, and the fan-out counts that the
//! dispatcher hands over without waiting ([`SqliteDeliveries::note_audience`]).
//! Each commit then prunes the log to its [`Bounds`]: rows past
//! `max_entries` by id order, rows older than `max_age` before the newest
//! by the `at_ms` index. Reads have their own connection (WAL: the writer
//! never blocks them).
//!
//! WAL with `synchronous = NORMAL`: an entry survives the process being
//! killed, not a power cut. It is a record for an operator; the event it
//! describes is in the event store, which syncs every commit.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use hookcast_core::deliveries::{Bounds, DeliveryLog, Entry};
use hookcast_core::fanout::FanoutReport;
use hookcast_core::ports::StoreError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

/// The file's name in the data directory.
pub const FILE: &str = "deliveries.db";

/// Jobs waiting for the writer at most: past it, an entry is dropped (its
/// webhook is answered as ever) and a fan-out's counts are not added.
const QUEUE: usize = 4096;
/// Jobs in one transaction at most.
const MAX_BATCH: usize = 512;
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS entries (
    id    TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    json  TEXT NOT NULL
) WITHOUT ROWID;
-- The age prune's index.
CREATE INDEX IF NOT EXISTS entries_age ON entries (at_ms);
-- One row per event fanned out to anyone; rowid is the order they came in,
-- which the count prune goes by.
CREATE TABLE IF NOT EXISTS audience (
    channel   TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    gone      INTEGER NOT NULL,
    failed    INTEGER NOT NULL,
    UNIQUE (channel, seq)
);
";

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("delivery log: {e}"))
}

/// What the writer is asked to do; `done` (if any) hears once it is committed.
enum Job {
    Record { id: String, at_ms: u64, json: String, done: oneshot::Sender<Result<(), StoreError>> },
    Audience { channel: String, seq: u64, report: FanoutReport, done: Option<oneshot::Sender<Result<(), StoreError>>> },
}

pub struct SqliteDeliveries {
    jobs: SyncSender<Job>,
    /// Reads; the writer's own connection when in memory.
    reader: Arc<Mutex<Connection>>,
    /// Fan-out counts not added because the writer was behind.
    audiences_dropped: AtomicU64,
}

impl SqliteDeliveries {
    /// Opens (or makes) the log at `path`, pruned to `bounds` as it opens.
    pub fn open(path: &Path, bounds: Bounds) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(err)?;
        let writer = Arc::new(Mutex::new(prepare(conn)?));
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        Self::start(writer, Some(Arc::new(Mutex::new(reader))), bounds)
    }

    /// A log in memory (tests).
    pub fn in_memory(bounds: Bounds) -> Result<Self, StoreError> {
        let writer = Arc::new(Mutex::new(prepare(Connection::open_in_memory().map_err(err)?)?));
        Self::start(writer, None, bounds)
    }

    fn start(writer: Arc<Mutex<Connection>>, reader: Option<Arc<Mutex<Connection>>>, bounds: Bounds) -> Result<Self, StoreError> {
        {
            // A restart after a long stop: entries past their age go now.
            let conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            let now = hookcast_core::clock::millis(std::time::SystemTime::now());
            conn.execute("DELETE FROM entries WHERE at_ms < ?1", params![now.saturating_sub(age_ms(bounds)) as i64])
                .map_err(err)?;
        }
        let (jobs, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let conn = writer.clone();
        std::thread::Builder::new()
            .name("hookcast-deliveries".into())
            .spawn(move || write_loop(&conn, bounds, &rx))
            .map_err(err)?;
        Ok(Self { jobs, reader: reader.unwrap_or(writer), audiences_dropped: AtomicU64::new(0) })
    }

    /// Adds a fan-out's counts without waiting (the dispatcher's path): the
    /// writer commits them with whatever else has queued. A report of
    /// nobody is not written (it reads as zeroes anyway).
    pub fn note_audience(&self, channel: &str, seq: u64, report: FanoutReport) {
        if report == FanoutReport::default() {
            return;
        }
        let job = Job::Audience { channel: channel.to_owned(), seq, report, done: None };
        if self.jobs.try_send(job).is_err() {
            let n = self.audiences_dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "the delivery log is behind: fan-out counts not added");
            }
        }
    }

    async fn send(&self, job: Job, done: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => err("behind (over 4096 writes waiting): this one is dropped"),
            TrySendError::Disconnected(_) => err("the writer has stopped"),
        })?;
        done.await.map_err(|_| err("the writer has stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(|p| p.into_inner())).map_err(err)).await.map_err(err)?
    }
}

fn prepare(conn: Connection) -> Result<Connection, StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    Ok(conn)
}

fn age_ms(bounds: Bounds) -> u64 {
    u64::try_from(bounds.max_age.as_millis()).unwrap_or(u64::MAX)
}

/// The writer thread: ends when the log (every sender) is dropped.
fn write_loop(conn: &Mutex<Connection>, bounds: Bounds, jobs: &Receiver<Job>) {
    crate::push::answer_promptly();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter().take(MAX_BATCH - 1));
        let result = {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            commit(&mut conn, &batch, bounds).map_err(err)
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, entries = batch.len(), "the delivery log did not keep a batch");
        }
        for job in batch {
            let done = match job {
                Job::Record { done, .. } => Some(done),
                Job::Audience { done, .. } => done,
            };
            if let Some(done) = done {
                // The caller may have gone (its request ended): nothing to tell.
                let _ = done.send(result.clone());
            }
        }
    }
}

const INSERT_ENTRY: &str = "INSERT OR REPLACE INTO entries (id, at_ms, json) VALUES (?1, ?2, ?3)";
const ADD_AUDIENCE: &str = "INSERT INTO audience (channel, seq, delivered, gone, failed) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (channel, seq) DO UPDATE SET delivered = delivered + excluded.delivered,
        gone = gone + excluded.gone, failed = failed + excluded.failed";
/// Past the count: every row at or before the first one not kept (the
/// primary key walks `max_entries` rows, no table scan).
const PRUNE_COUNT: &str = "DELETE FROM entries WHERE id <= (SELECT id FROM entries ORDER BY id DESC LIMIT 1 OFFSET ?1)";
const PRUNE_AGE: &str = "DELETE FROM entries WHERE at_ms < (SELECT MAX(at_ms) FROM entries) - ?1";
/// An event's counts are read only through its entry: as many rows as
/// there may be entries is enough.
const PRUNE_AUDIENCE: &str =
    "DELETE FROM audience WHERE rowid <= (SELECT rowid FROM audience ORDER BY rowid DESC LIMIT 1 OFFSET ?1)";

/// One transaction: the batch's entries and counts, then the prune.
fn commit(conn: &mut Connection, batch: &[Job], bounds: Bounds) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (mut entries, mut audiences) = (false, false);
    for job in batch {
        match job {
            Job::Record { id, at_ms, json, .. } => {
                tx.prepare_cached(INSERT_ENTRY)?.execute(params![id, *at_ms as i64, json])?;
                entries = true;
            }
            Job::Audience { channel, seq, report: r, .. } => {
                let counts = [r.delivered, r.gone, r.failed].map(|n| n as i64);
                tx.prepare_cached(ADD_AUDIENCE)?.execute(params![channel, *seq as i64, counts[0], counts[1], counts[2]])?;
                audiences = true;
            }
        }
    }
    let keep = bounds.max_entries as i64;
    if entries {
        tx.prepare_cached(PRUNE_COUNT)?.execute(params![keep])?;
        tx.prepare_cached(PRUNE_AGE)?.execute(params![age_ms(bounds).min(i64::MAX as u64) as i64])?;
    }
    if audiences {
        tx.prepare_cached(PRUNE_AUDIENCE)?.execute(params![keep])?;
    }
    tx.commit()
}

fn decode(json: &str) -> rusqlite::Result<Entry> {
    serde_json::from_str(json).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

impl DeliveryLog for SqliteDeliveries {
    async fn record(&self, entry: &Entry) -> Result<(), StoreError> {
        // The audience is read from its own table, never kept in the entry.
        let json = if entry.audience.is_some() {
            serde_json::to_string(&Entry { audience: None, ..entry.clone() })
        } else {
            serde_json::to_string(entry)
        }
        .map_err(err)?;
        let (done, answer) = oneshot::channel();
        self.send(Job::Record { id: entry.id.clone(), at_ms: entry.at_ms, json, done }, answer).await
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let (after, limit) = (after.map(str::to_owned), i64::try_from(limit).unwrap_or(i64::MAX));
        self.read(move |conn| {
            let rows: Vec<String> = match after {
                Some(after) => conn
                    .prepare_cached("SELECT json FROM entries WHERE id > ?1 ORDER BY id LIMIT ?2")?
                    .query_map(params![after, limit], |r| r.get(0))?
                    .collect::<Result<_, _>>()?,
                None => conn
                    .prepare_cached("SELECT json FROM (SELECT id, json FROM entries ORDER BY id DESC LIMIT ?1) ORDER BY id")?
                    .query_map(params![limit], |r| r.get(0))?
                    .collect::<Result<_, _>>()?,
            };
            rows.iter().map(|j| decode(j)).collect()
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let json: Option<String> =
                conn.prepare_cached("SELECT json FROM entries WHERE id = ?1")?.query_row(params![id], |r| r.get(0)).optional()?;
            json.map(|j| decode(&j)).transpose()
        })
        .await
    }

    async fn add_audience(&self, channel: &str, seq: u64, report: FanoutReport) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.send(Job::Audience { channel: channel.to_owned(), seq, report, done: Some(done) }, answer).await
    }

    async fn audience(&self, channel: &str, seq: u64) -> Result<FanoutReport, StoreError> {
        let channel = channel.to_owned();
        self.read(move |conn| {
            let counts = conn
                .prepare_cached("SELECT delivered, gone, failed FROM audience WHERE channel = ?1 AND seq = ?2")?
                .query_row(params![channel, seq as i64], |r| {
                    Ok(FanoutReport {
                        delivered: r.get::<_, i64>(0)? as usize,
                        gone: r.get::<_, i64>(1)? as usize,
                        failed: r.get::<_, i64>(2)? as usize,
                    })
                })
                .optional()?;
            Ok(counts.unwrap_or_default())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookcast_testkit::conformance;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn passes_the_deliveries_conformance_suite() {
        conformance::deliveries(|b| SqliteDeliveries::in_memory(b).unwrap()).await;
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        conformance::deliveries(|b| {
            let path = dir.path().join(format!("d{}.db", n.fetch_add(1, Ordering::Relaxed)));
            SqliteDeliveries::open(&path, b).unwrap()
        })
        .await;
    }

    fn rows(path: &Path, table: &str) -> i64 {
        Connection::open(path).unwrap().query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    /// 10,000 deliveries (and their fan-outs) leave at most the bound in the
    /// file, the newest of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_stays_within_its_bound_under_10_000_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let bounds = Bounds::default();
        let log = SqliteDeliveries::open(&path, bounds).unwrap();
        let t0 = hookcast_core::clock::millis(std::time::SystemTime::now());
        let made: Vec<Entry> = (0..10_000u64).map(|i| conformance::accepted("flood", i + 1, t0 + i / 10)).collect();
        let started = Instant::now();
        for chunk in made.chunks(50) {
            let results = futures::future::join_all(chunk.iter().map(|e| log.record(e))).await;
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            for e in chunk {
                log.note_audience("flood", e.seq.unwrap(), FanoutReport { delivered: 1, gone: 0, failed: 0 });
            }
        }
        let took = started.elapsed();
        log.add_audience("flood", 10_000, FanoutReport { delivered: 1, gone: 0, failed: 0 }).await.unwrap();
        eprintln!("10,000 records in {took:?} ({:?} each)", took / 10_000);
        assert!(rows(&path, "entries") <= bounds.max_entries as i64, "{} rows", rows(&path, "entries"));
        assert!(rows(&path, "audience") <= bounds.max_entries as i64, "{} rows", rows(&path, "audience"));
        let kept = log.list(None, 10_000).await.unwrap();
        assert_eq!(kept.len(), bounds.max_entries);
        assert_eq!(kept.last().map(|e| &e.id), made.last().map(|e| &e.id), "the newest is kept");
        assert_eq!(kept.first().map(|e| &e.id), Some(&made[made.len() - bounds.max_entries].id));
        assert_eq!(log.audience("flood", 10_000).await.unwrap().delivered, 2);
    }

    /// The age bound holds across a restart: entries older than `max_age`
    /// are gone when the file is opened again.
    #[tokio::test]
    async fn old_entries_are_gone_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let bounds = Bounds { max_entries: 100, max_age: Duration::from_secs(60) };
        let now = hookcast_core::clock::millis(std::time::SystemTime::now());
        let (old, new) = (conformance::accepted("a", 1, now - 120_000), conformance::accepted("a", 2, now));
        {
            let log = SqliteDeliveries::open(&path, Bounds { max_age: Duration::from_secs(3600), ..bounds }).unwrap();
            log.record(&old).await.unwrap();
            log.record(&new).await.unwrap();
            assert_eq!(log.list(None, 10).await.unwrap().len(), 2);
        }
        let log = SqliteDeliveries::open(&path, bounds).unwrap();
        assert_eq!(log.list(None, 10).await.unwrap(), vec![new]);
    }
}
