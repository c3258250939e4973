//! [`KvServer`]: one node of the key/value service — an `rsm::Node` running
//! [`KvStore`], and the gRPC services (Raft and Kv) it answers on one port.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use cairn_rpc::kv::kv_server::{Kv, KvServer as KvGrpcServer};
use cairn_rpc::kv::{
    GetReply, GetRequest, Op, RegisterReply, RegisterRequest, StatusRequest, WriteReply,
    WriteRequest,
};
use cairn_rpc::kv_limits::check_key_value;
use cairn_rpc::node::StatusReply;
use cairn_rsm::{Node, NodeConfig, RequestMetrics, StartError, SubmitError};
use cairn_storage::Disk;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::store::KvStore;

pub use cairn_rpc::kv_limits::{MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_VALUE_BYTES};
/// How long the server waits for a write to be applied or a read confirmed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

pub use cairn_rpc::{LEADER_ID_KEY, LEADER_URL_KEY};

/// The operations timed in `cairn_kv_request_seconds`: a write's op name,
/// `get`, `register` (a new session) and `status`.
const OPERATIONS: &[&str] = &[
    "get", "put", "append", "delete", "cas", "register", "status",
];

/// The service kind a key/value backup names (`cairn kv snapshot`): only a
/// key/value node restores it.
pub const BACKUP_KIND: &str = "kv";

/// One running key/value node.
#[derive(Clone)]
pub struct KvServer {
    node: Node<KvStore>,
    /// Latency per operation (`cairn_kv_request_seconds{op=...}`).
    requests: RequestMetrics,
}

impl std::fmt::Debug for KvServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvServer")
            .field("node", &self.node)
            .finish()
    }
}

impl KvServer {
    /// Recovers the node from `disk` and starts it. Serve
    /// [`router`](Self::router) on the node's own URL from `config.peers`.
    pub fn start(config: NodeConfig, disk: Arc<dyn Disk>) -> Result<Self, StartError> {
        let node = Node::start(config, disk, KvStore::new())?;
        let requests = RequestMetrics::new(node.metrics(), "kv", OPERATIONS);
        Ok(Self { node, requests })
    }

    /// The Raft node underneath.
    pub fn node(&self) -> &Node<KvStore> {
        &self.node
    }

    /// The gRPC services of this node: Raft (for peers) and Kv (for
    /// clients), to serve on one port.
    pub fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder()
            .add_service(self.node.raft_service())
            .add_service(self.node.members_service())
            .add_service(self.node.backup_service(BACKUP_KIND))
            .add_service(
                KvGrpcServer::new(self.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
    }

    /// The same services as [`router`](Self::router), as routes that
    /// `cairn_rpc::serve_routes` serves with every limit (connections,
    /// requests in flight, keepalive).
    #[cfg(not(madsim))]
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.node.raft_service())
            .add_service(self.node.members_service())
            .add_service(self.node.backup_service(BACKUP_KIND))
            .add_service(
                KvGrpcServer::new(self.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
    }

    fn error(&self, error: SubmitError) -> Status {
        self.node.error_status(error)
    }
}

#[tonic::async_trait]
impl Kv for KvServer {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let _timer = self.requests.time("get");
        let key = request.into_inner().key;
        check_key_value(&key, None)?;
        let value = self
            .node
            .read(move |store: &KvStore| store.get(&key), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Response::new(GetReply {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let request = request.into_inner();
        let (value, _timer) = match Op::try_from(request.op) {
            Ok(op @ (Op::Put | Op::Append | Op::Cas)) => {
                (Some(&request.value[..]), self.requests.time(op_name(op)))
            }
            Ok(Op::Delete) => (None, self.requests.time("delete")),
            Ok(Op::Unspecified | Op::Register) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "operation {} is not a write; use put, append, delete or cas (and Register to open a session)",
                    request.op
                )));
            }
        };
        check_key_value(&request.key, value)?;
        if request.expected.len() > MAX_VALUE_BYTES {
            return Err(Status::invalid_argument(
                "the expected value is over the value limit",
            ));
        }
        if request.client_id == 0 || request.seq == 0 {
            return Err(Status::invalid_argument(
                "writes need a client id and a sequence number above 0",
            ));
        }
        let output = self
            .node
            .submit(Bytes::from(request.encode_to_vec()), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        let reply = WriteReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the store: {e}")))?;
        Ok(Response::new(reply))
    }

    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let _timer = self.requests.time("register");
        let registration = WriteRequest {
            op: Op::Register as i32,
            ..WriteRequest::default()
        };
        let output = self
            .node
            .submit(Bytes::from(registration.encode_to_vec()), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        let reply = WriteReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the store: {e}")))?;
        Ok(Response::new(RegisterReply {
            client_id: reply.client_id,
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let _timer = self.requests.time("status");
        Ok(Response::new(self.node.status_reply()))
    }
}

/// A write operation's name in the request metrics.
fn op_name(op: Op) -> &'static str {
    match op {
        Op::Put => "put",
        Op::Append => "append",
        Op::Cas => "cas",
        Op::Delete => "delete",
        Op::Register | Op::Unspecified => "other",
    }
}
