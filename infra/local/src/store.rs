//! The embedded durable store: channel logs and dedupe keys in SQLite (WAL,
//! synchronous=FULL, so an acknowledged event survives kill -9 and power loss);
//! live connections in memory, since they die with the process anyway.
//!
//! SQLite over redb: one transaction gives the append its all-or-nothing
//! (dedupe check, seq, insert, prune), range reads are plain SQL, and an
//! operator can inspect the file with the sqlite3 shell.

use std::path::Path;
use std::sync::{Arc, Mutex};

use hookcast_core::channel::{Channel, EventName};
use hookcast_core::ports::{
    Appended, ConnId, EventLog, History, Pending, Retention, StoreError, SubOutcome, SubscriberPage, Subscriptions, Turn,
};
use hookcast_core::protocol::Event;
use hookcast_core::registry::Registry;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::mpsc::UnboundedSender;

pub struct SqliteStore {
    /// The one writer. Appends queue for it through `turn`, for a bounded time.
    db: Arc<Mutex<Connection>>,
    turn: Arc<tokio::sync::Semaphore>,
    /// Until when appends fail at once: the file was found locked by someone
    /// else, so queued webhooks get their 503 now, not one busy wait each.
    busy_until: Arc<Mutex<Option<std::time::Instant>>>,
    /// Reads use their own connection (WAL: a writer never blocks them).
    reader: Option<Arc<Mutex<Connection>>>,
    retention: Retention,
    live: Mutex<Registry>,
    /// Every committed event, in commit order: what the local dispatcher
    /// follows, as the AWS fan-out follows the table's stream.
    feed: Option<UnboundedSender<Event>>,
}

/// Appends between sweeps of expired dedupe keys (an expired key is already
/// ignored by the check, so the sweep only reclaims space).
const DEDUPE_SWEEP_EVERY: i64 = 512;

/// How long SQLite retries a locked database file before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);
/// How long an append waits for the writer before answering 503.
const WRITE_WAIT: std::time::Duration = std::time::Duration::from_millis(2000);
/// After a locked file, how long new appends fail fast.
const BUSY_COOL_OFF: std::time::Duration = std::time::Duration::from_millis(1000);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS channels (
    channel TEXT PRIMARY KEY,
    head    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    channel TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    event   TEXT NOT NULL,
    data    TEXT NOT NULL,
    at      TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe (
    key        TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_expiry ON dedupe (expires_ms);
";

impl SqliteStore {
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(err)?;
        let mut store = Self::init(conn, retention)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        store.reader = Some(Arc::new(Mutex::new(reader)));
        Ok(store)
    }

    pub fn in_memory(retention: Retention) -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(err)?, retention)
    }

    fn init(conn: Connection, retention: Retention) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            db: Arc::new(Mutex::new(conn)),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
            busy_until: Arc::default(),
            reader: None,
            retention,
            live: Mutex::default(),
            feed: None,
        })
    }

    /// Sends every event to `feed` right after its commit, in commit order
    /// (sent while the database is still held, so no two can swap).
    pub fn with_feed(mut self, feed: UnboundedSender<Event>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Runs `f` on the writer, off the async threads; waits for its turn at
    /// most [`WRITE_WAIT`], and fails at once while the file is known locked.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let cooling = |busy: &Mutex<Option<std::time::Instant>>| {
            busy.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t > std::time::Instant::now())
        };
        if cooling(&self.busy_until) {
            return Err(StoreError("database file is locked by another process".into()));
        }
        let permit = tokio::time::timeout(WRITE_WAIT, self.turn.clone().acquire_owned())
            .await
            .map_err(|_| StoreError("timed out waiting for the writer".into()))?
            .map_err(err)?;
        let (db, busy) = (self.db.clone(), self.busy_until.clone());
        tokio::task::spawn_blocking(move || {
            let _turn = permit;
            if cooling(&busy) {
                return Err(StoreError("database file is locked by another process".into()));
            }
            let mut conn = db.lock().map_err(|_| StoreError("store lock poisoned".into()))?;
            f(&mut conn).map_err(|e| {
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
                    *busy.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now() + BUSY_COOL_OFF);
                }
                err(e)
            })
        })
        .await
        .map_err(err)?
    }

    /// Runs a read on the reader connection (the writer's when in memory).
    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(reader) = self.reader.clone() else {
            return self.with_db(f).await;
        };
        tokio::task::spawn_blocking(move || {
            let mut conn = reader.lock().map_err(|_| StoreError("store lock poisoned".into()))?;
            f(&mut conn).map_err(err)
        })
        .await
        .map_err(err)?
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry holds no invariants a panic elsewhere could break.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connections(&self) -> usize {
        self.live().connections()
    }
    pub fn subscriptions(&self) -> usize {
        self.live().subscriptions()
    }
}

impl Subscriptions for SqliteStore {
    async fn add_connection(&self, conn: &ConnId, _now_ms: u64) -> Result<(), StoreError> {
        self.live().add_connection(conn);
        Ok(())
    }
    async fn remove_connection(&self, conn: &ConnId) -> Result<(), StoreError> {
        self.live().remove_connection(conn);
        Ok(())
    }
    async fn subscribe(&self, conn: &ConnId, channel: &Channel, max: usize) -> Result<SubOutcome, StoreError> {
        Ok(self.live().subscribe(conn, channel, max))
    }
    async fn unsubscribe(&self, conn: &ConnId, channel: &Channel) -> Result<(), StoreError> {
        self.live().unsubscribe(conn, channel);
        Ok(())
    }
    async fn subscriber_page(
        &self,
        channel: &Channel,
        _shard: u32,
        after: Option<&ConnId>,
        limit: usize,
    ) -> Result<SubscriberPage, StoreError> {
        Ok(self.live().subscriber_page(channel, after, limit))
    }
    async fn count_subscribers(&self, channel: &Channel) -> Result<u64, StoreError> {
        Ok(self.live().count(channel))
    }
    async fn occupancy_turn(&self, conn: &ConnId, channel: &Channel, now_ms: u64, interval_ms: u64) -> Result<Turn, StoreError> {
        Ok(self.live().occupancy_turn(conn, channel, now_ms, interval_ms))
    }
}

impl EventLog for SqliteStore {
    async fn append(&self, ev: &Pending) -> Result<Appended, StoreError> {
        let ev = ev.clone();
        let r = self.retention;
        let feed = self.feed.clone();
        self.with_db(move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // An expired key is ignored here and replaced below.
            let seen: Option<i64> = match &ev.dedupe_key {
                Some(key) => tx
                    .prepare_cached("SELECT seq FROM dedupe WHERE key = ?1 AND expires_ms > ?2")?
                    .query_row(params![key, ev.at_ms as i64], |r| r.get(0))
                    .optional()?,
                None => None,
            };
            if let Some(seq) = seen {
                return Ok(Appended::Duplicate { seq: seq as u64 });
            }
            let channel = ev.channel.as_str();
            let seq: i64 = tx
                .prepare_cached(
                    "INSERT INTO channels (channel, head) VALUES (?1, 1)
                     ON CONFLICT (channel) DO UPDATE SET head = head + 1 RETURNING head",
                )?
                .query_row(params![channel], |r| r.get(0))?;
            tx.prepare_cached("INSERT INTO events (channel, seq, event, data, at, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
                .execute(params![channel, seq, ev.event.as_str(), ev.data.to_string(), ev.at, ev.at_ms as i64])?;
            let oldest_ms = ev.at_ms.saturating_sub(r.max_age.as_millis() as u64) as i64;
            tx.prepare_cached("DELETE FROM events WHERE channel = ?1 AND (seq <= ?2 OR at_ms < ?3)")?.execute(params![
                channel,
                seq - r.max_events as i64,
                oldest_ms
            ])?;
            if let Some(key) = &ev.dedupe_key {
                tx.prepare_cached("INSERT OR REPLACE INTO dedupe (key, seq, expires_ms) VALUES (?1, ?2, ?3)")?
                    .execute(params![key, seq, (ev.at_ms + r.dedupe_ttl.as_millis() as u64) as i64])?;
            }
            if seq % DEDUPE_SWEEP_EVERY == 0 {
                tx.prepare_cached("DELETE FROM dedupe WHERE expires_ms <= ?1")?.execute(params![ev.at_ms as i64])?;
            }
            tx.commit()?;
            let event = ev.with_seq(seq as u64);
            if let Some(feed) = &feed {
                // The receiver lives as long as the server; after shutdown the
                // event is durable and replays on resubscribe.
                if feed.send(event.clone()).is_err() {
                    tracing::debug!(channel = %ev.channel, seq, "no dispatcher; event stays in the log");
                }
            }
            Ok(Appended::Stored(event))
        })
        .await
    }

    async fn read(&self, channel: &Channel, since: u64, limit: usize) -> Result<History, StoreError> {
        let channel = channel.clone();
        self.with_reader(move |db| {
            let tx = db.transaction()?; // one snapshot for head and events
            let name = channel.as_str();
            let head: i64 = tx
                .query_row("SELECT head FROM channels WHERE channel = ?1", params![name], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let first: Option<i64> =
                tx.query_row("SELECT MIN(seq) FROM events WHERE channel = ?1", params![name], |r| r.get(0))?;
            let mut stmt =
                tx.prepare("SELECT seq, event, data, at FROM events WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?;
            let events = stmt
                .query_map(params![name, since.min(i64::MAX as u64) as i64, limit as i64], |r| {
                    let data: String = r.get(2)?;
                    let event: String = r.get(1)?;
                    // Names were checked on the way in; a bad one is a corrupt row.
                    let event = EventName::parse(&event)
                        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)))?;
                    Ok(Event {
                        channel: channel.clone(),
                        seq: r.get::<_, i64>(0)? as u64,
                        event,
                        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                        at: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            tx.finish()?;
            Ok(History { events, head: head as u64, first_retained: first.map_or(head as u64 + 1, |f| f as u64) })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookcast_core::testutil::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_store_conformance_suite() {
        conformance::run(|r| SqliteStore::in_memory(r).unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_and_dedupe_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let r = conformance::retention();
        {
            let s = SqliteStore::open(&path, r).unwrap();
            for i in 0..3 {
                s.append(&conformance::pending("a", &format!("k{i}"), conformance::T0)).await.unwrap();
            }
        }
        let s = SqliteStore::open(&path, r).unwrap();
        let h = s.read(&conformance::ch("a"), 0, 10).await.unwrap();
        assert_eq!(h.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(h.events[0], conformance::pending("a", "k0", conformance::T0).with_seq(1));
        let again = s.append(&conformance::pending("a", "k1", conformance::T0)).await.unwrap();
        assert_eq!(again, Appended::Duplicate { seq: 2 });
    }

    /// Another process holds the database's write lock: appends answer within
    /// about a second each, queued ones fail at once, and reads go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_file_fails_appends_fast_and_never_blocks_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let r = conformance::retention();
        let s = Arc::new(SqliteStore::open(&path, r).unwrap());
        s.append(&conformance::pending("a", "k0", conformance::T0)).await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let started = std::time::Instant::now();
        let appends: Vec<_> = (1..=4)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let got = s.append(&conformance::pending("a", &format!("k{i}"), conformance::T0)).await;
                    (got.is_err(), started.elapsed())
                })
            })
            .collect();
        let read = s.read(&conformance::ch("a"), 0, 10).await.unwrap();
        assert_eq!(read.head, 1, "reads are not blocked by the lock");
        for a in appends {
            let (failed, after) = a.await.unwrap();
            assert!(failed, "an append succeeded under another process's lock");
            // Before: 5, 10, 15 and 20 s (one busy wait each, in a queue).
            assert!(after < std::time::Duration::from_secs(4), "a 503 took {after:?}");
        }
        other.execute_batch("ROLLBACK").unwrap();
        tokio::time::sleep(BUSY_COOL_OFF).await;
        s.append(&conformance::pending("a", "k9", conformance::T0)).await.unwrap();
        assert_eq!(s.read(&conformance::ch("a"), 0, 10).await.unwrap().head, 2, "nothing partial was written");
    }
}
