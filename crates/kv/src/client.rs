//! [`Client`]: the clerk. It finds the leader, retries across servers with
//! back-off, opens a session with the cluster, and numbers its writes so
//! that a retried write is applied once.
//!
//! ## When the session expires
//!
//! The cluster forgets the least recently active of too many sessions, and
//! answers the next write of a forgotten client "session expired" without
//! applying it. What the clerk does depends on what it knows:
//!
//! - the write's only attempt got that answer: the write was certainly not
//!   applied, so the clerk opens a new session and sends it once more;
//! - an earlier attempt got no answer (a lost reply, a timeout, a leader
//!   change): it may have been applied, and sending it again under a new
//!   session could apply it twice. The clerk reports
//!   [`KvError::SessionExpired`] (the outcome is unknown) and opens a new
//!   session with its next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::kv::kv_client::KvClient;
use cairn_rpc::kv::{GetRequest, Op, RegisterRequest, StatusRequest, WriteReply, WriteRequest};
use cairn_rpc::node::StatusReply;
use cairn_rpc::tonic::transport::Channel;
use cairn_rpc::{ReplicaError, Replicas, RpcError};

use cairn_rpc::kv_limits::{MAX_MESSAGE_BYTES, MAX_VALUE_BYTES, check_key_value};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The servers did not complete the request, or it is invalid (empty
    /// or oversized key, oversized value: checked here before sending):
    /// see [`ReplicaError`]. After a timeout a write may or may not have
    /// been applied; retrying it through the same client is safe.
    #[error("{}", .0.with_hint(UNREACHABLE_HINT))]
    Replica(#[from] ReplicaError),
    /// The cluster forgot this client's session (too long idle among too
    /// many clients) while a write's outcome was unknown: the write may
    /// have been applied once, or not at all. The client's next request
    /// opens a new session.
    #[error(
        "the cluster forgot this client's session while the write's outcome was unknown (it was applied once or not at all); read the key before writing it again"
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
    /// A server answered, but not as a key/value server (it registered no
    /// session); nothing was applied.
    #[error("the server refused the request: {0}")]
    Refused(String),
    /// The addresses given are unusable.
    #[error("bad endpoint {0}")]
    BadEndpoint(String),
}

/// What to do when nothing listens at the addresses given.
const UNREACHABLE_HINT: &str = "is the cluster running? Start one with `cairn cluster`, or pass --endpoints with the addresses of its nodes";

/// Timeouts of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one call to one server may take.
    pub call_timeout: Duration,
    /// How long a request may take in all, retries included.
    pub deadline: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(15),
        }
    }
}

/// A key/value clerk. Reads take `&self`; writes take `&mut self`, because a
/// clerk has at most one write outstanding (its sequence number).
#[derive(Debug)]
pub struct Client {
    servers: Replicas,
    /// The session's id, given by the cluster; `None` before the first
    /// write and after the session expired.
    client_id: Option<u64>,
    seq: u64,
}

/// What a write reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// CAS: the swap happened. Otherwise always true.
    pub ok: bool,
    /// The key existed before the write.
    pub existed: bool,
}

impl Client {
    /// A clerk for the servers at `endpoints` (`http://host:port`).
    pub fn new(endpoints: &[String], config: ClientConfig) -> Result<Self, KvError> {
        if endpoints.is_empty() {
            return Err(KvError::BadEndpoint("(none given)".into()));
        }
        let servers = Replicas::new(endpoints, config.call_timeout, config.deadline)
            .map_err(|e| KvError::BadEndpoint(e.to_string()))?;
        Ok(Self {
            servers,
            client_id: None,
            seq: 0,
        })
    }

    /// This clerk waits out its deadline even when every node refuses the
    /// connection, instead of failing with [`ReplicaError::Unreachable`] after
    /// [`cairn_rpc::REFUSED_GIVE_UP`]: for nodes that are starting.
    pub fn wait_while_refused(mut self) -> Self {
        self.servers = self.servers.wait_while_refused();
        self
    }

    /// This clerk's session id, once its first write opened one.
    pub fn id(&self) -> Option<u64> {
        self.client_id
    }

    /// The value of `key`, or `None` if it is missing. Linearizable.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        check(key, None, None)?;
        let request = GetRequest {
            key: Bytes::copy_from_slice(key),
        };
        let reply = self
            .servers
            .request(request, |c, r| async move { stub(c).get(r).await })
            .await?;
        Ok(reply.found.then_some(reply.value))
    }

    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<WriteOutcome, KvError> {
        self.write(Op::Put, key, value, None).await
    }

    /// Appends `value` to `key`'s value (a missing key counts as empty).
    pub async fn append(&mut self, key: &[u8], value: &[u8]) -> Result<WriteOutcome, KvError> {
        self.write(Op::Append, key, value, None).await
    }

    /// Deletes `key`; `existed` says whether it was there.
    pub async fn delete(&mut self, key: &[u8]) -> Result<WriteOutcome, KvError> {
        self.write(Op::Delete, key, b"", None).await
    }

    /// Sets `key` to `value` if its value is `expected` (`None`: if it is
    /// missing); `ok` says whether it did.
    pub async fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<WriteOutcome, KvError> {
        self.write(Op::Cas, key, value, Some(expected)).await
    }

    /// The status of the server at `endpoint` (an index into the endpoints
    /// given at creation).
    pub async fn status(&self, endpoint: usize) -> Result<StatusReply, RpcError> {
        self.servers
            .server(endpoint)
            .call(StatusRequest {}, |c, r| async move {
                KvClient::new(c).status(r).await
            })
            .await
    }

    /// How many endpoints this clerk knows.
    pub fn endpoints(&self) -> usize {
        self.servers.len()
    }

    async fn write(
        &mut self,
        op: Op,
        key: &[u8],
        value: &[u8],
        expected: Option<Option<&[u8]>>,
    ) -> Result<WriteOutcome, KvError> {
        let checked_value = (op != Op::Delete).then_some(value);
        check(key, checked_value, expected.flatten())?;
        let (expected, expect_missing) = match expected {
            Some(Some(expected)) => (Bytes::copy_from_slice(expected), false),
            Some(None) => (Bytes::new(), true),
            None => (Bytes::new(), false),
        };
        let mut request = WriteRequest {
            op: op as i32,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            expected,
            expect_missing,
            ..WriteRequest::default()
        };
        // At most once more, under a new session, and only when the write
        // was certainly not applied (see the module documentation).
        for resent in [false, true] {
            request.client_id = self.session().await?;
            self.seq += 1;
            request.seq = self.seq;
            let attempts = Arc::new(AtomicUsize::new(0));
            let counter = attempts.clone();
            let reply: WriteReply = self
                .servers
                .request(request.clone(), move |c, r| {
                    counter.fetch_add(1, Relaxed);
                    async move { stub(c).write(r).await }
                })
                .await?;
            if reply.session_expired {
                self.client_id = None;
                if attempts.load(Relaxed) == 1 && !resent {
                    continue;
                }
                return Err(KvError::SessionExpired);
            }
            if reply.value_too_large {
                return Err(KvError::ValueTooLarge {
                    limit: MAX_VALUE_BYTES,
                });
            }
            return Ok(WriteOutcome {
                ok: reply.ok,
                existed: reply.previous_found,
            });
        }
        Err(KvError::SessionExpired)
    }

    /// The session's id, registering a new session (through the log) if
    /// there is none.
    async fn session(&mut self) -> Result<u64, KvError> {
        if let Some(id) = self.client_id {
            return Ok(id);
        }
        let reply = self
            .servers
            .request(RegisterRequest {}, |c, r| async move {
                stub(c).register(r).await
            })
            .await?;
        if reply.client_id == 0 {
            return Err(KvError::Refused(
                "the server registered no session; is it a key/value server?".into(),
            ));
        }
        self.client_id = Some(reply.client_id);
        self.seq = 0;
        Ok(reply.client_id)
    }
}

/// Checks a request against the limits before it is sent
/// ([`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES), [`MAX_VALUE_BYTES`]), in the
/// servers' own words: a request far over them would otherwise die in the
/// transport (a message over [`MAX_MESSAGE_BYTES`] cannot be sent, and the
/// failure looks like a broken connection) instead of being refused.
fn check(key: &[u8], value: Option<&[u8]>, expected: Option<&[u8]>) -> Result<(), KvError> {
    check_key_value(key, value).map_err(|error| invalid(error.to_string()))?;
    if let Some(expected) = expected
        && expected.len() > MAX_VALUE_BYTES
    {
        return Err(invalid(format!(
            "the expected value is {} bytes; values are limited to {MAX_VALUE_BYTES} bytes (1 MiB), so no key can hold it",
            expected.len()
        )));
    }
    Ok(())
}

/// A request refused before it is sent.
fn invalid(message: impl Into<String>) -> KvError {
    ReplicaError::InvalidArgument(message.into()).into()
}

/// A generated client whose message limits are the servers'.
fn stub(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
