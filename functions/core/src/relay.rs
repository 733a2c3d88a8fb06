//! The socket side: client frames (subscribe with replay, unsubscribe,
//! ping, occupancy), connects and disconnects. Written once, hosted locally
//! and on Lambda. It reads the log (replays) and keeps the subscriptions;
//! the webhook path is [`crate::hooks`] and the push to subscribers is
//! [`crate::fanout`].

use std::sync::Arc;

use tracing::{debug, warn};

pub use crate::catchup::REPLAY_BYTES;
use crate::catchup::{catch_up, Reader};
use crate::channel::Channel;
use crate::clock::{millis, Clock};
use crate::config::Config;
use crate::policy::{may_read, origin_allowed};
use crate::ports::{forget, ConnId, Delivery, EventLog, Gateway, StoreError, SubOutcome, Subscriptions, Turn};
use crate::protocol::{ClientMsg, ServerMsg};

/// API Gateway's WebSocket frame limit; client frames above it are refused.
pub const MAX_CLIENT_FRAME: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Relay<L, S, G> {
    config: Arc<Config>,
    log: Arc<L>,
    subs: Arc<S>,
    gateway: Arc<G>,
    clock: Clock,
    /// Refuse subscribes to channels no source can reach (see [`crate::policy::reachable`]).
    only_reachable: bool,
}

impl<L: EventLog, S: Subscriptions, G: Gateway> Relay<L, S, G> {
    /// The host keeps its own handles on the parts it also uses.
    pub fn new(config: Arc<Config>, log: Arc<L>, subs: Arc<S>, gateway: Arc<G>) -> Self {
        Self { config, log, subs, gateway, clock: crate::clock::system(), only_reachable: false }
    }
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    /// Subscribes to a channel no configured source can publish to are
    /// refused (`invalid_channel`) before anything is written: on a host that
    /// pays for every write, made-up names cost nothing.
    pub fn only_reachable(mut self) -> Self {
        self.only_reachable = true;
        self
    }
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// See [`origin_allowed`].
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        origin_allowed(&self.config, origin)
    }

    pub async fn connect(&self, conn: &ConnId, origin: Option<&str>) -> Result<(), ConnectError> {
        if !self.origin_allowed(origin) {
            return Err(ConnectError::OriginNotAllowed);
        }
        self.subs.add_connection(conn, millis((self.clock)())).await?;
        Ok(())
    }

    pub async fn disconnect(&self, conn: &ConnId) -> Result<(), StoreError> {
        self.subs.remove_connection(conn).await
    }

    /// A binary frame: not part of the protocol; both hosts answer alike.
    pub async fn binary_frame(&self, conn: &ConnId) {
        let reply = ServerMsg::error("bad_message", "send JSON text frames; binary frames are not part of the protocol");
        if self.gateway.reply(conn, &reply.to_json()).await == Delivery::Gone {
            forget(&*self.subs, conn).await;
        }
    }

    /// Handles one client frame (text, as a socket delivers it); replies go
    /// out through the gateway.
    pub async fn message(&self, conn: &ConnId, text: &str) {
        let replies = match parse(text) {
            Ok(msg) => self.apply(conn, msg).await,
            Err(refusal) => vec![refusal],
        };
        self.send_replies(conn, replies).await;
    }

    /// Handles one typed client message (a host's own client, such as SSE's
    /// subscribes); replies go out through the gateway.
    pub async fn command(&self, conn: &ConnId, msg: ClientMsg) {
        let replies = self.apply(conn, msg).await;
        self.send_replies(conn, replies).await;
    }

    async fn send_replies(&self, conn: &ConnId, replies: Vec<ServerMsg>) {
        for reply in replies {
            if self.gateway.reply(conn, &reply.to_json()).await == Delivery::Gone {
                forget(&*self.subs, conn).await;
                return;
            }
        }
    }

    /// The protocol's one door: a client message and the replies to it, in
    /// order; a refusal is the single error frame.
    pub async fn apply(&self, conn: &ConnId, msg: ClientMsg) -> Vec<ServerMsg> {
        self.handle(conn, msg).await.unwrap_or_else(|refusal| vec![refusal])
    }

    async fn handle(&self, conn: &ConnId, msg: ClientMsg) -> Result<Vec<ServerMsg>, ServerMsg> {
        let unavailable = |e| unavailable(conn, e);
        match msg {
            ClientMsg::Ping => Ok(vec![ServerMsg::Pong]),
            ClientMsg::Occupancy { channel } => Ok(vec![self.occupancy(conn, &channel).await.map_err(|e| e.on(&channel))?]),
            ClientMsg::Unsubscribe { channel } => {
                self.subs.unsubscribe(conn, &channel).await.map_err(|e| unavailable(e).on(&channel))?;
                Ok(vec![])
            }
            ClientMsg::Subscribe { channel, since, batch, token, epoch } => {
                let of = channel.clone();
                self.subscribe(conn, channel, since, batch, token, epoch).await.map_err(|e| e.on(&of))
            }
        }
    }

    async fn subscribe(
        &self,
        conn: &ConnId,
        channel: Channel,
        since: Option<u64>,
        batch: bool,
        token: Option<String>,
        epoch: Option<String>,
    ) -> Result<Vec<ServerMsg>, ServerMsg> {
        let unavailable = |e| unavailable(conn, e);
        let now = (self.clock)();
        if let Err(e) = may_read(&self.config, &channel, token.as_deref(), now) {
            debug!(conn = %conn, channel = %channel, reason = %e, "subscribe refused");
            return Err(ServerMsg::error("forbidden", e.to_string()));
        }
        if self.only_reachable && !crate::policy::reachable(&self.config, &channel) {
            return Err(ServerMsg::error("invalid_channel", format!("no source of this site publishes to {channel}")));
        }
        // Subscribe first, read second: an event appended in between is
        // then both replayed and pushed, and the client drops the copy.
        // The other order could lose it.
        let max = self.config.limits.max_subscriptions;
        let outcome = self.subs.subscribe(conn, &channel, max).await.map_err(unavailable)?;
        if outcome == SubOutcome::LimitReached {
            return Err(ServerMsg::error(
                "too_many_subscriptions",
                format!("a connection may subscribe to at most {max} channels"),
            ));
        }
        // A repeat (the snippet's gap repair) changes no state and
        // replays from its `since` again: at most history_max_events and
        // REPLAY_BYTES (the rest follows `next`), and the host's
        // per-connection byte budget closes a client that asks for more
        // than it reads. What it gets is the one catch-up rule's answer.
        let max = self.config.limits.history_max_events as usize;
        let caught = catch_up(&*self.log, &self.config, &channel, Reader::Page, since, epoch.as_deref(), max)
            .await
            .map_err(unavailable)?;
        let (head, reset, next) = (caught.history.head, caught.reset, caught.next);
        let (events, state, epoch) = (caught.history.events, caught.history.state, caught.history.epoch);
        let mut out: Vec<ServerMsg> = Vec::with_capacity(events.len() + 2);
        if let Some(s) = state {
            out.push(ServerMsg::State { channel: channel.clone(), seq: head, mode: s.kind, state: s.value });
        }
        out.extend(events.into_iter().map(ServerMsg::Event));
        out.push(ServerMsg::Subscribed { channel, seq: head, reset, epoch, next });
        Ok(if batch { ServerMsg::batched(out) } else { out })
    }

    /// The count, or the refusal: `not_subscribed`, `rate_limited`, `unavailable`.
    async fn occupancy(&self, conn: &ConnId, channel: &Channel) -> Result<ServerMsg, ServerMsg> {
        let now = millis((self.clock)());
        let interval = self.config.limits.occupancy_interval.as_millis() as u64;
        // A page asking exactly every interval must not be refused because
        // one ask travelled faster than the last: allow a tenth as slack.
        let gate = interval - interval / 10;
        match self.subs.occupancy_turn(conn, channel, now, gate).await.map_err(|e| unavailable(conn, e))? {
            Turn::Granted => {}
            Turn::NotSubscribed => {
                return Err(ServerMsg::error("not_subscribed", format!("subscribe to {channel} before asking its occupancy")))
            }
            Turn::TooSoon { wait_ms } => {
                return Err(ServerMsg::error(
                    "rate_limited",
                    format!("occupancy of {channel} may be asked every {} s; ask again in {wait_ms} ms", interval / 1000),
                ))
            }
        }
        let count = self.subs.count_subscribers(channel).await.map_err(|e| unavailable(conn, e))?;
        Ok(ServerMsg::Occupancy { channel: channel.clone(), count })
    }
}

/// A client frame as text, or the refusal to send back.
fn parse(text: &str) -> Result<ClientMsg, ServerMsg> {
    if text.len() > MAX_CLIENT_FRAME {
        return Err(ServerMsg::error("message_too_large", format!("messages are limited to {MAX_CLIENT_FRAME} bytes")));
    }
    ClientMsg::parse(text).map_err(|bad| ServerMsg::error(bad.code, bad.message))
}

/// A store failure as the client sees it: logged here, never detailed there.
fn unavailable(conn: &ConnId, e: StoreError) -> ServerMsg {
    warn!(error = %e, conn = %conn, "store failed while handling a client message");
    ServerMsg::error("unavailable", "the server could not do that now; retry")
}
