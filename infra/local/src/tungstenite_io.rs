//! The socket as tungstenite sees it: it reads the client's frames from the
//! connection, and what it writes itself (pongs, the reply to a close) is
//! pushed into the socket's queue (see [`crate::gateway`]), so one socket's
//! bytes never interleave.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gateway::{Frame, Queued};

/// What tungstenite reads from and writes to: reads come from the wire;
/// its writes (pongs, close replies) are queued as control frames behind
/// whatever waits, and always taken whole.
pub struct Tungstenite(pub Arc<Queued>);

impl AsyncRead for Tungstenite {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.0.wire() {
            Some(w) => w.poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Tungstenite {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // A socket already ended or over its budget (then closing) drops it.
        self.0.push(Frame::control(Bytes::copy_from_slice(buf)), true, false);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.wire() {
            Some(w) => w.poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
