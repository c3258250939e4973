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
/// The most bytes of keys and values in one chunk of a shard handed over
/// (one pull reply, one log entry at the new owner). A chunk holds at least
/// one key, however large; the duplicate table travels with the last chunk,
/// or alone after it when it does not fit beside the last keys.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;
/// The most bytes one session of a duplicate table takes in a chunk: four
/// varints of at most 10 bytes with their tags, a reply of four flags, and
/// the element's own tag and length.
pub(crate) const MAX_SESSION_BYTES: usize = 48;
/// Room for a chunk's framing: its shard number, cursor key, flags and the
/// messages wrapping it (pull reply, log command).
const HANDOVER_FRAMING_BYTES: usize = 64 << 10;
/// The largest pull reply accepted, and the largest chunk logged: one log
/// entry. Every chunk fits: at most [`MAX_CHUNK_BYTES`] of keys, or one
/// key at the limits, or a whole duplicate table, plus framing.
pub(crate) const MAX_HANDOVER_BYTES: usize = cairn_rsm::MAX_COMMAND_BYTES;
const _: () = assert!(MAX_CHUNK_BYTES + HANDOVER_FRAMING_BYTES <= MAX_HANDOVER_BYTES);
const _: () =
    assert!(MAX_KEY_BYTES + MAX_VALUE_BYTES + 2 * HANDOVER_FRAMING_BYTES <= MAX_HANDOVER_BYTES);
const _: () = assert!(
    crate::MAX_SESSIONS_PER_SHARD * MAX_SESSION_BYTES + HANDOVER_FRAMING_BYTES
        <= MAX_HANDOVER_BYTES
);
/// The longest key accepted.
pub const MAX_KEY_BYTES: usize = 4 << 10;
/// The largest value accepted, and the longest an append may grow one to.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The largest message a clerk encodes or decodes: a get or write with a
/// value at the limit fits with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// How a group takes shards from others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverConfig {
    /// The most bytes of keys and values the group asks for in one chunk
    /// when it pulls a shard; the old owner caps it at [`MAX_CHUNK_BYTES`].
    /// Smaller chunks move a shard in more pulls and log entries (tests use
    /// them to stop a group in the middle of a hand-over).
    pub chunk_bytes: usize,
}

impl Default for HandoverConfig {
    fn default() -> Self {
        Self {
            chunk_bytes: MAX_CHUNK_BYTES,
        }
    }
}

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
        let handover = HandoverConfig::default();
        Self::start_with(config, disk, gid, shards, shard_of, controllers, handover)
    }

    /// [`start`](Self::start), taking shards from other groups as
    /// `handover` says.
    pub fn start_with(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        gid: Gid,
        shards: usize,
        shard_of: ShardOf,
        controllers: &[String],
        handover: HandoverConfig,
    ) -> Result<Self, StartError> {
        let node = Node::start(config, disk, ShardStore::new(gid, shards, shard_of))?;
        let controller = cairn_shardctrler::Client::new(
            controllers,
            Duration::from_millis(500),
            Duration::from_secs(1),
        )
        .map_err(|e| StartError::Config(format!("bad controller address: {e}")))?;
        let follower = tokio::spawn(follow(node.clone(), gid, shards, controller, handover));
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

    /// The same services as [`router`](Self::router), as routes that
    /// `cairn_rpc::serve_routes` serves with every limit.
    #[cfg(not(madsim))]
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.node.raft_service()).add_service(
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
pub(crate) fn validate(key: &[u8], value: Option<&[u8]>) -> Result<(), Status> {
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
        let max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
        let reply = self
            .node
            .read(
                move |store: &ShardStore| {
                    let after = request.after_key.as_deref();
                    store.pull_chunk(request.config_num, request.shard, after, max_bytes)
                },
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

/// The clients of other groups, by their servers, made once each.
#[derive(Default)]
struct Groups(Mutex<BTreeMap<Vec<String>, Arc<Replicas>>>);

impl Groups {
    fn get(&self, servers: &Vec<String>) -> Option<Arc<Replicas>> {
        let mut groups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = groups.get(servers) {
            return Some(r.clone());
        }
        let r = Arc::new(Replicas::new(servers, Duration::from_millis(500), PEER_DEADLINE).ok()?);
        groups.insert(servers.clone(), r.clone());
        Some(r)
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
    handover: HandoverConfig,
) {
    let mut mismatch_reported = None;
    let groups = Groups::default();
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
            let Some(group) = groups.get(&servers) else {
                continue;
            };
            let (node, handover) = (node.clone(), handover.clone());
            calls.push(tokio::spawn(async move {
                for shard in shards {
                    let source = Source {
                        gid,
                        from,
                        group: &group,
                        config_num,
                    };
                    if pull_shard(&node, source, shard, &handover).await.is_err() {
                        break;
                    }
                }
            }));
        }
        for (from, (servers, shards)) in collect {
            let Some(group) = groups.get(&servers) else {
                continue;
            };
            let node = node.clone();
            calls.push(tokio::spawn(async move {
                collect_shards(
                    &node,
                    gid,
                    from,
                    &group,
                    DeleteRequest { config_num, shards },
                )
                .await;
            }));
        }
        for call in calls {
            let _ = call.await;
        }
    }
}

/// The group a shard is pulled from, in which configuration.
#[derive(Clone, Copy)]
struct Source<'a> {
    /// This group.
    gid: Gid,
    /// The old owner.
    from: Gid,
    group: &'a Replicas,
    config_num: u64,
}

/// Why a pull stopped before the shard was complete; the next round of
/// the leader's loop tries again.
#[derive(Debug)]
struct PullStopped;

/// Pulls `shard` chunk by chunk, each chunk its own log entry, starting
/// after the last key installed, until the last chunk is installed.
/// Stops (for a later round) when a call or a submit fails, or when a
/// chunk makes no progress.
async fn pull_shard(
    node: &Node<ShardStore>,
    source: Source<'_>,
    shard: u32,
    handover: &HandoverConfig,
) -> Result<(), PullStopped> {
    let Source {
        gid,
        from,
        group,
        config_num,
    } = source;
    let mut previous = None;
    loop {
        let position = node
            .read(
                move |s: &ShardStore| s.pull_position(config_num, shard),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|_| PullStopped)?;
        let Some(position) = position else {
            return Ok(()); // installed: the last chunk is in
        };
        if previous.as_ref() == Some(&position) {
            tracing::warn!(
                gid,
                from,
                shard,
                "a chunk of shard {shard} changed nothing; the pull is retried later"
            );
            return Err(PullStopped);
        }
        let request = PullRequest {
            config_num,
            shard,
            after_key: position.after_key.clone(),
            max_bytes: handover.chunk_bytes as u64,
        };
        let reply = group
            .request(request, |c, r| async move {
                ShardKvClient::new(c)
                    .max_decoding_message_size(MAX_HANDOVER_BYTES)
                    .pull_shards(r)
                    .await
            })
            .await;
        let chunk = match reply {
            Ok(reply) if reply.ready => reply.chunk,
            Ok(_) => {
                tracing::debug!(gid, from, config_num, "shard not ready yet");
                return Err(PullStopped);
            }
            Err(error) => {
                tracing::debug!(gid, from, %error, "cannot pull a shard");
                return Err(PullStopped);
            }
        };
        let install = InstallShards {
            config_num,
            chunk,
            ..InstallShards::default()
        };
        if let Err(error) = submit(node, command::Command::Install(install)).await {
            if let SubmitError::TooLarge { .. } = error {
                tracing::error!(
                    gid,
                    shard,
                    %error,
                    "a chunk of shard {shard} from group {from} is too large for one log entry; the chunk limits disagree (a bug): report it"
                );
            }
            return Err(PullStopped);
        }
        previous = Some(position);
    }
}

/// Tells the old owner `from` to drop the shards of `request`, which
/// arrived here, and logs that it did.
async fn collect_shards(
    node: &Node<ShardStore>,
    gid: Gid,
    from: Gid,
    group: &Replicas,
    request: DeleteRequest,
) {
    let reply = group
        .request(request.clone(), |c, r| async move {
            ShardKvClient::new(c).delete_shards(r).await
        })
        .await;
    match reply {
        Ok(reply) if reply.done => {
            let _ = submit(node, command::Command::Deleted(request)).await;
        }
        Ok(_) => {}
        Err(error) => tracing::debug!(gid, from, %error, "cannot delete old shards"),
    }
}

async fn submit(node: &Node<ShardStore>, command: command::Command) -> Result<Bytes, SubmitError> {
    let bytes = Command {
        command: Some(command),
    }
    .encode_to_vec();
    node.submit(Bytes::from(bytes), REQUEST_DEADLINE).await
}
