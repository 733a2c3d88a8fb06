//! The accept loop, with the limits the open internet needs: headers must
//! arrive within a deadline (an idle keep-alive connection is closed the same
//! way), a connection whose peer stops reading is dropped once a write has
//! stalled too long, open connections are capped, and shutdown takes a
//! bounded time.
//!
//! At the cap, a new connection takes the place of an idle one: waiting for
//! a request head, quiet for [`MIN_WAIT_BEFORE_EVICTION`] and with nothing
//! unread in its socket (the oldest of the address holding the most such);
//! and each address may hold only a few waiting connections. A connection
//! whose request is arriving is never the one given way, however long the
//! server took to read it. When every place is taken but some only wait,
//! the newcomer is held (and later ones wait in the listen backlog) until
//! one gives way; only when every connection is in a request is it refused,
//! with a JSON 503 sent after its request head. Idle and half-open
//! connections, from one address or many, cannot lock a webhook out. Body
//! deadlines are the webhook handler's (it answers 408); WebSockets keep
//! themselves alive with pings.

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

/// How long a connection must have been quiet (nothing received since it
/// opened, or since its last byte) before it can be made to give way: a
/// real sender's head follows its connect within milliseconds.
pub const MIN_WAIT_BEFORE_EVICTION: Duration = Duration::from_millis(500);

/// How often a connection held at the cap asks again for a place.
const ADMIT_RETRY: Duration = Duration::from_millis(20);

/// The open HTTP connections: which are in a request (their head has
/// arrived) and which wait for one, by peer address and quiet time.
struct Pool {
    max: usize,
    /// Connections one address may hold while they wait for a head.
    per_peer_waiting: usize,
    inner: std::sync::Mutex<PoolInner>,
    /// A connection ended (shutdown waits for all of them; a held newcomer retries).
    ended: tokio::sync::Notify,
    /// The origin of every slot's `heard` clock.
    epoch: std::time::Instant,
}

#[derive(Default)]
struct PoolInner {
    next: u64,
    /// By id, which is also age order.
    conns: std::collections::BTreeMap<u64, Slot>,
}

struct Slot {
    ip: std::net::IpAddr,
    /// The socket, to see whether bytes wait in it that its task has not read yet.
    fd: Option<i32>,
    opened: std::time::Instant,
    /// Requests in progress on the connection (0: waiting for a head).
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// Milliseconds after the pool's epoch at which the connection last
    /// received bytes (0: never).
    heard: Arc<std::sync::atomic::AtomicU64>,
    evict: Arc<tokio::sync::Notify>,
}

/// What admitting a connection gives its task.
struct Admitted {
    id: u64,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    heard: Heard,
    evict: Arc<tokio::sync::Notify>,
}

/// Where a connection records that bytes arrived.
#[derive(Clone)]
struct Heard {
    at: Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
}

impl Heard {
    fn now(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.at.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the pool says to a new connection.
enum Admission {
    /// A place, now.
    Now(Admitted),
    /// Every place is taken, but some connections wait for a head: ask again
    /// (one of them will start its request, end, or grow quiet enough to give way).
    Hold,
    /// Every connection is in a request.
    Refuse,
}

/// Whether bytes wait in the socket that its task has not read: its
/// request is arriving, whatever the clock says.
fn has_unread(fd: Option<i32>) -> bool {
    #[cfg(unix)]
    if let Some(fd) = fd {
        let mut b = [0u8; 1];
        // SAFETY: a one-byte buffer of ours; MSG_PEEK leaves the byte in the socket.
        let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        return n > 0;
    }
    let _ = fd;
    false
}

impl Slot {
    fn waiting(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
    /// Waiting, quiet for `MIN_WAIT_BEFORE_EVICTION`, and nothing unread:
    /// an idle or half-open connection, never one whose request is arriving.
    fn evictable(&self, now: std::time::Instant, epoch: std::time::Instant) -> bool {
        if !self.waiting() {
            return false;
        }
        let heard = self.heard.load(std::sync::atomic::Ordering::Relaxed);
        let last = if heard == 0 { self.opened } else { self.opened.max(epoch + Duration::from_millis(heard - 1)) };
        now.saturating_duration_since(last) >= MIN_WAIT_BEFORE_EVICTION && !has_unread(self.fd)
    }
}

impl Pool {
    fn new(max: usize) -> Self {
        // A quarter of the cap, at least 4: plenty for one sender's keep-alive
        // connections, far from all of them.
        let per_peer_waiting = (max / 4).max(4).min(max);
        Self {
            max,
            per_peer_waiting,
            inner: Default::default(),
            ended: tokio::sync::Notify::new(),
            epoch: std::time::Instant::now(),
        }
    }

    /// Takes a place for a connection from `ip`, making room by evicting a
    /// waiting connection when the address or the pool is full; `now` is
    /// the clock the quiet times are read against.
    fn admit(&self, ip: std::net::IpAddr, fd: Option<i32>, now: std::time::Instant) -> Admission {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch;
        let mine = g.conns.values().filter(|s| s.ip == ip && s.waiting()).count();
        let victim = if mine >= self.per_peer_waiting {
            // This address's oldest idle connection gives way.
            g.conns.iter().find(|(_, s)| s.ip == ip && s.evictable(now, epoch)).map(|(id, _)| *id)
        } else {
            None
        };
        let victim = if victim.is_none() && g.conns.len() >= self.max {
            // The oldest idle connection of the address holding the most waiting ones.
            let mut counts: std::collections::HashMap<std::net::IpAddr, usize> = Default::default();
            for s in g.conns.values().filter(|s| s.waiting()) {
                *counts.entry(s.ip).or_default() += 1;
            }
            let mut by_count: Vec<_> = counts.into_iter().collect();
            by_count.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            by_count
                .iter()
                .find_map(|(top, _)| g.conns.iter().find(|(_, s)| s.ip == *top && s.evictable(now, epoch)).map(|(id, _)| *id))
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
            return if g.conns.values().any(Slot::waiting) { Admission::Hold } else { Admission::Refuse };
        }
        let id = g.next;
        g.next += 1;
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let evict = Arc::new(tokio::sync::Notify::new());
        g.conns.insert(id, Slot { ip, fd, opened: now, busy: busy.clone(), heard: heard.clone(), evict: evict.clone() });
        Admission::Now(Admitted { id, busy, heard: Heard { at: heard, epoch }, evict })
    }

    /// Admits a newcomer held at the cap once a place frees up: `None`
    /// when every connection is in a request, or none gave way within `limit`.
    async fn admit_held(&self, ip: std::net::IpAddr, fd: Option<i32>, limit: Duration) -> Option<Admitted> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ended = self.ended.notified();
            match self.admit(ip, fd, std::time::Instant::now()) {
                Admission::Now(a) => return Some(a),
                Admission::Refuse => return None,
                Admission::Hold if tokio::time::Instant::now() >= deadline => return None,
                Admission::Hold => {
                    let _ = tokio::time::timeout(ADMIT_RETRY, ended).await;
                }
            }
        }
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

fn raw_fd(tcp: &TcpStream) -> Option<i32> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        Some(tcp.as_raw_fd())
    }
    #[cfg(not(unix))]
    {
        let _ = tcp;
        None
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
        let fd = raw_fd(&tcp);
        let admitted = match pool.admit(peer.ip(), fd, std::time::Instant::now()) {
            Admission::Now(admitted) => Some(admitted),
            Admission::Refuse => None,
            // Held, not refused: a place frees up when a waiting connection
            // starts its request, ends, or has been quiet long enough to give
            // way. Meanwhile nothing else is accepted, so later connections
            // wait in the listen backlog, in the order they came.
            Admission::Hold => tokio::select! {
                admitted = pool.admit_held(peer.ip(), fd, limits.header_timeout) => admitted,
                () = &mut shutdown => break,
            },
        };
        let Some(admitted) = admitted else {
            info!(%peer, max = limits.max_connections, "connection refused: every connection is in a request");
            tokio::spawn(refuse(tcp));
            continue;
        };
        let conn =
            Conn { app: app.clone(), limits, stop: stop_rx.clone(), cut: cut_rx.clone(), tls: tls.clone(), pool: pool.clone() };
        tokio::spawn(conn.serve(tcp, peer, admitted));
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

/// What an admitted connection's task needs.
struct Conn {
    app: Router,
    limits: NetLimits,
    stop: tokio::sync::watch::Receiver<bool>,
    cut: tokio::sync::watch::Receiver<bool>,
    tls: Option<Tls>,
    pool: Arc<Pool>,
}

impl Conn {
    async fn serve(self, tcp: TcpStream, peer: std::net::SocketAddr, admitted: Admitted) {
        let Conn { app, limits, stop, cut, tls, pool } = self;
        let _ = tcp.set_nodelay(true);
        let Admitted { id, busy, heard, evict } = admitted;
        let served = async {
            let tcp = Listened { inner: tcp, heard };
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
    }
}

/// A connection's socket, noting when bytes arrive (a connection that
/// receives is not idle, whatever its age).
struct Listened<T> {
    inner: T,
    heard: Heard,
}

impl<T: AsyncRead + Unpin> AsyncRead for Listened<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.now();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Listened<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
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

/// Over the cap: a short JSON 503, then close. The request's head is read
/// first (for a moment at most), so a client never meets an answer before
/// it has asked; and what it still sends is read before the socket closes,
/// since closing with bytes unread resets the connection, which can destroy
/// the answer before the client reads it.
async fn refuse(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    let body = r#"{"error":"too_many_connections","message":"the server is at its connection limit; retry shortly"}"#;
    let res = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut head = Vec::with_capacity(1024);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 1024];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tcp.write_all(res.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut buf = [0u8; 1024];
        while tcp.read(&mut buf).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::Ordering::SeqCst;

    /// `n` accepted sockets (server side) and their clients.
    fn pairs(n: usize) -> Vec<(std::net::TcpStream, std::net::TcpStream)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (0..n)
            .map(|_| {
                let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                (listener.accept().unwrap().0, client)
            })
            .collect()
    }

    fn fd(s: &std::net::TcpStream) -> Option<i32> {
        use std::os::fd::AsRawFd;
        Some(s.as_raw_fd())
    }

    fn admitted(a: Admission) -> Admitted {
        match a {
            Admission::Now(a) => a,
            Admission::Hold => panic!("held"),
            Admission::Refuse => panic!("refused"),
        }
    }

    /// Makes every slot look as if it opened long ago (the rule, not the clock).
    fn age_all(pool: &Pool) {
        let long_ago = std::time::Instant::now() - 2 * MIN_WAIT_BEFORE_EVICTION;
        for s in pool.inner.lock().unwrap().conns.values_mut() {
            s.opened = long_ago;
        }
    }

    fn open_ids(pool: &Pool) -> Vec<u64> {
        pool.inner.lock().unwrap().conns.keys().copied().collect()
    }

    #[test]
    fn a_connection_whose_request_is_arriving_is_never_given_way() {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let socks = pairs(5);
        let pool = Pool::new(4);
        let now = std::time::Instant::now;
        let slots: Vec<Admitted> = socks[..4].iter().map(|(s, _)| admitted(pool.admit(ip, fd(s), now()))).collect();
        age_all(&pool);
        // The oldest connection's head sits unread in its socket (its task
        // has not run yet): the next oldest gives way instead.
        (&socks[0].1).write_all(b"POST /hooks/gh HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        wait_for_bytes(|| has_unread(fd(&socks[0].0)));
        // The clock the newcomer is young on, however slowly this test runs.
        let t = now();
        let newcomer = admitted(pool.admit(ip, fd(&socks[4].0), t));
        assert_eq!(open_ids(&pool), vec![slots[0].id, slots[2].id, slots[3].id, newcomer.id]);
        // One that received bytes lately is not quiet, whatever its age.
        slots[2].heard.now();
        // One in a request is never a candidate.
        slots[3].busy.fetch_add(1, SeqCst);
        // The newcomer is young: nobody may give way yet, but some only wait.
        assert!(matches!(pool.admit(ip, None, t), Admission::Hold));
        // Every connection in a request: refused.
        for a in [&slots[0], &slots[2], &newcomer] {
            a.busy.fetch_add(1, SeqCst);
        }
        assert!(matches!(pool.admit(ip, None, t), Admission::Refuse));
    }

    #[tokio::test]
    async fn a_held_newcomer_takes_the_first_place_that_frees_up() {
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let pool = Arc::new(Pool::new(2));
        let t = std::time::Instant::now();
        let a = admitted(pool.admit(ip, None, t));
        let _b = admitted(pool.admit(ip, None, t));
        assert!(matches!(pool.admit(ip, None, t), Admission::Hold));
        let held = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit_held(ip, None, Duration::from_secs(3600)).await.map(|a| a.id) }
        });
        pool.release(a.id);
        let id = held.await.unwrap().expect("admitted once a place freed up");
        assert!(open_ids(&pool).contains(&id));
        // All in a request: a held newcomer is refused at once.
        for s in pool.inner.lock().unwrap().conns.values() {
            s.busy.fetch_add(1, SeqCst);
        }
        assert!(pool.admit_held(ip, None, Duration::from_secs(3600)).await.is_none());
    }

    /// Waits (a ceiling, for a loaded machine) until loopback has carried the bytes.
    fn wait_for_bytes(mut arrived: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !arrived() {
            assert!(start.elapsed() < Duration::from_secs(60), "bytes never arrived on loopback");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
