//! Live subscriptions held in memory: the local binary's connections live only
//! as long as its process, so they need no durable store.

use std::collections::{BTreeSet, HashMap};

use crate::channel::Channel;
use crate::ports::{ConnId, SubOutcome};

#[derive(Debug, Default)]
pub struct Registry {
    conns: HashMap<ConnId, BTreeSet<Channel>>,
    subs: HashMap<Channel, BTreeSet<ConnId>>,
}

impl Registry {
    pub fn add_connection(&mut self, conn: &ConnId) {
        self.conns.entry(conn.clone()).or_default();
    }
    pub fn remove_connection(&mut self, conn: &ConnId) {
        for ch in self.conns.remove(conn).unwrap_or_default() {
            self.unlink(conn, &ch);
        }
    }
    pub fn subscribe(&mut self, conn: &ConnId, channel: &Channel, max: usize) -> SubOutcome {
        let set = self.conns.entry(conn.clone()).or_default();
        if set.contains(channel) {
            return SubOutcome::AlreadySubscribed;
        }
        if set.len() >= max {
            return SubOutcome::LimitReached;
        }
        set.insert(channel.clone());
        self.subs.entry(channel.clone()).or_default().insert(conn.clone());
        SubOutcome::Added
    }
    pub fn unsubscribe(&mut self, conn: &ConnId, channel: &Channel) {
        if let Some(s) = self.conns.get_mut(conn) {
            s.remove(channel);
        }
        self.unlink(conn, channel);
    }
    pub fn subscribers(&self, channel: &Channel) -> Vec<ConnId> {
        self.subs.get(channel).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
    pub fn connections(&self) -> usize {
        self.conns.len()
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
