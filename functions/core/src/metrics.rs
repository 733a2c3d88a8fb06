//! Process-wide counters both hosts record into: webhooks by source and
//! outcome, events appended, deliveries by result, and publish → delivery
//! latency. The local binary serves them at `GET /metrics` in Prometheus'
//! text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The counters at one moment, to diff (CloudWatch EMF lines carry deltas).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub webhooks: BTreeMap<(String, String), u64>,
    pub events: u64,
    pub delivered: u64,
    pub gone: u64,
    pub failed: u64,
}

#[derive(Default)]
pub struct Metrics {
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    events: AtomicU64,
    delivered: AtomicU64,
    gone: AtomicU64,
    failed: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

impl Metrics {
    /// One webhook answered: `outcome` is `accepted`, `duplicate` or the error code.
    pub fn webhook(&self, source: &str, outcome: &str) {
        // Unknown sources are counted under one label: a scanner must not grow the map.
        let source = if outcome == "unknown_source" { "-" } else { source };
        let mut m = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((source.to_owned(), outcome.to_owned())).or_default() += 1;
    }
    pub fn event_appended(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
    pub fn deliveries(&self, delivered: usize, gone: usize, failed: usize) {
        self.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
        self.gone.fetch_add(gone as u64, Ordering::Relaxed);
        self.failed.fetch_add(failed as u64, Ordering::Relaxed);
    }
    /// Publish (the event's `at`) → its fan-out done, for one event.
    pub fn publish_to_delivery(&self, seconds: f64) {
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.latency[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            webhooks: self.webhooks.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            events: self.events.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            gone: self.gone.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Prometheus text exposition; `gauges` are the host's own (name, help, value).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP hookcast_webhooks_total Webhooks answered, by source and outcome.");
        let _ = writeln!(out, "# TYPE hookcast_webhooks_total counter");
        for ((source, outcome), n) in self.webhooks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "hookcast_webhooks_total{{source=\"{}\",outcome=\"{}\"}} {n}", escape(source), escape(outcome));
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(&mut out, "hookcast_events_total", "Events appended to channel logs.", self.events.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP hookcast_deliveries_total Frames pushed to sockets, by result.");
        let _ = writeln!(out, "# TYPE hookcast_deliveries_total counter");
        for (result, v) in [("delivered", &self.delivered), ("gone", &self.gone), ("failed", &self.failed)] {
            let _ = writeln!(out, "hookcast_deliveries_total{{result=\"{result}\"}} {}", v.load(Ordering::Relaxed));
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let name = "hookcast_publish_to_delivery_seconds";
        let _ = writeln!(out, "# HELP {name} From a webhook's acknowledgement to its fan-out done, per event.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", self.latency[i].load(Ordering::Relaxed));
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
