//! Binding a gRPC router to an address, port 0 included.

use std::net::SocketAddr;

use tonic::transport::server::Router;

/// The running server's task.
pub type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

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
    let addr = listener.local_addr()?;
    // Without TCP_NODELAY, small replies wait out the peer's delayed ACK
    // (40 ms on Linux).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok((addr, tokio::spawn(router.serve_with_incoming(incoming))))
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
