//! Binding a gRPC router to an address, port 0 included.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::server::Router;

/// The running server's task.
pub type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Connections one server holds at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a new connection may take to send its HTTP/2 preface.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may carry no request before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Requests one server runs at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// The limits of one server.
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
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
        }
    }
}

/// Binds `listen` (port 0 picks a free port) and serves `router` on it.
/// Returns the bound address.
#[cfg(not(madsim))]
pub async fn serve(
    router: Router,
    listen: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {listen}: {e}; pick another address or port"),
        )
    })?;
    serve_on(router, listener)
}

/// Serves `router` on a listener the caller bound already (so that it knows
/// the port before the server runs). Returns the bound address.
#[cfg(not(madsim))]
pub fn serve_on(
    router: Router,
    listener: tokio::net::TcpListener,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    serve_on_with(router, listener, &ServeOptions::default())
}

/// [`serve_on`] with limits other than the defaults.
#[cfg(not(madsim))]
pub fn serve_on_with(
    router: Router,
    listener: tokio::net::TcpListener,
    _options: &ServeOptions,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    let addr = listener.local_addr()?;
    // Without TCP_NODELAY, small replies wait out the peer's delayed ACK
    // (40 ms on Linux).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok((addr, tokio::spawn(router.serve_with_incoming(incoming))))
}

/// Serves `routes` with every limit of `options`.
#[cfg(not(madsim))]
pub fn serve_routes_on(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    options: &ServeOptions,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    let router = tonic::transport::Server::builder().add_routes(routes);
    serve_on_with(router, listener, options)
}

/// Serves `router` on `listen` in the simulator (port 0 is not supported
/// there: simulated nodes use fixed ports).
#[cfg(madsim)]
pub async fn serve(
    router: Router,
    listen: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerTask)> {
    assert_ne!(listen.port(), 0, "simulated servers need a fixed port");
    Ok((listen, tokio::spawn(router.serve(listen))))
}
