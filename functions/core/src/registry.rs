//! Live subscriptions held in memory: the local binary's connections live only
//! as long as its process, so they need no durable store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::channel::Channel;
use crate::ports::{ConnId, SubOutcome, SubscriberPage, Turn};

#[derive(Debug, Default)]
pub struct Registry {
    /// Each connection's channels, with when it last asked for their occupancy.
    conns: HashMap<ConnId, BTreeMap<Channel, Option<u64>>>,
    subs: HashMap<Channel, BTreeSet<ConnId>>,
}

impl Registry {
    pub fn add_connection(&mut self, conn: &ConnId) {
        self.conns.entry(conn.clone()).or_default();
    }
    pub fn remove_connection(&mut self, conn: &ConnId) {
        for ch in self.conns.remove(conn).unwrap_or_default().into_keys() {
            self.unlink(conn, &ch);
        }
    }
    pub fn subscribe(&mut self, conn: &ConnId, channel: &Channel, max: usize) -> SubOutcome {
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
    pub fn unsubscribe(&mut self, conn: &ConnId, channel: &Channel) {
        if let Some(s) = self.conns.get_mut(conn) {
            s.remove(channel);
        }
        self.unlink(conn, channel);
    }
    /// Up to `limit` subscribers after `after`, in id order.
    pub fn subscriber_page(&self, channel: &Channel, after: Option<&ConnId>, limit: usize) -> SubscriberPage {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(set) = self.subs.get(channel) else {
            return SubscriberPage::default();
        };
        let from = after.map_or(Unbounded, Excluded);
        let conns: Vec<ConnId> = set.range((from, Unbounded)).take(limit).cloned().collect();
        let next = (conns.len() == limit).then(|| conns.last().cloned()).flatten();
        SubscriberPage { conns, next }
    }
    pub fn count(&self, channel: &Channel) -> u64 {
        self.subs.get(channel).map_or(0, |s| s.len() as u64)
    }
    pub fn occupancy_turn(&mut self, conn: &ConnId, channel: &Channel, now_ms: u64, interval_ms: u64) -> Turn {
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
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
    pub fn subscriptions(&self) -> usize {
        self.subs.values().map(|s| s.len()).sum()
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
