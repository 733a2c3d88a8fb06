//! A WebSocket connection as the local server holds it. The server writes
//! its own frames: they are unmasked, so an event is encoded once, header
//! and all, and the same bytes go to every socket, written straight from
//! the fan-out while a socket has nothing waiting (see [`crate::gateway`]).
//! Reading stays with tungstenite (masking, fragments, UTF-8, limits); what
//! it writes itself (pongs, the reply to a close) goes through the same
//! queue (see [`crate::tungstenite_io`]), so one socket's bytes never interleave.

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Anything a connection can be (plain TCP or TLS, behind hyper's upgrade).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The connection, shared by the socket's reader, its writer and the pushes
/// that write to it directly; each holds the lock for one call only.
pub struct Wire(Mutex<Box<dyn Io>>);

impl Wire {
    pub fn new(io: impl Io + 'static) -> Self {
        Self(Mutex::new(Box::new(io)))
    }
    fn io(&self) -> MutexGuard<'_, Box<dyn Io>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Writes what the connection takes now, without waiting: the bytes
    /// taken, and whether they are all on their way (a TLS stream may hold
    /// some until it is flushed again).
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<(usize, bool)> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = self.io();
        let taken = match Pin::new(&mut **io).poll_write(&mut cx, bytes) {
            Poll::Ready(r) => r?,
            Poll::Pending => return Ok((0, false)),
        };
        let flushed = Pin::new(&mut **io).poll_flush(&mut cx).is_ready();
        Ok((taken, flushed))
    }
    /// One write of `slices` (one `writev` where the connection has it).
    pub fn poll_write(&self, cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut io = self.io();
        let io = Pin::new(&mut **io);
        if slices.len() > 1 && io.is_write_vectored() {
            io.poll_write_vectored(cx, slices)
        } else {
            io.poll_write(cx, slices.first().map_or(&[][..], |s| &s[..]))
        }
    }
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.io()).poll_flush(cx)
    }
    pub(crate) fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.io()).poll_read(cx, buf)
    }
    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.io()).poll_shutdown(cx)
    }
}

/// A frame header (FIN set, unmasked): its bytes and their length.
fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

fn frame(opcode: u8, payload: &[u8]) -> (Bytes, usize) {
    let (h, n) = header(opcode, payload.len());
    let mut v = Vec::with_capacity(n + payload.len());
    v.extend_from_slice(&h[..n]);
    v.extend_from_slice(payload);
    (Bytes::from(v), n)
}

/// A text frame: its bytes, and the header's length.
pub fn text_frame(text: &str) -> (Bytes, usize) {
    frame(0x1, text.as_bytes())
}

pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// A close frame; the reason is cut to fit a control frame (123 bytes).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(0x8, &payload).0
}

/// Checks a WebSocket handshake (RFC 6455 §4.2.1) and returns the
/// `Sec-WebSocket-Accept` to answer it with, or why it is not one.
pub fn accept_key(method: &axum::http::Method, headers: &HeaderMap) -> Result<String, (StatusCode, &'static str)> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if method != axum::http::Method::GET {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "a WebSocket handshake is a GET"));
    }
    if !has(header::CONNECTION, "upgrade") {
        return Err((StatusCode::BAD_REQUEST, "Connection header did not include 'upgrade'"));
    }
    if !has(header::UPGRADE, "websocket") {
        return Err((StatusCode::BAD_REQUEST, "Upgrade header did not include 'websocket'"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Version header did not include '13'"));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) => Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())),
        None => Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key header missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames tungstenite (an independent encoder) reads back as sent,
    /// at each header size.
    #[test]
    fn frames_read_back_with_tungstenite() {
        use tokio_tungstenite::tungstenite::protocol::{frame::coding::OpCode, frame::FrameHeader};
        for len in [0, 1, 125, 126, 65535, 65536, 70_000] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let (bytes, head) = text_frame(&text);
            let mut cursor = std::io::Cursor::new(&bytes[..]);
            let (h, payload_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(
                h.is_final
                    && h.mask.is_none()
                    && h.opcode == OpCode::Data(tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text)
            );
            assert_eq!((payload_len as usize, cursor.position() as usize), (text.len(), head), "len {len}");
            assert_eq!(&bytes[head..], text.as_bytes());
        }
        let close = close_frame(1013, &"é".repeat(100));
        assert_eq!(close.len(), 2 + 2 + 122, "the reason is cut at a character boundary within 123 bytes");
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        assert_eq!(accept_key(&axum::http::Method::GET, &h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        h.remove(header::SEC_WEBSOCKET_VERSION);
        assert_eq!(accept_key(&axum::http::Method::GET, &h).unwrap_err().0, StatusCode::BAD_REQUEST);
    }
}
