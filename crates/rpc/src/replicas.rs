//! [`Replicas`]: calling whichever server of a Raft group leads.
//!
//! Every replicated Cairn service (the key/value store, the shard
//! controller, the sharded store's groups) answers a request sent to a
//! follower with `FAILED_PRECONDITION` and, when it knows one, the leader's
//! id and URL in the metadata keys [`LEADER_ID_KEY`] and [`LEADER_URL_KEY`]
//! ([`not_leader`] builds that status). A clerk keeps one [`Replicas`]: it
//! remembers the last server that answered, follows a leader hint at once,
//! otherwise tries the next server, and backs off once per round of all
//! servers (exponentially, from [`FIRST_PAUSE`] to [`MAX_PAUSE`], each
//! pause drawn at random from its upper half so that clients do not retry
//! in step), until a deadline. An answer that sending again cannot change
//! (an invalid or too large request, an unknown method) ends the request at
//! once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use rand::Rng;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::{ClientOptions, RpcClient, RpcError};

/// The first pause after a round of all servers failed.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between rounds.
const MAX_PAUSE: Duration = Duration::from_millis(500);

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
    /// A server refused the request with a status that sending it again
    /// will not change (`OUT_OF_RANGE`: a message over a size limit;
    /// `UNIMPLEMENTED`: a server without this method;
    /// `PERMISSION_DENIED`, `UNAUTHENTICATED`).
    #[error("the server refused the request ({code:?}: {message}); retrying it will not help")]
    Refused {
        /// The status code.
        code: Code,
        /// The server's (or the transport's) message.
        message: String,
    },
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
    /// For the jitter of the pauses: a SplitMix64 state, seeded from
    /// [`seeded_rng`](crate::seeded_rng) (small, and no lock to draw).
    jitter_state: AtomicU64,
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
            jitter_state: AtomicU64::new(crate::seeded_rng().r#gen()),
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
        let mut pause = FIRST_PAUSE;
        let n = self.servers.len();
        loop {
            let index = self.leader.load(Relaxed) % n;
            let (error, hint) = match call(&self.servers[index]).await {
                Ok(value) => return Ok(value),
                Err(RpcError::Rejected { status, .. }) => {
                    if let Some(error) = final_error(&status) {
                        return Err(error);
                    }
                    if status.code() == Code::ResourceExhausted {
                        // The leader is overloaded: stay with it and back
                        // off, rather than add load on the followers.
                        if started.elapsed() >= self.deadline {
                            return Err(ReplicaError::Timeout {
                                after: self.deadline,
                                last: status.message().to_string(),
                            });
                        }
                        tokio::time::sleep(self.jitter(pause)).await;
                        pause = (pause * 2).min(MAX_PAUSE);
                        continue;
                    }
                    let hint = (status.code() == Code::FailedPrecondition)
                        .then(|| status.metadata().get(LEADER_URL_KEY))
                        .flatten()
                        .and_then(|v| v.to_str().ok())
                        .and_then(|url| self.position(url));
                    (status.message().to_string(), hint)
                }
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
                tokio::time::sleep(self.jitter(pause)).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }

    /// A pause drawn uniformly from the upper half of `pause`.
    pub fn jitter(&self, pause: Duration) -> Duration {
        // SplitMix64: one step of a Weyl sequence, then a mix.
        let mut x = self
            .jitter_state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        // The top 53 bits as a fraction in [0, 1).
        let fraction = (x >> 11) as f64 / (1u64 << 53) as f64;
        pause / 2 + pause.mul_f64(fraction / 2.0)
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

/// The error that ends a request at once for a status no retry can change,
/// or `None` for a status worth retrying (not the leader, unavailable, a
/// timeout, an internal error that another server may not have).
fn final_error(status: &Status) -> Option<ReplicaError> {
    match status.code() {
        Code::InvalidArgument => Some(ReplicaError::InvalidArgument(status.message().into())),
        code @ (Code::OutOfRange
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated) => Some(ReplicaError::Refused {
            code,
            message: status.message().into(),
        }),
        _ => None,
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn replicas(deadline: Duration) -> Replicas {
        let endpoints = ["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        Replicas::new(&endpoints, Duration::from_millis(100), deadline).unwrap()
    }

    fn rejected(code: Code) -> RpcError {
        RpcError::Rejected {
            addr: "x".into(),
            status: Status::new(code, "decoded message length too large"),
        }
    }

    #[tokio::test]
    async fn a_status_no_retry_can_change_ends_the_request_at_once() {
        let servers = replicas(Duration::from_secs(30));
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = servers
            .call_leader(|_| {
                calls.fetch_add(1, Relaxed);
                async { Err(rejected(Code::OutOfRange)) }
            })
            .await;
        assert!(
            matches!(
                result,
                Err(ReplicaError::Refused {
                    code: Code::OutOfRange,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(calls.load(Relaxed), 1, "the request was retried");
    }

    #[tokio::test]
    async fn a_retryable_status_is_retried_with_growing_pauses_until_the_deadline() {
        let servers = replicas(Duration::from_millis(300));
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = servers
            .call_leader(|_| {
                calls.fetch_add(1, Relaxed);
                async { Err(rejected(Code::Unavailable)) }
            })
            .await;
        assert!(
            matches!(result, Err(ReplicaError::Timeout { .. })),
            "{result:?}"
        );
        // Pauses of 2.5-5, 5-10, 10-20, ... ms per round of two servers: a
        // handful of rounds in 300 ms, not a tight loop.
        let calls = calls.load(Relaxed);
        assert!((4..=30).contains(&calls), "{calls} calls in 300 ms");
    }

    /// An overloaded leader is retried in place with growing pauses: the
    /// clerk neither spins nor moves its load to the followers.
    #[tokio::test]
    async fn an_overloaded_server_is_retried_in_place_with_back_off() {
        let servers = replicas(Duration::from_millis(300));
        let calls = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let result: Result<(), _> = servers
            .call_leader(|client| {
                let which = usize::from(client.addr().ends_with(":2"));
                calls[which].fetch_add(1, Relaxed);
                async { Err(rejected(Code::ResourceExhausted)) }
            })
            .await;
        assert!(
            matches!(result, Err(ReplicaError::Timeout { .. })),
            "{result:?}"
        );
        let (first, second) = (calls[0].load(Relaxed), calls[1].load(Relaxed));
        assert_eq!(second, 0, "the load moved to another server");
        assert!((3..=30).contains(&first), "{first} calls in 300 ms");
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let servers = replicas(Duration::from_secs(1));
        for _ in 0..100 {
            let pause = servers.jitter(Duration::from_millis(100));
            assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100));
        }
    }
}
