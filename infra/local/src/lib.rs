//! The `hookcast` local binary as a library, so tests start it in-process.

pub mod backlog;
pub mod deploy;
pub mod dispatch;
pub mod error;
pub mod file_identity;
pub mod gateway;
pub mod listen;
pub mod net;
pub mod push;
pub mod send;
pub mod server;
pub mod settings;
pub mod store;
pub mod tungstenite_io;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hookcast_core::ports::Retention;
use hookcast_core::{Hooks, Live, Relay};
use tokio::net::TcpListener;

use crate::error::Error;
use crate::gateway::LocalGateway;
use crate::server::{app, AppState};
use crate::settings::Settings;
use crate::store::SqliteStore;

/// Opens the store in `settings.data_dir` and builds the shared state.
pub fn state(settings: &Settings, demo: bool) -> Result<Arc<AppState>, Error> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| Error::DataDir(format!("cannot create data dir {}: {e}", settings.data_dir.display())))?;
    let lock = lock_data_dir(&settings.data_dir)?;
    let db = settings.data_dir.join("hookcast.db");
    let (feed, commits) = tokio::sync::mpsc::unbounded_channel();
    let store = SqliteStore::open(&db, Retention::from(&settings.core.limits))
        .map_err(|source| Error::Store { path: db.clone(), source })?
        .with_feed(feed);
    let log = Arc::new(store);
    let (live, gateway) = (Arc::new(Live::new()), Arc::new(LocalGateway::default()));
    let config = Arc::new(settings.core.clone());
    let hooks = Arc::new(Hooks::new(config.clone(), log.clone()));
    let relay = Arc::new(Relay::new(config.clone(), log.clone(), live.clone(), gateway.clone()));
    let fanout = Arc::new(dispatch::LocalFanout::new(config, live.clone(), gateway.clone()));
    Ok(Arc::new(AppState {
        hooks,
        relay,
        fanout,
        log,
        live,
        gateway,
        demo,
        shutdown: tokio::sync::watch::Sender::new(false),
        commits: std::sync::Mutex::new(Some(commits)),
        data_dir_lock: lock,
        sockets: server::SocketLimits {
            max_open: settings.max_connections,
            ping_every: settings.ping_every,
            idle_limit: settings.idle_limit,
        },
    }))
}

/// One server per data directory: a second one would take webhooks its
/// pages never hear of. The lock is the OS's (released if the process dies).
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, Error> {
    lock_file(dir).map_err(Error::DataDir)
}

fn lock_file(dir: &std::path::Path) -> Result<std::fs::File, String> {
    let path = dir.join("hookcast.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // A lock can outlive its holder for a moment: a process forked by this
    // one (or a restart right after a stop) holds a copy of the descriptor
    // until its exec, which on a busy machine can take a while. Another
    // instance holds it for good, so after a few seconds of trying the answer
    // is the same.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another hookcast is already running on {}; stop it, or give this one its own --data-dir",
                    dir.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
}

/// Binds (port 0 allowed) and returns the address and the serving future,
/// which ends after `shutdown` completes and open requests finish.
pub async fn bind(
    settings: &Settings,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = std::io::Result<()>>), Error> {
    let listener = TcpListener::bind((settings.bind, settings.port))
        .await
        .map_err(|e| Error::Serve(format!("cannot listen on {}:{}: {e}", settings.bind, settings.port)))?;
    let addr = listener.local_addr().map_err(|e| Error::Serve(e.to_string()))?;
    let commits = state.commits.lock().unwrap_or_else(|p| p.into_inner()).take();
    let dispatcher = commits.map(|c| push::handle().spawn(dispatch::run(state.fanout.clone(), state.log.backlog(), c)));
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        st.shutdown.send_replace(true);
        // Every acknowledged event is in the log; pages resume from it.
        if let Some(d) = dispatcher {
            d.abort();
        }
    };
    let serve = net::serve(listener, app(state), settings.net, settings.tls.clone(), signal);
    Ok((addr, serve))
}

/// A server running in this process (tests, embedding): `state` opened on
/// `settings`, bound, served on a task until [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes requests in progress (bounded), and waits.
    /// Sockets end on their own tasks just after; see [`released`].
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.await.map_err(std::io::Error::other)?
    }
}

/// Waits until `state` is held only by the caller (every socket task has
/// ended, so the data directory is free for a restart in this process), or
/// `limit` has passed.
pub async fn released(state: &Arc<AppState>, limit: std::time::Duration) {
    let until = tokio::time::Instant::now() + limit;
    while Arc::strong_count(state) > 1 && tokio::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Opens the store, binds and serves on a task.
pub async fn spawn(settings: &Settings, demo: bool) -> Result<Running, Error> {
    let state = state(settings, demo)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, serving) = bind(settings, state.clone(), async move {
        let _ = stopped.await;
    })
    .await?;
    Ok(Running { addr, state, stop: Some(stop), done: tokio::spawn(serving) })
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
