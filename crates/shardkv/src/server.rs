//! [`ShardKvServer`]: one server of a replica group — an `rsm::Node`
//! running [`ShardStore`], the gRPC services it answers on one port (Raft
//! and ShardKv), and the leader's loop that follows the controller and
//! moves shards.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::kv::StatusRequest;
use cairn_rpc::kv_limits::check_key_value;
use cairn_rpc::shardkv::shard_kv_server::{ShardKv, ShardKvServer as ShardKvGrpcServer};
use cairn_rpc::shardkv::{
    Command, DeleteReply, DeleteRequest, GetReply, GetRequest, GroupStatus, OfferReply,
    OfferRequest, Op, PullReply, PullRequest, WriteReply, WriteRequest, command,
};
use cairn_rsm::prometheus::IntCounter;
use cairn_rsm::{Node, NodeConfig, RequestMetrics, StartError, SubmitError};
use cairn_shardctrler::Gid;
use cairn_storage::Disk;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::ShardOf;
use crate::follow::{Follower, Notes};
use crate::store::ShardStore;

/// How often the leader asks the controller for the next configuration
/// and retries pending hand-overs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the server waits for a request to be applied or confirmed.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long one round of a hand-over call to another group may take.
pub(crate) const PEER_DEADLINE: Duration = Duration::from_secs(1);
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
pub use cairn_rpc::kv_limits::{MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_VALUE_BYTES};

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
    /// What the leader's loop last learned about the groups it waits on.
    notes: Arc<Notes>,
    /// Latency per operation (`cairn_shardkv_request_seconds{op=...}`).
    requests: RequestMetrics,
    /// Bytes of shard data this server handed to other groups.
    handover_bytes: IntCounter,
}

/// The operations timed in `cairn_shardkv_request_seconds`.
const OPERATIONS: &[&str] = &["get", "write", "pull", "offer", "delete", "status"];

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
        let own_servers: Vec<String> = config.peers.values().cloned().collect();
        let node = Node::start(config, disk, ShardStore::new(gid, shards, shard_of))?;
        let controller = cairn_shardctrler::Client::new(
            controllers,
            Duration::from_millis(500),
            Duration::from_secs(1),
        )
        .map_err(|e| StartError::Config(format!("bad controller address: {e}")))?;
        let notes = Arc::new(Notes::default());
        let follower = Follower {
            node: node.clone(),
            gid,
            shards,
            controller,
            handover,
            own_servers,
            notes: notes.clone(),
        };
        let follower = tokio::spawn(follower.run());
        let requests = RequestMetrics::new(node.metrics(), "shardkv", OPERATIONS);
        let handover_bytes = IntCounter::new(
            "shardkv_handover_sent_bytes_total",
            "Bytes of shard data (keys, values, sessions) this server handed to other groups.",
        )
        .expect("a valid name");
        node.metrics()
            .registry()
            .register(Box::new(handover_bytes.clone()))
            .expect("registered once");
        Ok(Self {
            node,
            gid,
            follower: Arc::new(follower),
            notes,
            requests,
            handover_bytes,
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
            .add_service(self.node.members_service())
            .add_service(
                ShardKvGrpcServer::new(self.clone()).max_decoding_message_size(MAX_HANDOVER_BYTES),
            )
    }

    /// The same services as [`router`](Self::router), as routes that
    /// `cairn_rpc::serve_routes` serves with every limit.
    #[cfg(not(madsim))]
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.node.raft_service())
            .add_service(self.node.members_service())
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

#[tonic::async_trait]
impl ShardKv for ShardKvServer {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let _timer = self.requests.time("get");
        let key = request.into_inner().key;
        check_key_value(&key, None)?;
        let reply = self
            .node
            .read(move |store: &ShardStore| store.get(&key), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Response::new(reply))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let _timer = self.requests.time("write");
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
        check_key_value(&request.key, value)?;
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
        let _timer = self.requests.time("pull");
        let request = request.into_inner();
        let max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
        // The last chunk goes out only once `handing` is in the log: read,
        // log it if needed, read again.
        for _ in 0..2 {
            let request = request.clone();
            let pulled = self
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
            match pulled {
                Ok(reply) => {
                    self.handover_bytes.inc_by(reply.encoded_len() as u64);
                    return Ok(Response::new(reply));
                }
                Err(_unhanded) => {
                    let handing = DeleteRequest {
                        config_num: request.config_num,
                        shards: vec![request.shard],
                    };
                    self.submit(command::Command::Handing(handing)).await?;
                }
            }
        }
        // Not handed although `handing` was applied: the configuration
        // moved on meanwhile. The caller asks again.
        Ok(Response::new(PullReply::default()))
    }

    async fn offer_shards(
        &self,
        request: Request<OfferRequest>,
    ) -> Result<Response<OfferReply>, Status> {
        let _timer = self.requests.time("offer");
        let offer = request.into_inner();
        let check = offer.clone();
        let needed = self
            .node
            .read(
                move |store: &ShardStore| store.needs_source(&check),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.error(e))?;
        if needed {
            tracing::info!(
                gid = self.gid,
                "group {} offers shards {:?} of configuration {} (taken back from a group that left); pulling them from it",
                offer.gid,
                offer.shards,
                offer.config_num
            );
            self.submit(command::Command::Source(offer)).await?;
        }
        Ok(Response::new(OfferReply {}))
    }

    async fn delete_shards(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteReply>, Status> {
        let _timer = self.requests.time("delete");
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
        let _timer = self.requests.time("status");
        Ok(Response::new(self.group_status().await))
    }
}

impl ShardKvServer {
    async fn group_status(&self) -> GroupStatus {
        let node = self.node.status_reply();
        // The configuration as this node has applied it (no read index: a
        // status is a local view).
        let (config_num, serving, plan) = self
            .node
            .inspect(|store: &ShardStore| (store.config().num, store.serving(), store.plan()))
            .await
            .unwrap_or_default();
        let waiting = if node.role == "leader" {
            self.notes.describe(&plan)
        } else {
            crate::follow::describe(&plan, &Default::default())
        };
        GroupStatus {
            node: Some(node),
            gid: self.gid,
            config_num,
            serving,
            waiting,
        }
    }
}
