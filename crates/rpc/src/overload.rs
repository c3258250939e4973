//! The server-wide bound on requests in flight: a tower layer that answers
//! a request beyond [`MAX_CONCURRENT_REQUESTS`](crate::MAX_CONCURRENT_REQUESTS)
//! at once with `RESOURCE_EXHAUSTED` ("overloaded: ..."), instead of
//! queueing it. Raft messages between peers count against a pool of their
//! own, [`MAX_CONCURRENT_PEER_REQUESTS`](crate::MAX_CONCURRENT_PEER_REQUESTS).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;

/// The Raft service's path prefix. Raft messages between the nodes of a
/// group have their own pool: refusing heartbeats under a client flood
/// would depose the leader and make the overload worse. (Honest peers keep
/// one long-lived stream open each.)
pub(crate) const RAFT_PATH_PREFIX: &str = "/cairn.raft.";

/// What an overloaded server answers; clients should retry after a pause.
pub(crate) const OVERLOADED_MESSAGE_PREFIX: &str = "overloaded:";

/// Wraps every service of a server in [`Overload`].
#[derive(Debug, Clone)]
pub(crate) struct OverloadLayer {
    clients: Pool,
    peers: Pool,
}

/// One bound: its permits and their number.
#[derive(Debug, Clone)]
struct Pool {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Pool {
    fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl OverloadLayer {
    pub(crate) fn new(options: &crate::ServeOptions) -> Self {
        Self {
            clients: Pool::new(options.max_concurrent_requests),
            peers: Pool::new(options.max_concurrent_peer_requests),
        }
    }
}

impl<S> tower_layer::Layer<S> for OverloadLayer {
    type Service = Overload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Overload {
            inner,
            clients: self.clients.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// Runs a request while it holds one of the server's permits; answers
/// `overloaded` when there is none left.
#[derive(Debug, Clone)]
pub(crate) struct Overload<S> {
    inner: S,
    clients: Pool,
    peers: Pool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for Overload<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let pool = if request.uri().path().starts_with(RAFT_PATH_PREFIX) {
            &self.peers
        } else {
            &self.clients
        };
        match pool.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                let status = overloaded(pool.max);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The answer to a request beyond the bound.
fn overloaded(max: usize) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "{OVERLOADED_MESSAGE_PREFIX} the server is running its limit of {max} requests; \
         retry after a pause, doubling it on each refusal (exponential back-off)"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_answer_says_overloaded_and_what_to_do() {
        let status = super::overloaded(7);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().starts_with("overloaded:"));
        assert!(status.message().contains("retry"));
    }
}
