//! Time, as the engines read it: a clock they are given (tests move it), and
//! the two forms an instant takes on the wire and in the stores.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The wall clock.
pub fn system() -> Clock {
    Arc::new(SystemTime::now)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An event's `at`: RFC 3339 in UTC with milliseconds.
pub fn format_at(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
