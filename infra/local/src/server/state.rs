//! What every room of the server shares: the engines, the store, the
//! gateway and the limits.

use std::sync::Arc;
use std::time::Duration;

use hookcast_core::relay::Relay;
use hookcast_core::{Hooks, Live};

use crate::gateway::LocalGateway;
use crate::store::SqliteStore;

pub use crate::dispatch::LocalFanout;

pub type LocalRelay = Relay<SqliteStore, Live, LocalGateway>;

pub struct AppState {
    /// The webhook path: verify, append, acknowledge.
    pub hooks: Arc<Hooks<SqliteStore>>,
    /// The socket side: client frames, replays, connects.
    pub relay: Arc<LocalRelay>,
    /// The push to subscribers (the dispatcher calls it).
    pub fanout: Arc<LocalFanout>,
    /// The parts, shared with the engines above.
    pub log: Arc<SqliteStore>,
    pub live: Arc<Live>,
    pub gateway: Arc<LocalGateway>,
    /// Serve the demo site at `/` (hookcast dev).
    pub demo: bool,
    /// Set on shutdown: endless responses (SSE) end so graceful shutdown can finish.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The store's commit feed, until `bind` hands it to the dispatcher.
    pub commits: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<hookcast_core::Event>>>,
    /// Held while the server runs: no second instance on this data dir.
    pub data_dir_lock: std::fs::File,
    pub sockets: SocketLimits,
}

#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Open WebSocket and SSE clients at most.
    pub max_open: usize,
    pub ping_every: Duration,
    /// Nothing heard for this long (pongs included): the client vanished.
    pub idle_limit: Duration,
}
