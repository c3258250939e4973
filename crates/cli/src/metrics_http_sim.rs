//! `--metrics-listen` in the simulation build: there are no real sockets
//! to serve HTTP on, so the flag is refused with the reason; the real
//! server is `metrics_http.rs`.

use std::future::Future;
use std::net::SocketAddr;

/// No listener can exist in the simulation build.
pub(crate) enum MetricsListener {}

impl MetricsListener {
    pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        anyhow::bail!(
            "--metrics-listen {addr}: the simulation build serves no metrics; use the normal build"
        )
    }

    pub(crate) fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        match *self {}
    }

    pub(crate) fn serve<F, Fut>(self, _scrape: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send,
    {
        match self {}
    }
}
