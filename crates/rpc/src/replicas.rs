//! [`Replicas`]: calling whichever server of a Raft group leads.
//!
//! Every replicated Cairn service (the key/value store, the shard
//! controller, the sharded store's groups) answers a request sent to a
//! follower with `FAILED_PRECONDITION` and, when it knows one, the leader's
//! id and URL in the metadata keys [`LEADER_ID_KEY`] and [`LEADER_URL_KEY`]
//! ([`not_leader`] builds that status). A clerk keeps one [`Replicas`]: it
//! remembers the last server that answered, follows a leader hint at once
//! (a leader it was not given is added to the servers it knows, up to
//! [`MAX_LEARNED_SERVERS`], so a clerk given one follower finds the
//! leader), otherwise tries the next server, and backs off once per round
//! of all servers (exponentially, from [`FIRST_PAUSE`] to [`MAX_PAUSE`],
//! each pause drawn at random from its upper half so that clients do not
//! retry in step), until a deadline. An answer that sending again cannot
//! change (an invalid or too large request, an unknown method) ends the
//! request at once.
//!
//! When every server it knows has refused the connection (nothing listens
//! there: the operating system answered at once) for
//! [`REFUSED_GIVE_UP`], a request ends with [`ReplicaError::Unreachable`]
//! instead of waiting out its deadline; a clerk that expects its servers
//! to be starting turns this off ([`Replicas::wait_while_refused`]). A
//! server that does not answer, a partition (the simulated network never
//! reports a refusal) or an election still gets the whole deadline.

use std::future::Future;
use std::sync::OnceLock;
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
/// The most servers a [`Replicas`] adds to those it was given, from leader
/// hints naming servers it did not know. When full, such a hint is not
/// followed: the next known server is tried, as for no hint.
pub const MAX_LEARNED_SERVERS: usize = 8;
/// How long a request goes on while every known server refuses the
/// connection, before it ends with [`ReplicaError::Unreachable`]: several
/// rounds of retries, so that servers just started (a launcher run at the
/// same moment: about half a second to listen on a busy machine) are
/// found, well short of a request's deadline.
pub const REFUSED_GIVE_UP: Duration = Duration::from_secs(2);

/// Metadata key naming the leader's id in a not-leader error.
pub const LEADER_ID_KEY: &str = "cairn-leader-id";
/// Metadata key naming the leader's URL in a not-leader error.
pub const LEADER_URL_KEY: &str = "cairn-leader-url";

/// The status a follower answers with: `FAILED_PRECONDITION`, naming the
/// leader when one is known, with its URL when this node has learned it
/// (a member that joined while this node was behind may be known by id
/// only: then a clerk, finding no URL in the metadata, tries its next
/// server).
pub fn not_leader(leader: Option<u64>, url: Option<&str>) -> Status {
    let message = match (leader, url) {
        (Some(id), Some(url)) => format!("not the leader; node {id} at {url} is"),
        (Some(id), None) => format!(
            "not the leader; node {id} is, at an address this node has not learned yet; retry shortly, or give that node's address in --endpoints"
        ),
        (None, _) => "not the leader, and no leader is known yet; retry shortly".into(),
    };
    let mut status = Status::failed_precondition(message);
    if let Some(id) = leader {
        if let Ok(value) = id.to_string().parse() {
            status.metadata_mut().insert(LEADER_ID_KEY, value);
        }
        if let Some(Ok(value)) = url.map(str::parse) {
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
    /// Every server refused the connection, again and again for
    /// [`REFUSED_GIVE_UP`]: nothing listens at any of the addresses.
    /// Nothing was applied.
    #[error(
        "nothing is listening at {}: every server refused the connection ({last}); check that the servers are running and that the addresses are theirs",
        .endpoints.join(", ")
    )]
    Unreachable {
        /// Every address tried.
        endpoints: Vec<String>,
        /// The operating system's reason for the last refusal.
        last: String,
    },
}

impl ReplicaError {
    /// The message, followed for [`Unreachable`](Self::Unreachable) by
    /// `hint`: what to start or pass, in the service's own terms. A clerk's
    /// error wraps this one and shows it so.
    pub fn with_hint(&self, hint: &str) -> String {
        match self {
            Self::Unreachable { .. } => format!("{self}; {hint}"),
            _ => self.to_string(),
        }
    }
}

/// The servers of one replicated group, and which of them to call first.
#[derive(Debug)]
pub struct Replicas {
    /// The servers given, then room for [`MAX_LEARNED_SERVERS`] learned
    /// from leader hints. Filled in order and never emptied, so the known
    /// servers are a prefix and a reference to one lives as long as `self`.
    servers: Vec<OnceLock<RpcClient>>,
    /// How many servers were given.
    given: usize,
    options: ClientOptions,
    leader: AtomicUsize,
    deadline: Duration,
    /// How long every server may refuse before a request ends; `None`:
    /// until the deadline.
    refused_give_up: Option<Duration>,
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
        let mut servers = endpoints
            .iter()
            .map(|url| {
                Ok(OnceLock::from(RpcClient::new(
                    url.clone(),
                    options.clone(),
                )?))
            })
            .collect::<Result<Vec<_>, RpcError>>()?;
        servers.resize_with(endpoints.len() + MAX_LEARNED_SERVERS, OnceLock::new);
        Ok(Self {
            servers,
            given: endpoints.len(),
            options,
            leader: 0.into(),
            deadline,
            refused_give_up: Some(REFUSED_GIVE_UP),
            jitter_state: AtomicU64::new(crate::seeded_rng().r#gen()),
        })
    }

    /// Turns off the early end of a request when every server refuses the
    /// connection: requests wait for a server until their deadline. For a
    /// clerk of servers that are starting (a launcher that has just spawned
    /// them).
    pub fn wait_while_refused(mut self) -> Self {
        self.refused_give_up = None;
        self
    }

    /// How many servers were given.
    pub fn len(&self) -> usize {
        self.given
    }

    /// Whether there are none (never: [`new`](Self::new) refuses that).
    pub fn is_empty(&self) -> bool {
        self.given == 0
    }

    /// Server `i`, in the order given (`i` < [`len`](Self::len)).
    pub fn server(&self, i: usize) -> &RpcClient {
        assert!(i < self.given, "server {i} of {} given", self.given);
        self.known(i).expect("the servers given are known")
    }

    /// Every server's address: those given, then those learned from
    /// leader hints.
    pub fn addresses(&self) -> Vec<String> {
        (0..self.count())
            .filter_map(|i| self.known(i))
            .map(|s| s.addr().to_string())
            .collect()
    }

    /// The deadline of one request.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Calls the server believed to lead, then others, until one answers
    /// or the deadline passes (or every server refuses the connection: see
    /// the module documentation). `call` may run several times: the
    /// request must be safe to repeat (a read, or a write carrying its
    /// client id and sequence number).
    pub async fn call_leader<'a, T, F, Fut>(&'a self, mut call: F) -> Result<T, ReplicaError>
    where
        F: FnMut(&'a RpcClient) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let started = tokio::time::Instant::now();
        let mut pause = FIRST_PAUSE;
        let mut refusals = Refusals::new(self.servers.len());
        // Hints followed since the last pause: two servers naming each
        // other (stale hints during an election) must not spin.
        let mut hops = 0;
        // The last error that was not a follower pointing at the leader:
        // what the request ends with, so a leader's own refusal (say, a
        // store in safemode) is reported rather than the redirect after it.
        let mut reason: Option<String> = None;
        loop {
            let index = self.leader.load(Relaxed) % self.count();
            let server = self.known(index).expect("the known servers are a prefix");
            let (error, hint) = match call(server).await {
                Ok(value) => return Ok(value),
                Err(RpcError::Rejected { status, .. }) => {
                    refusals.note(index, false, self.count());
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
                    (status.message().to_string(), self.hint(&status))
                }
                Err(RpcError::ConnectionRefused { reason, .. }) => {
                    refusals.note(index, true, self.count());
                    (reason, None)
                }
                Err(error) => {
                    refusals.note(index, false, self.count());
                    (error.to_string(), None)
                }
            };
            let last = match (&hint, &reason) {
                (Some(_), Some(reason)) => reason.clone(),
                (Some(_), None) => error,
                (None, _) => {
                    reason = Some(error.clone());
                    error
                }
            };
            if let Some(error) = self.give_up(started, &refusals, last) {
                return Err(error);
            }
            let n = self.count();
            match hint {
                Some(leader) if leader != index && hops < n => {
                    hops += 1;
                    self.leader.store(leader, Relaxed);
                    continue; // straight to the leader named
                }
                _ => self.leader.store((index + 1) % n, Relaxed),
            }
            // Back off once per round of all servers.
            if self.leader.load(Relaxed).is_multiple_of(n) || n == 1 {
                tokio::time::sleep(self.jitter(pause)).await;
                pause = (pause * 2).min(MAX_PAUSE);
                hops = 0;
            }
        }
    }

    /// The error that ends a request after a failed call (`last`, its
    /// error), if it is time to stop: every server has refused for long
    /// enough, or the deadline passed.
    fn give_up(
        &self,
        started: tokio::time::Instant,
        refusals: &Refusals,
        last: String,
    ) -> Option<ReplicaError> {
        let timed_out = started.elapsed() >= self.deadline;
        if let Some(refusing) = refusals.all_refusing(self.count())
            && (timed_out || self.refused_give_up.is_some_and(|limit| refusing >= limit))
        {
            return Some(ReplicaError::Unreachable {
                endpoints: self.addresses(),
                last,
            });
        }
        timed_out.then_some(ReplicaError::Timeout {
            after: self.deadline,
            last,
        })
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

    /// How many servers are known: those given and those learned.
    fn count(&self) -> usize {
        self.given
            + self.servers[self.given..]
                .iter()
                .take_while(|slot| slot.get().is_some())
                .count()
    }

    /// Known server `i`.
    fn known(&self, i: usize) -> Option<&RpcClient> {
        self.servers.get(i).and_then(OnceLock::get)
    }

    /// The index of the leader a not-leader status names, learning its
    /// address if it is new; `None` if it names none, or a new one when
    /// there is no room left to learn it.
    fn hint(&self, status: &Status) -> Option<usize> {
        if status.code() != Code::FailedPrecondition {
            return None;
        }
        let url = status.metadata().get(LEADER_URL_KEY)?.to_str().ok()?;
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        for (i, slot) in self.servers.iter().enumerate() {
            let server = match slot.get() {
                Some(server) => server,
                None => {
                    let client = RpcClient::new(url.clone(), self.options.clone()).ok()?;
                    // Another request may fill the slot first: then look
                    // at what it put there.
                    slot.get_or_init(|| client)
                }
            };
            if server.addr() == url {
                return Some(i);
            }
        }
        None
    }
}

/// Which known servers refused the connection when last tried, and since
/// when all of them have.
struct Refusals {
    refused: Vec<bool>,
    all_since: Option<tokio::time::Instant>,
}

impl Refusals {
    fn new(capacity: usize) -> Self {
        Self {
            refused: vec![false; capacity],
            all_since: None,
        }
    }

    /// Records the outcome of a call to server `index` of `known`.
    fn note(&mut self, index: usize, refused: bool, known: usize) {
        self.refused[index] = refused;
        if self.refused[..known].iter().all(|&r| r) {
            self.all_since.get_or_insert_with(tokio::time::Instant::now);
        } else {
            self.all_since = None;
        }
    }

    /// How long every one of the `known` servers has been refusing, if
    /// they all are.
    fn all_refusing(&self, known: usize) -> Option<Duration> {
        if self.refused[..known].iter().all(|&r| r) {
            self.all_since.map(|since| since.elapsed())
        } else {
            None
        }
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
mod tests;
