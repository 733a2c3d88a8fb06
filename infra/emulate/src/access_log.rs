//! API Gateway access logs, as a stage's `AccessLogSettings` asks: one line
//! per request in the template's `Format`, with its `$context` variables
//! filled in (a variable API Gateway has no value for is written `-`, as
//! API Gateway writes it). Where CloudWatch Logs would keep them, the lines
//! go to a file per log group in the emulator's log directory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A log file that cannot be opened: its path (or directory) and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub struct AccessLog {
    format: String,
    pub path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AccessLog {
    /// A log for `destination` (a log group's ARN) in `dir`, in `format`.
    pub fn open(dir: &Path, destination: &str, format: &str) -> Result<Self, OpenError> {
        // A log group's ARN ends in ":*".
        let name: String = destination
            .trim_end_matches(":*")
            .rsplit([':', '/'])
            .find(|s| !s.is_empty())
            .unwrap_or("access")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        std::fs::create_dir_all(dir).map_err(|source| OpenError { path: dir.to_owned(), source })?;
        let path = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| OpenError { path: path.clone(), source })?;
        Ok(Self { format: format.to_owned(), path, file: Mutex::new(file) })
    }

    /// Writes one request's line.
    pub fn write(&self, context: &HashMap<&str, String>) {
        let line = render(&self.format, context);
        let mut f = self.file.lock().unwrap();
        if let Err(e) = writeln!(f, "{line}") {
            tracing::warn!(error = %e, path = %self.path.display(), "could not write an access log line");
        }
    }
}

/// The format with each `$context.name` replaced by its value, or `-`.
pub fn render(format: &str, context: &HashMap<&str, String>) -> String {
    let mut out = String::with_capacity(format.len());
    let mut rest = format;
    while let Some(at) = rest.find("$context.") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$context.".len()..];
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).unwrap_or(after.len());
        let name = after[..end].trim_end_matches('.');
        out.push_str(context.get(name).map_or("-", String::as_str));
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    out
}

/// API Gateway's `$context.requestTime` form: `07/Dec/2026:10:00:00 +0000`.
pub fn request_time() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // 2026-12-07T10:00:00Z
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap_or((&t, ""));
    let mut d = date.split('-');
    let (y, m, day) = (d.next().unwrap_or(""), d.next().unwrap_or(""), d.next().unwrap_or(""));
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = m.parse::<usize>().ok().and_then(|i| MONTHS.get(i.wrapping_sub(1))).unwrap_or(&"Jan");
    format!("{day}/{month}/{y}:{time} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_variables_are_filled_and_missing_ones_are_a_dash() {
        let ctx = HashMap::from([("requestId", "r1".to_owned()), ("identity.sourceIp", "127.0.0.1".to_owned())]);
        let line =
            render(r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","e":"$context.error.message"}"#, &ctx);
        assert_eq!(line, r#"{"requestId":"r1","ip":"127.0.0.1","e":"-"}"#);
        assert!(request_time().ends_with(" +0000"), "{}", request_time());
    }
}
