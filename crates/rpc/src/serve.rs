//! Serving gRPC on a TCP port (port 0 included), within bounds.
//!
//! A real server protects itself from its clients:
//!
//! - At most [`MAX_CONNECTIONS`] connections are open at once. When they
//!   are all taken, a new connection is accepted and closed at once (the
//!   client sees the connection reset before its HTTP/2 handshake and
//!   retries): nothing waits in a queue of ours, and the kernel's listen
//!   backlog holds the rest.
//! - A connection must complete its HTTP/2 preface and first SETTINGS frame
//!   within [`HANDSHAKE_TIMEOUT`], and is closed after [`IDLE_TIMEOUT`]
//!   without a request or a response frame. TCP keepalive probes the peer
//!   of a quiet connection, so a vanished host does not hold a slot.
//! - With `serve_routes_on`, at most [`MAX_CONCURRENT_REQUESTS`] client
//!   requests run at once. A request beyond them is answered at once with
//!   `RESOURCE_EXHAUSTED` and a message that starts with `overloaded:`;
//!   the client should retry with back-off. Raft messages between peers
//!   have their own pool of [`MAX_CONCURRENT_PEER_REQUESTS`], so that a
//!   client flood cannot depose the leader. HTTP/2 keepalive pings
//!   ([`HTTP2_KEEPALIVE_INTERVAL`]) find dead peers of busy connections.
//!
//! [`serve`] and [`serve_on`] take a ready-made tonic `Router`, whose
//! service stack and HTTP/2 settings are fixed when it is built: they apply
//! the connection limits but not the request bound or the keepalive pings.
//! Pass `Routes` to `serve_routes_on` for every limit.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::server::Router;

/// The running server's task.
pub type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Connections one server holds open at once; a connection beyond them is
/// closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a new connection may take to send its HTTP/2 preface and first
/// SETTINGS frame before it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may carry no request or response before it is
/// closed (an abrupt close: a request that races with it fails with
/// `UNAVAILABLE` and is retried by the client).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Client requests one server runs at once (with `serve_routes_on`); a
/// request beyond them is answered `RESOURCE_EXHAUSTED` ("overloaded: ...")
/// at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Streams (requests) one HTTP/2 connection may have open at once (with
/// `serve_routes_on`), announced in the server's SETTINGS: a client
/// holds further requests until a stream ends, and a stream opened beyond
/// it is refused (`REFUSED_STREAM`, retried by the client's HTTP/2 layer).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Raft requests from peers one server runs at once, apart from client
/// requests; one beyond them is answered "overloaded" too (Raft resends).
pub const MAX_CONCURRENT_PEER_REQUESTS: usize = 256;
/// How often the server pings a connection's peer (with
/// `serve_routes_on`).
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/2 flow-control windows, each way: how much one stream (one call)
/// and one connection may have in flight before the receiver acknowledges.
/// The protocol's default (64 KiB) makes a 4 MiB chunk read or push wait
/// for dozens of window updates; these let it go through in one stretch.
/// They are credit, not buffers: nothing is allocated until data arrives,
/// and every message is still bounded by its decoding limit.
#[cfg(not(madsim))]
pub(crate) const HTTP2_STREAM_WINDOW_BYTES: u32 = 4 << 20;
#[cfg(not(madsim))]
pub(crate) const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// The largest HTTP/2 frame each side accepts. The protocol's default
/// (16 KiB) cuts a 4 MiB chunk read into 256 frames, each parsed, counted
/// against the windows and copied on its own; 1 MiB frames cut it into 4.
/// A frame is bounded by the windows above and by each message's decoding
/// limit as well.
#[cfg(not(madsim))]
pub(crate) const HTTP2_MAX_FRAME_BYTES: u32 = 1 << 20;

/// The limits of one server; [`Default`] gives the named constants. Tests
/// shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`MAX_CONCURRENT_REQUESTS`].
    pub max_concurrent_requests: usize,
    /// See [`MAX_CONCURRENT_PEER_REQUESTS`].
    pub max_concurrent_peer_requests: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
            max_concurrent_peer_requests: MAX_CONCURRENT_PEER_REQUESTS,
        }
    }
}

/// Binds `listen` (port 0 picks a free port) and serves `router` on it with
/// the default connection limits. Returns the bound address.
#[cfg(not(madsim))]
pub async fn serve(
    router: Router,
    listen: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    serve_on(router, bind(listen).await?)
}

/// Serves `router` on a listener the caller bound already (so that it knows
/// the port before the server runs), with the default connection limits.
/// Returns the bound address.
#[cfg(not(madsim))]
pub fn serve_on(
    router: Router,
    listener: tokio::net::TcpListener,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    serve_on_with(router, listener, &ServeOptions::default())
}

/// [`serve_on`] with the connection limits of `options` (a `Router` cannot
/// take the request bound: see `serve_routes_on`).
#[cfg(not(madsim))]
pub fn serve_on_with(
    router: Router,
    listener: tokio::net::TcpListener,
    options: &ServeOptions,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    let addr = listener.local_addr()?;
    let incoming = crate::connection::GuardedIncoming::new(listener, options);
    Ok((addr, tokio::spawn(router.serve_with_incoming(incoming))))
}

/// Binds `listen` and serves `routes` with every limit of `options`.
#[cfg(not(madsim))]
pub async fn serve_routes(
    routes: tonic::service::Routes,
    listen: SocketAddr,
    options: &ServeOptions,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    serve_routes_on(routes, bind(listen).await?, options)
}

/// Serves `routes` on a bound listener with every limit of `options`: the
/// connection limits, the request bound and HTTP/2 keepalive pings.
#[cfg(not(madsim))]
pub fn serve_routes_on(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    options: &ServeOptions,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    let addr = listener.local_addr()?;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .max_frame_size(HTTP2_MAX_FRAME_BYTES)
        .layer(crate::overload::OverloadLayer::new(options))
        .add_routes(routes);
    let incoming = crate::connection::GuardedIncoming::new(listener, options);
    Ok((addr, tokio::spawn(router.serve_with_incoming(incoming))))
}

#[cfg(not(madsim))]
async fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {listen}: {e}; pick another address or port"),
        )
    })
}

/// Serves `router` on `listen` in the simulator (port 0 is not supported
/// there: simulated nodes use fixed ports). The simulated network has no
/// sockets to guard: the limits do not apply.
#[cfg(madsim)]
pub async fn serve(
    router: Router,
    listen: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    assert_ne!(listen.port(), 0, "simulated servers need a fixed port");
    Ok((listen, tokio::spawn(router.serve(listen))))
}
