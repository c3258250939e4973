//! [`CtrlerServer`]: one node of the shard controller — an `rsm::Node`
//! running [`Controller`], and the gRPC services (Raft and ShardCtrler) it
//! answers on one port.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use cairn_rpc::kv::{RegisterReply, RegisterRequest, StatusRequest};
use cairn_rpc::node::StatusReply;
use cairn_rpc::shardctrler::change_request::Change;
use cairn_rpc::shardctrler::shard_ctrler_server::{ShardCtrler, ShardCtrlerServer};
use cairn_rpc::shardctrler::{
    ChangeReply, ChangeRequest, Config as WireConfig, QueryRequest, Register,
};
use cairn_rsm::{Node, NodeConfig, RequestMetrics, StartError, SubmitError};
use cairn_storage::Disk;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::state::Controller;

/// How long the server waits for a change to be applied or a query
/// confirmed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The most groups one Join may add.
pub const MAX_GROUPS_PER_JOIN: usize = 256;
/// The most servers a group may list.
pub const MAX_SERVERS_PER_GROUP: usize = 64;
/// The longest server address accepted.
pub const MAX_ADDRESS_BYTES: usize = 512;

/// One running shard controller node.
#[derive(Clone)]
pub struct CtrlerServer {
    node: Node<Controller>,
    shards: usize,
    /// Latency per operation (`cairn_shardctrler_request_seconds{op=...}`).
    requests: RequestMetrics,
}

/// The operations timed in `cairn_shardctrler_request_seconds`.
const OPERATIONS: &[&str] = &["change", "register", "query", "status"];

impl std::fmt::Debug for CtrlerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtrlerServer")
            .field("node", &self.node)
            .field("shards", &self.shards)
            .finish()
    }
}

impl CtrlerServer {
    /// Recovers the node from `disk` and starts it, for a cluster of
    /// `shards` shards (fixed when the cluster is created; every node must
    /// be given the same count). Serve [`router`](Self::router) on the
    /// node's own URL from `config.peers`. The last group cannot leave
    /// (see [`Controller::keep_last_group`]).
    pub fn start(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        shards: usize,
    ) -> Result<Self, StartError> {
        Self::start_with(config, disk, Controller::new(shards).keep_last_group(true))
    }

    /// Starts the node with `controller` as its empty state (its shard
    /// count and policy).
    pub fn start_with(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        controller: Controller,
    ) -> Result<Self, StartError> {
        let shards = controller.shards();
        let node = Node::start(config, disk, controller)?;
        let requests = RequestMetrics::new(node.metrics(), "shardctrler", OPERATIONS);
        Ok(Self {
            node,
            shards,
            requests,
        })
    }

    /// The Raft node underneath.
    pub fn node(&self) -> &Node<Controller> {
        &self.node
    }

    /// The gRPC services of this node: Raft (for peers) and ShardCtrler
    /// (for clients), to serve on one port.
    pub fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder()
            .add_service(self.node.raft_service())
            .add_service(self.node.members_service())
            .add_service(ShardCtrlerServer::new(self.clone()))
    }

    /// The same services as [`router`](Self::router), as routes that
    /// `cairn_rpc::serve_routes` serves with every limit.
    #[cfg(not(madsim))]
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.node.raft_service())
            .add_service(self.node.members_service())
            .add_service(ShardCtrlerServer::new(self.clone()))
    }

    fn error(&self, error: SubmitError) -> Status {
        self.node.error_status(error)
    }

    /// Checks a change before it reaches the log.
    fn validate(&self, request: &ChangeRequest) -> Result<(), Status> {
        if request.client_id == 0 || request.seq == 0 {
            return Err(Status::invalid_argument(
                "changes need a client id and a sequence number above 0",
            ));
        }
        match &request.change {
            None => Err(Status::invalid_argument(
                "no change given; send a join, leave or move",
            )),
            Some(Change::Join(join)) => {
                if join.groups.is_empty() || join.groups.len() > MAX_GROUPS_PER_JOIN {
                    return Err(Status::invalid_argument(format!(
                        "a join names 1 to {MAX_GROUPS_PER_JOIN} groups, not {}",
                        join.groups.len()
                    )));
                }
                unique_gids(join.groups.iter().map(|g| g.gid))?;
                for group in &join.groups {
                    let servers = group.servers.len();
                    if servers == 0 || servers > MAX_SERVERS_PER_GROUP {
                        return Err(Status::invalid_argument(format!(
                            "group {} lists {servers} servers; give 1 to {MAX_SERVERS_PER_GROUP}",
                            group.gid
                        )));
                    }
                    if let Some(bad) = group
                        .servers
                        .iter()
                        .find(|s| s.is_empty() || s.len() > MAX_ADDRESS_BYTES)
                    {
                        return Err(Status::invalid_argument(format!(
                            "group {}: server address {bad:?} is empty or over {MAX_ADDRESS_BYTES} bytes",
                            group.gid
                        )));
                    }
                }
                Ok(())
            }
            Some(Change::Leave(leave)) => {
                if leave.gids.is_empty() {
                    return Err(Status::invalid_argument("a leave names at least one group"));
                }
                unique_gids(leave.gids.iter().copied())
            }
            Some(Change::Move(moved)) => {
                if moved.shard as usize >= self.shards {
                    return Err(Status::invalid_argument(format!(
                        "shard {} does not exist; shards are 0 to {}",
                        moved.shard,
                        self.shards - 1
                    )));
                }
                unique_gids([moved.gid])
            }
            Some(Change::Register(_)) => Err(Status::invalid_argument(
                "a registration is not a change; call Register to open a session",
            )),
        }
    }
}

/// Gids are above 0 and named once.
fn unique_gids(gids: impl IntoIterator<Item = u64>) -> Result<(), Status> {
    let mut seen = BTreeSet::new();
    for gid in gids {
        if gid == 0 {
            return Err(Status::invalid_argument(
                "group id 0 is reserved (it means no group); use ids from 1",
            ));
        }
        if !seen.insert(gid) {
            return Err(Status::invalid_argument(format!(
                "group {gid} is named twice"
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl ShardCtrler for CtrlerServer {
    async fn change(
        &self,
        request: Request<ChangeRequest>,
    ) -> Result<Response<ChangeReply>, Status> {
        let _timer = self.requests.time("change");
        let request = request.into_inner();
        self.validate(&request)?;
        let output = self
            .node
            .submit(Bytes::from(request.encode_to_vec()), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        let reply = ChangeReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the controller: {e}")))?;
        Ok(Response::new(reply))
    }

    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let _timer = self.requests.time("register");
        let registration = ChangeRequest {
            change: Some(Change::Register(Register {})),
            ..ChangeRequest::default()
        };
        let output = self
            .node
            .submit(Bytes::from(registration.encode_to_vec()), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        let reply = ChangeReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the controller: {e}")))?;
        Ok(Response::new(RegisterReply {
            client_id: reply.client_id,
        }))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<WireConfig>, Status> {
        let _timer = self.requests.time("query");
        let num = u64::try_from(request.into_inner().num).ok();
        let config = self
            .node
            .read(
                move |controller: &Controller| controller.query(num).to_proto(),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(Response::new(config))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let _timer = self.requests.time("status");
        Ok(Response::new(self.node.status_reply()))
    }
}
