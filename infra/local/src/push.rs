//! The runtime that pushes: every WebSocket's task and the fan-out run here,
//! on threads of their own, apart from the runtime that accepts connections
//! and answers HTTP. A fan-out to a thousand sockets wakes a thousand tasks;
//! on one runtime a webhook's request waited behind all of them in the
//! workers' queues, once to be read and again to be answered. Here the
//! webhook's request and its ack have workers with nothing else queued, and
//! wait only for the kernel to give them a core.
//!
//! One runtime per process, started on first use and never stopped: tests
//! start many servers in one process, and a runtime cannot be dropped from
//! inside another's task. Its tasks end with their sockets and servers.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// The pushing runtime's handle: spawn socket and fan-out tasks on it. If
/// its threads cannot be started, the caller's runtime does the pushing.
pub fn handle() -> Handle {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .thread_name("hookcast-push")
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "cannot start the push runtime; sockets share the HTTP runtime"))
            .ok()
    });
    match runtime {
        Some(rt) => rt.handle().clone(),
        None => Handle::current(),
    }
}
