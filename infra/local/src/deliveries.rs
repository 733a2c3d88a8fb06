//! The delivery log on this machine: `deliveries.db` beside the event
//! store's file, its own SQLite file so that the log an operator reads never
//! takes a lock an append waits on.
//!
//! Nothing waits for it to write: an entry (which the webhook's answer
//! would otherwise wait for) and a fan-out's counts (which the next push
//! would) are queued for one writer thread, which commits whatever has
//! queued in one transaction, as the event store's writer does. Each commit
//! then prunes the log to its [`Bounds`]: rows older than `max_age` before
//! the newest by the `at_ms` index, then the oldest by id past
//! `max_entries` (the writer keeps the count, so a commit under the bound
//! deletes nothing and reads nothing more).
//! A read first has the writer commit what was queued before it (so it
//! sees every write made before it), then reads on its own connection
//! (WAL: the writer never blocks it).
//!
//! What that gives up, and where it is said (docs/operations.md): an entry
//! queued in the moment before the process dies is lost, and so are entries
//! past [`QUEUE`] waiting (a flood the writer cannot keep up with; each
//! drop is logged). WAL with `synchronous = NORMAL`: a committed entry
//! survives the process being killed, not a power cut. It is a record for
//! an operator; the event it describes is in the event store, which syncs
//! every commit.

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

/// What the writer is asked to do.
enum Job {
    Record {
        id: String,
        at_ms: u64,
        json: String,
    },
    Audience {
        channel: String,
        seq: u64,
        report: FanoutReport,
    },
    /// Answered once every job queued before it is committed (or failed).
    Flush(oneshot::Sender<()>),
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

    /// Adds a fan-out's counts without waiting (the dispatcher's path). A
    /// report of nobody is not written (it reads as zeroes anyway); one the
    /// writer has no room for is counted and dropped.
    pub fn note_audience(&self, channel: &str, seq: u64, report: FanoutReport) {
        if report == FanoutReport::default() {
            return;
        }
        if self.queue(Job::Audience { channel: channel.to_owned(), seq, report }).is_err() {
            let n = self.audiences_dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "the delivery log is behind: fan-out counts not added");
            }
        }
    }

    /// Hands `job` to the writer, never waiting: a full queue is an error.
    fn queue(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => err(format!("behind (over {QUEUE} writes waiting): this one is dropped")),
            TrySendError::Disconnected(_) => err("the writer has stopped"),
        })
    }

    /// Runs `f` on the reader once the writer has committed what was queued
    /// before (with the queue full, the read goes ahead on what is committed:
    /// an operator reading during a flood is not kept waiting by it).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (flushed, done) = oneshot::channel();
        match self.jobs.try_send(Job::Flush(flushed)) {
            Ok(()) => done.await.map_err(|_| err("the writer has stopped"))?,
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => return Err(err("the writer has stopped")),
        }
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
    let mut writer = Writer { bounds, rows: None };
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter().take(MAX_BATCH - 1));
        let result = {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            writer.commit(&mut conn, &batch)
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, jobs = batch.len(), "the delivery log did not keep a batch of entries and counts");
        }
        for job in batch {
            if let Job::Flush(done) = job {
                // The reader may have gone (its request ended): nothing to tell.
                let _ = done.send(());
            }
        }
    }
}

/// An entry recorded twice (the same id) is the same entry: kept once.
const INSERT_ENTRY: &str = "INSERT OR IGNORE INTO entries (id, at_ms, json) VALUES (?1, ?2, ?3)";
const ADD_AUDIENCE: &str = "INSERT INTO audience (channel, seq, delivered, gone, failed) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (channel, seq) DO UPDATE SET delivered = delivered + excluded.delivered,
        gone = gone + excluded.gone, failed = failed + excluded.failed";
/// The `?1` oldest entries, by id (the primary key's order).
const PRUNE_OLDEST: &str = "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY id LIMIT ?1)";
const PRUNE_AGE: &str = "DELETE FROM entries WHERE at_ms < (SELECT MAX(at_ms) FROM entries) - ?1";
/// An event's counts are read only through its entry, so as many rows as
/// there may be entries is enough: the newest by arrival, whose rowids are
/// the last `?1` integers at most (a new row's rowid is the largest plus one).
const PRUNE_AUDIENCE: &str = "DELETE FROM audience WHERE rowid <= (SELECT MAX(rowid) FROM audience) - ?1";

/// The writer's own state: the number of entries, so that a commit prunes
/// only what is over the count (found with the primary key, never a walk
/// through the `max_entries` kept).
struct Writer {
    bounds: Bounds,
    /// None until counted, and again after a failed commit.
    rows: Option<u64>,
}

impl Writer {
    /// One transaction: the batch's entries and counts, then the prune.
    fn commit(&mut self, conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<()> {
        if batch.iter().all(|j| matches!(j, Job::Flush(_))) {
            return Ok(());
        }
        let rows = self.rows.take();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rows = match rows {
            Some(n) => n,
            None => tx.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))? as u64,
        };
        let (mut entries, mut audiences) = (false, false);
        for job in batch {
            match job {
                Job::Record { id, at_ms, json } => {
                    rows += tx.prepare_cached(INSERT_ENTRY)?.execute(params![id, *at_ms as i64, json])? as u64;
                    entries = true;
                }
                Job::Audience { channel, seq, report: r } => {
                    let counts = [r.delivered, r.gone, r.failed].map(|n| n as i64);
                    tx.prepare_cached(ADD_AUDIENCE)?.execute(params![channel, *seq as i64, counts[0], counts[1], counts[2]])?;
                    audiences = true;
                }
                Job::Flush(_) => {}
            }
        }
        let keep = self.bounds.max_entries as u64;
        if entries {
            rows -= tx.prepare_cached(PRUNE_AGE)?.execute(params![age_ms(self.bounds).min(i64::MAX as u64) as i64])? as u64;
            if rows > keep {
                rows -= tx.prepare_cached(PRUNE_OLDEST)?.execute(params![(rows - keep) as i64])? as u64;
            }
        }
        if audiences {
            tx.prepare_cached(PRUNE_AUDIENCE)?.execute(params![keep as i64])?;
        }
        tx.commit()?;
        self.rows = Some(rows);
        Ok(())
    }
}

fn decode(json: &str) -> rusqlite::Result<Entry> {
    serde_json::from_str(json).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// Writes are queued, never waited for (see the module's doc); a read sees
/// every write queued before it.
impl DeliveryLog for SqliteDeliveries {
    async fn record(&self, entry: &Entry) -> Result<(), StoreError> {
        // The audience is read from its own table, never kept in the entry.
        let json = if entry.audience.is_some() {
            serde_json::to_string(&Entry { audience: None, ..entry.clone() })
        } else {
            serde_json::to_string(entry)
        }
        .map_err(err)?;
        self.queue(Job::Record { id: entry.id.clone(), at_ms: entry.at_ms, json })
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
        self.queue(Job::Audience { channel: channel.to_owned(), seq, report })
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
            for e in chunk {
                log.record(e).await.unwrap();
                log.note_audience("flood", e.seq.unwrap(), FanoutReport { delivered: 1, gone: 0, failed: 0 });
            }
            // Paced as webhooks are (each waits for the event store's
            // commit): the writer's queue never fills.
            log.list(None, 1).await.unwrap();
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

    /// The fan-out never waits on SQLite: with the writer stuck (its
    /// connection held), 10,000 reports (more than the queue holds) are
    /// handed over at once, the overflow counted and dropped.
    #[test]
    fn noting_an_audience_never_waits_for_the_writer() {
        let log = Arc::new(SqliteDeliveries::in_memory(Bounds::default()).unwrap());
        let stuck = log.reader.clone();
        let held = stuck.lock().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let noting = log.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            for seq in 1..=10_000 {
                noting.note_audience("a", seq, FanoutReport { delivered: 1, gone: 0, failed: 0 });
            }
            done.send(started.elapsed()).unwrap();
        });
        let took = finished.recv_timeout(hookcast_testkit::LOCAL).expect("note_audience waited for the writer");
        eprintln!("10,000 note_audience with the writer stuck: {took:?} ({:?} each)", took / 10_000);
        drop(held);
        // The writer took one batch off the queue before it found the lock held.
        let dropped = log.audiences_dropped.load(Ordering::Relaxed);
        assert!(dropped >= (10_000 - QUEUE - MAX_BATCH) as u64, "{dropped} dropped");
    }

    /// A webhook's answer never waits on this log: with the writer stuck,
    /// entries are still taken at once, and read once it goes on.
    #[tokio::test]
    async fn recording_never_waits_for_the_writer() {
        let log = Arc::new(SqliteDeliveries::in_memory(Bounds::default()).unwrap());
        let made: Vec<Entry> = (0..100).map(|i| conformance::accepted("a", i + 1, conformance::T0 + i)).collect();
        let held = log.reader.lock().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let (recording, entries) = (log.clone(), made.clone());
        std::thread::spawn(move || {
            for e in &entries {
                futures::executor::block_on(recording.record(e)).unwrap();
            }
            done.send(()).unwrap();
        });
        finished.recv_timeout(hookcast_testkit::LOCAL).expect("record waited for the writer");
        drop(held);
        let listed = log.list(None, 1000).await.unwrap();
        assert_eq!(listed, made);
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
