//! The bill: every call the stack makes, counted as AWS meters it and priced
//! at list prices (us-east-1, on-demand, no free tier), readable while the
//! emulator runs (`GET /__emulate/bill` on the HTTP API) and printed when it
//! stops. Counts come from what the emulated services saw, never from an
//! estimate: a Lambda invocation and its billed duration from the runtime,
//! read and write units from the DynamoDB front (charged on item size),
//! WebSocket messages and connection time from the WebSocket API, requests
//! from the HTTP API, SQS and Secrets Manager calls from the front.
//!
//! Prices (per unit, USD), and where each comes from:
//! - Lambda: $0.20 per million requests; $0.0000166667 per GB-second on
//!   x86_64, $0.0000133334 on arm64, billed per millisecond ("AWS Lambda
//!   pricing", aws.amazon.com/lambda/pricing; "How AWS Pricing Works: AWS
//!   Lambda", docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html).
//! - API Gateway WebSocket: $1.00 per million messages, sent or received,
//!   metered in 32 KB increments; $0.25 per million connection minutes
//!   ("Amazon API Gateway pricing", aws.amazon.com/api-gateway/pricing: "Messages
//!   are metered in 32 KB increments"). A `PostToConnection` is a message sent.
//! - API Gateway HTTP API: $1.00 per million requests (first 300 million),
//!   metered in 512 KB increments (same page).
//! - DynamoDB on-demand: $0.625 per million write request units, $0.125 per
//!   million read request units (since 1 November 2024; "Amazon DynamoDB
//!   pricing for on-demand capacity", aws.amazon.com/dynamodb/pricing/on-demand).
//!   Stream reads by Lambda's event source are free ("Read requests made by
//!   AWS Lambda-based consumers of DynamoDB Streams are free", "Evaluate your
//!   DynamoDB streams usage", DynamoDB developer guide).
//! - SQS FIFO: $0.50 per million requests, each 64 KB chunk of a payload a
//!   request ("Amazon SQS pricing", aws.amazon.com/sqs/pricing).
//! - Secrets Manager: $0.05 per 10,000 API calls ("AWS Secrets Manager
//!   pricing", aws.amazon.com/secrets-manager/pricing); the $0.40 per secret
//!   per month is a fixed cost, not a call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;
pub const LAMBDA_PER_GB_SECOND_X86: f64 = 0.000_016_666_7;
pub const LAMBDA_PER_GB_SECOND_ARM: f64 = 0.000_013_333_4;
pub const WS_PER_MESSAGE: f64 = 1.00 / 1e6;
pub const WS_PER_CONNECTION_MINUTE: f64 = 0.25 / 1e6;
pub const HTTP_PER_REQUEST: f64 = 1.00 / 1e6;
pub const DYNAMODB_PER_WRU: f64 = 0.625 / 1e6;
pub const DYNAMODB_PER_RRU: f64 = 0.125 / 1e6;
pub const SQS_FIFO_PER_REQUEST: f64 = 0.50 / 1e6;
pub const SECRETS_PER_CALL: f64 = 0.05 / 10_000.0;

/// WebSocket messages are metered in 32 KB increments.
pub const WS_MESSAGE_UNIT: usize = 32 * 1024;
/// HTTP API requests are metered in 512 KB increments.
pub const HTTP_REQUEST_UNIT: usize = 512 * 1024;
/// SQS bills each 64 KB chunk of a request's payload as a request.
pub const SQS_REQUEST_UNIT: usize = 64 * 1024;

/// `bytes` in metering units of `unit` (at least one).
pub fn units(bytes: usize, unit: usize) -> u64 {
    (bytes.max(1)).div_ceil(unit) as u64
}

/// One function's invocations and billed duration.
#[derive(Default)]
pub struct FunctionUse {
    pub invocations: AtomicU64,
    /// Throttled invocations (not billed).
    pub throttled: AtomicU64,
    /// Invocations killed at the function's timeout.
    pub timeouts: AtomicU64,
    /// Billed duration in MB-milliseconds (memory × billed ms).
    pub mb_ms: AtomicU64,
    pub arm: std::sync::atomic::AtomicBool,
}

/// What the stack used, as AWS would bill it.
#[derive(Default)]
pub struct Meter {
    functions: Mutex<BTreeMap<String, std::sync::Arc<FunctionUse>>>,
    /// Read request units, in halves (an eventually consistent 4 KB read is half a unit).
    pub dynamodb_rru_halves: AtomicU64,
    pub dynamodb_wru: AtomicU64,
    /// Requests DynamoDB throttled (not billed).
    pub dynamodb_throttled: AtomicU64,
    pub stream_reads: AtomicU64,
    pub ws_messages_in: AtomicU64,
    pub ws_messages_out: AtomicU64,
    /// Connection time, in milliseconds, of connections that have closed
    /// (open ones are added when the bill is read).
    pub ws_connection_ms: AtomicU64,
    pub ws_connections: AtomicU64,
    /// Requests API Gateway throttled (429s; not billed).
    pub apigw_throttled: AtomicU64,
    pub http_requests: AtomicU64,
    pub sqs_requests: AtomicU64,
    pub secrets_calls: AtomicU64,
    /// Milliseconds of connection time still open, supplied when the bill is read.
    open_connection_ms: Mutex<Option<Box<dyn Fn() -> u64 + Send + Sync>>>,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Meter {
    /// The counters of one function (by logical id).
    pub fn function(&self, logical: &str) -> std::sync::Arc<FunctionUse> {
        self.functions.lock().unwrap().entry(logical.to_owned()).or_default().clone()
    }

    /// Where the bill reads the connection time of connections still open.
    pub fn set_open_connection_ms(&self, f: impl Fn() -> u64 + Send + Sync + 'static) {
        *self.open_connection_ms.lock().unwrap() = Some(Box::new(f));
    }

    pub fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }

    /// The bill so far: each line's quantity, unit price and cost, and the total.
    pub fn bill(&self) -> Value {
        let mut lines = vec![];
        let mut total = 0.0;
        let mut line = |service: &str, item: &str, quantity: f64, unit_price: f64| {
            let cost = quantity * unit_price;
            total += cost;
            lines.push(json!({"service": service, "item": item, "quantity": quantity, "unit_price": unit_price, "cost": cost}));
        };
        for (name, f) in self.functions.lock().unwrap().iter() {
            let gb_s = get(&f.mb_ms) as f64 / 1024.0 / 1000.0;
            let rate = if f.arm.load(Ordering::Relaxed) { LAMBDA_PER_GB_SECOND_ARM } else { LAMBDA_PER_GB_SECOND_X86 };
            line("Lambda", &format!("{name} requests"), get(&f.invocations) as f64, LAMBDA_PER_REQUEST);
            line("Lambda", &format!("{name} GB-seconds"), gb_s, rate);
        }
        line("DynamoDB", "write request units", get(&self.dynamodb_wru) as f64, DYNAMODB_PER_WRU);
        line("DynamoDB", "read request units", get(&self.dynamodb_rru_halves) as f64 / 2.0, DYNAMODB_PER_RRU);
        line("DynamoDB Streams", "read requests by Lambda (free)", get(&self.stream_reads) as f64, 0.0);
        line("API Gateway", "WebSocket messages received", get(&self.ws_messages_in) as f64, WS_PER_MESSAGE);
        line("API Gateway", "WebSocket messages sent", get(&self.ws_messages_out) as f64, WS_PER_MESSAGE);
        let open = self.open_connection_ms.lock().unwrap().as_ref().map_or(0, |f| f());
        let minutes = (get(&self.ws_connection_ms) + open) as f64 / 60_000.0;
        line("API Gateway", "WebSocket connection minutes", minutes, WS_PER_CONNECTION_MINUTE);
        line("API Gateway", "HTTP API requests", get(&self.http_requests) as f64, HTTP_PER_REQUEST);
        line("SQS", "FIFO requests (64 KB chunks)", get(&self.sqs_requests) as f64, SQS_FIFO_PER_REQUEST);
        line("Secrets Manager", "API calls", get(&self.secrets_calls) as f64, SECRETS_PER_CALL);
        let functions: BTreeMap<String, Value> = self
            .functions
            .lock()
            .unwrap()
            .iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    json!({"invocations": get(&f.invocations), "throttled": get(&f.throttled), "timeouts": get(&f.timeouts), "mb_ms": get(&f.mb_ms)}),
                )
            })
            .collect();
        json!({
            "currency": "USD",
            "prices": "us-east-1 list prices, on-demand, no free tier (infra/emulate/src/bill.rs)",
            "lines": lines,
            "total": total,
            "counts": {
                "functions": functions,
                "dynamodb_rru": get(&self.dynamodb_rru_halves) as f64 / 2.0,
                "dynamodb_wru": get(&self.dynamodb_wru),
                "dynamodb_throttled": get(&self.dynamodb_throttled),
                "stream_reads": get(&self.stream_reads),
                "ws_messages_in": get(&self.ws_messages_in),
                "ws_messages_out": get(&self.ws_messages_out),
                "ws_connections": get(&self.ws_connections),
                "ws_connection_minutes": minutes,
                "apigw_throttled": get(&self.apigw_throttled),
                "http_requests": get(&self.http_requests),
                "sqs_requests": get(&self.sqs_requests),
                "secrets_calls": get(&self.secrets_calls),
            },
        })
    }

    /// The bill as a person reads it: one line per item with a cost.
    pub fn summary(&self) -> String {
        let b = self.bill();
        let mut out = String::from("hookcast emulate: what this run would have cost on AWS (us-east-1 list prices)\n");
        for l in b["lines"].as_array().into_iter().flatten() {
            let q = l["quantity"].as_f64().unwrap_or(0.0);
            if q == 0.0 {
                continue;
            }
            out.push_str(&format!(
                "  {:<16} {:<44} {:>14.3}  ${:.6}\n",
                l["service"].as_str().unwrap_or(""),
                l["item"].as_str().unwrap_or(""),
                q,
                l["cost"].as_f64().unwrap_or(0.0)
            ));
        }
        out.push_str(&format!("  total ${:.6}\n", b["total"].as_f64().unwrap_or(0.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_to_the_metering_increment() {
        assert_eq!(units(0, WS_MESSAGE_UNIT), 1);
        assert_eq!(units(32 * 1024, WS_MESSAGE_UNIT), 1);
        assert_eq!(units(32 * 1024 + 1, WS_MESSAGE_UNIT), 2);
        assert_eq!(units(513 * 1024, HTTP_REQUEST_UNIT), 2);
        assert_eq!(units(256 * 1024, SQS_REQUEST_UNIT), 4);
    }

    #[test]
    fn a_million_posts_cost_a_dollar() {
        let m = Meter::default();
        Meter::add(&m.ws_messages_out, 1_000_000);
        let b = m.bill();
        assert!((b["total"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{b}");
        let f = m.function("Fanout");
        Meter::add(&f.invocations, 1_000_000);
        // 1,000,000 × 100 ms × 256 MB = 25,000 GB-s.
        Meter::add(&f.mb_ms, 1_000_000 * 100 * 256);
        let b = m.bill();
        let want = 1.0 + 0.20 + 25_000.0 * LAMBDA_PER_GB_SECOND_X86;
        assert!((b["total"].as_f64().unwrap() - want).abs() < 1e-6, "{b}");
    }
}
