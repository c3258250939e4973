//! [`Client`]: the sharded store's clerk. It routes each key to the group
//! that serves its shard in the latest configuration it knows, finds that
//! group's leader, and asks the controller again when a group answers
//! "wrong group" or cannot be reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
use cairn_rpc::shardkv::{GetRequest, Op, WriteRequest};
use cairn_rpc::{ReplicaError, Replicas, RpcError};
use cairn_shardctrler::{Config, CtrlerError, Gid};
use rand::Rng;

use crate::ShardOf;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardKvError {
    /// The request is invalid (empty or oversized key, oversized value);
    /// nothing was applied.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// No group completed the request within the deadline. A write may or
    /// may not have been applied; retrying it through the same client is
    /// safe.
    #[error(
        "the request did not complete within {after:?} ({last}); check that the controllers and the key's group are running"
    )]
    Timeout {
        /// The deadline.
        after: Duration,
        /// The last error seen.
        last: String,
    },
    /// The addresses given are unusable.
    #[error("bad endpoint: {0}")]
    BadEndpoint(String),
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
    client_id: u64,
    seq: u64,
    settings: ClientConfig,
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
            client_id: cairn_rpc::seeded_rng().gen_range(1..u64::MAX),
            seq: 0,
            settings,
        })
    }

    /// The value of `key`, or `None` if it is missing. Linearizable.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ShardKvError> {
        let request = GetRequest {
            key: Bytes::copy_from_slice(key),
        };
        self.route(key, |group| {
            let request = request.clone();
            async move {
                let reply = group
                    .request(
                        request,
                        |c, r| async move { ShardKvClient::new(c).get(r).await },
                    )
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
        self.seq += 1;
        let request = WriteRequest {
            client_id: self.client_id,
            seq: self.seq,
            op: op as i32,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        };
        self.route(key, |group| {
            let request = request.clone();
            async move {
                let reply = group
                    .request(request, |c, r| async move {
                        ShardKvClient::new(c).write(r).await
                    })
                    .await?;
                Ok(if reply.wrong_group {
                    Outcome::WrongGroup
                } else {
                    Outcome::Done(reply.previous_found)
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
                        Err(ReplicaError::InvalidArgument(message)) => {
                            return Err(ShardKvError::InvalidArgument(message));
                        }
                        Err(ReplicaError::Timeout { last: error, .. }) => {
                            last = format!("group {gid}: {error}");
                        }
                    }
                } else {
                    last = format!("no group serves shard {shard}");
                }
            }
            if started.elapsed() >= self.settings.deadline {
                return Err(ShardKvError::Timeout {
                    after: self.settings.deadline,
                    last,
                });
            }
            if !self.config.shards.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match self.controller.query(None).await {
                Ok(config) => self.config = config,
                Err(CtrlerError::InvalidArgument(message)) => {
                    return Err(ShardKvError::InvalidArgument(message));
                }
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
