//! API Gateway's throttles, as token buckets ("API Gateway throttles
//! requests to your API using the token bucket algorithm, where a token
//! counts for a request"), applied in AWS's order: the route's limit (or the
//! stage's default), then the account's, shared by every API in the region:
//!
//! - The account: 10,000 requests per second with a bucket of 5,000,
//!   "across HTTP APIs, REST APIs, WebSocket APIs, and WebSocket callback
//!   APIs" ("Amazon API Gateway quotas"; some regions have 2,500 and 1,250:
//!   `--apigw-account-rate`). A WebSocket message routed, a `$connect`, an
//!   HTTP request and an `@connections` call each take a token.
//! - New WebSocket connections: 500 per second per account ("Quotas for
//!   configuring and running a WebSocket API in API Gateway": "New
//!   connections per second per account (across all WebSocket APIs) per
//!   Region | 500"); the bucket holds one second's worth.
//! - Routes: the template's `ThrottlingRateLimit` and `ThrottlingBurstLimit`
//!   (a stage's or HTTP API's `DefaultRouteSettings`, overridden per route by
//!   `RouteSettings`) for all callers of the route together; 0 refuses every
//!   request, as it does on AWS.
//!
//! A throttled request is answered 429 ("Clients may receive 429 Too Many
//! Requests error responses at this point") and is not billed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

/// The account's API Gateway throttle ("Amazon API Gateway quotas").
pub const ACCOUNT_RATE: f64 = 10_000.0;
pub const ACCOUNT_BURST: f64 = 5_000.0;
/// New WebSocket connections per second per account.
pub const NEW_CONNECTIONS_RATE: f64 = 500.0;

/// One token bucket: `rate` tokens a second, at most `burst` held.
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }
    /// Takes a token, if one is there.
    pub fn take(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The account's shared buckets.
pub struct Account {
    pub requests: Bucket,
    pub new_connections: Bucket,
}

impl Account {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { requests: Bucket::new(rate, burst), new_connections: Bucket::new(NEW_CONNECTIONS_RATE, NEW_CONNECTIONS_RATE) }
    }
}

impl Default for Account {
    fn default() -> Self {
        Self::new(ACCOUNT_RATE, ACCOUNT_BURST)
    }
}

/// Route-level throttles: a default for every route, and routes of their own.
#[derive(Default)]
pub struct Routes {
    default: Option<Bucket>,
    routes: HashMap<String, Bucket>,
}

/// Route settings this emulator does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A key that is not modelled.
    #[error("{what}: {key} is not modelled by hookcast emulate")]
    Key { what: String, key: String },
    /// A throttling limit that is not a number.
    #[error("{key} {value:?} is not a number")]
    NotANumber { key: String, value: String },
}

/// A `ThrottlingRateLimit` / `ThrottlingBurstLimit` pair, if the settings have one.
fn bucket_of(settings: &Value) -> Result<Option<Bucket>, SettingsError> {
    let num = |k: &str| -> Result<Option<f64>, SettingsError> {
        match settings.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let s = crate::template::str_of(v);
                s.parse::<f64>().map(Some).map_err(|_| SettingsError::NotANumber { key: k.to_owned(), value: s })
            }
        }
    };
    match (num("ThrottlingRateLimit")?, num("ThrottlingBurstLimit")?) {
        (None, None) => Ok(None),
        // One without the other: AWS leaves the missing one at the account's.
        (rate, burst) => Ok(Some(Bucket::new(rate.unwrap_or(ACCOUNT_RATE), burst.unwrap_or(ACCOUNT_BURST)))),
    }
}

/// The keys a route's settings may carry that are modelled here or change
/// nothing a client sees (metrics and execution logs are CloudWatch's).
pub const ROUTE_SETTING_KEYS: &[&str] =
    &["ThrottlingBurstLimit", "ThrottlingRateLimit", "DetailedMetricsEnabled", "LoggingLevel", "DataTraceEnabled"];

impl Routes {
    /// From `DefaultRouteSettings` and `RouteSettings` (route key → settings).
    pub fn from_settings(default: Option<&Value>, per_route: Option<&Value>) -> Result<Self, SettingsError> {
        let check = |what: &str, v: &Value| -> Result<(), SettingsError> {
            for k in v.as_object().into_iter().flatten().map(|(k, _)| k) {
                if !ROUTE_SETTING_KEYS.contains(&k.as_str()) {
                    return Err(SettingsError::Key { what: what.to_owned(), key: k.clone() });
                }
            }
            Ok(())
        };
        let default = match default {
            Some(d) => {
                check("DefaultRouteSettings", d)?;
                bucket_of(d)?
            }
            None => None,
        };
        let mut routes = HashMap::new();
        for (key, settings) in per_route.and_then(Value::as_object).into_iter().flatten() {
            check(&format!("RouteSettings.{key}"), settings)?;
            if let Some(b) = bucket_of(settings)? {
                routes.insert(key.clone(), b);
            }
        }
        Ok(Self { default, routes })
    }

    /// A token from the route's bucket (or the default one), if it has one.
    pub fn take(&self, route: &str) -> bool {
        match self.routes.get(route).or(self.default.as_ref()) {
            Some(b) => b.take(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bucket_gives_its_burst_then_refuses() {
        let b = Bucket::new(1.0, 3.0);
        assert_eq!((0..5).filter(|_| b.take()).count(), 3);
        let zero = Bucket::new(0.0, 0.0);
        assert!(!zero.take(), "a limit of 0 refuses every request, as on AWS");
    }

    #[test]
    fn a_route_setting_wins_over_the_default() {
        let r = Routes::from_settings(
            Some(&json!({"ThrottlingBurstLimit": 2, "ThrottlingRateLimit": 1})),
            Some(&json!({"POST /hooks/{source}": {"ThrottlingBurstLimit": 5, "ThrottlingRateLimit": 1}})),
        )
        .unwrap();
        assert_eq!((0..10).filter(|_| r.take("GET /hookcast.js")).count(), 2);
        assert_eq!((0..10).filter(|_| r.take("POST /hooks/{source}")).count(), 5);
        let e = Routes::from_settings(Some(&json!({"Throttle": 1})), None).err().unwrap().to_string();
        assert!(e.contains("Throttle is not modelled"), "{e}");
    }
}
