//! The local fan-out, driven by the log: the store hands over each event as
//! it commits (in commit order), and one task per channel pushes them to
//! that channel's subscribers in seq order. A webhook is acknowledged when
//! its append commits and never waits for this.

use std::collections::HashMap;
use std::sync::Arc;

use hookcast_core::config::Config;
use hookcast_core::fanout::FanoutReport;
use hookcast_core::ports::StoreError;
use hookcast_core::protocol::Event;
use hookcast_core::{Fanout, Live};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::warn;

use crate::backlog::Backlog;
use crate::gateway::{LocalGateway, Pusher};

/// The push to subscribers, with the choice of writing straight to the
/// sockets made per event (see [`LocalFanout::fan_out`]).
pub struct LocalFanout {
    direct: Fanout<Live, Pusher>,
    queued: Fanout<Live, Pusher>,
}

impl LocalFanout {
    pub fn new(config: Arc<Config>, live: Arc<Live>, gateway: Arc<LocalGateway>) -> Self {
        Self {
            direct: Fanout::new(config.clone(), live.clone(), Arc::new(Pusher::new(gateway.clone(), true))),
            queued: Fanout::new(config, live, Arc::new(Pusher::new(gateway, false))),
        }
    }

    /// Pushes one event to its channel's subscribers. `direct`: written
    /// straight to the sockets while nothing else waits on the channel;
    /// otherwise left to each socket's writer, which sends all that waited
    /// in one write.
    pub async fn fan_out(&self, event: &Event, direct: bool) -> Result<FanoutReport, StoreError> {
        if direct {
            self.direct.fan_out(event).await
        } else {
            self.queued.fan_out(event).await
        }
    }
}

/// Runs until the feed closes: routes each committed event to its channel's
/// task, starting one the first time a channel is seen. Each event fanned
/// out (or lost to an ended task) is marked done on the log's `backlog`.
pub async fn run(fanout: Arc<LocalFanout>, backlog: Arc<Backlog>, mut feed: UnboundedReceiver<Event>) {
    let mut channels: HashMap<hookcast_core::Channel, UnboundedSender<Event>> = HashMap::new();
    while let Some(ev) = feed.recv().await {
        let tx = channels.entry(ev.channel.clone()).or_insert_with(|| {
            let (tx, rx) = unbounded_channel();
            tokio::spawn(channel_task(fanout.clone(), backlog.clone(), rx));
            tx
        });
        if let Err(lost) = tx.send(ev) {
            backlog.done();
            warn!(channel = %lost.0.channel, seq = lost.0.seq, "channel dispatcher ended; event stays in the log");
        }
    }
}

/// One channel: events arrive in seq order and each is fanned out before
/// the next, so every socket's queue receives them in seq order.
async fn channel_task(fanout: Arc<LocalFanout>, backlog: Arc<Backlog>, mut rx: UnboundedReceiver<Event>) {
    while let Some(ev) = rx.recv().await {
        // Written straight to the sockets while nothing else waits; when
        // events queue up, each socket's writer sends what waited in one write.
        // Outside tokio's per-task budget, which would otherwise refuse the
        // writes after the first 128 sockets (a push never waits, so the
        // budget has nothing to share out).
        let direct = rx.is_empty();
        let push = fanout.fan_out(&ev, direct);
        if let Err(e) = tokio::task::unconstrained(push).await {
            warn!(error = %e, channel = %ev.channel, seq = ev.seq, "fan-out failed; pages catch up from history");
        }
        backlog.done();
    }
}
