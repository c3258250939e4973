//! [`Client`]: the sharded store's clerk. It routes each key to the group
//! that serves its shard in the latest configuration it knows, finds that
//! group's leader, and asks the controller again when a group answers
//! "wrong group" or cannot be reached, backing off (jittered, doubling
//! from [`FIRST_ROUTE_PAUSE`] to [`MAX_ROUTE_PAUSE`]) between rounds.
//!
//! Its client id comes from the controller's `Register` (unique and
//! increasing). A shard that may have forgotten the client answers
//! "session expired" without applying the write; the clerk then registers
//! again. If no earlier attempt of the write could have been applied (its
//! only attempts were that answer and "wrong group" answers), it sends the
//! write once more under the new id; otherwise the outcome is unknown and
//! it reports [`ShardKvError::SessionExpired`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
use cairn_rpc::shardkv::{GetRequest, Op, WriteReply, WriteRequest};
use cairn_rpc::tonic::transport::Channel;
use cairn_rpc::{ReplicaError, Replicas, RpcError};
use cairn_shardctrler::{Config, CtrlerError, Gid};
use rand::Rng;
use rand::rngs::StdRng;

use crate::ShardOf;
use cairn_rpc::kv_limits::{MAX_MESSAGE_BYTES, MAX_VALUE_BYTES, check_key_value};

/// The first pause between two rounds of asking the controller.
const FIRST_ROUTE_PAUSE: Duration = Duration::from_millis(25);
/// The longest pause between two rounds of asking the controller.
const MAX_ROUTE_PAUSE: Duration = Duration::from_millis(400);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardKvError {
    /// The groups or the controllers did not complete the request, or it
    /// is invalid (empty or oversized key, oversized value: checked here
    /// before sending): see [`ReplicaError`]. A group that answers "wrong
    /// group" or cannot be reached is not an error by itself: the clerk
    /// asks the controllers again until the deadline, and a timeout's
    /// `last` names the group or the controller that failed last. After a
    /// timeout a write may or may not have been applied; retrying it
    /// through the same client is safe.
    #[error("{}", .0.with_hint(UNREACHABLE_HINT))]
    Replica(#[from] ReplicaError),
    /// A shard forgot this client's session while a write's outcome was
    /// unknown: it may have been applied once, or not at all. The client's
    /// next write registers a new session.
    #[error(
        "the key's shard forgot this client's session while the write's outcome was unknown (it was applied once or not at all); read the key before writing it again"
    )]
    SessionExpired,
    /// An append would have grown the value past the value limit; nothing
    /// was changed.
    #[error(
        "the append would make the value longer than {limit} bytes, the value limit; nothing was changed: append less, or split the data over several keys"
    )]
    ValueTooLarge {
        /// The value limit in bytes.
        limit: usize,
    },
    /// A controller answered, but not as a shard controller should (no
    /// session, no configuration); nothing was applied. (Its
    /// [`ReplicaError`]s become [`Replica`](Self::Replica), never this.)
    #[error("{0}; check that --endpoints names the shard controllers")]
    Controller(CtrlerError),
    /// The addresses given are unusable.
    #[error("bad endpoint: {0}")]
    BadEndpoint(String),
}

/// What to do when nothing listens at the controllers' addresses.
const UNREACHABLE_HINT: &str = "are the shard controllers running? Start a sharded cluster with `cairn cluster --sharded`, or pass --endpoints with the controllers' addresses";

impl From<CtrlerError> for ShardKvError {
    fn from(error: CtrlerError) -> Self {
        match error {
            CtrlerError::Replica(ReplicaError::Timeout { after, last }) => {
                Self::Replica(ReplicaError::Timeout {
                    after,
                    last: format!("controller: {last}"),
                })
            }
            CtrlerError::Replica(error) => Self::Replica(error),
            CtrlerError::BadEndpoint(message) => Self::BadEndpoint(message),
            error => Self::Controller(error),
        }
    }
}

/// Timeouts of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one call to one server may take.
    pub call_timeout: Duration,
    /// How long one attempt at one group may take before the clerk asks
    /// the controller again.
    pub group_timeout: Duration,
    /// How long a request may take in all.
    pub deadline: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            group_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(15),
        }
    }
}

/// A sharded-store clerk. Writes take `&mut self` (one outstanding write:
/// its sequence number); so do reads, which may refresh the configuration.
#[derive(Debug)]
pub struct Client {
    controller: cairn_shardctrler::Client,
    config: Config,
    groups: BTreeMap<Vec<String>, Arc<Replicas>>,
    shard_of: ShardOf,
    /// The session's id from the controller; `None` before the first write
    /// and after a shard said the session expired.
    client_id: Option<u64>,
    seq: u64,
    settings: ClientConfig,
    /// For the jitter of the pauses between rounds (boxed: a clerk stays
    /// small).
    rng: Box<StdRng>,
}

enum Outcome<T> {
    Done(T),
    WrongGroup,
}

impl Client {
    /// A clerk for the controllers at `controllers`, mapping keys to shards
    /// with `shard_of` (the servers' function).
    pub fn new(
        controllers: &[String],
        shard_of: ShardOf,
        settings: ClientConfig,
    ) -> Result<Self, ShardKvError> {
        let controller = cairn_shardctrler::Client::new(
            controllers,
            settings.call_timeout,
            settings.group_timeout,
        )
        .map_err(|e| ShardKvError::BadEndpoint(e.to_string()))?;
        Ok(Self {
            controller,
            config: Config::default(),
            groups: BTreeMap::new(),
            shard_of,
            client_id: None,
            seq: 0,
            settings,
            rng: Box::new(cairn_rpc::seeded_rng()),
        })
    }

    /// The value of `key`, or `None` if it is missing. Linearizable.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ShardKvError> {
        check(key, None)?;
        let request = GetRequest {
            key: Bytes::copy_from_slice(key),
        };
        self.route(key, |group| {
            let request = request.clone();
            async move {
                let reply = group
                    .request(request, |c, r| async move { stub(c).get(r).await })
                    .await?;
                Ok(if reply.wrong_group {
                    Outcome::WrongGroup
                } else {
                    Outcome::Done(reply.found.then_some(reply.value))
                })
            }
        })
        .await
    }

    /// Sets `key` to `value`; returns whether the key existed.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<bool, ShardKvError> {
        self.write(Op::Put, key, value).await
    }

    /// Appends `value` to `key`'s value (a missing key counts as empty).
    pub async fn append(&mut self, key: &[u8], value: &[u8]) -> Result<bool, ShardKvError> {
        self.write(Op::Append, key, value).await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool, ShardKvError> {
        self.write(Op::Delete, key, b"").await
    }

    async fn write(&mut self, op: Op, key: &[u8], value: &[u8]) -> Result<bool, ShardKvError> {
        check(key, (op != Op::Delete).then_some(value))?;
        let mut request = WriteRequest {
            op: op as i32,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            ..WriteRequest::default()
        };
        // At most once more, under a new session, and only when the write
        // was certainly not applied (see the module documentation).
        for resent in [false, true] {
            let client_id = match self.client_id {
                Some(id) => id,
                None => {
                    let id = self.controller.register().await?;
                    (self.client_id, self.seq) = (Some(id), 0);
                    id
                }
            };
            self.seq += 1;
            (request.client_id, request.seq) = (client_id, self.seq);
            // Attempts that may have been applied: every call but those
            // answered "wrong group".
            let attempts = Arc::new(AtomicUsize::new(0));
            let reply = self.send_write(&request, &attempts).await?;
            if reply.session_expired {
                self.client_id = None;
                if attempts.load(Relaxed) == 1 && !resent {
                    continue;
                }
                return Err(ShardKvError::SessionExpired);
            }
            if reply.value_too_large {
                return Err(ShardKvError::ValueTooLarge {
                    limit: MAX_VALUE_BYTES,
                });
            }
            return Ok(reply.previous_found);
        }
        Err(ShardKvError::SessionExpired)
    }

    /// Routes one write until a group answers it, counting in `attempts`
    /// the calls that may have applied it.
    async fn send_write(
        &mut self,
        request: &WriteRequest,
        attempts: &Arc<AtomicUsize>,
    ) -> Result<WriteReply, ShardKvError> {
        let key = request.key.clone();
        self.route(&key, |group| {
            let (request, attempts) = (request.clone(), attempts.clone());
            async move {
                let counter = attempts.clone();
                let reply = group
                    .request(request, move |c, r| {
                        counter.fetch_add(1, Relaxed);
                        async move { stub(c).write(r).await }
                    })
                    .await?;
                Ok(if reply.wrong_group {
                    attempts.fetch_sub(1, Relaxed);
                    Outcome::WrongGroup
                } else {
                    Outcome::Done(reply)
                })
            }
        })
        .await
    }

    /// Sends the request to the group serving `key`'s shard; on "wrong
    /// group", an unreachable group or no group, asks the controller for
    /// the latest configuration and tries again, until the deadline.
    async fn route<T, F, Fut>(&mut self, key: &[u8], mut call: F) -> Result<T, ShardKvError>
    where
        F: FnMut(Arc<Replicas>) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome<T>, ReplicaError>>,
    {
        let started = tokio::time::Instant::now();
        let mut pause = FIRST_ROUTE_PAUSE;
        let mut last = String::from("no configuration yet");
        loop {
            if !self.config.shards.is_empty() {
                let shard = (self.shard_of)(key, self.config.shards.len());
                let gid: Gid = self.config.shards[shard];
                if let Some(servers) = self.config.groups.get(&gid).cloned() {
                    let group = self.group(&servers)?;
                    match call(group).await {
                        Ok(Outcome::Done(value)) => return Ok(value),
                        Ok(Outcome::WrongGroup) => {
                            last = format!("group {gid} does not serve shard {shard} (yet)")
                        }
                        Err(
                            error @ (ReplicaError::InvalidArgument(_)
                            | ReplicaError::Refused { .. }),
                        ) => return Err(error.into()),
                        Err(ReplicaError::Timeout { last: error, .. }) => {
                            last = format!("group {gid}: {error}");
                        }
                        Err(error @ ReplicaError::Unreachable { .. }) => {
                            // The group may have moved: ask the controller.
                            last = format!("group {gid}: {error}");
                        }
                    }
                } else {
                    last = format!("no group serves shard {shard}");
                }
            }
            if started.elapsed() >= self.settings.deadline {
                return Err(ShardKvError::Replica(ReplicaError::Timeout {
                    after: self.settings.deadline,
                    last,
                }));
            }
            if !self.config.shards.is_empty() {
                let jittered = pause / 2 + pause.mul_f64(self.rng.gen_range(0.0..0.5));
                tokio::time::sleep(jittered).await;
                pause = (pause * 2).min(MAX_ROUTE_PAUSE);
            }
            match self.controller.query(None).await {
                Ok(config) => self.config = config,
                Err(
                    error @ (CtrlerError::Rejected(_)
                    | CtrlerError::Replica(
                        ReplicaError::InvalidArgument(_) | ReplicaError::Refused { .. },
                    )),
                ) => return Err(error.into()),
                Err(error) => last = format!("controller: {error}"),
            }
        }
    }

    fn group(&mut self, servers: &[String]) -> Result<Arc<Replicas>, ShardKvError> {
        if let Some(group) = self.groups.get(servers) {
            return Ok(group.clone());
        }
        let group = Arc::new(
            Replicas::new(
                servers,
                self.settings.call_timeout,
                self.settings.group_timeout,
            )
            .map_err(|e: RpcError| ShardKvError::BadEndpoint(e.to_string()))?,
        );
        self.groups.insert(servers.to_vec(), group.clone());
        Ok(group)
    }
}

/// Checks a request against the limits before it is sent, in the servers'
/// words: a value far over them cannot even be sent (a message over
/// [`MAX_MESSAGE_BYTES`] fails in the transport, like a broken connection).
fn check(key: &[u8], value: Option<&[u8]>) -> Result<(), ShardKvError> {
    check_key_value(key, value)
        .map_err(|error| ReplicaError::InvalidArgument(error.to_string()).into())
}

/// A generated client whose message limits are the servers'.
fn stub(channel: Channel) -> ShardKvClient<Channel> {
    ShardKvClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_errors_become_the_clerks_with_what_to_do_next() {
        let unreachable = ReplicaError::Unreachable {
            endpoints: vec!["http://127.0.0.1:1".into()],
            last: "connection refused".into(),
        };
        let error = ShardKvError::from(CtrlerError::Replica(unreachable.clone()));
        assert_eq!(error, ShardKvError::Replica(unreachable));
        assert!(
            error
                .to_string()
                .contains("are the shard controllers running?"),
            "{error}"
        );

        let timeout = CtrlerError::Replica(ReplicaError::Timeout {
            after: Duration::from_secs(1),
            last: "deadline".into(),
        });
        let error = ShardKvError::from(timeout);
        assert!(
            matches!(&error, ShardKvError::Replica(ReplicaError::Timeout { last, .. }) if last == "controller: deadline"),
            "{error:?}"
        );

        let error = ShardKvError::from(CtrlerError::Rejected("no session".into()));
        assert!(matches!(error, ShardKvError::Controller(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("--endpoints names the shard controllers"),
            "{error}"
        );
    }
}
