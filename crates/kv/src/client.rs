//! [`Client`]: the clerk. It finds the leader, retries across servers with
//! back-off, and numbers its writes so that a retried write is applied once.

use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::kv::kv_client::KvClient;
use cairn_rpc::kv::{GetRequest, Op, StatusReply, StatusRequest, WriteReply, WriteRequest};
use cairn_rpc::{ClientOptions, RpcClient, RpcError};
use rand::Rng;

use crate::server::LEADER_URL_KEY;

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
    servers: Vec<RpcClient>,
    leader: std::sync::atomic::AtomicUsize,
    client_id: u64,
    seq: u64,
    config: ClientConfig,
}

/// What a write reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// CAS: the swap happened. Otherwise always true.
    pub ok: bool,
    /// The key existed before the write.
    pub existed: bool,
}

enum Attempt<T> {
    Done(T),
    Fatal(KvError),
    Retry {
        leader_url: Option<String>,
        error: String,
    },
}

impl Client {
    /// A clerk for the servers at `endpoints` (`http://host:port`).
    pub fn new(endpoints: &[String], config: ClientConfig) -> Result<Self, KvError> {
        if endpoints.is_empty() {
            return Err(KvError::BadEndpoint("(none given)".into()));
        }
        let options = ClientOptions {
            connect_timeout: config.call_timeout,
            call_timeout: config.call_timeout,
        };
        let servers = endpoints
            .iter()
            .map(|url| {
                RpcClient::new(url.clone(), options.clone())
                    .map_err(|e| KvError::BadEndpoint(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_id = cairn_rpc::seeded_rng().gen_range(1..u64::MAX);
        Ok(Self {
            servers,
            leader: 0.into(),
            client_id,
            seq: 0,
            config,
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
            .retry(|server| {
                let request = request.clone();
                async move {
                    server
                        .call(request, |c, r| async move { KvClient::new(c).get(r).await })
                        .await
                }
            })
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
        self.servers[endpoint]
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
            .retry(|server| {
                let request = request.clone();
                async move {
                    server
                        .call(
                            request,
                            |c, r| async move { KvClient::new(c).write(r).await },
                        )
                        .await
                }
            })
            .await?;
        if reply.session_expired {
            return Err(KvError::SessionExpired);
        }
        Ok(WriteOutcome {
            ok: reply.ok,
            existed: reply.previous_found,
        })
    }

    /// Calls the leader it believes in, then others, until one answers or
    /// the deadline passes.
    async fn retry<'a, T, F, Fut>(&'a self, mut call: F) -> Result<T, KvError>
    where
        F: FnMut(&'a RpcClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        use std::sync::atomic::Ordering::Relaxed;
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let index = self.leader.load(Relaxed) % self.servers.len();
            match classify(call(&self.servers[index]).await) {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fatal(error) => return Err(error),
                Attempt::Retry { leader_url, error } => {
                    if started.elapsed() >= self.config.deadline {
                        return Err(KvError::Timeout {
                            after: self.config.deadline,
                            last: error,
                        });
                    }
                    let hinted = leader_url
                        .and_then(|url| self.servers.iter().position(|s| s.addr() == url));
                    match hinted {
                        Some(leader) if leader != index => {
                            self.leader.store(leader, Relaxed);
                            continue; // go straight to the leader named
                        }
                        _ => self.leader.store((index + 1) % self.servers.len(), Relaxed),
                    }
                }
            }
            // Back off once per round of all servers.
            if self.leader.load(Relaxed).is_multiple_of(self.servers.len())
                || self.servers.len() == 1
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

fn classify<T>(result: Result<T, RpcError>) -> Attempt<T> {
    let status = match result {
        Ok(value) => return Attempt::Done(value),
        Err(RpcError::Rejected { status, .. }) => status,
        Err(error) => {
            return Attempt::Retry {
                leader_url: None,
                error: error.to_string(),
            };
        }
    };
    match status.code() {
        tonic::Code::InvalidArgument => {
            Attempt::Fatal(KvError::InvalidArgument(status.message().to_string()))
        }
        tonic::Code::FailedPrecondition => {
            let leader_url = status
                .metadata()
                .get(LEADER_URL_KEY)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            Attempt::Retry {
                leader_url,
                error: status.message().to_string(),
            }
        }
        _ => Attempt::Retry {
            leader_url: None,
            error: status.message().to_string(),
        },
    }
}
