//! CloudWatch embedded metric format: after each invocation a function
//! prints what its counters gained as EMF lines on stdout, which CloudWatch
//! Logs turns into metrics in the `hookcast` namespace (no API calls, no
//! extra latency). The same counters the local binary serves at /metrics.

use std::sync::Mutex;

use hookcast_core::metrics::{global, Snapshot};
use serde_json::{json, Value};

pub const NAMESPACE: &str = "hookcast";

/// `dimension_sets`: each set the metrics are published under (EMF
/// publishes a line's values once per set).
fn envelope(now_ms: u64, dimension_sets: &[&[&str]], metrics: &[&str]) -> Value {
    json!({
        "Timestamp": now_ms,
        "CloudWatchMetrics": [{
            "Namespace": NAMESPACE,
            "Dimensions": dimension_sets,
            "Metrics": metrics.iter().map(|m| json!({"Name": m, "Unit": "Count"})).collect::<Vec<_>>(),
        }],
    })
}

/// The EMF lines for what changed between two snapshots.
pub fn lines(before: &Snapshot, after: &Snapshot, now_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    for ((source, outcome), n) in &after.webhooks {
        let delta = n - before.webhooks.get(&(source.clone(), outcome.clone())).copied().unwrap_or(0);
        if delta > 0 {
            let line = json!({
                // By Outcome alone too: the store-outage alarm sums
                // `unavailable` over every source.
                "_aws": envelope(now_ms, &[&["Source", "Outcome"], &["Outcome"]], &["Webhooks"]),
                "Source": source, "Outcome": outcome, "Webhooks": delta,
            });
            out.push(line.to_string());
        }
    }
    let (events, delivered, gone, failed) = (
        after.events - before.events,
        after.delivered - before.delivered,
        after.gone - before.gone,
        after.failed - before.failed,
    );
    if events + delivered + gone + failed > 0 {
        let line = json!({
            "_aws": envelope(now_ms, &[&[]], &["Events", "Delivered", "Gone", "Failed"]),
            "Events": events, "Delivered": delivered, "Gone": gone, "Failed": failed,
        });
        out.push(line.to_string());
    }
    out
}

/// Prints what the process's counters gained since the last flush.
pub fn flush() {
    static LAST: Mutex<Option<Snapshot>> = Mutex::new(None);
    let now = global().snapshot();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let before = last.take().unwrap_or_default();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    for line in lines(&before, &now, now_ms) {
        println!("{line}");
    }
    *last = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_carry_deltas_in_cloudwatch_shape() {
        let mut before = Snapshot::default();
        before.webhooks.insert(("netlify".into(), "accepted".into()), 3);
        let mut after = before.clone();
        after.webhooks.insert(("netlify".into(), "accepted".into()), 5);
        after.webhooks.insert(("netlify".into(), "invalid_signature".into()), 1);
        after.delivered = 1000;
        after.gone = 2;
        let lines: Vec<Value> =
            lines(&before, &after, 1_800_000_000_000).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        let accepted = &lines[0];
        assert_eq!(accepted["_aws"]["Timestamp"], 1_800_000_000_000u64);
        let m = &accepted["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "hookcast");
        assert_eq!(m["Dimensions"], json!([["Source", "Outcome"], ["Outcome"]]));
        assert_eq!(m["Metrics"], json!([{"Name": "Webhooks", "Unit": "Count"}]));
        assert_eq!(
            (accepted["Source"].as_str(), accepted["Outcome"].as_str(), accepted["Webhooks"].as_u64()),
            (Some("netlify"), Some("accepted"), Some(2))
        );
        assert_eq!(lines[1]["Outcome"], "invalid_signature");
        assert_eq!(
            (lines[2]["Delivered"].as_u64(), lines[2]["Gone"].as_u64(), lines[2]["Failed"].as_u64()),
            (Some(1000), Some(2), Some(0))
        );
        assert_eq!(lines[2]["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert!(super::lines(&after, &after, 0).is_empty(), "nothing new, nothing printed");
    }
}
