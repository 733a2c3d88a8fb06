//! The local gateway: each open socket has an outbound queue drained by its
//! writer, budgeted in bytes. Live pushes beyond [`LIVE_BUDGET`] queued bytes
//! mean a reader too slow to keep up: the push is refused and the socket
//! closed (1013), so the page reconnects and resumes from history. Replies to
//! the client's own messages (replays) are queued whole, and the socket reads
//! the client's next message only once they have drained below
//! [`REPLY_HIGH_WATER`]: a client that asks and never reads stalls itself.
//!
//! A WebSocket's frames are written straight from the push when its queue is
//! empty and the kernel takes the bytes (see [`crate::wire`]): an event
//! reaches a thousand idle sockets as a thousand writes, without waking a
//! thousand tasks. Whatever the kernel does not take waits in the queue, in
//! order, for the socket's writer; anything pushed while something waits
//! queues behind it, so a socket's frames leave in the order pushed.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hookcast_core::ports::{ConnId, Delivery, Gateway};
use tokio::sync::Notify;

use crate::wire::Wire;

/// Bytes of live pushes that may wait for one socket.
pub const LIVE_BUDGET: usize = 1024 * 1024;
/// Reply bytes above which a socket stops reading its client's messages.
pub const REPLY_HIGH_WATER: usize = 256 * 1024;
/// Queued frames written at most per write (one `writev`).
const WRITE_BATCH: usize = 64;

/// Which budget a frame counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A live push (an event fanned out).
    Live,
    /// A reply to the client's own message.
    Reply,
    /// A control frame (ping, pong, close): counted with live pushes, so a
    /// client that pings and never reads is bounded too.
    Control,
}

/// One frame on its way out, encoded as it goes on the wire, and which
/// budget it counts against. The bytes are shared: a fan-out encodes an
/// event once and every socket's queue holds the same bytes.
pub struct Frame {
    pub bytes: Bytes,
    /// Length of the WebSocket header before the payload.
    head: usize,
    pub kind: Kind,
}

impl Frame {
    /// A text frame carrying `text`.
    pub fn text(text: &str, kind: Kind) -> Self {
        let (bytes, head) = crate::wire::text_frame(text);
        Self { bytes, head, kind }
    }
    /// An encoded control frame.
    pub fn control(bytes: Bytes) -> Self {
        Self { bytes, head: 0, kind: Kind::Control }
    }
    /// The frame's text (for SSE, which sends the payload without the header).
    pub fn payload(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.head..]).unwrap_or_default()
    }
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written straight to the connection.
    Written,
    /// Queued for the socket's writer.
    Queued,
    /// Over the live budget: refused, and the socket told to close.
    Refused,
    /// The socket has ended.
    Gone,
}

impl From<Pushed> for Delivery {
    fn from(p: Pushed) -> Self {
        match p {
            Pushed::Written | Pushed::Queued => Delivery::Delivered,
            Pushed::Refused => Delivery::Failed,
            Pushed::Gone => Delivery::Gone,
        }
    }
}

#[derive(Default)]
struct Out {
    frames: VecDeque<Frame>,
    /// Bytes of the first frame already written.
    sent: usize,
    /// The connection holds bytes until a flush (TLS) and the writer waits
    /// to flush them: pushes queue meanwhile, so a push's write cannot take
    /// the wake-up the writer waits for.
    unflushed: bool,
}

/// One socket's outbound queue and its byte counts, by kind; the writer
/// gives bytes back as it sends. Allocated lazily: an idle socket's queue
/// holds no buffer.
#[derive(Default)]
pub struct Queued {
    live: AtomicUsize,
    replies: AtomicUsize,
    /// Signalled whenever reply bytes are given back.
    drained: Notify,
    out: Mutex<Out>,
    /// A frame was queued (one waiter: the socket's writer).
    ready: Notify,
    /// The writer is gone: pushes answer Gone.
    ended: AtomicBool,
    /// The host asks the socket to close (too slow, or `close`).
    close: Notify,
    /// The WebSocket's connection, once upgraded (SSE has none: its
    /// response stream takes frames with [`Frames::recv`]).
    wire: OnceLock<Wire>,
}

impl Queued {
    /// A sent (or dropped) frame gives its bytes back.
    fn written(&self, len: usize, kind: Kind) {
        if kind == Kind::Reply {
            self.replies.fetch_sub(len, Ordering::AcqRel);
            self.drained.notify_waiters();
        } else {
            self.live.fetch_sub(len, Ordering::AcqRel);
        }
    }
    /// Waits until replies queued are below the high-water mark.
    pub async fn replies_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.replies.load(Ordering::Acquire) < REPLY_HIGH_WATER {
                return;
            }
            notified.await;
        }
    }
    pub fn bytes(&self) -> usize {
        self.live.load(Ordering::Acquire) + self.replies.load(Ordering::Acquire)
    }
    /// Resolves when the host asks this socket to close.
    pub async fn closing(&self) {
        self.close.notified().await
    }
    fn queue(&self) -> std::sync::MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn wire(&self) -> Option<&Wire> {
        self.wire.get()
    }
    /// Gives the queue its connection: from now on frames are written to it.
    pub fn attach(&self, wire: Wire) {
        let _ = self.wire.set(wire);
    }
    /// Queues a frame within its budget (`Failed`: over the live budget, and
    /// the socket is told to close), or writes it at once if nothing waits
    /// and `direct` allows. `force` queues even after the writer has ended
    /// (its last words: a close frame).
    pub fn push(&self, frame: Frame, direct: bool, force: bool) -> Pushed {
        if !force && self.ended.load(Ordering::Acquire) {
            return Pushed::Gone;
        }
        let len = frame.bytes.len();
        let mut out = self.queue();
        // Part of the frame is on the wire: the rest must follow, whatever
        // the budget, or the socket's next frame would start mid-frame.
        let mut started = false;
        if direct && out.frames.is_empty() && !out.unflushed {
            if let Some(wire) = self.wire.get() {
                match wire.try_write(&frame.bytes) {
                    // All of it: nothing to count, nothing to wake.
                    Ok((n, true)) if n == len => return Pushed::Written,
                    // All taken, some held until a flush: the writer flushes.
                    Ok((n, false)) if n == len => {
                        out.unflushed = true;
                        drop(out);
                        self.ready.notify_one();
                        return Pushed::Written;
                    }
                    Ok((n, _)) => {
                        out.sent = n;
                        started = n > 0;
                    }
                    // The writer meets the error on its next write.
                    Err(_) => {}
                }
            }
        }
        match frame.kind {
            Kind::Reply => {
                self.replies.fetch_add(len, Ordering::AcqRel);
            }
            Kind::Live | Kind::Control => {
                if self.live.fetch_add(len, Ordering::AcqRel) + len > LIVE_BUDGET && !force && !started {
                    self.live.fetch_sub(len, Ordering::AcqRel);
                    drop(out);
                    self.close.notify_one();
                    return Pushed::Refused;
                }
            }
        }
        out.frames.push_back(frame);
        drop(out);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Writes what is queued to the connection, in order, until the queue is
    /// empty and flushed (Ready) or the kernel takes no more (Pending, woken
    /// when it can).
    fn poll_write_queued(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(wire) = self.wire.get() else { return Poll::Ready(Ok(())) };
        let mut out = self.queue();
        while !out.frames.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); WRITE_BATCH];
            let mut n = 0;
            for (i, f) in out.frames.iter().take(WRITE_BATCH).enumerate() {
                slices[i] = io::IoSlice::new(if i == 0 { &f.bytes[out.sent..] } else { &f.bytes });
                n += 1;
            }
            let mut wrote = match wire.poll_write(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(w)) => w,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            while wrote > 0 {
                let left = out.frames[0].bytes.len() - out.sent;
                if wrote < left {
                    out.sent += wrote;
                    break;
                }
                wrote -= left;
                out.sent = 0;
                if let Some(f) = out.frames.pop_front() {
                    self.written(f.bytes.len(), f.kind);
                }
            }
        }
        let flushed = wire.poll_flush(cx);
        out.unflushed = flushed.is_pending();
        flushed
    }
}

/// The writer's end of a socket's queue; dropping it ends the queue.
pub struct Frames(Arc<Queued>);

impl Frames {
    /// The next frame (SSE); `None` once the socket has been unregistered.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.0.queue().frames.pop_front() {
                return Some(f);
            }
            if self.0.ended.load(Ordering::Acquire) {
                return None;
            }
            // notify_one keeps a permit: a push between the check and here is not lost.
            self.0.ready.notified().await;
        }
    }
    /// The writer (WebSocket): writes whatever is queued, as it is queued,
    /// until the socket has been unregistered and everything is written;
    /// `Err` if the connection fails.
    pub async fn drain(&mut self) -> io::Result<()> {
        loop {
            std::future::poll_fn(|cx| self.0.poll_write_queued(cx)).await?;
            if self.0.ended.load(Ordering::Acquire) && self.0.queue().frames.is_empty() {
                return Ok(());
            }
            self.0.ready.notified().await;
        }
    }
    #[cfg(test)]
    fn try_recv(&mut self) -> Option<Frame> {
        self.0.queue().frames.pop_front()
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
        let left: Vec<Frame> = self.0.queue().frames.drain(..).collect();
        for f in left {
            self.0.written(f.bytes.len(), f.kind);
        }
    }
}

#[derive(Default)]
pub struct LocalGateway {
    conns: Mutex<HashMap<ConnId, Arc<Queued>>>,
    /// Fan-out pushes written straight to their socket, and the rest
    /// (queued for the socket's writer, refused, or gone).
    straight: std::sync::atomic::AtomicU64,
    other: std::sync::atomic::AtomicU64,
    /// Seats taken by sockets, from their upgrade's answer to their end:
    /// the cap is checked and taken in one step, before the client hears 101.
    seats: Arc<std::sync::atomic::AtomicUsize>,
}

/// One socket's place under the cap; given back when dropped.
pub struct Seat(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a socket task needs: its queue and its byte counts (and close signal).
pub struct Outbound {
    pub frames: Frames,
    pub queued: Arc<Queued>,
}

impl LocalGateway {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<Queued>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn register(&self, conn: &ConnId) -> Outbound {
        let queued = Arc::new(Queued::default());
        self.map().insert(conn.clone(), queued.clone());
        Outbound { frames: Frames(queued.clone()), queued }
    }
    pub fn unregister(&self, conn: &ConnId) {
        if let Some(q) = self.map().remove(conn) {
            q.ended.store(true, Ordering::Release);
            q.ready.notify_one();
        }
    }
    pub fn open_sockets(&self) -> usize {
        self.map().len()
    }
    /// A seat for one more socket, if fewer than `max` are taken.
    pub fn take_seat(&self, max: usize) -> Option<Seat> {
        self.seats.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Seat(self.seats.clone()))
    }
    /// Fan-out pushes written straight to their socket by the fan-out, and
    /// those that were not (queued for the socket's writer, refused, gone).
    pub fn pushes(&self) -> (u64, u64) {
        (self.straight.load(Ordering::Relaxed), self.other.load(Ordering::Relaxed))
    }
    /// Bytes waiting in every socket's queue (live pushes and replies).
    pub fn queued_bytes(&self) -> usize {
        self.map().values().map(|h| h.bytes()).sum()
    }

    fn enqueue(&self, conn: &ConnId, frame: &str, kind: Kind) -> Delivery {
        let Some(h) = self.map().get(conn).cloned() else {
            return Delivery::Gone;
        };
        h.push(Frame::text(frame, kind), true, false).into()
    }

    /// One page of a fan-out: one encoding of the frame, shared by every
    /// socket; the page's queues are looked up under one lock and pushed to
    /// after it is released. Pushing never waits, so no concurrency is
    /// needed. `direct`: whether a push may write straight to its socket
    /// (nothing else waits on its channel); when events queue up, writes are
    /// left to the sockets' writers, which send all that waited in one write.
    pub fn push_page(&self, conns: Vec<ConnId>, frame: &str, direct: bool) -> Vec<(ConnId, Delivery)> {
        let (bytes, head) = crate::wire::text_frame(frame);
        let queues: Vec<Option<Arc<Queued>>> = {
            let map = self.map();
            conns.iter().map(|c| map.get(c).cloned()).collect()
        };
        let mut straight = 0;
        let page: Vec<(ConnId, Delivery)> = conns
            .into_iter()
            .zip(queues)
            .map(|(c, q)| {
                let pushed = match q {
                    Some(h) => h.push(Frame { bytes: bytes.clone(), head, kind: Kind::Live }, direct, false),
                    None => Pushed::Gone,
                };
                straight += u64::from(pushed == Pushed::Written);
                (c, pushed.into())
            })
            .collect();
        self.straight.fetch_add(straight, Ordering::Relaxed);
        self.other.fetch_add(page.len() as u64 - straight, Ordering::Relaxed);
        page
    }
}

/// The gateway as a fan-out pushes through it, with its choice of writing
/// straight to the sockets (see [`LocalGateway::push_page`]): the
/// dispatcher holds one fan-out over each.
pub struct Pusher {
    gateway: Arc<LocalGateway>,
    direct: bool,
}

impl Pusher {
    pub fn new(gateway: Arc<LocalGateway>, direct: bool) -> Self {
        Self { gateway, direct }
    }
}

impl Gateway for Pusher {
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        self.gateway.send(conn, frame).await
    }
    async fn reply(&self, conn: &ConnId, frame: &str) -> Delivery {
        self.gateway.reply(conn, frame).await
    }
    async fn send_many(&self, conns: Vec<ConnId>, frame: &str, _concurrency: usize) -> Vec<(ConnId, Delivery)> {
        self.gateway.push_page(conns, frame, self.direct)
    }
    async fn close(&self, conn: &ConnId) {
        self.gateway.close(conn).await
    }
}

impl Gateway for LocalGateway {
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        self.enqueue(conn, frame, Kind::Live)
    }
    async fn reply(&self, conn: &ConnId, frame: &str) -> Delivery {
        self.enqueue(conn, frame, Kind::Reply)
    }
    /// A page of a fan-out that is not a dispatcher's (see [`Pusher`]):
    /// frames wait for the sockets' writers.
    async fn send_many(&self, conns: Vec<ConnId>, frame: &str, _concurrency: usize) -> Vec<(ConnId, Delivery)> {
        self.push_page(conns, frame, false)
    }
    async fn close(&self, conn: &ConnId) {
        if let Some(h) = self.map().get(conn) {
            h.close.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fan-out page shares one copy of the frame across every socket's
    /// queue, and reports each connection once, gone ones as Gone.
    #[tokio::test]
    async fn a_page_shares_one_copy_of_the_frame() {
        let g = LocalGateway::default();
        let (a, b, gone) = (ConnId("a".into()), ConnId("b".into()), ConnId("gone".into()));
        let (mut out_a, mut out_b) = (g.register(&a), g.register(&b));
        let mut got = g.send_many(vec![a.clone(), b.clone(), gone.clone()], r#"{"type":"event"}"#, 1).await;
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, vec![(a, Delivery::Delivered), (b, Delivery::Delivered), (gone, Delivery::Gone)]);
        let (fa, fb) = (out_a.frames.try_recv().unwrap(), out_b.frames.try_recv().unwrap());
        assert_eq!(fa.payload(), r#"{"type":"event"}"#);
        assert_eq!(fa.bytes.as_ptr(), fb.bytes.as_ptr(), "each socket got its own copy");
        assert!(out_a.frames.try_recv().is_none() && out_b.frames.try_recv().is_none(), "one frame each");
        assert_eq!(out_a.queued.bytes(), fa.bytes.len(), "counted against the budget until written");
    }

    /// A frame the connection took part of is queued whole, over the budget
    /// or not, and the rest follows: the socket's bytes stay whole frames.
    #[tokio::test]
    async fn a_frame_partly_written_straight_is_never_refused() {
        use tokio::io::AsyncReadExt;
        let q = Queued::default();
        let (ours, mut theirs) = tokio::io::duplex(64);
        q.attach(Wire::new(ours));
        let frame = Frame::text(&"x".repeat(LIVE_BUDGET + 1), Kind::Live);
        let want = frame.bytes.clone();
        assert_eq!(q.push(frame, true, false), Pushed::Queued);
        let mut got = vec![0u8; want.len()];
        let (written, read) = tokio::join!(std::future::poll_fn(|cx| q.poll_write_queued(cx)), theirs.read_exact(&mut got));
        written.unwrap();
        read.unwrap();
        assert!(got == want[..], "the frame arrived whole");
    }

    #[tokio::test]
    async fn live_pushes_are_budgeted_in_bytes_and_replies_are_not() {
        let g = LocalGateway::default();
        let c = ConnId("c".into());
        let out = g.register(&c);
        // 64 KiB on the wire: the payload and its 4-byte header.
        let frame = "x".repeat(64 * 1024 - 4);
        for _ in 0..LIVE_BUDGET / (64 * 1024) {
            assert_eq!(g.send(&c, &frame).await, Delivery::Delivered);
        }
        // One byte over: refused, and the socket is told to close.
        assert_eq!(g.send(&c, "y").await, Delivery::Failed);
        hookcast_testkit::within(hookcast_testkit::LOCAL, "the close signal", out.queued.closing()).await;
        // Replies still queue (the client asked for them) and count separately.
        assert_eq!(g.reply(&c, &frame).await, Delivery::Delivered);
        assert_eq!(out.queued.bytes(), LIVE_BUDGET + 64 * 1024);
        g.unregister(&c);
        assert_eq!(g.send(&c, "z").await, Delivery::Gone);
    }

    /// With nothing waiting, a push is written by the pusher itself: the
    /// bytes reach the peer with no writer running. Outside a direct fan-out
    /// (events queued up behind it) frames wait for the writer, and a direct
    /// push queues behind them; the writer sends all that waited, in order.
    #[tokio::test]
    async fn a_push_writes_straight_only_when_nothing_waits() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let g = Arc::new(LocalGateway::default());
        let c = ConnId("c".into());
        let mut out = g.register(&c);
        out.queued.attach(Wire::new(server));
        // Through the fan-out's gateway, as the dispatcher pushes.
        let push = |direct: bool, text: &'static str| {
            let (pusher, conns) = (Pusher::new(g.clone(), direct), vec![c.clone()]);
            async move { pusher.send_many(conns, text, 1).await }
        };
        assert_eq!(push(true, "one").await[0].1, Delivery::Delivered);
        assert_eq!(out.queued.bytes(), 0, "written, not queued");
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"\x81\x03one");
        push(false, "two").await;
        push(true, "three").await;
        assert_eq!(out.queued.bytes(), 5 + 7, "both wait for the writer");
        let mut buf = [0u8; 12];
        tokio::select! {
            _ = out.frames.drain() => panic!("the writer ended"),
            r = peer.read_exact(&mut buf) => r.unwrap(),
        };
        assert_eq!(&buf, b"\x81\x03two\x81\x05three");
        assert_eq!(out.queued.bytes(), 0);
    }
}
