//! The connection guard of the real server: a bounded accept loop and a
//! socket wrapper that closes connections which do not finish their
//! HTTP/2 handshake in time or carry no request for too long.
//!
//! The wrapper sits below tonic (it is the I/O that hyper reads and
//! writes), so it works for any router, and it reads only the 9-byte
//! HTTP/2 frame headers (RFC 9113 section 4.1) as they pass: enough to know
//! when the client's preface and first SETTINGS frame arrived (the
//! handshake) and when a frame of a request or a response (HEADERS, DATA,
//! CONTINUATION) went by (activity). Control frames (PING, SETTINGS,
//! WINDOW_UPDATE, ...) are not activity, so a peer that only answers
//! keepalive pings is idle.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::ServeOptions;

/// How long the accept loop pauses after `accept` fails (out of file
/// descriptors, most often) before it tries again, instead of spinning.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// TCP keepalive on accepted sockets: the kernel probes a peer after this
/// long without traffic, so a vanished host ends its connection even when
/// the server has nothing to send.
pub(crate) const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The length of the client's connection preface, `PRI * HTTP/2.0...`.
const PREFACE_BYTES: usize = 24;
/// The length of an HTTP/2 frame header.
const FRAME_HEADER_BYTES: usize = 9;
/// Frame types that carry a request or a response: DATA, HEADERS,
/// CONTINUATION.
const REQUEST_FRAME_TYPES: [u8; 3] = [0x0, 0x1, 0x9];

/// The accepted connections of one listener, each holding one of
/// `max_connections` permits; a connection beyond them is closed at once.
pub(crate) struct GuardedIncoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    options: ServeOptions,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl GuardedIncoming {
    pub(crate) fn new(listener: TcpListener, options: &ServeOptions) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(options.max_connections)),
            options: options.clone(),
            backoff: None,
        }
    }
}

impl futures_core::Stream for GuardedIncoming {
    type Item = io::Result<GuardedIo>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(backoff) = &mut this.backoff {
                ready!(backoff.as_mut().poll(cx));
                this.backoff = None;
            }
            let (stream, peer) = match ready!(this.listener.poll_accept(cx)) {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(
                        "accepting a connection failed: {error}; retrying in {ACCEPT_ERROR_BACKOFF:?} \
                         (if out of file descriptors, raise `ulimit -n` or lower the client count)"
                    );
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF)));
                    continue;
                }
            };
            match this.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    return Poll::Ready(Some(Ok(GuardedIo::new(stream, permit, &this.options))));
                }
                Err(_) => {
                    // Dropping the stream closes it: the client sees the
                    // connection end before its handshake and retries.
                    tracing::debug!(
                        "closed the connection from {peer}: {} connections are open, the limit",
                        this.options.max_connections
                    );
                }
            }
        }
    }
}

/// One accepted connection: the socket, its permit, and the deadline of
/// its handshake, then of its idleness.
pub(crate) struct GuardedIo {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    received: FrameScanner,
    sent: FrameScanner,
    handshake_done: bool,
    idle_timeout: Duration,
    last_activity: Instant,
    /// Fires at the handshake deadline, then no earlier than
    /// `last_activity + idle_timeout` (moved forward lazily when it fires).
    deadline: Pin<Box<Sleep>>,
}

impl GuardedIo {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, options: &ServeOptions) -> Self {
        // Without TCP_NODELAY, small replies wait out the peer's delayed ACK
        // (40 ms on Linux).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {error}");
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!("cannot set TCP keepalive: {error}");
        }
        let now = Instant::now();
        Self {
            stream,
            _permit: permit,
            received: FrameScanner::new(PREFACE_BYTES),
            sent: FrameScanner::new(0),
            handshake_done: false,
            idle_timeout: options.idle_timeout,
            last_activity: now,
            deadline: Box::pin(tokio::time::sleep_until(now + options.handshake_timeout)),
        }
    }

    /// Whether the connection is past its deadline: the handshake's while
    /// it is unfinished, then `idle_timeout` after the last request or
    /// response frame. Registers the waker when it is not.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return None;
            }
            if !self.handshake_done {
                return Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not finish its HTTP/2 handshake in time",
                ));
            }
            let idle_until = self.last_activity + self.idle_timeout;
            if idle_until <= Instant::now() {
                return Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection carried no request for the idle timeout",
                ));
            }
            self.deadline.as_mut().reset(idle_until);
        }
    }
}

impl Connected for GuardedIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let active = this.received.scan(&buf.filled()[before..]);
                if !this.handshake_done && this.received.frames_completed > 0 {
                    this.handshake_done = true;
                    this.last_activity = Instant::now();
                }
                if active {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.poll_expired(cx) {
                Some(error) => {
                    tracing::debug!("closing a connection: {error}");
                    Poll::Ready(Err(error))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        if this.sent.scan(&buf[..written]) {
            this.last_activity = Instant::now();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.stream).poll_write_vectored(cx, bufs))?;
        let (mut left, mut active) = (written, false);
        for slice in bufs {
            let taken = left.min(slice.len());
            active |= this.sent.scan(&slice[..taken]);
            left -= taken;
            if left == 0 {
                break;
            }
        }
        if active {
            this.last_activity = Instant::now();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Follows the frame boundaries of one direction of an HTTP/2 connection
/// from the bytes passing by, without decoding the frames.
#[derive(Debug)]
struct FrameScanner {
    /// Bytes of the connection preface still to skip.
    preface_left: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
    frames_completed: u64,
}

impl FrameScanner {
    fn new(preface: usize) -> Self {
        Self {
            preface_left: preface,
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            payload_left: 0,
            frames_completed: 0,
        }
    }

    /// Consumes `bytes`; returns whether a request or response frame began
    /// in them.
    fn scan(&mut self, mut bytes: &[u8]) -> bool {
        let mut active = false;
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let taken = self.preface_left.min(bytes.len());
                self.preface_left -= taken;
                bytes = &bytes[taken..];
            } else if self.payload_left > 0 {
                let taken = self.payload_left.min(bytes.len());
                self.payload_left -= taken;
                bytes = &bytes[taken..];
                if self.payload_left == 0 {
                    self.frames_completed += 1;
                }
            } else {
                let taken = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + taken]
                    .copy_from_slice(&bytes[..taken]);
                self.header_len += taken;
                bytes = &bytes[taken..];
                if self.header_len == FRAME_HEADER_BYTES {
                    self.header_len = 0;
                    let [a, b, c, kind, ..] = self.header;
                    self.payload_left = u32::from_be_bytes([0, a, b, c]) as usize;
                    active |= REQUEST_FRAME_TYPES.contains(&kind);
                    if self.payload_left == 0 {
                        self.frames_completed += 1;
                    }
                }
            }
        }
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: usize) -> Vec<u8> {
        let length = (payload as u32).to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, 0, 0, 0, 0, 1];
        frame.resize(FRAME_HEADER_BYTES + payload, 0xab);
        frame
    }

    #[test]
    fn the_scanner_finds_frames_however_the_bytes_are_split() {
        let mut handshake = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        handshake.extend(frame(0x4, 6)); // SETTINGS
        handshake.extend(frame(0x6, 8)); // PING
        let mut request = handshake.clone();
        request.extend(frame(0x1, 30)); // HEADERS
        for split in [1, 2, 7, 9, 24, 1000] {
            let mut scanner = FrameScanner::new(PREFACE_BYTES);
            let active = handshake.chunks(split).any(|chunk| scanner.scan(chunk));
            assert!(!active, "split {split}: control frames taken for a request");
            assert_eq!(scanner.frames_completed, 2, "split {split}");

            let mut scanner = FrameScanner::new(PREFACE_BYTES);
            let active = request
                .chunks(split)
                .fold(false, |active, chunk| scanner.scan(chunk) | active);
            assert!(active, "split {split}: HEADERS not seen");
            assert_eq!(scanner.frames_completed, 3, "split {split}");
        }
    }

    #[test]
    fn control_frames_are_not_activity_and_a_partial_preface_completes_nothing() {
        let mut scanner = FrameScanner::new(PREFACE_BYTES);
        assert!(!scanner.scan(b"PRI * HTTP/2.0\r\n"));
        assert_eq!(scanner.frames_completed, 0);
        let mut scanner = FrameScanner::new(0);
        assert!(!scanner.scan(&frame(0x6, 8)));
        assert!(!scanner.scan(&frame(0x8, 4)));
        assert!(scanner.scan(&frame(0x0, 100)));
        assert_eq!(scanner.frames_completed, 3);
    }
}
