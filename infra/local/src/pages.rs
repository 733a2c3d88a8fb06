//! Open pages as this host sees them, for the console: how many view a
//! channel (the live subscriptions) and how many are open per build stamp
//! (the `build` query parameter of `/ws` and `/sse`, counted while the
//! connection is open). After a deploy, a console that still shows pages on
//! the old build says which visitors have not reloaded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hookcast_core::deliveries::{build_stamp, Pages};
use hookcast_core::ports::{StoreError, Subscriptions};
use hookcast_core::{Channel, Live};

/// Open connections per build stamp (`""`: unstamped). Only stamps with an
/// open connection are kept, so it holds at most one key per connection.
#[derive(Default)]
struct Builds(Mutex<BTreeMap<String, u64>>);

impl Builds {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        // Each change is one map operation: a panic cannot leave it half done.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct LocalPages {
    live: Arc<Live>,
    builds: Arc<Builds>,
}

/// One open page under its build; counted until dropped (the connection's end).
pub struct OpenPage {
    builds: Arc<Builds>,
    build: String,
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        let mut builds = self.builds.lock();
        if let Some(n) = builds.get_mut(&self.build) {
            *n -= 1;
            if *n == 0 {
                builds.remove(&self.build);
            }
        }
    }
}

impl LocalPages {
    pub fn new(live: Arc<Live>) -> Self {
        Self { live, builds: Arc::default() }
    }

    /// Counts a connection opened with this request `query` under its build
    /// stamp (`?build=`; none, or one [`build_stamp`] refuses, is `""`).
    pub fn open(&self, query: Option<&str>) -> OpenPage {
        let build = stamp(query).unwrap_or_default();
        *self.builds.lock().entry(build.clone()).or_default() += 1;
        OpenPage { builds: self.builds.clone(), build }
    }
}

/// The `build` parameter of a query string, if it is a valid stamp.
fn stamp(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    build_stamp(pairs.iter().find(|(k, _)| k == "build").map(|(_, v)| v.as_str()))
}

impl Pages for LocalPages {
    async fn occupancy(&self, channel: &Channel) -> Result<u64, StoreError> {
        self.live.count_subscribers(channel).await
    }
    async fn builds(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self.builds.lock().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_count_per_build_while_open() {
        let pages = LocalPages::new(Arc::new(Live::new()));
        let a = pages.open(Some("build=64b1f0c2&channel=deploys"));
        let b = pages.open(Some("channel=deploys&build=64b1f0c2"));
        let plain = pages.open(None);
        let forged = pages.open(Some("build=%3Cscript%3E"));
        let new = pages.open(Some("build=deploy-2"));
        let counts = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
        assert_eq!(pages.builds().await.unwrap(), counts(&[("", 2), ("64b1f0c2", 2), ("deploy-2", 1)]));
        drop((a, plain, new));
        assert_eq!(pages.builds().await.unwrap(), counts(&[("", 1), ("64b1f0c2", 1)]));
        drop((b, forged));
        assert!(pages.builds().await.unwrap().is_empty(), "a closed build leaves no key");
    }
}
