//! The fan-out: one logged event to every subscriber of its channel, one
//! (channel, shard) at a time, page by page. It needs only the subscriptions
//! and the gateway; whatever follows the log calls it (the local dispatcher,
//! the AWS fan-out worker), never a webhook request.

use std::sync::Arc;

use futures::StreamExt;
use tracing::debug;

use crate::clock::Clock;
use crate::config::Config;
use crate::ports::{forget, ConnId, Delivery, Gateway, StoreError, Subscriptions};
use crate::protocol::{Event, ServerMsg};

/// Subscribers read per page during fan-out: memory stays bounded at any audience.
pub const FANOUT_PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FanoutReport {
    pub delivered: usize,
    pub gone: usize,
    pub failed: usize,
}

impl std::ops::AddAssign for FanoutReport {
    fn add_assign(&mut self, o: Self) {
        self.delivered += o.delivered;
        self.gone += o.gone;
        self.failed += o.failed;
    }
}

/// What one fan-out work unit did, and which connections still need the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardOutcome {
    pub report: FanoutReport,
    /// Connections whose post failed (not Gone), each with the first of the
    /// unit's frames it lacks (it was sent none after its failure): worth
    /// one more try from there.
    pub failed: Vec<(ConnId, usize)>,
    /// The run stopped at its budget: the shard's subscribers after this one
    /// have not been reached yet.
    pub resume_after: Option<ConnId>,
}

/// Where one shard's push starts and when it must stop starting pages.
#[derive(Debug, Clone, Default)]
pub struct ShardRun<'a> {
    /// Only these connections (a retry of the ones that failed).
    pub only: Option<&'a [ConnId]>,
    /// Resume after this subscriber (an earlier run stopped at its budget).
    pub after: Option<ConnId>,
    /// No post is started at or after this instant, and none retries past
    /// it (the first post always starts, so every run makes progress); the
    /// caller keeps a reserve before its deadline for one post in flight,
    /// the clean-up and the cursor.
    pub budget: Option<std::time::Instant>,
    /// Subscribers read per page (default [`FANOUT_PAGE`]): a worker posting
    /// at a set rate reads no more than its budget can reach.
    pub page: Option<usize>,
}

pub struct Fanout<S, G> {
    config: Arc<Config>,
    subs: Arc<S>,
    gateway: Arc<G>,
    clock: Clock,
}

impl<S: Subscriptions, G: Gateway> Fanout<S, G> {
    pub fn new(config: Arc<Config>, subs: Arc<S>, gateway: Arc<G>) -> Self {
        Self { config, subs, gateway, clock: crate::clock::system() }
    }
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Pushes one logged event to every subscriber, shard by shard.
    pub async fn fan_out(&self, event: &Event) -> Result<FanoutReport, StoreError> {
        let frame = ServerMsg::Event(event.clone()).to_json();
        let mut report = FanoutReport::default();
        for shard in 0..self.subs.shards() {
            report += self.fan_out_shard(&event.channel, &[frame.as_str()], shard, ShardRun::default()).await?.report;
        }
        // Here nothing retries a failed post: it is final.
        crate::metrics::global().deliveries(0, 0, report.failed);
        if let Ok(at) = humantime::parse_rfc3339(&event.at) {
            let took = (self.clock)().duration_since(at).unwrap_or_default();
            crate::metrics::global().publish_to_delivery(took.as_secs_f64());
        }
        Ok(report)
    }

    /// One work unit: one or more events (`frames`, in seq order, each as a
    /// page receives it) to one shard of their channel's subscribers, page
    /// by page with bounded concurrency; then forgets exactly the
    /// connections the gateway reported Gone. `run` limits it to some
    /// connections, resumes it after a subscriber, or bounds it in time (see
    /// [`ShardRun`]). Each page of subscribers gets every frame, in order,
    /// before the next page is read (so a run cut short at its budget
    /// resumes after a subscriber that has them all; with several frames the
    /// budget is checked between pages only). `Err` means the subscribers
    /// could not be listed: retry the unit. Deliveries (one per frame and
    /// connection) and gones are counted in the metrics here; failures are
    /// counted by the caller, which decides whether they are final.
    pub async fn fan_out_shard(
        &self,
        channel: &crate::channel::Channel,
        frames: &[&str],
        shard: u32,
        run: ShardRun<'_>,
    ) -> Result<ShardOutcome, StoreError> {
        let n = self.config.limits.fanout_concurrency;
        let mut report = FanoutReport::default();
        let mut gone = Vec::new();
        let mut failed = Vec::new();
        let mut after = run.after;
        let mut resume_after = None;
        let mut first = true;
        let page_size = run.page.unwrap_or(FANOUT_PAGE).clamp(1, FANOUT_PAGE);
        loop {
            if !first && run.budget.is_some_and(|b| std::time::Instant::now() >= b) {
                resume_after = after;
                break;
            }
            let (conns, next) = match run.only {
                Some(list) => (list.to_vec(), None),
                None => {
                    let page = self.subs.subscriber_page(channel, shard, after.as_ref(), page_size).await?;
                    (page.conns, page.next)
                }
            };
            let results = match (frames, run.budget) {
                ([frame], Some(b)) => {
                    // The first post of a run always starts, whatever the clock says.
                    let b = if first { b.max(std::time::Instant::now() + std::time::Duration::from_millis(1)) } else { b };
                    let sent = self.gateway.send_many_until(conns.clone(), frame, n, b).await;
                    sent.into_iter().map(|(c, d)| (c, (d, 0))).collect()
                }
                ([frame], None) => {
                    self.gateway.send_many(conns.clone(), frame, n).await.into_iter().map(|(c, d)| (c, (d, 0))).collect()
                }
                _ => {
                    // Frame by frame over the page, each connection dropped
                    // at its first failure or Gone, so none gets a later
                    // frame without an earlier one.
                    let mut live = conns.clone();
                    let mut outcome: std::collections::HashMap<ConnId, (Delivery, usize)> = Default::default();
                    for (k, frame) in frames.iter().enumerate() {
                        if live.is_empty() {
                            break;
                        }
                        let mut still = Vec::with_capacity(live.len());
                        for (c, d) in self.gateway.send_many(std::mem::take(&mut live), frame, n).await {
                            match d {
                                Delivery::Delivered => {
                                    report.delivered += 1;
                                    still.push(c);
                                }
                                Delivery::Failed | Delivery::Gone => {
                                    outcome.insert(c, (d, k));
                                }
                            }
                        }
                        live = still;
                    }
                    // Every connection of the page, with how it ended.
                    conns.iter().map(|c| (c.clone(), outcome.remove(c).unwrap_or((Delivery::Delivered, 0)))).collect::<Vec<_>>()
                }
            };
            let multi = frames.len() > 1;
            first = false;
            // Posts start in the page's order: those not reached follow the
            // last one that was.
            let reached = results.len();
            for (c, (d, at)) in results {
                match d {
                    // Counted frame by frame above when there are several.
                    Delivery::Delivered if multi => {}
                    Delivery::Delivered => report.delivered += 1,
                    Delivery::Failed => {
                        report.failed += 1;
                        failed.push((c, at));
                    }
                    Delivery::Gone => {
                        report.gone += 1;
                        gone.push(c);
                    }
                }
            }
            if reached < conns.len() {
                match reached {
                    0 => resume_after = after,
                    k => resume_after = Some(conns[k - 1].clone()),
                }
                if run.only.is_some() {
                    // A retry list cut short: the rest fail this round and go on in the next.
                    for c in &conns[reached..] {
                        report.failed += 1;
                        failed.push((c.clone(), 0));
                    }
                    resume_after = None;
                }
                break;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        futures::stream::iter(gone).for_each_concurrent(n, |c| async move { forget(&*self.subs, &c).await }).await;
        debug!(channel = %channel, frames = frames.len(), shard, ?report, ?resume_after, "fanned out");
        crate::metrics::global().deliveries(report.delivered, report.gone, 0);
        Ok(ShardOutcome { report, failed, resume_after })
    }
}
