//! `--metrics-listen`: a node's metrics over HTTP, for Prometheus.
//!
//! A node's gRPC port speaks HTTP/2 only, and Prometheus scrapes over
//! HTTP/1.1, so the metrics get a listener of their own. The server is
//! deliberately tiny: it reads one request head (at most
//! [`MAX_REQUEST_BYTES`], within [`REQUEST_TIMEOUT`]), answers `GET
//! /metrics` with the node's series in the Prometheus text format
//! (`cairn_rsm::Node::scrape`), anything else with a 404 or 405 that says
//! where the metrics are, and closes the connection. At most
//! [`MAX_METRICS_CONNECTIONS`] are served at once; a connection beyond
//! that is closed unanswered (a scraper retries on its next interval).
//!
//! The listener is bound before the node starts, so a taken port fails the
//! command at once, with nothing started. It is off unless the flag is
//! given. The simulation build has no real sockets and refuses the flag.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The longest request head read; a longer one is answered 431.
pub(crate) const MAX_REQUEST_BYTES: usize = 8192;
/// How long a client may take to send its request head.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed accept before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The most scrapes served at once.
pub(crate) const MAX_METRICS_CONNECTIONS: usize = 16;

/// A bound metrics listener, not yet serving.
pub(crate) struct MetricsListener {
    listener: TcpListener,
}

impl MetricsListener {
    /// Binds `addr` (from `--metrics-listen`), or says why not and what to
    /// do.
    pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen for metrics on {addr} (--metrics-listen): the port is taken or \
                 the address is not this machine's; pick another --metrics-listen HOST:PORT, or \
                 leave the flag out to serve no metrics"
            )
        })?;
        Ok(Self { listener })
    }

    /// The address bound (its port, when 0 was asked for).
    pub(crate) fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves `GET /metrics` with what `scrape` renders, until the task is
    /// aborted.
    pub(crate) fn serve<F, Fut>(self, scrape: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send,
    {
        let scrape = Arc::new(scrape);
        let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = self.listener.accept().await else {
                    // Out of file descriptors, say: wait rather than spin.
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue; // full: the connection closes unanswered
                };
                let scrape = scrape.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = answer(stream, &*scrape).await;
                });
            }
        })
    }
}

/// Reads one request head and answers it.
async fn answer<F, Fut>(mut stream: TcpStream, scrape: &F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        Ok(Err(error)) => return Err(error),
        Err(_) => return Ok(()),
    };
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => respond(&mut stream, "200 OK", &scrape().await).await,
        ("GET", _) => {
            let hint = "not found: the metrics are at /metrics\n";
            respond(&mut stream, "404 Not Found", hint).await
        }
        _ => {
            let hint = "only GET is served: GET /metrics\n";
            respond(&mut stream, "405 Method Not Allowed", hint).await
        }
    }
}

/// The request head up to its blank line, or `None` when it is longer
/// than [`MAX_REQUEST_BYTES`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break; // the client closed its side: answer what came
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
