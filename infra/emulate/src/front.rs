//! A DynamoDB front as strict as DynamoDB where moto is kinder. moto runs
//! requests one at a time, so its transactions never collide; DynamoDB
//! cancels a `TransactWriteItems` with `TransactionConflict` when another
//! request is writing one of its items at that moment, and refuses a plain
//! write (`TransactionConflictException`) to an item a transaction holds.
//! Here every write takes `hold` (25 ms by default: longer than a DynamoDB
//! transaction usually takes) from its arrival, and its items count as
//! "being written" for that long. Writes then reach moto one at a time, in
//! arrival order, so each sees exactly the writes that arrived before it, as
//! on a table whose writes take `hold`. The time a write spends queued
//! behind others in moto does not count: moto is far slower than DynamoDB,
//! and counting its queue would make every concurrent write to a busy item
//! conflict, which a table serving many writers in parallel does not do.
//!
//! Capacity is DynamoDB's: every read and write is charged on the size of
//! the items it reads or writes, in DynamoDB's units (see the constants
//! below, each with the AWS page it comes from), on the bill's
//! [`Meter`](crate::bill::Meter). Each partition key value is a partition
//! that serves at most 1,000 write units or 3,000 read units a second (a
//! linear combination of both), and each table at most its on-demand quota;
//! beyond them a request is throttled as DynamoDB throttles it
//! (`ProvisionedThroughputExceededException` or `RequestLimitExceeded` with
//! `ThrottlingReasons`; a transaction is cancelled with `ThrottlingError` at
//! the throttled items; a batch returns the throttled items unprocessed).
//! The full size of an item is needed where a request does not carry it (a
//! projection, a filter, an update, a delete): the front keeps the sizes of
//! the items it has seen, asks moto for those it has not (one consistent
//! `BatchGetItem`, in the writers' queue so that nothing writes in between),
//! adds `ReturnValues` to writes that did not ask for them (and takes them
//! out of the answer), and reads what a projected or filtered `Query` or
//! `Scan` evaluated with a second, unprojected one. The point is that the
//! charge is DynamoDB's, never lower. It can also throttle at a fixed
//! request rate (`throttle_rate`), and fail chosen requests on demand
//! (`POST /__emulate/faults`) for tests.
//!
//! Every AWS call the stack's functions make comes through here (their
//! `AWS_ENDPOINT_URL`), and so do the event sources' polls: SQS, Secrets
//! Manager and DynamoDB Streams calls go on to moto unchanged and are
//! counted on the bill.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

mod sqs_fifo;

// ---- DynamoDB's figures, each from the AWS page that sets it ----

/// Bytes in a KB. "All size measurements in DynamoDB use binary-based
/// units. DynamoDB denotes 1 KB = 1024 bytes" (Constraints in Amazon
/// DynamoDB, docs.aws.amazon.com/amazondynamodb/latest/developerguide/Constraints.html).
pub const KB: u64 = 1024;
/// A write unit covers 1 KB of the item: "A write capacity unit represents
/// one write per second, for an item up to 1 KB in size ... Item sizes for
/// writes are rounded up to the next 1 KB multiple" (DynamoDB read and write
/// operations, docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html;
/// "A standard write request unit can write an item up to 1 KB", Amazon
/// DynamoDB pricing for on-demand capacity, aws.amazon.com/dynamodb/pricing/on-demand).
pub const WRITE_UNIT_BYTES: u64 = KB;
/// A read unit covers 4 KB: "A strongly consistent read request of an item
/// up to 4 KB requires one read unit ... Item sizes for reads are rounded up
/// to the next 4 KB multiple" (read-write-operations.html, as above).
pub const READ_UNIT_BYTES: u64 = 4 * KB;
/// Read units per 4 KB, in halves of a unit: "A strongly consistent read
/// request of an item up to 4 KB requires one read unit. An eventually
/// consistent read request ... requires one-half read unit. A transactional
/// read request ... requires two read units" (read-write-operations.html).
pub const STRONG_READ_HALVES: u64 = 2;
pub const EVENTUAL_READ_HALVES: u64 = 1;
pub const TRANSACTIONAL_READ_HALVES: u64 = 4;
/// Write units per KB of a transactional write: "DynamoDB performs two
/// underlying reads or writes of every item in the transaction: one to
/// prepare the transaction and one to commit the transaction ... Each item
/// requires two write capacity units" (Amazon DynamoDB Transactions: How It
/// Works, Capacity management for transactions,
/// docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html;
/// "Transactional write requests require two WCUs", aws.amazon.com/dynamodb/pricing/provisioned).
pub const TRANSACTIONAL_WRITE_FACTOR: u64 = 2;
/// One partition's throughput a second: "every partition in a DynamoDB
/// table is designed to deliver a maximum capacity of 3,000 read units per
/// second and 1,000 write units per second" (Best practices for designing
/// and using partition keys effectively,
/// docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html),
/// and for on-demand tables "Each partition on the table can serve up to
/// 3,000 read request units or 1,000 write request units, or a linear
/// combination of both" (re:Post Knowledge Center, "Why is my on-demand
/// DynamoDB table being throttled?",
/// repost.aws/knowledge-center/on-demand-table-throttling-dynamodb). The
/// stricter reading is taken: one bucket per partition key value, that
/// reads and writes share. Its capacity is one second of that throughput:
/// "Burst capacity can't alleviate partition-level throttling" (re:Post
/// Knowledge Center, repost.aws/knowledge-center/dynamodb-spiky-workloads-short-intervals).
pub const PARTITION_WRITE_UNITS_PER_SECOND: f64 = 1_000.0;
pub const PARTITION_READ_UNITS_PER_SECOND: f64 = 3_000.0;
/// A table's on-demand quota a second: "Per table | 40,000 read request
/// units and 40,000 write request units" (Service, account, and table
/// quotas in Amazon DynamoDB,
/// docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html);
/// "your on-demand throughput rate is bounded by 40,000 table-level read and
/// write throughput AWS service quota" (DynamoDB maximum throughput for
/// on-demand tables,
/// docs.aws.amazon.com/amazondynamodb/latest/developerguide/on-demand-capacity-mode-max-throughput.html).
/// Its bucket holds one second of it.
pub const TABLE_READ_UNITS_PER_SECOND: f64 = 40_000.0;
pub const TABLE_WRITE_UNITS_PER_SECOND: f64 = 40_000.0;
/// Item sizes, from "DynamoDB item sizes and formats"
/// (docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html):
/// "The total size of an item is the sum of the lengths of its attribute
/// names and values". A string is its UTF-8 bytes. A number is
/// "approximately (number of UTF-8-encoded bytes of attribute name) plus
/// (1 byte per two significant digits) plus (1 byte)", leading and trailing
/// zeroes trimmed. A binary value is its raw bytes. A null or Boolean is
/// the name plus 1 byte. "An attribute of type List or Map requires 3 bytes
/// of overhead, regardless of its contents", and each element of a List or
/// Map 1 byte more (same page). The page gives no overhead for sets: a set
/// is charged as the sum of its elements' sizes.
pub const NUMBER_OVERHEAD_BYTES: u64 = 1;
pub const BOOL_OR_NULL_BYTES: u64 = 1;
pub const LIST_OR_MAP_OVERHEAD_BYTES: u64 = 3;
pub const ELEMENT_OVERHEAD_BYTES: u64 = 1;
/// What an on-demand table's throttled requests are told. "When DynamoDB
/// throttles a read or write, it returns a ProvisionedThroughputExceededException"
/// (Managing throughput settings on provisioned tables, developer guide);
/// for a table in on-demand mode over its account-level quota the reason is
/// `AccountLimitExceeded` (ThrottlingReason, Amazon DynamoDB API reference,
/// docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_ThrottlingReason.html),
/// and "RequestLimitExceeded: Throughput exceeds the current throughput
/// limit for your account ... Example: Rate of on-demand requests exceeds
/// the allowed account throughput" (Error handling with DynamoDB,
/// docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html).
/// `ThrottlingException` is for control-plane calls ("CreateTable,
/// UpdateTable, DeleteTable", same page), never for items. The AWS SDKs
/// retry both item exceptions.
const PARTITION_THROTTLED: &str = "ProvisionedThroughputExceededException";
const TABLE_THROTTLED: &str = "RequestLimitExceeded";
/// The message of a `ThrottlingError` cancellation reason (TransactionCanceledException,
/// Amazon DynamoDB API reference: "Throttling Error: Code: ThrottlingError
/// Messages: Throughput exceeds the current capacity of your table or
/// index. DynamoDB is automatically scaling your table or index so please
/// try again shortly. If exceptions persist, check if you have a hot key").
const THROTTLING_MESSAGE: &str = "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your table or index so please try again shortly. If exceptions persist, check if you have a hot key: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html";
/// The account moto reports in its ARNs.
const ACCOUNT: &str = "123456789012";
/// Item sizes remembered (a miss costs one read of moto, never a lower charge).
const SIZE_CACHE: usize = 200_000;
/// Partition buckets kept before full ones are forgotten (a full bucket is a fresh one).
const PARTITION_BUCKETS: usize = 10_000;

#[derive(Clone, Copy)]
pub struct FrontOptions {
    /// Requests per second beyond which the front answers as DynamoDB does
    /// when throttled.
    pub throttle_rate: Option<u32>,
    /// How long after its arrival a write holds its items.
    pub hold: Duration,
}

impl Default for FrontOptions {
    fn default() -> Self {
        Self { throttle_rate: None, hold: Duration::from_millis(25) }
    }
}

/// Counts what a request costs on the bill: SQS requests by 64 KB chunk,
/// Secrets Manager calls, stream reads (DynamoDB's own units are counted
/// where they are charged, on the items read and written).
fn meter_call(meter: &crate::bill::Meter, target: &str, body_len: usize) {
    use crate::bill::{units, Meter, SQS_REQUEST_UNIT};
    if target.starts_with("AmazonSQS.") {
        Meter::add(&meter.sqs_requests, units(body_len, SQS_REQUEST_UNIT));
    } else if target.starts_with("secretsmanager.") {
        Meter::add(&meter.secrets_calls, 1);
    } else if target == "DynamoDBStreams_20120810.GetRecords" {
        Meter::add(&meter.stream_reads, 1);
    }
}

#[derive(Default)]
pub struct FrontCounters {
    pub conflicts: AtomicU64,
    pub throttled: AtomicU64,
    pub requests: AtomicU64,
    /// Writes moto executed, and their time in moto and queued before it (µs).
    pub writes: AtomicU64,
    pub write_service_us: AtomicU64,
    pub write_queued_us: AtomicU64,
    /// Requests failed by an injected fault (`POST /__emulate/faults`).
    pub faults: AtomicU64,
    /// Reads of moto the front made to learn item sizes (not charged).
    pub size_reads: AtomicU64,
    /// Requests by operation (`GetItem`, `SendMessageBatch`, ...).
    pub ops: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl FrontCounters {
    /// Requests by operation so far.
    pub fn ops(&self) -> std::collections::BTreeMap<String, u64> {
        self.ops.lock().unwrap().clone()
    }
}

pub struct Front {
    pub url: String,
    pub counters: Arc<FrontCounters>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Front {
    /// Waits until no item is held: a write sent after this meets no
    /// conflict unless another is sent with it.
    pub async fn settled(&self) {
        loop {
            let now = Instant::now();
            if self.state.busy.lock().unwrap().values_mut().all(|h| !h.clashes(now, true)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
        self.writer.abort();
    }
}

/// What holds one item now: writes that arrived within `hold`, as (until,
/// a transaction).
#[derive(Default)]
struct Hold {
    windows: Vec<(Instant, bool)>,
}

impl Hold {
    /// Whether a write (a transaction when `txn`) arriving at `now` collides:
    /// a transaction with any write, a plain write with a transaction.
    fn clashes(&mut self, now: Instant, txn: bool) -> bool {
        self.windows.retain(|(until, _)| *until > now);
        if txn {
            !self.windows.is_empty()
        } else {
            self.windows.iter().any(|(_, t)| *t)
        }
    }
}

// ---- Item sizes ----

/// The size DynamoDB charges for one attribute value (without its name).
pub fn value_size(v: &Value) -> u64 {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    fn strings(i: &Value) -> impl Iterator<Item = &str> {
        i.as_array().into_iter().flatten().filter_map(Value::as_str)
    }
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, |s| s.len() as u64),
        "N" => inner.as_str().map_or(0, number_size),
        "B" => inner.as_str().map_or(0, binary_size),
        "BOOL" | "NULL" => BOOL_OR_NULL_BYTES,
        "SS" => strings(inner).map(|s| s.len() as u64).sum(),
        "NS" => strings(inner).map(number_size).sum(),
        "BS" => strings(inner).map(binary_size).sum(),
        "L" => {
            LIST_OR_MAP_OVERHEAD_BYTES
                + inner.as_array().into_iter().flatten().map(|e| ELEMENT_OVERHEAD_BYTES + value_size(e)).sum::<u64>()
        }
        "M" => {
            LIST_OR_MAP_OVERHEAD_BYTES
                + inner
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, e)| ELEMENT_OVERHEAD_BYTES + name.len() as u64 + value_size(e))
                    .sum::<u64>()
        }
        _ => 0,
    }
}

/// A number: one byte per two significant digits, plus one.
fn number_size(n: &str) -> u64 {
    let mantissa = n.trim_start_matches(['-', '+']).split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1) as u64;
    significant.div_ceil(2) + NUMBER_OVERHEAD_BYTES
}

/// A binary value's raw length (it travels base64-encoded).
fn binary_size(b64: &str) -> u64 {
    let b64 = b64.trim_end();
    let pad = b64.chars().rev().take_while(|c| *c == '=').count() as u64;
    (b64.len() as u64 / 4 * 3 + [0, 0, 1, 2][b64.len() % 4]).saturating_sub(pad)
}

/// The size of an item (attribute name → value), as DynamoDB charges it.
pub fn item_size(item: &Value) -> u64 {
    item.as_object().into_iter().flatten().map(|(name, v)| name.len() as u64 + value_size(v)).sum()
}

/// Write units for an item of `bytes` (at least one).
pub fn write_units(bytes: u64) -> u64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1)
}

/// Read units (of 4 KB) for `bytes` read (at least one: "If you perform a
/// read operation on an item that does not exist, DynamoDB still consumes
/// provisioned read throughput", read-write-operations.html).
pub fn read_units(bytes: u64) -> u64 {
    bytes.div_ceil(READ_UNIT_BYTES).max(1)
}

// ---- Throughput: token buckets ----

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Limit {
    /// A partition key value's throughput (`KeyRangeThroughputExceeded`).
    KeyRange,
    /// The table's on-demand quota (`AccountLimitExceeded`).
    Account,
    /// The `throttle_rate` option: a maximum set on the table (`MaxOnDemandThroughputExceeded`).
    Rate,
}

/// A token bucket: `tokens` of `cap`, refilled at `rate` a second. It may
/// go below zero: a request admitted on an estimate pays what it really
/// cost, and the debt delays the next ones.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(cap: f64, now: Instant) -> Self {
        Self { tokens: cap, at: now }
    }
    fn refill(&mut self, now: Instant, rate: f64, cap: f64) {
        if now > self.at {
            self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(cap);
            self.at = now;
        }
    }
}

/// What one item (or one partition's read) asks of the buckets: read and
/// write units on a table and, where known, a partition key value.
#[derive(Clone, Debug, Default)]
struct Demand {
    table: String,
    partition: Option<String>,
    rru: f64,
    wru: f64,
}

impl Demand {
    /// The share of a partition's second it takes (reads and writes share it).
    fn partition_share(&self) -> f64 {
        self.wru / PARTITION_WRITE_UNITS_PER_SECOND + self.rru / PARTITION_READ_UNITS_PER_SECOND
    }
    /// What is still to take (or to give back) once `self` is known to be
    /// what the estimate really cost.
    fn minus(&self, estimate: &Demand) -> Demand {
        Demand { rru: self.rru - estimate.rru, wru: self.wru - estimate.wru, ..estimate.clone() }
    }
}

/// Every bucket: one per partition key value (in shares of a second of the
/// partition's throughput), and a read and a write one per table.
#[derive(Default)]
struct Buckets {
    partitions: HashMap<String, Bucket>,
    reads: HashMap<String, Bucket>,
    writes: HashMap<String, Bucket>,
}

const EPSILON: f64 = 1e-9;

impl Buckets {
    fn partition(&mut self, p: &str, now: Instant) -> &mut Bucket {
        if self.partitions.len() > PARTITION_BUCKETS && !self.partitions.contains_key(p) {
            self.partitions.retain(|_, b| {
                b.refill(now, 1.0, 1.0);
                b.tokens < 1.0
            });
        }
        let b = self.partitions.entry(p.to_owned()).or_insert_with(|| Bucket::full(1.0, now));
        b.refill(now, 1.0, 1.0);
        b
    }
    fn table<'a>(map: &'a mut HashMap<String, Bucket>, t: &str, per_second: f64, now: Instant) -> &'a mut Bucket {
        let b = map.entry(t.to_owned()).or_insert_with(|| Bucket::full(per_second, now));
        b.refill(now, per_second, per_second);
        b
    }

    /// Which limit refuses each demand when all are made together (`None`:
    /// admitted); takes nothing. A bucket admits a demand while it holds
    /// what the demand asks, or is full when a single request asks more than
    /// it can ever hold.
    fn refused(&mut self, now: Instant, demands: &[Demand]) -> Vec<Option<Limit>> {
        let mut shares: HashMap<&str, f64> = HashMap::new();
        let mut reads: HashMap<&str, f64> = HashMap::new();
        let mut writes: HashMap<&str, f64> = HashMap::new();
        for d in demands {
            if let Some(p) = &d.partition {
                *shares.entry(p).or_default() += d.partition_share();
            }
            *reads.entry(&d.table).or_default() += d.rru;
            *writes.entry(&d.table).or_default() += d.wru;
        }
        let admits = |b: &Bucket, want: f64, cap: f64| b.tokens + EPSILON >= want.min(cap);
        let hot: HashSet<&str> =
            shares.iter().filter(|(p, want)| !admits(self.partition(p, now), **want, 1.0)).map(|(p, _)| *p).collect();
        let mut full: HashSet<&str> = HashSet::new();
        for (t, want) in &reads {
            let b = Self::table(&mut self.reads, t, TABLE_READ_UNITS_PER_SECOND, now);
            if *want > 0.0 && !admits(b, *want, TABLE_READ_UNITS_PER_SECOND) {
                full.insert(t);
            }
        }
        for (t, want) in &writes {
            let b = Self::table(&mut self.writes, t, TABLE_WRITE_UNITS_PER_SECOND, now);
            if *want > 0.0 && !admits(b, *want, TABLE_WRITE_UNITS_PER_SECOND) {
                full.insert(t);
            }
        }
        demands
            .iter()
            .map(|d| {
                if d.partition.as_deref().is_some_and(|p| hot.contains(p)) {
                    Some(Limit::KeyRange)
                } else if full.contains(d.table.as_str()) {
                    Some(Limit::Account)
                } else {
                    None
                }
            })
            .collect()
    }

    /// Takes a demand (a negative one gives back, up to the bucket's capacity).
    fn take(&mut self, now: Instant, d: &Demand) {
        if let Some(p) = &d.partition {
            let b = self.partition(p, now);
            b.tokens = (b.tokens - d.partition_share()).min(1.0);
        }
        let b = Self::table(&mut self.reads, &d.table, TABLE_READ_UNITS_PER_SECOND, now);
        b.tokens = (b.tokens - d.rru).min(TABLE_READ_UNITS_PER_SECOND);
        let b = Self::table(&mut self.writes, &d.table, TABLE_WRITE_UNITS_PER_SECOND, now);
        b.tokens = (b.tokens - d.wru).min(TABLE_WRITE_UNITS_PER_SECOND);
    }

    /// Admits all the demands or none: the limits of the refused ones.
    fn admit_all(&mut self, now: Instant, demands: &[Demand]) -> Option<Vec<Option<Limit>>> {
        let refused = self.refused(now, demands);
        if refused.iter().any(Option::is_some) {
            return Some(refused);
        }
        for d in demands {
            self.take(now, d);
        }
        None
    }

    /// Admits each demand on its own, in order (a batch): the limit of each refused one.
    fn admit_each(&mut self, now: Instant, demands: &[Demand]) -> Vec<Option<Limit>> {
        demands
            .iter()
            .map(|d| {
                let refused = self.refused(now, std::slice::from_ref(d)).remove(0);
                if refused.is_none() {
                    self.take(now, d);
                }
                refused
            })
            .collect()
    }
}

// ---- Tables, items and requests ----

/// A table's key attributes: the partition key, the sort key, and each
/// index's partition key.
#[derive(Clone, Debug)]
struct Schema {
    hash: String,
    range: Option<String>,
    indexes: HashMap<String, String>,
}

impl Default for Schema {
    /// The project's table (template.yaml): `pk` and `sk`.
    fn default() -> Self {
        Self { hash: "pk".into(), range: Some("sk".into()), indexes: HashMap::new() }
    }
}

impl Schema {
    fn from_description(t: &Value) -> Option<Self> {
        let keys = |schema: &Value, kind: &str| {
            schema
                .as_array()
                .into_iter()
                .flatten()
                .find(|k| k["KeyType"] == kind)
                .and_then(|k| k["AttributeName"].as_str())
                .map(str::to_owned)
        };
        let mut indexes = HashMap::new();
        for list in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes"] {
            for i in t[list].as_array().into_iter().flatten() {
                if let (Some(name), Some(hash)) = (i["IndexName"].as_str(), keys(&i["KeySchema"], "HASH")) {
                    indexes.insert(name.to_owned(), hash);
                }
            }
        }
        Some(Self { hash: keys(&t["KeySchema"], "HASH")?, range: keys(&t["KeySchema"], "RANGE"), indexes })
    }

    /// An item's (or a key's) key attributes.
    fn key_of(&self, item: &Value) -> Map<String, Value> {
        let mut k = Map::new();
        for name in std::iter::once(&self.hash).chain(self.range.as_ref()) {
            if let Some(v) = item.get(name) {
                k.insert(name.clone(), v.clone());
            }
        }
        k
    }
}

/// What a request does to one item, or (a `Query` or `Scan`) to a partition or table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Read,
    Put,
    Update,
    Delete,
    Check,
}

/// One item (or partition) a request touches.
#[derive(Clone, Debug)]
struct Touch {
    table: String,
    index: Option<String>,
    /// The item's id ("table key"): `None` for a `Query` or `Scan`.
    id: Option<String>,
    key: Value,
    /// The partition's bucket: `None` for a `Scan`.
    partition: Option<String>,
    /// The partition key's value as text (for faults' `key_prefix`).
    pk: Option<String>,
    /// A `Put`'s item size.
    new_size: Option<u64>,
    action: Action,
    /// Written only if the item did not exist (`attribute_not_exists` of
    /// its key): written, it was absent; refused, it is as it was.
    only_new: bool,
}

/// A stable id for an item: its table and key attributes, sorted.
fn item_id(table: &str, key: &Map<String, Value>) -> String {
    let mut parts: Vec<String> = key.iter().map(|(n, v)| format!("{n}={v}")).collect();
    parts.sort();
    format!("{table} {}", parts.join(" "))
}

/// A key value as text: a string or number as written, binary as base64.
fn scalar_text(v: &Value) -> Option<String> {
    let (_, inner) = v.as_object()?.iter().next()?;
    inner.as_str().map(str::to_owned)
}

fn touch(schema: &Schema, table: &str, item_or_key: &Value, action: Action, new_size: Option<u64>) -> Touch {
    let key = schema.key_of(item_or_key);
    let hash = item_or_key.get(&schema.hash);
    Touch {
        table: table.to_owned(),
        index: None,
        id: Some(item_id(table, &key)),
        key: Value::Object(key),
        partition: hash.map(|v| format!("{table} {}={v}", schema.hash)),
        pk: hash.and_then(scalar_text),
        new_size,
        action,
        only_new: false,
    }
}

/// Whether an action's condition is `attribute_not_exists` of a key attribute.
fn only_new(schema: &Schema, action: &Value) -> bool {
    let Some(c) = action["ConditionExpression"].as_str() else {
        return false;
    };
    let c: String = c.chars().filter(|ch| !ch.is_whitespace()).collect();
    let Some(name) = c.strip_prefix("attribute_not_exists(").and_then(|r| r.strip_suffix(')')) else {
        return false;
    };
    let name = if name.starts_with('#') { action["ExpressionAttributeNames"][name].as_str().unwrap_or_default() } else { name };
    name == schema.hash || schema.range.as_deref() == Some(name)
}

/// `name = :value` (either way round) in a key condition.
static EQUALITY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(#?[A-Za-z0-9_.\-]+|:[A-Za-z0-9_]+)\s*=\s*(#?[A-Za-z0-9_.\-]+|:[A-Za-z0-9_]+)").expect("a valid regex")
});
/// A name or value placeholder in an expression.
static PLACEHOLDER: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"[#:][A-Za-z0-9_]+").expect("a valid regex"));

/// A `Query`'s partition: the partition key's value in its key condition.
fn query_touch(schema: &Schema, body: &Value) -> Touch {
    let table = body["TableName"].as_str().unwrap_or_default();
    let index = body["IndexName"].as_str();
    let hash = index.and_then(|i| schema.indexes.get(i)).unwrap_or(&schema.hash);
    let names = &body["ExpressionAttributeNames"];
    let value = match body["KeyConditionExpression"].as_str() {
        Some(expr) => EQUALITY.captures_iter(expr).find_map(|c| {
            let (a, b) = (&c[1], &c[2]);
            let (name, placeholder) = if b.starts_with(':') { (a, b) } else { (b, a) };
            let name = if name.starts_with('#') { names[name].as_str()? } else { name };
            (name == hash && placeholder.starts_with(':'))
                .then(|| body["ExpressionAttributeValues"][placeholder].clone())
                .filter(|v| !v.is_null())
        }),
        None => body["KeyConditions"][hash]["AttributeValueList"].get(0).cloned(),
    };
    let scope = match index {
        Some(i) => format!("{table}/index/{i}"),
        None => table.to_owned(),
    };
    Touch {
        table: table.to_owned(),
        index: index.map(str::to_owned),
        id: None,
        key: Value::Null,
        partition: value.as_ref().map(|v| format!("{scope} {hash}={v}")),
        pk: value.as_ref().and_then(scalar_text),
        new_size: None,
        action: Action::Read,
        only_new: false,
    }
}

/// The tables a request names.
fn tables_of(op: &str, body: &Value) -> Vec<String> {
    let mut out: Vec<String> = match op {
        "BatchGetItem" | "BatchWriteItem" => {
            body["RequestItems"].as_object().into_iter().flatten().map(|(t, _)| t.clone()).collect()
        }
        "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_object()?.values().next()?["TableName"].as_str().map(str::to_owned))
            .collect(),
        _ => body["TableName"].as_str().map(str::to_owned).into_iter().collect(),
    };
    out.sort();
    out.dedup();
    out
}

/// The items (or partitions) a request touches, in the request's order.
fn touches(op: &str, body: &Value, schemas: &HashMap<String, Arc<Schema>>) -> Vec<Touch> {
    let default = Arc::new(Schema::default());
    let schema = |t: &str| schemas.get(t).unwrap_or(&default).clone();
    let table = body["TableName"].as_str().unwrap_or_default();
    match op {
        "GetItem" => vec![touch(&schema(table), table, &body["Key"], Action::Read, None)],
        "PutItem" => vec![touch(&schema(table), table, &body["Item"], Action::Put, Some(item_size(&body["Item"])))],
        "UpdateItem" => {
            let t = touch(&schema(table), table, &body["Key"], Action::Update, None);
            vec![Touch { only_new: only_new(&schema(table), body), ..t }]
        }
        "DeleteItem" => vec![touch(&schema(table), table, &body["Key"], Action::Delete, None)],
        "Query" => vec![query_touch(&schema(table), body)],
        "Scan" => vec![Touch {
            table: table.to_owned(),
            index: body["IndexName"].as_str().map(str::to_owned),
            id: None,
            key: Value::Null,
            partition: None,
            pk: None,
            new_size: None,
            action: Action::Read,
            only_new: false,
        }],
        "BatchGetItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(t, req)| {
                let sc = schema(t);
                req["Keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |k| touch(&sc, t, k, Action::Read, None))
                    .collect::<Vec<_>>()
            })
            .collect(),
        "BatchWriteItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(t, reqs)| {
                let sc = schema(t);
                reqs.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        if let Some(p) = r.get("PutRequest") {
                            Some(touch(&sc, t, &p["Item"], Action::Put, Some(item_size(&p["Item"]))))
                        } else {
                            r.get("DeleteRequest").map(|d| touch(&sc, t, &d["Key"], Action::Delete, None))
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let (kind, v) = t.as_object()?.iter().next()?;
                let table = v["TableName"].as_str().unwrap_or_default();
                let sc = schema(table);
                let t = match kind.as_str() {
                    "Put" => touch(&sc, table, &v["Item"], Action::Put, Some(item_size(&v["Item"]))),
                    "Update" => touch(&sc, table, &v["Key"], Action::Update, None),
                    "Delete" => touch(&sc, table, &v["Key"], Action::Delete, None),
                    "ConditionCheck" => touch(&sc, table, &v["Key"], Action::Check, None),
                    _ => touch(&sc, table, &v["Key"], Action::Read, None),
                };
                Some(Touch { only_new: matches!(t.action, Action::Put | Action::Update) && only_new(&sc, v), ..t })
            })
            .collect(),
        _ => vec![],
    }
}

// ---- Faults injected by tests ----

#[derive(Clone, Copy, Debug, PartialEq)]
enum FaultKind {
    Throttle,
    Internal,
    /// The calling function's process is killed (SIGKILL) as it makes the
    /// call: it dies exactly there, mid-invocation.
    Kill,
}

/// The next `count` requests to `target` (any operation when absent; SQS's
/// too, e.g. `SendMessageBatch`) touching a partition key that starts with
/// `key_prefix`, made by `function` (a logical id; any caller when absent),
/// fail.
#[derive(Clone, Debug)]
struct Fault {
    target: Option<String>,
    key_prefix: Option<String>,
    function: Option<String>,
    count: u64,
    kind: FaultKind,
}

impl Fault {
    fn parse(v: &Value) -> Result<Self, String> {
        let kind = match v["error"].as_str() {
            Some("throttle") => FaultKind::Throttle,
            Some("internal") => FaultKind::Internal,
            Some("kill") => FaultKind::Kill,
            other => return Err(format!("error must be \"throttle\", \"internal\" or \"kill\", not {other:?}")),
        };
        let target =
            v["target"].as_str().filter(|t| !t.is_empty() && *t != "*").map(|t| t.rsplit('.').next().unwrap_or(t).to_owned());
        let count = match &v["count"] {
            Value::Null => 1,
            c => c.as_u64().ok_or("count must be a whole number")?,
        };
        let function = v["function"].as_str().map(str::to_owned);
        Ok(Self { target, key_prefix: v["key_prefix"].as_str().map(str::to_owned), function, count, kind })
    }
    fn to_json(&self) -> Value {
        let mut v = json!({
            "target": self.target,
            "key_prefix": self.key_prefix,
            "count": self.count,
            "error": match self.kind { FaultKind::Throttle => "throttle", FaultKind::Internal => "internal", FaultKind::Kill => "kill" },
        });
        if let Some(f) = &self.function {
            v["function"] = json!(f);
        }
        v
    }
    /// Whether this touch is one the fault is for.
    fn hits(&self, t: &Touch) -> bool {
        match &self.key_prefix {
            None => true,
            Some(p) => t.pk.as_deref().is_some_and(|pk| pk.starts_with(p.as_str())),
        }
    }
}

// ---- The front ----

/// A write's work in moto: run by the writer task, one at a time.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

struct State {
    busy: Mutex<HashMap<String, Hold>>,
    /// Writes go to moto one at a time (it serialises them anyway).
    writes: tokio::sync::mpsc::UnboundedSender<(Job, Instant)>,
    counters: Arc<FrontCounters>,
    bucket: Mutex<(f64, Instant)>,
    opts: FrontOptions,
    upstream: String,
    http: reqwest::Client,
    meter: Arc<crate::bill::Meter>,
    buckets: Mutex<Buckets>,
    /// Item sizes by id, as last written or read here (0: no such item).
    sizes: Mutex<HashMap<String, u64>>,
    schemas: Mutex<HashMap<String, Arc<Schema>>>,
    faults: Mutex<Vec<Fault>>,
    /// SQS FIFO deduplication ids seen (moto forgets a received one).
    fifo: Mutex<sqs_fifo::Dedupe>,
}

impl State {
    fn size_of(&self, id: &Option<String>) -> Option<u64> {
        self.sizes.lock().unwrap().get(id.as_ref()?).copied()
    }
    fn learn(&self, id: &Option<String>, size: u64) {
        if let Some(id) = id {
            let mut sizes = self.sizes.lock().unwrap();
            if sizes.len() >= SIZE_CACHE && !sizes.contains_key(id) {
                sizes.clear();
            }
            sizes.insert(id.clone(), size);
        }
    }
    fn forget(&self, id: &Option<String>) {
        if let Some(id) = id {
            self.sizes.lock().unwrap().remove(id);
        }
    }
    fn charge(&self, rru_halves: u64, wru: u64) {
        use crate::bill::Meter;
        Meter::add(&self.meter.dynamodb_rru_halves, rru_halves);
        Meter::add(&self.meter.dynamodb_wru, wru);
    }
    fn throttled(&self) {
        self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        crate::bill::Meter::add(&self.meter.dynamodb_throttled, 1);
    }
    /// Settles estimates against what the requests really cost.
    fn settle(&self, estimates: &[Demand], actual: &[Demand]) {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap();
        for (e, a) in estimates.iter().zip(actual) {
            b.take(now, &a.minus(e));
        }
    }
    /// The fault the next request to `op` touching `ts`, made by the
    /// function `caller`, takes, if any.
    fn take_fault(&self, op: &str, ts: &[Touch], caller: Option<&str>) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let i = faults.iter().position(|f| {
            f.count > 0
                && f.target.as_deref().is_none_or(|t| t == op)
                && (f.key_prefix.is_none() || ts.iter().any(|t| f.hits(t)))
                && f.function.as_deref().is_none_or(|want| caller == Some(want))
        })?;
        faults[i].count -= 1;
        let f = faults[i].clone();
        if faults[i].count == 0 {
            faults.remove(i);
        }
        self.counters.faults.fetch_add(1, Ordering::Relaxed);
        Some(f)
    }
}

/// The answer to a request an injected fault takes.
fn injected(
    s: &State,
    f: &Fault,
    op: &str,
    ts: &[Touch],
    write: bool,
    access_key: Option<&str>,
    region: &str,
) -> axum::response::Response {
    match f.kind {
        FaultKind::Internal => internal("Internal server error (injected)"),
        FaultKind::Kill => {
            let killed = access_key.and_then(crate::runtime::kill_caller);
            tracing::warn!(op, killed = ?killed, "fault: the caller's process was killed as it called");
            // Nobody is left to read it.
            internal("the caller was killed (injected)")
        }
        FaultKind::Throttle => {
            s.throttled();
            if op.starts_with("Transact") {
                let codes: Vec<&str> = ts.iter().map(|t| if f.hits(t) { "ThrottlingError" } else { "None" }).collect();
                cancelled(&codes)
            } else {
                let t = ts.iter().find(|t| f.hits(t)).or(ts.first());
                throttle_answer(Limit::KeyRange, write, &t.map(|t| resource(region, t)).unwrap_or_default())
            }
        }
    }
}

fn reply(status: u16, v: Value) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(axum::body::Body::from(v.to_string()))
        .expect("a valid response")
}

fn take_token(s: &State) -> bool {
    let Some(rate) = s.opts.throttle_rate else {
        return true;
    };
    let mut b = s.bucket.lock().unwrap();
    let now = Instant::now();
    b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * f64::from(rate)).min(f64::from(rate));
    b.1 = now;
    if b.0 >= 1.0 {
        b.0 -= 1.0;
        true
    } else {
        false
    }
}

/// The region a request was signed for (moto keeps tables per region).
fn region_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("us-east-1")
        .to_owned()
}

/// DynamoDB's answer to a throttled request (not a transaction).
fn throttle_answer(limit: Limit, write: bool, resource: &str) -> axum::response::Response {
    let rw = if write { "Write" } else { "Read" };
    let (kind, message, reason) = match limit {
        Limit::KeyRange => (PARTITION_THROTTLED, THROTTLING_MESSAGE.to_owned(), format!("Table{rw}KeyRangeThroughputExceeded")),
        Limit::Account => (
            TABLE_THROTTLED,
            "Throughput exceeds the current throughput limit for your account. Please contact AWS Support at https://aws.amazon.com/support request a limit increase".to_owned(),
            format!("Table{rw}AccountLimitExceeded"),
        ),
        Limit::Rate => (
            PARTITION_THROTTLED,
            "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.".to_owned(),
            format!("Table{rw}MaxOnDemandThroughputExceeded"),
        ),
    };
    let reason = if resource.contains("/index/") { reason.replacen("Table", "Index", 1) } else { reason };
    reply(
        400,
        json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
            "message": message,
            "ThrottlingReasons": [{"reason": reason, "resource": resource}],
        }),
    )
}

/// A transaction cancelled: each item's reason code (`None` where it was fine).
fn cancelled(codes: &[&str]) -> axum::response::Response {
    let reasons: Vec<Value> = codes
        .iter()
        .map(|c| match *c {
            "None" => json!({"Code": "None"}),
            "ThrottlingError" => json!({"Code": "ThrottlingError", "Message": THROTTLING_MESSAGE}),
            c => json!({"Code": c, "Message": "Transaction is ongoing for the item"}),
        })
        .collect();
    reply(
        400,
        json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
            "CancellationReasons": reasons,
        }),
    )
}

fn internal(message: &str) -> axum::response::Response {
    reply(500, json!({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": message}))
}

/// CRC-32 (IEEE), as DynamoDB's `x-amz-crc32` header carries it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// What moto answered.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: axum::body::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The exception's name, if it is one.
    fn error(&self) -> Option<String> {
        if self.status < 400 {
            return None;
        }
        let v = self.json();
        let t = v["__type"].as_str().unwrap_or_default();
        Some(t.rsplit('#').next().unwrap_or(t).to_owned())
    }
    /// The same answer with another body (its checksum recomputed).
    fn with_body(mut self, v: &Value) -> Self {
        let body = v.to_string();
        if self.headers.contains_key("x-amz-crc32") {
            self.headers.insert("x-amz-crc32", crc32(body.as_bytes()).into());
        }
        self.body = body.into();
        self
    }
    fn into_response(self) -> axum::response::Response {
        let mut out = axum::response::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                out = out.header(k, v);
            }
        }
        out.body(axum::body::Body::from(self.body)).expect("a valid response")
    }
}

/// A send to a FIFO queue, deduplicated as SQS does ([`sqs_fifo`]): the
/// entries sent within the interval are answered as sent and not passed
/// on; the rest go to moto. `None` when this is no FIFO send (moto answers).
async fn fifo_send(s: &State, headers: &axum::http::HeaderMap, target: &str, body: &[u8]) -> Option<axum::response::Response> {
    let req: Value = serde_json::from_slice(body).ok()?;
    let queue = req["QueueUrl"].as_str().filter(|q| q.ends_with(".fifo"))?.to_owned();
    let scope = s.fifo.lock().unwrap().scope(&queue);
    let group_scope = match scope {
        Some(g) => g,
        None => {
            let ask = json!({"QueueUrl": queue, "AttributeNames": ["DeduplicationScope"]}).to_string().into_bytes();
            let a = call(s, headers, "AmazonSQS.GetQueueAttributes", ask).await.ok()?;
            let g = a.json()["Attributes"]["DeduplicationScope"] == "messageGroup";
            s.fifo.lock().unwrap().set_scope(&queue, g);
            g
        }
    };
    let batch = target.ends_with("Batch");
    let entries: Vec<Value> = if batch { req["Entries"].as_array()?.clone() } else { vec![req.clone()] };
    // Content-based deduplication (no explicit id) is left to moto.
    if entries.iter().any(|e| e["MessageDeduplicationId"].as_str().is_none()) {
        return None;
    }
    let now = Instant::now();
    let (mut fresh, mut dups, mut keys) = (vec![], vec![], HashMap::new());
    {
        let mut d = s.fifo.lock().unwrap();
        for e in &entries {
            let key = sqs_fifo::Dedupe::key(
                &queue,
                group_scope,
                e["MessageGroupId"].as_str().unwrap_or_default(),
                e["MessageDeduplicationId"].as_str().unwrap_or_default(),
            );
            match d.claim(&key, now) {
                sqs_fifo::Seen::New => {
                    keys.insert(e["Id"].as_str().unwrap_or_default().to_owned(), key);
                    fresh.push(e.clone());
                }
                sqs_fifo::Seen::Duplicate(first) => {
                    let mut answer = sqs_fifo::duplicate_answer(first, e["MessageBody"].as_str().unwrap_or_default());
                    if batch {
                        answer["Id"] = e["Id"].clone();
                    }
                    dups.push(answer);
                }
            }
        }
    }
    if fresh.is_empty() {
        let answer = if batch { json!({"Successful": dups, "Failed": []}) } else { dups.remove(0) };
        return Some(reply(200, answer));
    }
    let mut forward = req.clone();
    if batch {
        forward["Entries"] = Value::Array(fresh);
    }
    let got = call(s, headers, target, forward.to_string().into_bytes()).await;
    let mut d = s.fifo.lock().unwrap();
    let answer = match got {
        Ok(a) if a.status == 200 => a,
        other => {
            for key in keys.values() {
                d.release(key);
            }
            return Some(match other {
                Ok(a) => a.into_response(),
                Err(e) => internal(&e),
            });
        }
    };
    let mut v = answer.json();
    if batch {
        for ok in v["Successful"].as_array().cloned().unwrap_or_default() {
            if let Some(key) = ok["Id"].as_str().and_then(|id| keys.remove(id)) {
                d.settle(&key, ok.clone());
            }
        }
        // Failed entries were never sent.
        for key in keys.values() {
            d.release(key);
        }
        if let Some(list) = v["Successful"].as_array_mut() {
            list.extend(dups);
        }
    } else if let Some(key) = keys.values().next() {
        d.settle(key, v.clone());
    }
    Some(answer.with_body(&v).into_response())
}

/// Sends one request to moto with the caller's headers (its region).
async fn call(s: &State, headers: &axum::http::HeaderMap, target: &str, body: Vec<u8>) -> Result<Answer, String> {
    let mut req = s.http.post(&s.upstream).body(body);
    for (k, v) in headers {
        if k != "host" && k != "content-length" && k != "x-amz-target" {
            req = req.header(k, v);
        }
    }
    if !target.is_empty() {
        req = req.header("x-amz-target", target);
    }
    let res = req.send().await.map_err(|e| format!("upstream: {e}"))?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await.map_err(|e| format!("upstream: {e}"))?;
    Ok(Answer { status, headers, body })
}

fn target_of(headers: &axum::http::HeaderMap, op: &str) -> String {
    let full = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("DynamoDB_20120810.");
    format!("{}.{op}", full.rsplit_once('.').map_or("DynamoDB_20120810", |(p, _)| p))
}

/// The table's key schema (DescribeTable, once per table).
async fn schema(s: &State, headers: &axum::http::HeaderMap, table: &str) -> Arc<Schema> {
    if let Some(sc) = s.schemas.lock().unwrap().get(table) {
        return sc.clone();
    }
    let body = json!({"TableName": table}).to_string().into_bytes();
    match call(s, headers, &target_of(headers, "DescribeTable"), body).await {
        Ok(a) if a.status == 200 => match Schema::from_description(&a.json()["Table"]) {
            Some(sc) => {
                let sc = Arc::new(sc);
                s.schemas.lock().unwrap().insert(table.to_owned(), sc.clone());
                sc
            }
            None => Arc::new(Schema::default()),
        },
        // No such table: the request itself will fail in moto.
        _ => Arc::new(Schema::default()),
    }
}

/// The full sizes of items, read from moto (consistently, unprojected):
/// 0 for those that do not exist. Items it could not read are left out.
async fn read_sizes(s: &State, headers: &axum::http::HeaderMap, ts: &[&Touch]) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let mut seen = HashSet::new();
    let wanted: Vec<&Touch> = ts.iter().copied().filter(|t| t.id.as_ref().is_some_and(|id| seen.insert(id.clone()))).collect();
    for chunk in wanted.chunks(100) {
        let mut request: Map<String, Value> = Map::new();
        for t in chunk {
            request.entry(t.table.clone()).or_insert_with(|| json!({"Keys": [], "ConsistentRead": true}))["Keys"]
                .as_array_mut()
                .expect("an array")
                .push(t.key.clone());
        }
        s.counters.size_reads.fetch_add(1, Ordering::Relaxed);
        let body = json!({"RequestItems": request}).to_string().into_bytes();
        let Ok(a) = call(s, headers, &target_of(headers, "BatchGetItem"), body).await else { continue };
        if a.status != 200 {
            continue;
        }
        let v = a.json();
        let schemas = s.schemas.lock().unwrap().clone();
        let mut found: HashMap<String, u64> = HashMap::new();
        for (table, items) in v["Responses"].as_object().into_iter().flatten() {
            let sc = schemas.get(table).cloned().unwrap_or_default();
            for i in items.as_array().into_iter().flatten() {
                found.insert(item_id(table, &sc.key_of(i)), item_size(i));
            }
        }
        let unprocessed: HashSet<String> = v["UnprocessedKeys"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(table, r)| {
                let sc = schemas.get(table).cloned().unwrap_or_default();
                r["Keys"].as_array().into_iter().flatten().map(move |k| item_id(table, &sc.key_of(k))).collect::<Vec<_>>()
            })
            .collect();
        for t in chunk {
            let id = t.id.clone().expect("an item");
            if !unprocessed.contains(&id) {
                out.insert(id.clone(), found.get(&id).copied().unwrap_or(0));
            }
        }
    }
    for (id, size) in &out {
        s.learn(&Some(id.clone()), *size);
    }
    out
}

/// What a projected or filtered `Query`/`Scan` evaluated: the same one
/// (key condition, start key, limit, order, segment) without projection or
/// filter. `None` if moto would not say.
async fn evaluated_size(s: &State, headers: &axum::http::HeaderMap, op: &str, body: &Value) -> Option<(u64, Vec<Value>)> {
    let mut shadow = Map::new();
    for k in [
        "TableName",
        "IndexName",
        "KeyConditionExpression",
        "KeyConditions",
        "ExclusiveStartKey",
        "Limit",
        "ScanIndexForward",
        "ConsistentRead",
        "Segment",
        "TotalSegments",
    ] {
        if let Some(v) = body.get(k) {
            shadow.insert(k.into(), v.clone());
        }
    }
    let expr = body["KeyConditionExpression"].as_str().unwrap_or_default();
    let used: HashSet<&str> = PLACEHOLDER.find_iter(expr).map(|m| m.as_str()).collect();
    for k in ["ExpressionAttributeNames", "ExpressionAttributeValues"] {
        let kept: Map<String, Value> = body[k]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(n, _)| used.contains(n.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            shadow.insert(k.into(), Value::Object(kept));
        }
    }
    let all = if body.get("IndexName").is_some() { "ALL_PROJECTED_ATTRIBUTES" } else { "ALL_ATTRIBUTES" };
    shadow.insert("Select".into(), json!(all));
    s.counters.size_reads.fetch_add(1, Ordering::Relaxed);
    let a = call(s, headers, &target_of(headers, op), Value::Object(shadow).to_string().into_bytes()).await.ok()?;
    if a.status != 200 {
        return None;
    }
    let items = a.json()["Items"].as_array().cloned().unwrap_or_default();
    Some((items.iter().map(item_size).sum(), items))
}

fn projected(req: &Value) -> bool {
    req.get("ProjectionExpression").is_some() || req.get("AttributesToGet").is_some()
}

fn consistent(req: &Value) -> bool {
    req["ConsistentRead"].as_bool().unwrap_or(false)
}

fn read_demand(t: &Touch, halves: u64) -> Demand {
    Demand { table: t.table.clone(), partition: t.partition.clone(), rru: halves as f64 / 2.0, wru: 0.0 }
}

fn write_demand(t: &Touch, wru: u64) -> Demand {
    Demand { table: t.table.clone(), partition: t.partition.clone(), rru: 0.0, wru: wru as f64 }
}

fn resource(region: &str, t: &Touch) -> String {
    match &t.index {
        Some(i) => format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{}/index/{i}", t.table),
        None => format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{}", t.table),
    }
}

const ITEM_OPS: [&str; 10] = [
    "GetItem",
    "BatchGetItem",
    "TransactGetItems",
    "Query",
    "Scan",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

fn is_write(op: &str) -> bool {
    matches!(op, "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems")
}

async fn handle(s: Arc<State>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    let full_target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    *s.counters.ops.lock().unwrap().entry(full_target.rsplit('.').next().unwrap_or("").to_owned()).or_default() += 1;
    meter_call(&s.meter, &full_target, body.len());
    let dynamodb = full_target.starts_with("DynamoDB_");
    let op = full_target.rsplit('.').next().unwrap_or("").to_owned();
    let json_body: Option<Value> =
        if dynamodb && ITEM_OPS.contains(&op.as_str()) { serde_json::from_slice(&body).ok() } else { None };
    let access_key = crate::iam::access_key_of(&headers);
    let caller = access_key.as_deref().and_then(crate::runtime::caller_of);
    let governed = crate::iam::governs(access_key.as_deref());
    let Some(json_body) = json_body else {
        if governed {
            let asks = other_asks(&s, &headers, &full_target, &op, &body).await;
            if let Some(refused) = crate::iam::refusal(access_key.as_deref(), &asks) {
                return access_denied(&refused);
            }
        }
        if let Some(f) = s.take_fault(&op, &[], caller.as_deref()) {
            return injected(&s, &f, &op, &[], false, access_key.as_deref(), &region_of(&headers));
        }
        if full_target == "AmazonSQS.SendMessageBatch" || full_target == "AmazonSQS.SendMessage" {
            if let Some(answer) = fifo_send(&s, &headers, &full_target, &body).await {
                return answer;
            }
        }
        // Not an item operation (or not JSON): on to moto as it came.
        if dynamodb && !take_token(&s) {
            s.throttled();
            return throttle_answer(Limit::Rate, false, &format!("arn:aws:dynamodb:{}:{ACCOUNT}:table/*", region_of(&headers)));
        }
        return match call(&s, &headers, &full_target, body.to_vec()).await {
            Ok(a) => a.into_response(),
            Err(e) => internal(&e),
        };
    };
    let mut schemas = HashMap::new();
    for t in tables_of(&op, &json_body) {
        let sc = schema(&s, &headers, &t).await;
        schemas.insert(t, sc);
    }
    let ts = touches(&op, &json_body, &schemas);
    let region = region_of(&headers);
    let write = is_write(&op);
    let transaction = op.starts_with("Transact");
    if governed {
        if let Some(refused) = crate::iam::refusal(access_key.as_deref(), &item_asks(&op, &ts, &region)) {
            return access_denied(&refused);
        }
    }

    // Injected faults first: a test asked for exactly these.
    if let Some(f) = s.take_fault(&op, &ts, caller.as_deref()) {
        return injected(&s, &f, &op, &ts, write, access_key.as_deref(), &region);
    }
    // The fixed request rate (`throttle_rate`), as a table's configured maximum.
    if !take_token(&s) {
        s.throttled();
        return if transaction {
            cancelled(&vec!["ThrottlingError"; ts.len()])
        } else {
            throttle_answer(Limit::Rate, write, &ts.first().map(|t| resource(&region, t)).unwrap_or_default())
        };
    }
    match op.as_str() {
        "GetItem" | "TransactGetItems" => point_reads(s, headers, op, json_body, ts, &region).await,
        "BatchGetItem" => batch_get(s, headers, json_body, ts, &region).await,
        "Query" | "Scan" => query(s, headers, op, json_body, ts, &region).await,
        _ => writes(s, headers, op, json_body, ts, &region).await,
    }
}

/// IAM's refusal, as the JSON protocols answer it.
fn access_denied(refused: &str) -> axum::response::Response {
    reply(400, json!({"__type": "com.amazon.coral.service#AccessDeniedException", "message": refused}))
}

/// What IAM authorises for a DynamoDB item call: per item action for a
/// transaction, per table (with every partition key named) otherwise.
fn item_asks(op: &str, ts: &[Touch], region: &str) -> Vec<crate::iam::Ask> {
    use crate::iam::Ask;
    if op.starts_with("Transact") {
        return ts
            .iter()
            .map(|t| Ask {
                action: format!(
                    "dynamodb:{}",
                    match t.action {
                        Action::Put => "PutItem",
                        Action::Update => "UpdateItem",
                        Action::Delete => "DeleteItem",
                        Action::Check => "ConditionCheckItem",
                        Action::Read => "GetItem",
                    }
                ),
                resource: resource(region, t),
                leading_keys: t.pk.clone().map(|k| vec![k]),
            })
            .collect();
    }
    let mut by_resource: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for t in ts {
        // AWS always knows a Query's partition key; a key condition this
        // front cannot read is held to a LeadingKeys condition as a key
        // no pattern but "*" admits, never as no key at all.
        let pk = t.pk.clone().or_else(|| (op == "Query").then(|| "(a partition key hookcast emulate could not read)".to_owned()));
        by_resource.entry(resource(region, t)).or_default().extend(pk);
    }
    by_resource
        .into_iter()
        .map(|(r, keys)| Ask { action: format!("dynamodb:{op}"), resource: r, leading_keys: (!keys.is_empty()).then_some(keys) })
        .collect()
}

/// What IAM authorises for any other call: a DynamoDB table call on its
/// table, an SQS batch as its single action, a secret by its full ARN.
async fn other_asks(s: &State, headers: &axum::http::HeaderMap, target: &str, op: &str, body: &[u8]) -> Vec<crate::iam::Ask> {
    use crate::iam::Ask;
    let region = region_of(headers);
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if target.starts_with("DynamoDB_") {
        let table =
            json["TableName"].as_str().map_or("*".to_owned(), |t| format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{t}"));
        return vec![Ask::new(format!("dynamodb:{op}"), table)];
    }
    if target.starts_with("AmazonSQS.") {
        let action = op.strip_suffix("Batch").unwrap_or(op);
        let name = json["QueueUrl"].as_str().and_then(|u| u.rsplit('/').next()).or(json["QueueName"].as_str());
        let arn = name.map_or("*".to_owned(), |n| format!("arn:aws:sqs:{region}:{ACCOUNT}:{n}"));
        return vec![Ask::new(format!("sqs:{action}"), arn)];
    }
    if target.starts_with("secretsmanager.") {
        let id = json["SecretId"].as_str().unwrap_or("*").to_owned();
        // A name (or partial ARN) is authorised as the secret's full ARN.
        let arn = if id.starts_with("arn:") && id.rsplit('-').next().is_some_and(|s| s.len() == 6) {
            id
        } else {
            let described =
                call(s, headers, "secretsmanager.DescribeSecret", json!({ "SecretId": id }).to_string().into_bytes()).await;
            described
                .ok()
                .and_then(|a| serde_json::from_slice::<Value>(&a.body).ok()?["ARN"].as_str().map(str::to_owned))
                .unwrap_or(id)
        };
        return vec![Ask::new(format!("secretsmanager:{op}"), arn)];
    }
    let service = target.split(['.', '_']).next().unwrap_or(target).to_ascii_lowercase();
    vec![Ask::new(format!("{service}:{op}"), "*")]
}

/// `GetItem` and `TransactGetItems`: each item on its own size.
async fn point_reads(
    s: Arc<State>,
    headers: axum::http::HeaderMap,
    op: String,
    body: Value,
    ts: Vec<Touch>,
    region: &str,
) -> axum::response::Response {
    let transaction = op == "TransactGetItems";
    let requests: Vec<Value> = if transaction {
        body["TransactItems"].as_array().into_iter().flatten().map(|t| t["Get"].clone()).collect()
    } else {
        vec![body.clone()]
    };
    let per_unit = |req: &Value| {
        if transaction {
            TRANSACTIONAL_READ_HALVES
        } else if consistent(req) {
            STRONG_READ_HALVES
        } else {
            EVENTUAL_READ_HALVES
        }
    };
    let estimates: Vec<Demand> =
        ts.iter().zip(&requests).map(|(t, r)| read_demand(t, per_unit(r) * read_units(s.size_of(&t.id).unwrap_or(0)))).collect();
    let refused = s.buckets.lock().unwrap().admit_all(Instant::now(), &estimates);
    if let Some(refused) = refused {
        s.throttled();
        return if transaction {
            let codes: Vec<&str> = refused.iter().map(|r| if r.is_some() { "ThrottlingError" } else { "None" }).collect();
            cancelled(&codes)
        } else {
            throttle_answer(refused[0].unwrap_or(Limit::KeyRange), false, &resource(region, &ts[0]))
        };
    }
    let answer = match call(&s, &headers, &target_of(&headers, &op), body.to_string().into_bytes()).await {
        Ok(a) => a,
        Err(e) => {
            s.settle(&estimates, &vec![Demand::default(); estimates.len()]);
            return internal(&e);
        }
    };
    let mut actual: Vec<Demand> = estimates.iter().map(|e| Demand { rru: 0.0, wru: 0.0, ..e.clone() }).collect();
    let mut halves = 0;
    if answer.status == 200 {
        let v = answer.json();
        let items: Vec<Value> = if transaction {
            v["Responses"].as_array().into_iter().flatten().map(|r| r["Item"].clone()).collect()
        } else {
            vec![v["Item"].clone()]
        };
        // Projected items that exist: their full size from what was seen, or from moto.
        let unknown: Vec<&Touch> = ts
            .iter()
            .zip(&requests)
            .zip(&items)
            .filter(|((t, r), i)| projected(r) && !i.is_null() && s.size_of(&t.id).is_none())
            .map(|((t, _), _)| t)
            .collect();
        let read = if unknown.is_empty() { HashMap::new() } else { read_sizes(&s, &headers, &unknown).await };
        for (k, ((t, r), item)) in ts.iter().zip(&requests).zip(&items).enumerate() {
            let size = if item.is_null() {
                s.learn(&t.id, 0);
                0
            } else if projected(r) {
                s.size_of(&t.id).or_else(|| t.id.as_ref().and_then(|id| read.get(id).copied())).unwrap_or_else(|| item_size(item))
            } else {
                let size = item_size(item);
                s.learn(&t.id, size);
                size
            };
            let h = per_unit(r) * read_units(size);
            halves += h;
            actual[k] = read_demand(t, h);
        }
    }
    s.settle(&estimates, &actual);
    s.charge(halves, 0);
    answer.into_response()
}

/// `BatchGetItem`: each key as its own `GetItem`; throttled keys come back unprocessed.
async fn batch_get(
    s: Arc<State>,
    headers: axum::http::HeaderMap,
    body: Value,
    ts: Vec<Touch>,
    region: &str,
) -> axum::response::Response {
    let requests = body["RequestItems"].as_object().cloned().unwrap_or_default();
    let per_unit = |table: &str| if consistent(&requests[table]) { STRONG_READ_HALVES } else { EVENTUAL_READ_HALVES };
    let estimates: Vec<Demand> =
        ts.iter().map(|t| read_demand(t, per_unit(&t.table) * read_units(s.size_of(&t.id).unwrap_or(0)))).collect();
    let refused = s.buckets.lock().unwrap().admit_each(Instant::now(), &estimates);
    if !ts.is_empty() && refused.iter().all(Option::is_some) {
        s.throttled();
        return throttle_answer(refused[0].unwrap_or(Limit::KeyRange), false, &resource(region, &ts[0]));
    }
    // What goes to moto: the admitted keys; the others come back unprocessed.
    let mut admitted: Map<String, Value> = Map::new();
    let mut unprocessed: Map<String, Value> = Map::new();
    for (t, r) in ts.iter().zip(&refused) {
        let into = if r.is_some() { &mut unprocessed } else { &mut admitted };
        let entry = into.entry(t.table.clone()).or_insert_with(|| {
            let mut e = requests[&t.table].clone();
            e["Keys"] = json!([]);
            e
        });
        entry["Keys"].as_array_mut().expect("an array").push(t.key.clone());
    }
    let mut sent = body.clone();
    sent["RequestItems"] = Value::Object(admitted);
    let answer = match call(&s, &headers, &target_of(&headers, "BatchGetItem"), sent.to_string().into_bytes()).await {
        Ok(a) => a,
        Err(e) => {
            s.settle(&estimates, &vec![Demand::default(); estimates.len()]);
            return internal(&e);
        }
    };
    let mut actual: Vec<Demand> = estimates.iter().map(|e| Demand { rru: 0.0, wru: 0.0, ..e.clone() }).collect();
    let mut halves = 0;
    let mut answer = answer;
    if answer.status == 200 {
        let mut v = answer.json();
        let schemas = s.schemas.lock().unwrap().clone();
        let mut found: HashMap<String, u64> = HashMap::new();
        for (table, items) in v["Responses"].as_object().into_iter().flatten() {
            if projected(&requests[table]) {
                continue;
            }
            let sc = schemas.get(table).cloned().unwrap_or_default();
            for i in items.as_array().into_iter().flatten() {
                found.insert(item_id(table, &sc.key_of(i)), item_size(i));
            }
        }
        let moto_unprocessed: HashSet<String> = v["UnprocessedKeys"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(table, r)| {
                let sc = schemas.get(table).cloned().unwrap_or_default();
                r["Keys"].as_array().into_iter().flatten().map(move |k| item_id(table, &sc.key_of(k))).collect::<Vec<_>>()
            })
            .collect();
        let processed =
            |t: &Touch, r: &Option<Limit>| r.is_none() && t.id.as_ref().is_some_and(|id| !moto_unprocessed.contains(id));
        let unknown: Vec<&Touch> = ts
            .iter()
            .zip(&refused)
            .filter(|(t, r)| processed(t, r) && projected(&requests[&t.table]) && s.size_of(&t.id).is_none())
            .map(|(t, _)| t)
            .collect();
        let read = if unknown.is_empty() { HashMap::new() } else { read_sizes(&s, &headers, &unknown).await };
        for (k, (t, r)) in ts.iter().zip(&refused).enumerate() {
            if !processed(t, r) {
                continue;
            }
            let id = t.id.clone().unwrap_or_default();
            let size = if projected(&requests[&t.table]) {
                s.size_of(&t.id).or_else(|| read.get(&id).copied()).unwrap_or(0)
            } else {
                let size = found.get(&id).copied().unwrap_or(0);
                s.learn(&t.id, size);
                size
            };
            let h = per_unit(&t.table) * read_units(size);
            halves += h;
            actual[k] = read_demand(t, h);
        }
        if !unprocessed.is_empty() {
            let mut merged = v["UnprocessedKeys"].as_object_mut().map(std::mem::take).unwrap_or_default();
            for (table, mut e) in unprocessed {
                match merged.get_mut(&table) {
                    Some(m) => {
                        let keys = e["Keys"].as_array_mut().map(std::mem::take).unwrap_or_default();
                        if let Some(a) = m["Keys"].as_array_mut() {
                            a.extend(keys);
                        }
                    }
                    None => {
                        merged.insert(table, e);
                    }
                }
            }
            v["UnprocessedKeys"] = Value::Object(merged);
            answer = answer.with_body(&v);
        }
    }
    s.settle(&estimates, &actual);
    s.charge(halves, 0);
    answer.into_response()
}

/// `Query` and `Scan`: the items evaluated, summed, then rounded up to 4 KB once.
async fn query(
    s: Arc<State>,
    headers: axum::http::HeaderMap,
    op: String,
    body: Value,
    ts: Vec<Touch>,
    region: &str,
) -> axum::response::Response {
    let t = &ts[0];
    let per_unit = if consistent(&body) { STRONG_READ_HALVES } else { EVENTUAL_READ_HALVES };
    let estimate = vec![read_demand(t, per_unit)];
    let refused = s.buckets.lock().unwrap().admit_all(Instant::now(), &estimate);
    if let Some(refused) = refused {
        s.throttled();
        return throttle_answer(refused[0].unwrap_or(Limit::KeyRange), false, &resource(region, t));
    }
    let answer = match call(&s, &headers, &target_of(&headers, &op), body.to_string().into_bytes()).await {
        Ok(a) => a,
        Err(e) => {
            s.settle(&estimate, &[Demand::default()]);
            return internal(&e);
        }
    };
    let mut halves = 0;
    if answer.status == 200 {
        let whole = !projected(&body)
            && ["FilterExpression", "QueryFilter", "ScanFilter"].iter().all(|k| body.get(*k).is_none())
            && matches!(body["Select"].as_str(), None | Some("ALL_ATTRIBUTES" | "ALL_PROJECTED_ATTRIBUTES"));
        let returned = answer.json()["Items"].as_array().cloned().unwrap_or_default();
        let (size, items) = if whole {
            (returned.iter().map(item_size).sum(), returned)
        } else {
            match evaluated_size(&s, &headers, &op, &body).await {
                Some(e) => e,
                None => {
                    tracing::warn!(op = %op, "the front could not read what a projected request evaluated: charged on what it returned");
                    (returned.iter().map(item_size).sum(), vec![])
                }
            }
        };
        // Whole items of the table (an index's entries are not items).
        if t.index.is_none() {
            let sc = s.schemas.lock().unwrap().get(&t.table).cloned().unwrap_or_default();
            for i in &items {
                s.learn(&Some(item_id(&t.table, &sc.key_of(i))), item_size(i));
            }
        }
        halves = per_unit * read_units(size);
    }
    s.settle(&estimate, &[read_demand(t, halves)]);
    s.charge(halves, 0);
    answer.into_response()
}

/// The write units an item costs: the larger of its sizes before and after.
fn item_write_units(t: &Touch, before: u64, after: u64, transaction: bool) -> u64 {
    let factor = if transaction { TRANSACTIONAL_WRITE_FACTOR } else { 1 };
    let size = match t.action {
        Action::Put | Action::Update => before.max(after),
        Action::Delete | Action::Check | Action::Read => before,
    };
    factor * write_units(size)
}

/// Writes: admitted on their estimated units, held against conflicts as
/// before, then run in moto one at a time.
async fn writes(
    s: Arc<State>,
    headers: axum::http::HeaderMap,
    op: String,
    body: Value,
    ts: Vec<Touch>,
    region: &str,
) -> axum::response::Response {
    let txn = op == "TransactWriteItems";
    let batch = op == "BatchWriteItem";
    let estimates: Vec<Demand> = ts
        .iter()
        .map(|t| {
            let before = s.size_of(&t.id).unwrap_or(0);
            write_demand(t, item_write_units(t, before, t.new_size.unwrap_or(0), txn))
        })
        .collect();
    let refused = {
        let now = Instant::now();
        let mut b = s.buckets.lock().unwrap();
        if batch {
            b.admit_each(now, &estimates)
        } else {
            b.admit_all(now, &estimates).unwrap_or_else(|| vec![None; ts.len()])
        }
    };
    if refused.iter().any(Option::is_some) && (!batch || refused.iter().all(Option::is_some)) {
        s.throttled();
        return if txn {
            let codes: Vec<&str> = refused.iter().map(|r| if r.is_some() { "ThrottlingError" } else { "None" }).collect();
            cancelled(&codes)
        } else {
            let k = refused.iter().position(Option::is_some).unwrap_or(0);
            throttle_answer(
                refused[k].unwrap_or(Limit::KeyRange),
                true,
                &ts.get(k).map(|t| resource(region, t)).unwrap_or_default(),
            )
        };
    }
    // A batch's throttled items come back unprocessed; the others go on.
    let mut sent = body.clone();
    let mut unprocessed: Map<String, Value> = Map::new();
    let mut admitted: Vec<usize> = (0..ts.len()).collect();
    if batch && refused.iter().any(Option::is_some) {
        admitted.clear();
        let mut kept: Map<String, Value> = Map::new();
        let mut k = 0;
        for (table, reqs) in body["RequestItems"].as_object().into_iter().flatten() {
            for r in reqs.as_array().into_iter().flatten() {
                if r.get("PutRequest").is_none() && r.get("DeleteRequest").is_none() {
                    continue;
                }
                let into = if refused[k].is_some() {
                    &mut unprocessed
                } else {
                    admitted.push(k);
                    &mut kept
                };
                into.entry(table.clone()).or_insert_with(|| json!([])).as_array_mut().expect("an array").push(r.clone());
                k += 1;
            }
        }
        sent["RequestItems"] = Value::Object(kept);
    }
    let items: Vec<String> = admitted.iter().filter_map(|&k| ts[k].id.clone()).collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = {
        let (s, headers, op, ts, admitted) = (s.clone(), headers.clone(), op.clone(), ts.clone(), admitted.clone());
        Box::pin(async move {
            let _ = tx.send(run_write(&s, &headers, &op, sent, &ts, &admitted).await);
        })
    };
    // Queued for moto under the same lock that admitted it: writes reach
    // moto exactly in the order they were admitted.
    let conflict = {
        let now = Instant::now();
        let mut busy = s.busy.lock().unwrap();
        if busy.len() > 1_000 {
            busy.retain(|_, h| h.clashes(now, true));
        }
        let clash = items.iter().any(|i| busy.get_mut(i).is_some_and(|h| h.clashes(now, txn)));
        if !clash {
            for i in &items {
                busy.entry(i.clone()).or_default().windows.push((now + s.opts.hold, txn));
            }
            // The writer task lives as long as the front.
            let _ = s.writes.send((job, now));
        }
        clash
    };
    if conflict {
        s.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        // Refused while another held the item: charged as a write that failed
        // (never lower than DynamoDB), on what the front knows of the items.
        let wru = admitted.iter().map(|&k| estimates[k].wru as u64).sum();
        s.charge(0, wru);
        let unused: Vec<Demand> =
            (0..ts.len()).map(|k| if admitted.contains(&k) { estimates[k].clone() } else { Demand::default() }).collect();
        s.settle(&estimates, &unused);
        return if txn {
            cancelled(&vec!["TransactionConflict"; ts.len()])
        } else {
            reply(
                400,
                json!({"__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException", "message": "Transaction is ongoing for the item"}),
            )
        };
    }
    let (answer, units) = match rx.await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            s.settle(&estimates, &vec![Demand::default(); estimates.len()]);
            return internal(&e);
        }
        Err(_) => {
            s.settle(&estimates, &vec![Demand::default(); estimates.len()]);
            return internal("the front stopped");
        }
    };
    let actual: Vec<Demand> = ts.iter().zip(&units).map(|(t, u)| write_demand(t, *u)).collect();
    s.settle(&estimates, &actual);
    s.charge(0, units.iter().sum());
    let mut answer = answer;
    if !unprocessed.is_empty() && answer.status == 200 {
        let mut v = answer.json();
        let mut merged = v["UnprocessedItems"].as_object_mut().map(std::mem::take).unwrap_or_default();
        for (table, reqs) in unprocessed {
            let reqs = reqs.as_array().cloned().unwrap_or_default();
            match merged.get_mut(&table).and_then(Value::as_array_mut) {
                Some(a) => a.extend(reqs),
                None => {
                    merged.insert(table, Value::Array(reqs));
                }
            }
        }
        v["UnprocessedItems"] = Value::Object(merged);
        answer = answer.with_body(&v);
    }
    answer.into_response()
}

/// One write in moto, with the reads that size it: its answer (as the
/// caller asked it) and the write units of each touched item.
async fn run_write(
    s: &State,
    headers: &axum::http::HeaderMap,
    op: &str,
    mut body: Value,
    ts: &[Touch],
    admitted: &[usize],
) -> Result<(Answer, Vec<u64>), String> {
    let txn = op == "TransactWriteItems";
    let mut units = vec![0u64; ts.len()];
    let mine: Vec<&Touch> = admitted.iter().map(|&k| &ts[k]).collect();
    // A single write asks moto for what it needs to know, and is answered as it asked.
    let single = matches!(op, "PutItem" | "UpdateItem" | "DeleteItem");
    let asked = body["ReturnValues"].as_str().unwrap_or("NONE").to_owned();
    let conditional = body.get("ConditionExpression").is_some() || body.get("Expected").is_some();
    let mut added_values = false;
    let mut added_on_failure = false;
    if single {
        let wanted = if op == "UpdateItem" { "ALL_NEW" } else { "ALL_OLD" };
        if asked == "NONE" {
            body["ReturnValues"] = json!(wanted);
            added_values = true;
        }
        if conditional && body["ReturnValuesOnConditionCheckFailure"].as_str().unwrap_or("NONE") == "NONE" {
            body["ReturnValuesOnConditionCheckFailure"] = json!("ALL_OLD");
            added_on_failure = true;
        }
    }
    // Sizes before: known, in the answer (a single Put or Delete), or read now.
    let before_in_answer = |t: &Touch| single && (t.action != Action::Update || asked == "ALL_OLD");
    let unknown: Vec<&Touch> =
        mine.iter().copied().filter(|t| !before_in_answer(t) && !t.only_new && s.size_of(&t.id).is_none()).collect();
    let read = if unknown.is_empty() { HashMap::new() } else { read_sizes(s, headers, &unknown).await };
    let before_of = |t: &Touch| s.size_of(&t.id).or_else(|| t.id.as_ref().and_then(|id| read.get(id).copied()));
    let before: Vec<Option<u64>> = ts.iter().map(before_of).collect();
    let answer = call(s, headers, &target_of(headers, op), body.to_string().into_bytes()).await?;
    let v = answer.json();
    let error = answer.error();
    if answer.status == 200 {
        let after_in_answer = |t: &Touch| {
            single && t.action == Action::Update && asked != "ALL_OLD" && asked != "UPDATED_OLD" && asked != "UPDATED_NEW"
        };
        let updated: Vec<&Touch> = mine.iter().copied().filter(|t| t.action == Action::Update && !after_in_answer(t)).collect();
        for t in &updated {
            s.forget(&t.id);
        }
        let after_read = if updated.is_empty() { HashMap::new() } else { read_sizes(s, headers, &updated).await };
        for &k in admitted {
            let t = &ts[k];
            let attributes = item_size(&v["Attributes"]);
            let before = if before_in_answer(t) {
                attributes
            } else if t.only_new {
                0
            } else {
                before[k].unwrap_or(0)
            };
            let after = match t.action {
                Action::Put => t.new_size.unwrap_or(0),
                Action::Update if after_in_answer(t) => attributes,
                Action::Update => t.id.as_ref().and_then(|id| after_read.get(id).copied()).unwrap_or(before),
                Action::Delete => 0,
                Action::Check | Action::Read => before,
            };
            units[k] = item_write_units(t, before, after, txn);
            s.learn(&t.id, after);
        }
    } else if matches!(error.as_deref(), Some("ConditionalCheckFailedException" | "TransactionCanceledException")) {
        // A failed condition still consumes write units: on the item as it
        // is, or the one it would have written if larger ("If the item does
        // not exist, DynamoDB will consume one write capacity unit", Item
        // sizes and capacity unit consumption, developer guide). A
        // cancelled transaction is charged as its writes (the docs say
        // nothing less: never lower).
        let reasons = v["CancellationReasons"].as_array().cloned().unwrap_or_default();
        let charged = error.as_deref() == Some("ConditionalCheckFailedException")
            || reasons.iter().any(|r| matches!(r["Code"].as_str(), Some("ConditionalCheckFailed" | "TransactionConflict")));
        let seen: Vec<Option<u64>> = ts
            .iter()
            .enumerate()
            .map(|(k, _)| {
                if txn {
                    reasons.get(k).and_then(|r| r.get("Item")).map(item_size)
                } else if added_on_failure || body["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD" {
                    Some(item_size(&v["Item"]))
                } else {
                    None
                }
            })
            .collect();
        // Nothing was written: what is there now is what was there (the
        // writers' turn is still this one).
        let unread: Vec<&Touch> =
            admitted.iter().filter(|&&k| seen[k].is_none() && before[k].is_none()).map(|&k| &ts[k]).collect();
        let after_refusal = if charged && !unread.is_empty() { read_sizes(s, headers, &unread).await } else { HashMap::new() };
        for &k in admitted {
            let t = &ts[k];
            if let Some(size) = seen[k] {
                s.learn(&t.id, size);
            }
            let existing =
                seen[k].or(before[k]).or_else(|| t.id.as_ref().and_then(|id| after_refusal.get(id).copied())).unwrap_or(0);
            if charged {
                let factor = if txn { TRANSACTIONAL_WRITE_FACTOR } else { 1 };
                units[k] = factor * write_units(existing.max(t.new_size.unwrap_or(0)));
            }
        }
    } else {
        // Not written, or not known how: what the front knew of these items is stale.
        for t in &mine {
            s.forget(&t.id);
        }
    }
    // The caller gets the answer it asked for.
    let answer = if added_values || added_on_failure {
        let mut v = v;
        let mut changed = false;
        if let Some(o) = v.as_object_mut() {
            if answer.status == 200 && added_values {
                changed |= o.remove("Attributes").is_some();
            }
            if answer.status != 200 && added_on_failure && o.remove("Item").is_some() {
                changed = true;
                if let Some(m) = o.remove("Message") {
                    o.entry("message").or_insert(m);
                }
            }
        }
        if changed {
            answer.with_body(&v)
        } else {
            answer
        }
    } else {
        answer
    };
    Ok((answer, units))
}

/// `POST /__emulate/faults` adds a fault; `GET` shows those pending; `DELETE` clears them.
async fn faults(s: Arc<State>, method: axum::http::Method, body: axum::body::Bytes) -> axum::response::Response {
    let pending = |s: &State| json!({"pending": s.faults.lock().unwrap().iter().map(Fault::to_json).collect::<Vec<_>>(), "fired": s.counters.faults.load(Ordering::Relaxed)});
    match method {
        axum::http::Method::POST => {
            let parsed = serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()).and_then(|v| Fault::parse(&v));
            match parsed {
                Ok(f) => {
                    s.faults.lock().unwrap().push(f);
                    reply(200, pending(&s))
                }
                Err(e) => reply(400, json!({"error": e})),
            }
        }
        axum::http::Method::DELETE => {
            s.faults.lock().unwrap().clear();
            reply(200, pending(&s))
        }
        _ => reply(200, pending(&s)),
    }
}

/// Starts the front on 127.0.0.1:0 before `upstream` (moto's URL).
pub async fn start(upstream: &str, opts: FrontOptions, meter: Arc<crate::bill::Meter>) -> std::io::Result<Front> {
    let counters = Arc::new(FrontCounters::default());
    let (writes, mut queued) = tokio::sync::mpsc::unbounded_channel::<(Job, Instant)>();
    let timed = counters.clone();
    let writer = tokio::spawn(async move {
        while let Some((job, admitted)) = queued.recv().await {
            let started = Instant::now();
            job.await;
            let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            timed.writes.fetch_add(1, Ordering::Relaxed);
            timed.write_service_us.fetch_add(us(started.elapsed()), Ordering::Relaxed);
            timed.write_queued_us.fetch_add(us(started - admitted), Ordering::Relaxed);
        }
    });
    let state = Arc::new(State {
        busy: Mutex::default(),
        writes,
        counters: counters.clone(),
        bucket: Mutex::new((f64::from(opts.throttle_rate.unwrap_or(0)), Instant::now())),
        opts,
        upstream: upstream.to_owned(),
        http: reqwest::Client::new(),
        meter,
        buckets: Mutex::default(),
        sizes: Mutex::default(),
        schemas: Mutex::default(),
        faults: Mutex::default(),
        fifo: Mutex::default(),
    });
    let seen = state.clone();
    let app = axum::Router::new()
        // What the front counted, for tests and benchmarks (DynamoDB uses POST / only).
        .route(
            "/__emulate/counters",
            axum::routing::get(move || async move {
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let (c, m) = (&seen.counters, &seen.meter);
                axum::Json(json!({
                    "conflicts": get(&c.conflicts),
                    "throttled": get(&c.throttled),
                    "requests": get(&c.requests),
                    "faults": get(&c.faults),
                    "size_reads": get(&c.size_reads),
                    "ops": c.ops(),
                    "writes": get(&c.writes),
                    "write_service_us": get(&c.write_service_us),
                    "write_queued_us": get(&c.write_queued_us),
                    "dynamodb_rru": get(&m.dynamodb_rru_halves) as f64 / 2.0,
                    "dynamodb_rru_halves": get(&m.dynamodb_rru_halves),
                    "dynamodb_wru": get(&m.dynamodb_wru),
                    "dynamodb_throttled": get(&m.dynamodb_throttled),
                }))
            }),
        )
        .route(
            "/__emulate/faults",
            axum::routing::any({
                let state = state.clone();
                move |method: axum::http::Method, body: axum::body::Bytes| faults(state.clone(), method, body)
            }),
        )
        .fallback({
            let state = state.clone();
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| handle(state.clone(), headers, body)
        })
        // DynamoDB takes up to 16 MB in one request (BatchWriteItem): not axum's 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _stopped = axum::serve(listener, app).await;
    });
    Ok(Front { url, counters, state, task, writer })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn writes_to(p: &str, wru: f64) -> Demand {
        Demand { table: "t".into(), partition: Some(p.into()), rru: 0.0, wru }
    }

    fn reads_of(p: &str, rru: f64) -> Demand {
        Demand { table: "t".into(), partition: Some(p.into()), rru, wru: 0.0 }
    }

    #[test]
    fn a_partition_serves_1000_write_units_a_second_and_no_more() {
        let t0 = Instant::now();
        let mut b = Buckets::default();
        // A full second's worth at once, then nothing more at that instant.
        for _ in 0..10 {
            assert_eq!(b.admit_all(t0, &[writes_to("a", 100.0)]), None);
        }
        assert_eq!(b.admit_all(t0, &[writes_to("a", 1.0)]), Some(vec![Some(Limit::KeyRange)]));
        // Another partition is untouched.
        assert_eq!(b.admit_all(t0, &[writes_to("b", 1000.0)]), None);
        // Refilled at 1,000 a second: 250 after 250 ms, not 251.
        assert_eq!(b.admit_all(at(t0, 250), &[writes_to("a", 251.0)]), Some(vec![Some(Limit::KeyRange)]));
        assert_eq!(b.admit_all(at(t0, 250), &[writes_to("a", 250.0)]), None);
        // Never more than one second's worth, however long it rests.
        assert_eq!(b.admit_all(at(t0, 60_000), &[writes_to("a", 1000.0)]), None);
        assert_eq!(b.admit_all(at(t0, 60_000), &[writes_to("a", 1.0)]), Some(vec![Some(Limit::KeyRange)]));
        // Over ten seconds of writes as fast as they are admitted: at most
        // the bucket plus 1,000 a second.
        let mut admitted = 0.0;
        for ms in 0..10_000 {
            while b.admit_all(at(t0, 60_000 + ms), &[writes_to("a", 1.0)]).is_none() {
                admitted += 1.0;
            }
        }
        assert!(admitted <= 10_000.0 + 1.0, "{admitted}");
        assert!(admitted >= 9_990.0, "{admitted}");
    }

    #[test]
    fn reads_and_writes_share_a_partition_3000_to_1000() {
        let t0 = Instant::now();
        let mut b = Buckets::default();
        assert_eq!(b.admit_all(t0, &[reads_of("a", 3000.0)]), None);
        assert_eq!(b.admit_all(t0, &[writes_to("a", 1.0)]), Some(vec![Some(Limit::KeyRange)]));
        // Half a second: 500 writes, or 1,500 reads, or half of each.
        assert_eq!(b.admit_all(at(t0, 500), &[reads_of("a", 750.0), writes_to("a", 250.0)]), None);
        assert_eq!(b.admit_all(at(t0, 500), &[reads_of("a", 3.0)]), Some(vec![Some(Limit::KeyRange)]));
    }

    #[test]
    fn a_request_larger_than_the_bucket_waits_for_a_full_one_then_pays_its_debt() {
        let t0 = Instant::now();
        let mut b = Buckets::default();
        assert_eq!(b.admit_all(t0, &[writes_to("a", 1.0)]), None);
        // 2,000 units at once: only from a full bucket.
        assert_eq!(b.admit_all(at(t0, 0), &[writes_to("a", 2000.0)]), Some(vec![Some(Limit::KeyRange)]));
        assert_eq!(b.admit_all(at(t0, 1), &[writes_to("a", 2000.0)]), None);
        // Its debt (1,000 units): a second before anything else is admitted.
        assert_eq!(b.admit_all(at(t0, 1_000), &[writes_to("a", 1.0)]), Some(vec![Some(Limit::KeyRange)]));
        assert_eq!(b.admit_all(at(t0, 1_002), &[writes_to("a", 1.0)]), None);
    }

    #[test]
    fn a_transaction_is_refused_at_its_hot_items_only_and_takes_nothing() {
        let t0 = Instant::now();
        let mut b = Buckets::default();
        assert_eq!(b.admit_all(t0, &[writes_to("hot", 1000.0)]), None);
        let txn = [writes_to("cold", 2.0), writes_to("hot", 2.0), writes_to("cold2", 2.0)];
        assert_eq!(b.admit_all(t0, &txn), Some(vec![None, Some(Limit::KeyRange), None]));
        // Nothing was taken from the cold partitions.
        assert_eq!(b.admit_all(t0, &[writes_to("cold", 1000.0), writes_to("cold2", 1000.0)]), None);
    }

    #[test]
    fn a_table_serves_40000_units_a_second() {
        let t0 = Instant::now();
        let mut b = Buckets::default();
        // 40 partitions of 1,000 fill the table; the 41st is refused by the table.
        for p in 0..40 {
            assert_eq!(b.admit_all(t0, &[writes_to(&p.to_string(), 1000.0)]), None);
        }
        assert_eq!(b.admit_all(t0, &[writes_to("40", 1.0)]), Some(vec![Some(Limit::Account)]));
        // Reads have their own 40,000.
        assert_eq!(b.admit_all(t0, &[reads_of("r", 3000.0)]), None);
        // A batch: each item on its own.
        assert_eq!(b.admit_each(at(t0, 1), &[writes_to("x", 30.0), writes_to("y", 50.0)]), vec![None, Some(Limit::Account)]);
    }

    #[test]
    fn item_sizes_are_dynamodbs() {
        // Names and values: "pk" + "a" (3), "n" + 123 (1 + 2 + 1), "b" + 3 raw bytes.
        let item = json!({"pk": {"S": "a"}, "n": {"N": "123"}, "b": {"B": "AAEC"}});
        assert_eq!(item_size(&item), 3 + 4 + 4);
        // Numbers: leading and trailing zeroes trimmed, one byte per two digits, plus one.
        assert_eq!(number_size("0"), 2);
        assert_eq!(number_size("1000"), 2);
        assert_eq!(number_size("-0.00123"), 3);
        assert_eq!(number_size("12345678901234567890"), 11);
        assert_eq!(number_size("1.5E+10"), 2);
        // UTF-8 bytes, not characters.
        assert_eq!(value_size(&json!({"S": "é"})), 2);
        // Lists and maps: 3 bytes, and a byte per element.
        assert_eq!(value_size(&json!({"L": []})), 3);
        assert_eq!(value_size(&json!({"L": [{"S": "ab"}, {"BOOL": true}]})), 3 + (1 + 2) + (1 + 1));
        assert_eq!(value_size(&json!({"M": {"k": {"NULL": true}}})), 3 + 1 + 1 + 1);
        // Sets: their elements.
        assert_eq!(value_size(&json!({"SS": ["a", "bc"]})), 3);
        assert_eq!(binary_size("AAECAw=="), 4);
        assert_eq!(binary_size("AAECAwQ="), 5);
        // Units: 1 KB writes, 4 KB reads, at least one.
        assert_eq!((write_units(0), write_units(1024), write_units(1025)), (1, 1, 2));
        assert_eq!((read_units(0), read_units(4096), read_units(51_200)), (1, 1, 13));
    }

    #[test]
    fn a_query_names_its_partition() {
        let sc = Schema::default();
        let q = json!({"TableName": "t", "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                       "ExpressionAttributeValues": {":pk": {"S": "sub#x"}, ":p": {"S": "a"}}});
        assert_eq!(query_touch(&sc, &q).pk.as_deref(), Some("sub#x"));
        let q = json!({"TableName": "t", "KeyConditionExpression": "#k=:v AND sk BETWEEN :a AND :b",
                       "ExpressionAttributeNames": {"#k": "pk"}, "ExpressionAttributeValues": {":v": {"S": "chan#c"}}});
        assert_eq!(query_touch(&sc, &q).pk.as_deref(), Some("chan#c"));
        let q =
            json!({"TableName": "t", "KeyConditions": {"pk": {"AttributeValueList": [{"S": "x"}], "ComparisonOperator": "EQ"}}});
        assert_eq!(query_touch(&sc, &q).pk.as_deref(), Some("x"));
        assert_eq!(crc32(b"{}"), 2_745_614_147);
    }
}
