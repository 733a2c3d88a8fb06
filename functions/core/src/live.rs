//! Live subscriptions held in memory, the [`Subscriptions`] port for a host
//! whose connections live only as long as its process (the local binary),
//! and for tests. They need no durable store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::channel::Channel;
use crate::ports::{ConnId, StoreError, SubOutcome, SubscriberPage, Subscriptions, Turn};

/// Connections and their channels, under one lock (every call is a few map
/// operations; nothing waits while holding it).
#[derive(Debug, Default)]
pub struct Live {
    inner: Mutex<Registry>,
}

impl Live {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding it leaves maps that are still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    /// Connections known now.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }
    /// Subscriptions over every channel.
    pub fn subscriptions(&self) -> usize {
        self.lock().subs.values().map(|s| s.len()).sum()
    }
}

impl Subscriptions for Live {
    async fn add_connection(&self, conn: &ConnId, _now_ms: u64) -> Result<(), StoreError> {
        self.lock().conns.entry(conn.clone()).or_default();
        Ok(())
    }
    async fn remove_connection(&self, conn: &ConnId) -> Result<(), StoreError> {
        self.lock().remove_connection(conn);
        Ok(())
    }
    async fn subscribe(&self, conn: &ConnId, channel: &Channel, max: usize) -> Result<SubOutcome, StoreError> {
        Ok(self.lock().subscribe(conn, channel, max))
    }
    async fn unsubscribe(&self, conn: &ConnId, channel: &Channel) -> Result<(), StoreError> {
        self.lock().unsubscribe(conn, channel);
        Ok(())
    }
    async fn subscriber_page(
        &self,
        channel: &Channel,
        _shard: u32,
        after: Option<&ConnId>,
        limit: usize,
    ) -> Result<SubscriberPage, StoreError> {
        Ok(self.lock().subscriber_page(channel, after, limit))
    }
    async fn count_subscribers(&self, channel: &Channel) -> Result<u64, StoreError> {
        Ok(self.lock().subs.get(channel).map_or(0, |s| s.len() as u64))
    }
    async fn occupancy_turn(&self, conn: &ConnId, channel: &Channel, now_ms: u64, interval_ms: u64) -> Result<Turn, StoreError> {
        Ok(self.lock().occupancy_turn(conn, channel, now_ms, interval_ms))
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// Each connection's channels, with when it last asked for their occupancy.
    conns: HashMap<ConnId, BTreeMap<Channel, Option<u64>>>,
    subs: HashMap<Channel, BTreeSet<ConnId>>,
}

impl Registry {
    fn remove_connection(&mut self, conn: &ConnId) {
        for ch in self.conns.remove(conn).unwrap_or_default().into_keys() {
            self.unlink(conn, &ch);
        }
    }
    fn subscribe(&mut self, conn: &ConnId, channel: &Channel, max: usize) -> SubOutcome {
        let set = self.conns.entry(conn.clone()).or_default();
        if set.contains_key(channel) {
            return SubOutcome::AlreadySubscribed;
        }
        if set.len() >= max {
            return SubOutcome::LimitReached;
        }
        set.insert(channel.clone(), None);
        self.subs.entry(channel.clone()).or_default().insert(conn.clone());
        SubOutcome::Added
    }
    fn unsubscribe(&mut self, conn: &ConnId, channel: &Channel) {
        if let Some(s) = self.conns.get_mut(conn) {
            s.remove(channel);
        }
        self.unlink(conn, channel);
    }
    /// Up to `limit` subscribers after `after`, in id order.
    fn subscriber_page(&self, channel: &Channel, after: Option<&ConnId>, limit: usize) -> SubscriberPage {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(set) = self.subs.get(channel) else {
            return SubscriberPage::default();
        };
        let from = after.map_or(Unbounded, Excluded);
        let conns: Vec<ConnId> = set.range((from, Unbounded)).take(limit).cloned().collect();
        let next = (conns.len() == limit).then(|| conns.last().cloned()).flatten();
        SubscriberPage { conns, next }
    }
    fn occupancy_turn(&mut self, conn: &ConnId, channel: &Channel, now_ms: u64, interval_ms: u64) -> Turn {
        let Some(last) = self.conns.get_mut(conn).and_then(|s| s.get_mut(channel)) else {
            return Turn::NotSubscribed;
        };
        match *last {
            Some(at) if at + interval_ms > now_ms => Turn::TooSoon { wait_ms: at + interval_ms - now_ms },
            _ => {
                *last = Some(now_ms);
                Turn::Granted
            }
        }
    }
    fn unlink(&mut self, conn: &ConnId, channel: &Channel) {
        if let Some(s) = self.subs.get_mut(channel) {
            s.remove(conn);
            if s.is_empty() {
                self.subs.remove(channel);
            }
        }
    }
}
