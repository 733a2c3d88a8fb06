//! The accept loop, with the limits the open internet needs: headers must
//! arrive within a deadline (an idle keep-alive connection is closed the same
//! way), a connection whose peer stops reading is dropped once a write has
//! stalled too long, open connections are capped, and shutdown takes a
//! bounded time. At the cap, a new connection takes the place of the oldest
//! one still waiting for a request head (of the address holding the most),
//! and each address may hold only a few such: idle and half-open
//! connections, from one address or many, cannot lock a webhook out. Only
//! when every connection is in a request is the newcomer refused (a JSON 503). Body deadlines are the webhook handler's
//! (it answers 408); WebSockets keep themselves alive with pings.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::{debug, info, warn};

#[derive(Debug, Clone, Copy)]
pub struct NetLimits {
    /// A request's head (and the next one on a kept-alive connection) must arrive within this.
    pub header_timeout: Duration,
    /// A write that makes no progress for this long drops the connection.
    pub write_stall: Duration,
    /// Open HTTP connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long shutdown waits for requests in progress.
    pub shutdown_grace: Duration,
}

/// Serving HTTPS and WSS from certificate files (PEM).
#[derive(Clone)]
pub struct Tls(pub tokio_rustls::TlsAcceptor);

impl Tls {
    /// Reads a PEM certificate chain and its PEM private key.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, crate::error::Error> {
        Self::read(cert, key).map_err(crate::error::Error::Tls)
    }

    fn read(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("tls_cert {}: no PEM certificate in it", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            write_stall: Duration::from_secs(20),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How long a connection may wait for its first head before it can be made
/// to give way (a real sender's head follows its connect within milliseconds).
pub const MIN_WAIT_BEFORE_EVICTION: Duration = Duration::from_millis(500);

/// The open HTTP connections: which are in a request (their head has
/// arrived) and which wait for one, by peer address and age.
struct Pool {
    max: usize,
    /// Connections one address may hold while they wait for a head.
    per_peer_waiting: usize,
    inner: std::sync::Mutex<PoolInner>,
    /// A connection ended (shutdown waits for all of them).
    ended: tokio::sync::Notify,
}

#[derive(Default)]
struct PoolInner {
    next: u64,
    /// By id, which is also age order.
    conns: std::collections::BTreeMap<u64, Slot>,
}

struct Slot {
    ip: std::net::IpAddr,
    opened: std::time::Instant,
    /// Requests in progress on the connection (0: waiting for a head).
    busy: Arc<std::sync::atomic::AtomicUsize>,
    evict: Arc<tokio::sync::Notify>,
}

/// What admitting a connection gives its task.
struct Admitted {
    id: u64,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    evict: Arc<tokio::sync::Notify>,
}

impl Pool {
    fn new(max: usize) -> Self {
        // A quarter of the cap, at least 4: plenty for one sender's keep-alive
        // connections, far from all of them.
        let per_peer_waiting = (max / 4).max(4).min(max);
        Self { max, per_peer_waiting, inner: Default::default(), ended: tokio::sync::Notify::new() }
    }

    /// Takes a place for a connection from `ip`, making room by evicting a
    /// waiting connection when the address or the pool is full; `None` when
    /// every connection is in a request.
    fn admit(&self, ip: std::net::IpAddr) -> Option<Admitted> {
        use std::sync::atomic::Ordering::SeqCst;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = |s: &Slot| s.busy.load(SeqCst) == 0;
        // Only a connection that has waited a while gives way: a sender's
        // burst of new connections is not evicted before its heads arrive.
        let now = std::time::Instant::now();
        let evictable = |s: &Slot| waiting(s) && now.duration_since(s.opened) >= MIN_WAIT_BEFORE_EVICTION;
        let mine = g.conns.values().filter(|s| s.ip == ip && waiting(s)).count();
        let victim = if mine >= self.per_peer_waiting {
            // This address's oldest waiting connection gives way.
            g.conns.iter().find(|(_, s)| s.ip == ip && evictable(s)).map(|(id, _)| *id)
        } else {
            None
        };
        let victim = if victim.is_none() && g.conns.len() >= self.max {
            // The oldest waiting connection of the address that holds the most.
            let mut counts: std::collections::HashMap<std::net::IpAddr, usize> = Default::default();
            for s in g.conns.values().filter(|s| evictable(s)) {
                *counts.entry(s.ip).or_default() += 1;
            }
            counts
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .and_then(|(top, _)| g.conns.iter().find(|(_, s)| s.ip == top && evictable(s)).map(|(id, _)| *id))
        } else {
            victim
        };
        if let Some(id) = victim {
            if let Some(slot) = g.conns.remove(&id) {
                debug!(peer = %slot.ip, "an idle connection gives way to a new one");
                slot.evict.notify_one();
            }
        }
        if g.conns.len() >= self.max {
            return None;
        }
        let id = g.next;
        g.next += 1;
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let evict = Arc::new(tokio::sync::Notify::new());
        g.conns.insert(id, Slot { ip, opened: now, busy: busy.clone(), evict: evict.clone() });
        Some(Admitted { id, busy, evict })
    }

    fn release(&self, id: u64) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).conns.remove(&id);
        self.ended.notify_waiters();
    }

    fn open(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).conns.len()
    }

    async fn drained(&self) {
        loop {
            let ended = self.ended.notified();
            if self.open() == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// Serves `app` until `shutdown` resolves, then waits at most `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: NetLimits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // After the grace: connections still busy are dropped (their handlers too).
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    let pool = Arc::new(Pool::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admitted) = pool.admit(peer.ip()) else {
            info!(%peer, max = limits.max_connections, "connection refused: every connection is in a request");
            tokio::spawn(refuse(tcp));
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (app, stop, cut, tls, pool) = (app.clone(), stop_rx.clone(), cut_rx.clone(), tls.clone(), pool.clone());
        tokio::spawn(async move {
            let Admitted { id, busy, evict } = admitted;
            let served = async {
                match tls {
                    None => serve_connection(tcp, app, limits, stop, cut, peer, busy).await,
                    Some(Tls(acceptor)) => {
                        // The handshake counts against the head deadline.
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => serve_connection(stream, app, limits, stop, cut, peer, busy).await,
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                // Evicted while waiting for a head: the connection is dropped.
                () = evict.notified() => debug!(%peer, "idle connection closed for a new one"),
            }
            pool.release(id);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    if tokio::time::timeout(limits.shutdown_grace, pool.drained()).await.is_err() {
        warn!(grace = ?limits.shutdown_grace, "requests still in progress at shutdown were cut off");
        cut_tx.send_replace(true);
        // Their tasks end at their next poll; give them a moment to drop.
        let _ = tokio::time::timeout(Duration::from_millis(500), pool.drained()).await;
    }
    Ok(())
}

/// A response body that counts its request as in progress until it is
/// sent (or dropped): the connection is not waiting for a head meanwhile.
struct Tracked {
    inner: Body,
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl axum::body::HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// One connection: HTTP/1.1 with upgrades, a head deadline, stalled writes
/// dropped; finishes its request in progress when `stop` turns true, and
/// is dropped mid-request when `cut` does.
async fn serve_connection<I>(
    io: I,
    app: Router,
    limits: NetLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut cut: tokio::sync::watch::Receiver<bool>,
    peer: std::net::SocketAddr,
    busy: Arc<std::sync::atomic::AtomicUsize>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(StallGuard::new(io, limits.write_stall));
    // From a request's head to the end of its response, the connection is busy.
    let (start, done) = (busy.clone(), busy);
    let svc = TowerToHyperService::new(
        app.map_request(move |r: Request<Incoming>| {
            start.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r.map(Body::new)
        })
        .map_response(move |res: axum::response::Response| res.map(|b| Body::new(Tracked { inner: b, busy: done.clone() }))),
    );
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
            // Finish the request in progress, take no new one; dropped
            // when the grace runs out.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = async { cut.wait_for(|c| *c).await.map(|_| ()) } => {
                    debug!(%peer, "cut off at shutdown");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Over the cap: a short JSON 503, then close.
async fn refuse(mut tcp: TcpStream) {
    let body = r#"{"error":"too_many_connections","message":"the server is at its connection limit; retry shortly"}"#;
    let res = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(res.as_bytes())).await;
}

/// A socket whose writes fail once one has made no progress for `limit`:
/// a peer that stops reading (a stuck page, an SSE client that never reads)
/// cannot hold a task, its buffers and a slot for ever.
pub struct StallGuard<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self { inner, limit, stalled: None }
    }

    fn check(&mut self, cx: &mut Context<'_>, pending: bool) -> Option<io::Error> {
        if !pending {
            self.stalled = None;
            return None;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).is_ready().then(|| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading: write stalled"))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        match self.check(cx, r.is_pending()) {
            Some(e) => Poll::Ready(Err(e)),
            None => r,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        match self.check(cx, r.is_pending()) {
            Some(e) => Poll::Ready(Err(e)),
            None => r,
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        match self.check(cx, r.is_pending()) {
            Some(e) => Poll::Ready(Err(e)),
            None => r,
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's open-file limit to its hard limit and returns what
/// it now is: every socket is a file, and the default soft limit (often 1024)
/// would make a few hundred idle connections starve real webhooks.
pub fn raise_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct given.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 1024;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        // rlim_t is u64 here but not on every platform.
        #[allow(clippy::unnecessary_cast)]
        let files = lim.rlim_cur as u64;
        files
    }
    #[cfg(not(unix))]
    {
        10_000
    }
}

/// The default caps: open sockets (WebSocket and SSE clients) and, apart,
/// HTTP connections in progress. 10,000 each at most; with a lower open-file
/// limit, three quarters of it for sockets and a quarter for HTTP.
pub fn default_caps() -> (usize, usize) {
    let files = raise_file_limit() as usize;
    let sockets = files.saturating_sub(files / 4).saturating_sub(64).clamp(16, 10_000);
    let http = (files / 4).clamp(16, 10_000);
    (sockets, http)
}
