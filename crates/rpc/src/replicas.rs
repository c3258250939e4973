//! [`Replicas`]: calling whichever server of a Raft group leads.
//!
//! Every replicated Cairn service (the key/value store, the shard
//! controller, the sharded store's groups) answers a request sent to a
//! follower with `FAILED_PRECONDITION` and, when it knows one, the leader's
//! id and URL in the metadata keys [`LEADER_ID_KEY`] and [`LEADER_URL_KEY`]
//! ([`not_leader`] builds that status). A clerk keeps one [`Replicas`]: it
//! remembers the last server that answered, follows a leader hint at once,
//! otherwise tries the next server, and backs off once per round of all
//! servers, until a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::{ClientOptions, RpcClient, RpcError};

/// Metadata key naming the leader's id in a not-leader error.
pub const LEADER_ID_KEY: &str = "cairn-leader-id";
/// Metadata key naming the leader's URL in a not-leader error.
pub const LEADER_URL_KEY: &str = "cairn-leader-url";

/// The status a follower answers with: `FAILED_PRECONDITION`, naming the
/// leader (`Some((id, url))`) when one is known.
pub fn not_leader(leader: Option<(u64, &str)>) -> Status {
    let message = match leader {
        Some((id, url)) => format!("not the leader; node {id} at {url} is"),
        None => "not the leader, and no leader is known yet; retry shortly".into(),
    };
    let mut status = Status::failed_precondition(message);
    if let Some((id, url)) = leader {
        if let Ok(value) = id.to_string().parse() {
            status.metadata_mut().insert(LEADER_ID_KEY, value);
        }
        if let Ok(value) = url.parse() {
            status.metadata_mut().insert(LEADER_URL_KEY, value);
        }
    }
    status
}

/// Why [`Replicas::call_leader`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// A server rejected the request as invalid (`INVALID_ARGUMENT`):
    /// nothing was applied, and sending it again will not help.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// No server completed the request within the deadline.
    #[error(
        "no server completed the request within {after:?} ({last}); check that the cluster is running and has a leader"
    )]
    Timeout {
        /// The deadline.
        after: Duration,
        /// The last error seen.
        last: String,
    },
}

/// The servers of one replicated group, and which of them to call first.
#[derive(Debug)]
pub struct Replicas {
    servers: Vec<RpcClient>,
    leader: AtomicUsize,
    deadline: Duration,
}

impl Replicas {
    /// The servers at `endpoints`; each call to one of them may take
    /// `call_timeout`, a whole request with its retries `deadline`.
    pub fn new(
        endpoints: &[String],
        call_timeout: Duration,
        deadline: Duration,
    ) -> Result<Self, RpcError> {
        if endpoints.is_empty() {
            return Err(RpcError::InvalidAddress {
                addr: String::new(),
                reason: "no endpoints given".into(),
            });
        }
        let options = ClientOptions {
            connect_timeout: call_timeout,
            call_timeout,
        };
        let servers = endpoints
            .iter()
            .map(|url| RpcClient::new(url.clone(), options.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            servers,
            leader: 0.into(),
            deadline,
        })
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are none (never: [`new`](Self::new) refuses that).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Server `i`, in the order given.
    pub fn server(&self, i: usize) -> &RpcClient {
        &self.servers[i]
    }

    /// The deadline of one request.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Calls the server believed to lead, then others, until one answers
    /// or the deadline passes. `call` may run several times: the request
    /// must be safe to repeat (a read, or a write carrying its client id
    /// and sequence number).
    pub async fn call_leader<'a, T, F, Fut>(&'a self, mut call: F) -> Result<T, ReplicaError>
    where
        F: FnMut(&'a RpcClient) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        let n = self.servers.len();
        loop {
            let index = self.leader.load(Relaxed) % n;
            let (error, hint) = match call(&self.servers[index]).await {
                Ok(value) => return Ok(value),
                Err(RpcError::Rejected { status, .. }) => match status.code() {
                    Code::InvalidArgument => {
                        return Err(ReplicaError::InvalidArgument(status.message().into()));
                    }
                    Code::FailedPrecondition => {
                        let hint = status
                            .metadata()
                            .get(LEADER_URL_KEY)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|url| self.position(url));
                        (status.message().to_string(), hint)
                    }
                    _ => (status.message().to_string(), None),
                },
                Err(error) => (error.to_string(), None),
            };
            if started.elapsed() >= self.deadline {
                return Err(ReplicaError::Timeout {
                    after: self.deadline,
                    last: error,
                });
            }
            match hint {
                Some(leader) if leader != index => {
                    self.leader.store(leader, Relaxed);
                    continue; // straight to the leader named
                }
                _ => self.leader.store((index + 1) % n, Relaxed),
            }
            // Back off once per round of all servers.
            if self.leader.load(Relaxed).is_multiple_of(n) || n == 1 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }

    /// [`call_leader`](Self::call_leader) for one unary call: sends
    /// `request` through `stub` (a generated client's method) to the server
    /// believed to lead, then to others, until one answers or the deadline
    /// passes.
    pub async fn request<Req, Resp, F, Fut>(
        &self,
        request: Req,
        stub: F,
    ) -> Result<Resp, ReplicaError>
    where
        Req: prost::Message + Clone,
        Resp: prost::Message,
        F: Fn(Channel, tonic::Request<Req>) -> Fut + Clone,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call_leader(|server| {
            let (request, stub) = (request.clone(), stub.clone());
            async move { server.call(request, stub).await }
        })
        .await
    }

    fn position(&self, url: &str) -> Option<usize> {
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        self.servers.iter().position(|s| s.addr() == url)
    }
}
