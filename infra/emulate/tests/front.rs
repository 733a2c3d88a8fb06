//! The DynamoDB front against a real moto (HOOKCAST_DYNAMODB_ENDPOINT, as
//! ./tests/run sets it): capacity charged as DynamoDB charges it, partitions
//! throttled as DynamoDB throttles them, transactions cancelled at the
//! throttled item, and faults injected on demand.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookcast_emulate::bill::Meter;
use hookcast_emulate::front::{self, item_size, Front, FrontOptions};
use serde_json::{json, Value};

/// A DynamoDB-compatible server; ./tests/run starts moto_server and sets this.
fn endpoint() -> String {
    std::env::var("HOOKCAST_DYNAMODB_ENDPOINT").expect(
        "HOOKCAST_DYNAMODB_ENDPOINT is not set: run ./tests/run (it starts moto_server), \
         or start .tools/venv/bin/python tests/aws/moto_server.py and set it to the URL it prints",
    )
}

const AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0";

static TABLES: AtomicU32 = AtomicU32::new(0);

/// A front before moto, its own meter, and a fresh table (`pk`/`sk`, as template.yaml).
struct Env {
    front: Front,
    meter: Arc<Meter>,
    http: reqwest::Client,
    table: String,
}

/// Read units (in halves), write units and throttled requests so far.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Units {
    rru_halves: u64,
    wru: u64,
    throttled: u64,
}

impl Env {
    async fn new(opts: FrontOptions) -> Self {
        let meter = Arc::new(Meter::default());
        let front = front::start(&endpoint(), opts, meter.clone()).await.expect("the front starts");
        let table = format!("front-test-{}-{}", std::process::id(), TABLES.fetch_add(1, Ordering::SeqCst));
        let env = Env { front, meter, http: reqwest::Client::new(), table };
        // Straight to moto: provisioning is not the stack's traffic.
        let (status, v) = env
            .send(
                &endpoint(),
                "CreateTable",
                json!({
                    "TableName": env.table,
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                }),
            )
            .await;
        assert_eq!(status, 200, "CreateTable: {v}");
        // The front learns the table's key schema once, before any test counts.
        let (status, v) = env.ddb("GetItem", json!({"TableName": env.table, "Key": key("warm", "up")})).await;
        assert_eq!(status, 200, "{v}");
        env
    }

    async fn send(&self, url: &str, op: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(url)
            .header("x-amz-target", format!("DynamoDB_20120810.{op}"))
            .header("content-type", "application/x-amz-json-1.0")
            .header("authorization", AUTH)
            .body(body.to_string())
            .send()
            .await
            .expect("an answer");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("a body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn ddb(&self, op: &str, body: Value) -> (u16, Value) {
        self.send(&self.front.url, op, body).await
    }

    fn units(&self) -> Units {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Units {
            rru_halves: get(&self.meter.dynamodb_rru_halves),
            wru: get(&self.meter.dynamodb_wru),
            throttled: get(&self.meter.dynamodb_throttled),
        }
    }

    /// What `f` cost: read units in halves, write units, throttled requests.
    async fn cost<F: std::future::Future<Output = T>, T>(&self, f: F) -> (T, Units) {
        let before = self.units();
        let out = f.await;
        let after = self.units();
        (
            out,
            Units {
                rru_halves: after.rru_halves - before.rru_halves,
                wru: after.wru - before.wru,
                throttled: after.throttled - before.throttled,
            },
        )
    }

    async fn put(&self, item: Value) -> (u16, Value) {
        self.ddb("PutItem", json!({"TableName": self.table, "Item": item})).await
    }

    async fn get(&self, pk: &str, sk: &str) -> Value {
        let (status, v) = self.ddb("GetItem", json!({"TableName": self.table, "Key": key(pk, sk), "ConsistentRead": true})).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.front.url));
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let res = req.send().await.expect("an answer");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

fn key(pk: &str, sk: &str) -> Value {
    json!({"pk": {"S": pk}, "sk": {"S": sk}})
}

/// An item of exactly `bytes` bytes as DynamoDB sizes it: names and values.
fn item(pk: &str, sk: &str, bytes: u64) -> Value {
    let fixed = ("pk".len() + pk.len() + "sk".len() + sk.len() + "d".len()) as u64;
    let it = json!({"pk": {"S": pk}, "sk": {"S": sk}, "d": {"S": "x".repeat((bytes - fixed) as usize)}});
    assert_eq!(item_size(&it), bytes);
    it
}

fn error_type(v: &Value) -> &str {
    v["__type"].as_str().and_then(|t| t.rsplit('#').next()).unwrap_or("")
}

fn reasons(v: &Value) -> Vec<&str> {
    v["CancellationReasons"].as_array().into_iter().flatten().map(|r| r["Code"].as_str().unwrap_or("?")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_units_are_charged_on_item_size_as_dynamodb_charges_them() {
    let env = Env::new(FrontOptions::default()).await;
    let t = env.table.clone();

    // A 50 KB item: 50 write units to put.
    let (r, c) = env.cost(env.put(item("big", "1", 50 * 1024))).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(c.wru, 50);
    // Read strongly consistently: 50 KB / 4 KB rounded up = 13 read units;
    // eventually consistently half that, 6.5.
    let (r, c) = env.cost(env.ddb("GetItem", json!({"TableName": t, "Key": key("big", "1"), "ConsistentRead": true}))).await;
    assert_eq!(r.0, 200);
    assert_eq!(item_size(&r.1["Item"]), 50 * 1024);
    assert_eq!((c.rru_halves, c.wru), (26, 0), "13 RRU");
    let (_, c) = env.cost(env.ddb("GetItem", json!({"TableName": t, "Key": key("big", "1")}))).await;
    assert_eq!(c.rru_halves, 13, "6.5 RRU");
    // Projecting one attribute does not make the read cheaper.
    let (r, c) = env
        .cost(env.ddb(
            "GetItem",
            json!({"TableName": t, "Key": key("big", "1"), "ConsistentRead": true, "ProjectionExpression": "sk"}),
        ))
        .await;
    assert_eq!(r.1["Item"], json!({"sk": {"S": "1"}}), "the answer is the projection asked for");
    assert_eq!(c.rru_halves, 26);
    // An item that is not there still costs a read unit.
    let (_, c) = env.cost(env.ddb("GetItem", json!({"TableName": t, "Key": key("none", "1"), "ConsistentRead": true}))).await;
    assert_eq!(c.rru_halves, 2);

    // Ten 10 KB items in one batch: each rounded to 1 KB on its own, 100 units.
    let requests: Vec<Value> =
        (0..10).map(|i| json!({"PutRequest": {"Item": item("q", &format!("{i:02}"), 10 * 1024)}})).collect();
    let (r, c) = env.cost(env.ddb("BatchWriteItem", json!({"RequestItems": {t.clone(): requests}}))).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(c.wru, 100);
    // A Query over them projecting only the sort key: charged on the full
    // items read, summed, then rounded up once: 100 KB / 4 KB = 25 units
    // (each item rounded on its own would be 30; the projection alone, 1).
    let query = json!({"TableName": t, "KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": {"S": "q"}},
                       "ProjectionExpression": "sk", "ConsistentRead": true});
    let (r, c) = env.cost(env.ddb("Query", query.clone())).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["Count"], 10);
    assert!(r.1["Items"].as_array().unwrap().iter().all(|i| i.as_object().unwrap().keys().eq(["sk"])), "{}", r.1);
    assert_eq!((c.rru_halves, c.wru), (50, 0), "25 RRU");
    let mut eventual = query.clone();
    eventual["ConsistentRead"] = json!(false);
    let (_, c) = env.cost(env.ddb("Query", eventual)).await;
    assert_eq!(c.rru_halves, 25, "12.5 RRU");
    // A filter that keeps nothing: still every item evaluated.
    let mut filtered = query.clone();
    filtered["FilterExpression"] = json!("d = :none");
    filtered["ExpressionAttributeValues"][":none"] = json!({"S": "nothing"});
    let (r, c) = env.cost(env.ddb("Query", filtered)).await;
    assert_eq!((r.0, r.1["Count"].clone()), (200, json!(0)), "{}", r.1);
    assert_eq!(c.rru_halves, 50);

    // A transactional write of a 3 KB item: 2 units per KB, 6.
    let (r, c) = env
        .cost(
            env.ddb(
                "TransactWriteItems",
                json!({"TransactItems": [{"Put": {"TableName": t, "Item": item("tx", "1", 3 * 1024)}}]}),
            ),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(c.wru, 6);
    // The same item put plainly: 3.
    let (_, c) = env.cost(env.put(item("tx", "2", 3 * 1024))).await;
    assert_eq!(c.wru, 3);

    // A 5 KB item the front never saw (written straight to moto), and a
    // transaction that puts a small item there only if none is: refused,
    // and charged on the item that is there, twice (10), not on the small one.
    let (status, v) = env.send(&endpoint(), "PutItem", json!({"TableName": t, "Item": item("direct", "1", 5 * 1024)})).await;
    assert_eq!(status, 200, "{v}");
    let only_new = |sk: &str| json!({"TransactItems": [{"Put": {"TableName": t, "Item": item("direct", sk, 100), "ConditionExpression": "attribute_not_exists(pk)"}}]});
    let reads =
        || async { env.control(reqwest::Method::GET, "/__emulate/counters", None).await.1["size_reads"].as_u64().unwrap() };
    let reads_before = reads().await;
    let (r, c) = env.cost(env.ddb("TransactWriteItems", only_new("1"))).await;
    assert_eq!(
        (r.0, error_type(&r.1), reasons(&r.1)),
        (400, "TransactionCanceledException", vec!["ConditionalCheckFailed"]),
        "{}",
        r.1
    );
    assert_eq!(c.wru, 10);
    // A new one: written, 2 units, and no read of moto to know it was new.
    let (r, c) = env.cost(env.ddb("TransactWriteItems", only_new("2"))).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(c.wru, 2);
    assert_eq!(reads().await - reads_before, 1, "one read, for the refused one");

    // An update of one small attribute of the 50 KB item: the larger of the
    // item before and after (51,206 bytes: 51 units), answered as asked (no
    // return values).
    let (r, c) = env
        .cost(env.ddb(
            "UpdateItem",
            json!({"TableName": t, "Key": key("big", "1"), "UpdateExpression": "SET small = :v",
                   "ExpressionAttributeValues": {":v": {"S": "y"}}}),
        ))
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(r.1.get("Attributes").is_none(), "no return values were asked for: {}", r.1);
    assert_eq!(c.wru, 51);
    // A put whose condition fails still consumes units: on the item there.
    let (r, c) = env
        .cost(env.ddb(
            "PutItem",
            json!({"TableName": t, "Item": item("big", "1", 100), "ConditionExpression": "attribute_not_exists(pk)"}),
        ))
        .await;
    assert_eq!((r.0, error_type(&r.1)), (400, "ConditionalCheckFailedException"), "{}", r.1);
    assert!(r.1.get("Item").is_none(), "no item was asked for on failure: {}", r.1);
    assert_eq!(c.wru, 51);
    // A delete: the deleted item's size.
    let (r, c) = env.cost(env.ddb("DeleteItem", json!({"TableName": t, "Key": key("big", "1")}))).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(r.1.get("Attributes").is_none(), "{}", r.1);
    assert_eq!(c.wru, 51);
    assert_eq!(env.units().throttled, 0);
}

/// Sends all the puts at once, their bodies made beforehand: (answers,
/// seconds from the first send to the last answer).
async fn burst(env: &Env, items: Vec<Value>) -> (Vec<(u16, Value)>, f64) {
    let bodies: Vec<String> = items.into_iter().map(|i| json!({"TableName": env.table, "Item": i}).to_string()).collect();
    let started = Instant::now();
    let answers = futures::future::join_all(bodies.into_iter().map(|body| async {
        let res = env
            .http
            .post(&env.front.url)
            .header("x-amz-target", "DynamoDB_20120810.PutItem")
            .header("content-type", "application/x-amz-json-1.0")
            .header("authorization", AUTH)
            .body(body)
            .send()
            .await
            .expect("an answer");
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }))
    .await;
    (answers, started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_partition_key_is_throttled_above_1000_write_units_a_second_four_are_not() {
    let env = Env::new(FrontOptions::default()).await;
    const ITEM_KB: u64 = 100;
    const ITEMS: usize = 40; // 4,000 write units: four seconds of one partition.

    // Spread over four partition keys: 10 × 100 = 1,000 units each, what
    // one partition serves at once, whatever the timing.
    let spread: Vec<Value> = (0..ITEMS).map(|i| item(&format!("spread#{}", i % 4), &format!("{i:03}"), ITEM_KB * 1024)).collect();
    let ((answers, _), c) = env.cost(burst(&env, spread)).await;
    let refused: Vec<&Value> = answers.iter().filter(|(s, _)| *s != 200).map(|(_, v)| v).collect();
    assert!(refused.is_empty(), "nothing throttled over four keys: {refused:?}");
    assert_eq!((c.wru, c.throttled), (ITEMS as u64 * ITEM_KB, 0));

    // All on one key, sent at once: a partition takes 1,000 units at once
    // and 1,000 more a second, so all would be admitted only if sending
    // them took over three seconds. Most are throttled, as DynamoDB
    // throttles a hot key, and cost nothing.
    let hot: Vec<Value> = (0..ITEMS).map(|i| item("hot", &format!("{i:03}"), ITEM_KB * 1024)).collect();
    let ((answers, secs), c) = env.cost(burst(&env, hot)).await;
    let admitted = answers.iter().filter(|(s, _)| *s == 200).count() as u64;
    let throttled: Vec<&Value> = answers.iter().filter(|(s, _)| *s != 200).map(|(_, v)| v).collect();
    for v in &throttled {
        assert_eq!(error_type(v), "ProvisionedThroughputExceededException", "{v}");
        assert_eq!(v["ThrottlingReasons"][0]["reason"], "TableWriteKeyRangeThroughputExceeded", "{v}");
        assert_eq!(v["ThrottlingReasons"][0]["resource"], format!("arn:aws:dynamodb:us-east-1:123456789012:table/{}", env.table));
    }
    eprintln!("hot key: {admitted} of {ITEMS} admitted, {} throttled, in {secs:.2} s", throttled.len());
    assert!(!throttled.is_empty(), "4,000 units at one key in {secs:.2} s: some must be throttled");
    // Never more than the bucket, what it refilled while the burst lasted, and the last item.
    let bound = 1000.0 + 1000.0 * secs + ITEM_KB as f64;
    assert!((admitted * ITEM_KB) as f64 <= bound, "{admitted} items of {ITEM_KB} KB admitted in {secs:.2} s");
    assert_eq!(c.wru, admitted * ITEM_KB, "a throttled request consumes nothing");
    assert_eq!(c.throttled, throttled.len() as u64);
    let counters = env.control(reqwest::Method::GET, "/__emulate/counters", None).await.1;
    assert_eq!(counters["throttled"], throttled.len() as u64, "{counters}");
    assert_eq!(counters["dynamodb_wru"], (ITEMS as u64 + admitted) * ITEM_KB, "{counters}");
}

/// Puts 390 KB items to `pk` one at a time until one is throttled (at most `ceiling`).
async fn drain(env: &Env, pk: &str, ceiling: usize) {
    for i in 0..ceiling {
        let (status, v) = env.put(item(pk, &format!("drain{i:04}"), 390 * 1024)).await;
        if status != 200 {
            assert_eq!(error_type(&v), "ProvisionedThroughputExceededException", "{v}");
            return;
        }
    }
    panic!("{ceiling} puts of 390 KB to {pk} and none throttled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_touching_a_throttled_partition_is_cancelled_at_that_item() {
    let env = Env::new(FrontOptions::default()).await;
    let t = env.table.clone();
    // The transaction's hot item needs 780 units (390 KB, twice) and the
    // drained partition holds less than 390: it is refused unless 0.4 s
    // pass between the two. A slow machine may take that long: try again,
    // up to a ceiling.
    let mut cancelled = None;
    for attempt in 0..10 {
        drain(&env, "hot", 50).await;
        let txn = json!({"TransactItems": [
            {"Put": {"TableName": t, "Item": item(&format!("cold#{attempt}"), "a", 200)}},
            {"Put": {"TableName": t, "Item": item("hot", &format!("txn{attempt}"), 390 * 1024)}},
            {"Put": {"TableName": t, "Item": item(&format!("cold#{attempt}"), "b", 200)}},
        ]});
        let ((status, v), c) = env.cost(env.ddb("TransactWriteItems", txn)).await;
        if status == 200 {
            continue;
        }
        assert_eq!(c.wru, 0, "a throttled transaction consumes nothing");
        assert_eq!(c.throttled, 1);
        cancelled = Some((attempt, v));
        break;
    }
    let (attempt, v) = cancelled.expect("a transaction touching the drained partition was cancelled");
    assert_eq!(error_type(&v), "TransactionCanceledException", "{v}");
    assert_eq!(reasons(&v), ["None", "ThrottlingError", "None"], "{v}");
    assert!(v["CancellationReasons"][1]["Message"].as_str().unwrap().starts_with("Throughput exceeds the current capacity"));
    // All or nothing: the cold items were not written.
    for sk in ["a", "b"] {
        assert!(env.get(&format!("cold#{attempt}"), sk).await.get("Item").is_none());
    }

    // A batch with an item on the drained partition: that item comes back
    // unprocessed, the other is written.
    let mut done = false;
    for attempt in 0..10 {
        drain(&env, "hot", 50).await;
        let hot = json!({"PutRequest": {"Item": item("hot", &format!("batch{attempt}"), 390 * 1024)}});
        let cold = json!({"PutRequest": {"Item": item(&format!("batch#{attempt}"), "c", 200)}});
        let ((status, v), c) =
            env.cost(env.ddb("BatchWriteItem", json!({"RequestItems": {t.clone(): [hot.clone(), cold]}}))).await;
        assert_eq!(status, 200, "{v}");
        if v["UnprocessedItems"].as_object().is_some_and(|u| u.is_empty()) {
            continue;
        }
        assert_eq!(v["UnprocessedItems"], json!({t.clone(): [hot]}), "exactly the hot item");
        assert_eq!(c.wru, 1, "only the cold item was written and charged");
        assert!(env.get(&format!("batch#{attempt}"), "c").await.get("Item").is_some());
        done = true;
        break;
    }
    assert!(done, "a batch touching the drained partition came back with it unprocessed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_faults_fail_exactly_count_matching_requests() {
    let env = Env::new(FrontOptions::default()).await;
    let t = env.table.clone();
    for pk in ["f#1", "g#1", "sub#1", "t#1", "a#1"] {
        assert_eq!(env.put(item(pk, "s", 100)).await.0, 200);
    }
    let (status, v) = env
        .control(
            reqwest::Method::POST,
            "/__emulate/faults",
            Some(json!({"target": "GetItem", "key_prefix": "f#", "count": 3, "error": "throttle"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, pending) = env.control(reqwest::Method::GET, "/__emulate/faults", None).await;
    assert_eq!(pending["pending"], json!([{"target": "GetItem", "key_prefix": "f#", "count": 3, "error": "throttle"}]));

    // Interleaved: other keys, another operation on the same key, and the matching ones.
    let get = |pk: &str| json!({"TableName": t, "Key": key(pk, "s"), "ConsistentRead": true});
    let query = json!({"TableName": t, "KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": {"S": "f#1"}}});
    let mut failed = vec![];
    let before = env.units();
    for (i, (op, body)) in [
        ("GetItem", get("g#1")),
        ("GetItem", get("f#1")),
        ("Query", query.clone()),
        ("GetItem", get("f#1")),
        ("GetItem", get("g#1")),
        ("GetItem", get("f#1")),
        ("GetItem", get("f#1")),
        ("GetItem", get("f#1")),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, v) = env.ddb(op, body).await;
        if status != 200 {
            assert_eq!(error_type(&v), "ProvisionedThroughputExceededException", "{v}");
            failed.push(i);
        }
    }
    assert_eq!(failed, [1, 3, 5], "exactly the first three matching requests");
    let after = env.units();
    assert_eq!(after.throttled - before.throttled, 3);
    // The five that ran, one 4 KB unit each: four consistent reads (2
    // halves each) and an eventually consistent Query (1 half).
    assert_eq!(after.rru_halves - before.rru_halves, 4 * 2 + 1, "throttled requests cost nothing");
    let (_, pending) = env.control(reqwest::Method::GET, "/__emulate/faults", None).await;
    assert_eq!((pending["pending"].clone(), pending["fired"].clone()), (json!([]), json!(3)));

    // Internal errors: a 500, exactly twice, for Queries on keys starting sub#.
    env.control(
        reqwest::Method::POST,
        "/__emulate/faults",
        Some(json!({"target": "Query", "key_prefix": "sub#", "count": 2, "error": "internal"})),
    )
    .await;
    let sub = json!({"TableName": t, "KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": {"S": "sub#1"}}});
    let mut statuses = vec![];
    for body in [query.clone(), sub.clone(), sub.clone(), sub.clone()] {
        let (status, v) = env.ddb("Query", body).await;
        if status == 500 {
            assert_eq!(error_type(&v), "InternalServerError", "{v}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 500, 500, 200]);

    // A transaction: cancelled with ThrottlingError at the matching item, once.
    env.control(
        reqwest::Method::POST,
        "/__emulate/faults",
        Some(json!({"target": "TransactWriteItems", "key_prefix": "t#", "count": 1, "error": "throttle"})),
    )
    .await;
    let txn = json!({"TransactItems": [
        {"Update": {"TableName": t, "Key": key("a#1", "s"), "UpdateExpression": "SET n = :n", "ExpressionAttributeValues": {":n": {"N": "1"}}}},
        {"Put": {"TableName": t, "Item": item("t#1", "s", 100)}},
    ]});
    let (status, v) = env.ddb("TransactWriteItems", txn.clone()).await;
    assert_eq!((status, error_type(&v)), (400, "TransactionCanceledException"), "{v}");
    assert_eq!(reasons(&v), ["None", "ThrottlingError"], "{v}");
    let (status, v) = env.ddb("TransactWriteItems", txn).await;
    assert_eq!(status, 200, "{v}");
    let counters = env.control(reqwest::Method::GET, "/__emulate/counters", None).await.1;
    assert_eq!(counters["faults"], 3 + 2 + 1, "{counters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicts_and_answers_are_as_before() {
    // A hold longer than the test: the second write to the item meets the first.
    let env = Env::new(FrontOptions { hold: Duration::from_secs(600), ..Default::default() }).await;
    let t = env.table.clone();
    let txn = json!({"TransactItems": [{"Put": {"TableName": t, "Item": item("c#1", "s", 100)}}]});
    assert_eq!(env.ddb("TransactWriteItems", txn.clone()).await.0, 200);
    let (status, v) = env.ddb("TransactWriteItems", txn).await;
    assert_eq!((status, error_type(&v), reasons(&v)), (400, "TransactionCanceledException", vec!["TransactionConflict"]), "{v}");
    let (status, v) = env.put(item("c#1", "s", 100)).await;
    assert_eq!((status, error_type(&v)), (400, "TransactionConflictException"), "{v}");
    // Reads pass through as moto answers them.
    let v = env.get("c#1", "s").await;
    assert_eq!(v["Item"], item("c#1", "s", 100));
    let counters = env.control(reqwest::Method::GET, "/__emulate/counters", None).await.1;
    assert_eq!(counters["conflicts"], 2, "{counters}");
    assert!(counters["requests"].as_u64().unwrap() >= 5, "{counters}");
    for k in ["dynamodb_rru", "dynamodb_wru", "dynamodb_throttled", "faults"] {
        assert!(counters.get(k).is_some(), "{k} in {counters}");
    }
}

impl Env {
    async fn sqs(&self, url: &str, op: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(url)
            .header("x-amz-target", format!("AmazonSQS.{op}"))
            .header("content-type", "application/x-amz-json-1.0")
            .header("authorization", AUTH.replace("/dynamodb/", "/sqs/"))
            .body(body.to_string())
            .send()
            .await
            .expect("an answer");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("a body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// SQS drops a FIFO message whose deduplication id was sent within five
/// minutes, even after the first was received and deleted; moto alone
/// delivers it again (it compares only with messages still queued). The
/// front keeps SQS's rule, per message group where the queue says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_message_sent_again_within_five_minutes_is_accepted_and_not_delivered() {
    let env = Env::new(FrontOptions::default()).await;
    let name = format!("{}.fifo", env.table);
    let attrs = json!({"FifoQueue": "true", "DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"});
    let (status, v) = env.sqs(&endpoint(), "CreateQueue", json!({"QueueName": name, "Attributes": attrs})).await;
    assert_eq!(status, 200, "{v}");
    let queue = v["QueueUrl"].as_str().unwrap().to_owned();
    let entry = |id: &str, group: &str, dedupe: &str| json!({"Id": id, "MessageBody": format!("body of {dedupe}"), "MessageGroupId": group, "MessageDeduplicationId": dedupe});
    let received = |url: String| {
        let env = &env;
        let queue = queue.clone();
        async move {
            let (status, v) = env
                .sqs(&url, "ReceiveMessage", json!({"QueueUrl": queue, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}))
                .await;
            assert_eq!(status, 200, "{v}");
            let msgs = v["Messages"].as_array().cloned().unwrap_or_default();
            for m in &msgs {
                let del = json!({"QueueUrl": queue, "ReceiptHandle": m["ReceiptHandle"]});
                assert_eq!(env.sqs(&url, "DeleteMessage", del).await.0, 200);
            }
            msgs.iter().map(|m| m["Body"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    for url in [endpoint(), env.front.url.clone()] {
        let ids = [format!("a{}", url.len()), format!("b{}", url.len())];
        let first = json!({"QueueUrl": queue, "Entries": [entry("1", "g", &ids[0])]});
        let (status, v) = env.sqs(&url, "SendMessageBatch", first.clone()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(received(url.clone()).await, vec![format!("body of {}", ids[0])]);
        // Again, with a new id beside it.
        let again = json!({"QueueUrl": queue, "Entries": [entry("1", "g", &ids[0]), entry("2", "g", &ids[1])]});
        let (status, v) = env.sqs(&url, "SendMessageBatch", again).await;
        assert_eq!(status, 200, "{v}");
        let mut ok: Vec<&str> = v["Successful"].as_array().unwrap().iter().map(|e| e["Id"].as_str().unwrap()).collect();
        ok.sort();
        assert_eq!(ok, ["1", "2"], "every entry accepted: {v}");
        let mut got = received(url.clone()).await;
        got.sort();
        let mut want = vec![format!("body of {}", ids[1])];
        if url == endpoint() {
            // moto alone: the received-and-deleted duplicate comes again.
            want.insert(0, format!("body of {}", ids[0]));
        }
        assert_eq!(got, want, "through {}", if url == endpoint() { "moto" } else { "the front" });
    }
    // The queue's scope is the message group: the same id in another group is another message.
    let front = env.front.url.clone();
    let other = json!({"QueueUrl": queue, "MessageBody": "in h", "MessageGroupId": "h", "MessageDeduplicationId": format!("a{}", front.len())});
    let (status, v) = env.sqs(&front, "SendMessage", other.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(received(front.clone()).await, vec!["in h".to_owned()]);
    let (status, v) = env.sqs(&front, "SendMessage", other).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["MessageId"].is_string(), "{v}");
    assert_eq!(received(front).await, Vec::<String>::new());
}
