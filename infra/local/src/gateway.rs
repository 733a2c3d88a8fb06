//! The local gateway: each open socket has a bounded outbound queue drained by
//! its writer task. A full queue means a reader too slow to keep up: the
//! socket is closed so the page reconnects and resumes from history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hookcast_core::ports::{ConnId, Delivery, Gateway};
use tokio::sync::{mpsc, Notify};

pub const QUEUE_FRAMES: usize = 1024;

#[derive(Clone)]
struct Handle {
    tx: mpsc::Sender<String>,
    close: Arc<Notify>,
}

#[derive(Default)]
pub struct LocalGateway {
    conns: Mutex<HashMap<ConnId, Handle>>,
}

/// What a socket task needs: its queue and its close signal.
pub struct Outbound {
    pub frames: mpsc::Receiver<String>,
    pub close: Arc<Notify>,
}

impl LocalGateway {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Handle>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn register(&self, conn: &ConnId) -> Outbound {
        let (tx, frames) = mpsc::channel(QUEUE_FRAMES);
        let close = Arc::new(Notify::new());
        self.map().insert(conn.clone(), Handle { tx, close: close.clone() });
        Outbound { frames, close }
    }
    pub fn unregister(&self, conn: &ConnId) {
        self.map().remove(conn);
    }
    pub fn open_sockets(&self) -> usize {
        self.map().len()
    }
}

impl Gateway for LocalGateway {
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        let Some(h) = self.map().get(conn).cloned() else {
            return Delivery::Gone;
        };
        match h.tx.try_send(frame.to_owned()) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
            Err(mpsc::error::TrySendError::Full(_)) => {
                h.close.notify_one();
                Delivery::Failed
            }
        }
    }
    async fn close(&self, conn: &ConnId) {
        if let Some(h) = self.map().get(conn) {
            h.close.notify_one();
        }
    }
}
