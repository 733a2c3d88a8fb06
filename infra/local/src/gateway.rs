//! The local gateway: each open socket has an outbound queue drained by its
//! writer, budgeted in bytes. Live pushes beyond [`LIVE_BUDGET`] queued bytes
//! mean a reader too slow to keep up: the push is refused and the socket
//! closed (1013), so the page reconnects and resumes from history. Replies to
//! the client's own messages (replays) are queued whole, and the socket reads
//! the client's next message only once they have drained below
//! [`REPLY_HIGH_WATER`]: a client that asks and never reads stalls itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use hookcast_core::ports::{ConnId, Delivery, Gateway};
use tokio::sync::Notify;

/// Bytes of live pushes that may wait for one socket.
pub const LIVE_BUDGET: usize = 1024 * 1024;
/// Reply bytes above which a socket stops reading its client's messages.
pub const REPLY_HIGH_WATER: usize = 256 * 1024;

/// One frame on its way out, and which budget it counts against. The text
/// is shared: a fan-out encodes an event once and every socket's queue holds
/// the same bytes.
pub struct Frame {
    pub text: Utf8Bytes,
    pub reply: bool,
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
    frames: Mutex<VecDeque<Frame>>,
    /// A frame was queued (one waiter: the socket's writer).
    ready: Notify,
    /// The writer is gone: pushes answer Gone.
    ended: AtomicBool,
    /// The host asks the socket to close (too slow, or `close`).
    close: Notify,
}

impl Queued {
    /// The writer has sent (or dropped) a frame of `len` bytes.
    pub fn written(&self, len: usize, reply: bool) {
        if reply {
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
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Frame>> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's end of a socket's queue; dropping it ends the queue.
pub struct Frames(Arc<Queued>);

impl Frames {
    /// The next frame; `None` once the socket has been unregistered.
    pub async fn recv(&mut self) -> Option<Frame> {
        let mut one = Vec::with_capacity(1);
        self.recv_batch(&mut one, 1, usize::MAX).await.then(|| one.pop()).flatten()
    }
    #[cfg(test)]
    fn try_recv(&mut self) -> Option<Frame> {
        self.0.queue().pop_front()
    }
    /// Moves queued frames into `into` (at most `max_frames`, stopping once
    /// `max_bytes` are taken) under one lock, waiting for the first. False
    /// once the socket has been unregistered and nothing is left.
    pub async fn recv_batch(&mut self, into: &mut Vec<Frame>, max_frames: usize, max_bytes: usize) -> bool {
        loop {
            {
                let mut q = self.0.queue();
                let mut bytes = 0;
                while into.len() < max_frames && bytes < max_bytes {
                    let Some(f) = q.pop_front() else { break };
                    bytes += f.text.len();
                    into.push(f);
                }
            }
            if !into.is_empty() {
                return true;
            }
            if self.0.ended.load(Ordering::Acquire) {
                return false;
            }
            // notify_one keeps a permit: a push between the check and here is not lost.
            self.0.ready.notified().await;
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
        let left: Vec<Frame> = self.0.queue().drain(..).collect();
        for f in left {
            self.0.written(f.text.len(), f.reply);
        }
    }
}

#[derive(Default)]
pub struct LocalGateway {
    conns: Mutex<HashMap<ConnId, Arc<Queued>>>,
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
    /// Bytes waiting in every socket's queue (live pushes and replies).
    pub fn queued_bytes(&self) -> usize {
        self.map().values().map(|h| h.bytes()).sum()
    }

    fn enqueue(&self, conn: &ConnId, frame: &str, reply: bool) -> Delivery {
        let Some(h) = self.map().get(conn).cloned() else {
            return Delivery::Gone;
        };
        push(&h, Utf8Bytes::from(frame), reply)
    }
}

/// Queues one frame for one socket within its byte budget.
fn push(h: &Queued, text: Utf8Bytes, reply: bool) -> Delivery {
    if h.ended.load(Ordering::Acquire) {
        return Delivery::Gone;
    }
    let len = text.len();
    if reply {
        h.replies.fetch_add(len, Ordering::AcqRel);
    } else if h.live.fetch_add(len, Ordering::AcqRel) + len > LIVE_BUDGET {
        h.live.fetch_sub(len, Ordering::AcqRel);
        h.close.notify_one();
        return Delivery::Failed;
    }
    h.queue().push_back(Frame { text, reply });
    h.ready.notify_one();
    Delivery::Delivered
}

impl Gateway for LocalGateway {
    async fn send(&self, conn: &ConnId, frame: &str) -> Delivery {
        self.enqueue(conn, frame, false)
    }
    async fn reply(&self, conn: &ConnId, frame: &str) -> Delivery {
        self.enqueue(conn, frame, true)
    }
    /// One lock for the page and one copy of the frame, shared by every
    /// socket's queue; queuing never waits, so no concurrency is needed.
    async fn send_many(&self, conns: Vec<ConnId>, frame: &str, _concurrency: usize) -> Vec<(ConnId, Delivery)> {
        let text = Utf8Bytes::from(frame);
        let map = self.map();
        conns
            .into_iter()
            .map(|c| {
                let d = match map.get(&c) {
                    Some(h) => push(h, text.clone(), false),
                    None => Delivery::Gone,
                };
                (c, d)
            })
            .collect()
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
        assert_eq!(fa.text.as_str(), r#"{"type":"event"}"#);
        assert_eq!(fa.text.as_str().as_ptr(), fb.text.as_str().as_ptr(), "each socket got its own copy");
        assert!(out_a.frames.try_recv().is_none() && out_b.frames.try_recv().is_none(), "one frame each");
        assert_eq!(out_a.queued.bytes(), fa.text.len(), "counted against the budget until written");
    }

    #[tokio::test]
    async fn live_pushes_are_budgeted_in_bytes_and_replies_are_not() {
        let g = LocalGateway::default();
        let c = ConnId("c".into());
        let out = g.register(&c);
        let frame = "x".repeat(64 * 1024);
        for _ in 0..LIVE_BUDGET / frame.len() {
            assert_eq!(g.send(&c, &frame).await, Delivery::Delivered);
        }
        // One byte over: refused, and the socket is told to close.
        assert_eq!(g.send(&c, "y").await, Delivery::Failed);
        hookcast_testkit::within(hookcast_testkit::LOCAL, "the close signal", out.queued.closing()).await;
        // Replies still queue (the client asked for them) and count separately.
        assert_eq!(g.reply(&c, &frame).await, Delivery::Delivered);
        assert_eq!(out.queued.bytes(), LIVE_BUDGET + frame.len());
        g.unregister(&c);
        assert_eq!(g.send(&c, "z").await, Delivery::Gone);
    }
}
