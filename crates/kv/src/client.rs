//! [`Client`]: the clerk. It finds the leader, retries across servers with
//! back-off, and numbers its writes so that a retried write is applied once.

use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::kv::kv_client::KvClient;
use cairn_rpc::kv::{GetRequest, Op, StatusReply, StatusRequest, WriteReply, WriteRequest};
use cairn_rpc::{ReplicaError, Replicas, RpcError};
use rand::Rng;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The request is invalid (empty or oversized key, oversized value);
    /// nothing was applied. Do not retry it unchanged.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// No server answered within the deadline. A write may or may not have
    /// been applied; retrying it through the same client is safe.
    #[error(
        "no server completed the request within {after:?} ({last}); check that the cluster is running and has a leader"
    )]
    Timeout {
        /// The deadline.
        after: Duration,
        /// The last error seen.
        last: String,
    },
    /// The servers forgot this client (too long idle among too many
    /// clients). The write was not applied now; whether an earlier attempt
    /// was is unknown. Make a new client.
    #[error(
        "the cluster no longer remembers this client; the write's outcome is unknown: read the key, then retry with a new client"
    )]
    SessionExpired,
    /// The addresses given are unusable.
    #[error("bad endpoint {0}")]
    BadEndpoint(String),
}

impl From<ReplicaError> for KvError {
    fn from(error: ReplicaError) -> Self {
        match error {
            ReplicaError::InvalidArgument(message) => Self::InvalidArgument(message),
            ReplicaError::Timeout { after, last } => Self::Timeout { after, last },
        }
    }
}

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
    client_id: u64,
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
        let client_id = cairn_rpc::seeded_rng().gen_range(1..u64::MAX);
        Ok(Self {
            servers,
            client_id,
            seq: 0,
        })
    }

    /// This clerk's id (unique with high probability).
    pub fn id(&self) -> u64 {
        self.client_id
    }

    /// The value of `key`, or `None` if it is missing. Linearizable.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        let request = GetRequest {
            key: Bytes::copy_from_slice(key),
        };
        let reply = self
            .servers
            .request(request, |c, r| async move { KvClient::new(c).get(r).await })
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
        self.seq += 1;
        let (expected, expect_missing) = match expected {
            Some(Some(expected)) => (Bytes::copy_from_slice(expected), false),
            Some(None) => (Bytes::new(), true),
            None => (Bytes::new(), false),
        };
        let request = WriteRequest {
            client_id: self.client_id,
            seq: self.seq,
            op: op as i32,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            expected,
            expect_missing,
        };
        let reply: WriteReply = self
            .servers
            .request(
                request,
                |c, r| async move { KvClient::new(c).write(r).await },
            )
            .await?;
        if reply.session_expired {
            return Err(KvError::SessionExpired);
        }
        Ok(WriteOutcome {
            ok: reply.ok,
            existed: reply.previous_found,
        })
    }
}
