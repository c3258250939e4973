//! [`ShardKvServer`]: one server of a replica group — an `rsm::Node`
//! running [`ShardStore`], the gRPC services it answers on one port (Raft
//! and ShardKv), and the leader's loop that follows the controller and
//! moves shards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_raft::Role;
use cairn_rpc::Replicas;
use cairn_rpc::kv::StatusRequest;
use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
use cairn_rpc::shardkv::shard_kv_server::{ShardKv, ShardKvServer as ShardKvGrpcServer};
use cairn_rpc::shardkv::{
    Command, DeleteReply, DeleteRequest, GetReply, GetRequest, GroupStatus, InstallShards, Op,
    PullReply, PullRequest, WriteReply, WriteRequest, command,
};
use cairn_rsm::{Node, NodeConfig, StartError, SubmitError};
use cairn_shardctrler::Gid;
use cairn_storage::Disk;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::ShardOf;
use crate::store::{Plan, ShardStore};

/// How often the leader asks the controller for the next configuration
/// and retries pending hand-overs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the server waits for a request to be applied or confirmed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long one round of a hand-over call to another group may take.
const PEER_DEADLINE: Duration = Duration::from_secs(1);
/// The largest pull reply accepted: one shard's keys and duplicate table.
/// A shard must also fit in one log entry (`cairn_rsm::MAX_COMMAND_BYTES`).
const MAX_HANDOVER_BYTES: usize = 64 << 20;
/// The longest key accepted.
pub const MAX_KEY_BYTES: usize = 4 << 10;
/// The largest value accepted, and the longest an append may grow one to.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The largest message a clerk encodes or decodes: a get or write with a
/// value at the limit fits with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// One running server of a replica group.
#[derive(Clone)]
pub struct ShardKvServer {
    node: Node<ShardStore>,
    gid: Gid,
    follower: Arc<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ShardKvServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardKvServer")
            .field("node", &self.node)
            .finish()
    }
}

impl ShardKvServer {
    /// Recovers the server of group `gid` from `disk` and starts it, with
    /// the controllers at `controllers`. Every server of every group must
    /// use the same `shards` and `shard_of`. Serve
    /// [`router`](Self::router) on the node's own URL from `config.peers`.
    pub fn start(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        gid: Gid,
        shards: usize,
        shard_of: ShardOf,
        controllers: &[String],
    ) -> Result<Self, StartError> {
        let node = Node::start(config, disk, ShardStore::new(gid, shards, shard_of))?;
        let controller = cairn_shardctrler::Client::new(
            controllers,
            Duration::from_millis(500),
            Duration::from_secs(1),
        )
        .map_err(|e| StartError::Config(format!("bad controller address: {e}")))?;
        let follower = tokio::spawn(follow(node.clone(), gid, shards, controller));
        Ok(Self {
            node,
            gid,
            follower: Arc::new(follower),
        })
    }

    /// The Raft node underneath.
    pub fn node(&self) -> &Node<ShardStore> {
        &self.node
    }

    /// Stops the controller-following loop and the node.
    pub async fn shutdown(&self) {
        self.follower.abort();
        self.node.shutdown().await;
    }

    /// The gRPC services of this server: Raft (for its group) and ShardKv
    /// (for clients and other groups), to serve on one port.
    pub fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder()
            .add_service(self.node.raft_service())
            .add_service(
                ShardKvGrpcServer::new(self.clone()).max_decoding_message_size(MAX_HANDOVER_BYTES),
            )
    }

    fn error(&self, error: SubmitError) -> Status {
        self.node.error_status(error)
    }

    async fn submit(&self, command: command::Command) -> Result<Bytes, Status> {
        let bytes = Command {
            command: Some(command),
        }
        .encode_to_vec();
        self.node
            .submit(Bytes::from(bytes), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))
    }
}

/// Checks a key (and value) against the limits.
fn validate(key: &[u8], value: Option<&[u8]>) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "the key is {} bytes; keys are limited to {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    if let Some(value) = value
        && value.len() > MAX_VALUE_BYTES
    {
        return Err(Status::invalid_argument(format!(
            "the value is {} bytes; values are limited to {MAX_VALUE_BYTES} bytes (1 MiB)",
            value.len()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl ShardKv for ShardKvServer {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let key = request.into_inner().key;
        validate(&key, None)?;
        let reply = self
            .node
            .read(move |store: &ShardStore| store.get(&key), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Response::new(reply))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let request = request.into_inner();
        let value = match Op::try_from(request.op) {
            Ok(Op::Put | Op::Append) => Some(&request.value[..]),
            Ok(Op::Delete) => None,
            Ok(Op::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown operation {}; use put, append or delete",
                    request.op
                )));
            }
        };
        validate(&request.key, value)?;
        if request.client_id == 0 || request.seq == 0 {
            return Err(Status::invalid_argument(
                "writes need a client id and a sequence number above 0",
            ));
        }
        let output = self.submit(command::Command::Write(request)).await?;
        let reply = WriteReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the store: {e}")))?;
        Ok(Response::new(reply))
    }

    async fn pull_shards(
        &self,
        request: Request<PullRequest>,
    ) -> Result<Response<PullReply>, Status> {
        let request = request.into_inner();
        let reply = self
            .node
            .read(
                move |store: &ShardStore| store.pull(request.config_num, &request.shards),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(Response::new(reply))
    }

    async fn delete_shards(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteReply>, Status> {
        let request = request.into_inner();
        let output = self.submit(command::Command::Delete(request)).await?;
        let reply = DeleteReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the store: {e}")))?;
        Ok(Response::new(reply))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<GroupStatus>, Status> {
        Ok(Response::new(self.group_status().await))
    }
}

impl ShardKvServer {
    async fn group_status(&self) -> GroupStatus {
        let node = self.node.status();
        // The configuration as this node has applied it (no read index: a
        // status is a local view).
        let (config_num, serving) = self
            .node
            .inspect(|store: &ShardStore| (store.config().num, store.serving()))
            .await
            .unwrap_or_default();
        GroupStatus {
            node: Some(node.to_reply()),
            gid: self.gid,
            config_num,
            serving,
        }
    }
}

/// The leader's loop: every [`POLL_INTERVAL`], read the group's plan; when
/// no hand-over is under way, put the controller's next configuration in
/// the log; fetch the shards being pulled and tell old owners to drop the
/// shards that arrived, each source group on its own, so that a dead group
/// holds up only its own shards.
async fn follow(
    node: Node<ShardStore>,
    gid: Gid,
    shards: usize,
    controller: cairn_shardctrler::Client,
) {
    let mut mismatch_reported = None;
    let groups: Mutex<BTreeMap<Vec<String>, Arc<Replicas>>> = Mutex::default();
    let replicas = |servers: &Vec<String>| -> Option<Arc<Replicas>> {
        let mut groups = groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = groups.get(servers) {
            return Some(r.clone());
        }
        let r = Arc::new(Replicas::new(servers, Duration::from_millis(500), PEER_DEADLINE).ok()?);
        groups.insert(servers.clone(), r.clone());
        Some(r)
    };
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        if node.status().role != Role::Leader {
            continue;
        }
        let Ok(plan) = node
            .read(|store: &ShardStore| store.plan(), REQUEST_DEADLINE)
            .await
        else {
            continue;
        };
        let Plan {
            config_num,
            stable,
            pull,
            collect,
        } = plan;
        if stable {
            if let Ok(next) = controller.query(Some(config_num + 1)).await
                && next.num == config_num + 1
            {
                if next.shards.len() != shards {
                    if mismatch_reported != Some(next.num) {
                        tracing::error!(
                            gid,
                            "the controllers have {} shards but this server was started with {shards}; restart it with --shards {}",
                            next.shards.len(),
                            next.shards.len()
                        );
                        mismatch_reported = Some(next.num);
                    }
                    continue;
                }
                let command = command::Command::Config(next.to_proto());
                let _ = submit(&node, command).await;
            }
            continue;
        }
        let mut calls = Vec::new();
        for (from, (servers, shards)) in pull {
            let Some(group) = replicas(&servers) else {
                continue;
            };
            let node = node.clone();
            // One shard per call and per log entry, so that a hand-over is
            // bounded by the size of one shard.
            calls.push(tokio::spawn(async move {
                for shard in shards {
                    let request = PullRequest {
                        config_num,
                        shards: vec![shard],
                    };
                    let reply = group
                        .request(request, |c, r| async move {
                            ShardKvClient::new(c)
                                .max_decoding_message_size(MAX_HANDOVER_BYTES)
                                .pull_shards(r)
                                .await
                        })
                        .await;
                    match reply {
                        Ok(reply) if reply.ready => {
                            let install = InstallShards {
                                config_num,
                                shards: reply.shards,
                            };
                            let result = submit(&node, command::Command::Install(install)).await;
                            if let Err(error @ SubmitError::TooLarge { .. }) = result {
                                tracing::error!(
                                    gid,
                                    shard,
                                    %error,
                                    "shard {shard} is too large to hand over in one log entry; it stays with group {from}"
                                );
                            }
                        }
                        Ok(_) => tracing::debug!(gid, from, config_num, "shard not ready yet"),
                        Err(error) => tracing::debug!(gid, from, %error, "cannot pull a shard"),
                    }
                }
            }));
        }
        for (from, (servers, shards)) in collect {
            let Some(group) = replicas(&servers) else {
                continue;
            };
            let node = node.clone();
            calls.push(tokio::spawn(async move {
                let request = DeleteRequest { config_num, shards };
                let reply = group
                    .request(request.clone(), |c, r| async move {
                        ShardKvClient::new(c).delete_shards(r).await
                    })
                    .await;
                match reply {
                    Ok(reply) if reply.done => {
                        let _ = submit(&node, command::Command::Deleted(request)).await;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(gid, from, %error, "cannot delete old shards"),
                }
            }));
        }
        for call in calls {
            let _ = call.await;
        }
    }
}

async fn submit(node: &Node<ShardStore>, command: command::Command) -> Result<Bytes, SubmitError> {
    let bytes = Command {
        command: Some(command),
    }
    .encode_to_vec();
    node.submit(Bytes::from(bytes), REQUEST_DEADLINE).await
}
