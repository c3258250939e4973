//! [`MasterServer`]: one node of the file store's master — an `rsm::Node`
//! running [`MasterState`], and the gRPC services (Raft and Master) it
//! answers on one port. Its chunk requests (locate, heartbeats, leases)
//! are in `master_chunks.rs` and `master_chunks/`, on the volatile
//! [`ChunkTable`] that one task owns.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::master_server::{Master, MasterServer as MasterGrpcServer};
use cairn_rpc::fs::{
    BalanceReply, BalanceRequest, ChunkInfo, DecommissionReply, DecommissionRequest, EntryInfo,
    FsErrorCode, FsckReply, FsckRequest, HeartbeatReply, HeartbeatRequest, LocateReply,
    LocateRequest, LookupReply, LookupRequest, MasterCommand, MasterReply, Register, SafemodeReply,
    SafemodeRequest, TrashListReply, TrashListRequest, UsageReply, UsageRequest,
};
use cairn_rpc::kv::{RegisterReply, RegisterRequest, StatusRequest};
use cairn_rpc::node::StatusReply;
use cairn_rsm::{Node, NodeConfig, StartError, SubmitError};
use cairn_storage::Disk;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::chunk_table::ChunkTable;
use crate::master_state::{MasterState, error_code};
use crate::namespace::{Entry, Inode};
use crate::owner::Owner;
use crate::path::{FsPath, MAX_PATH_BYTES};
use crate::peers::Peers;
use crate::settings::FsSettings;

/// How long the server waits for a change to be applied or a read
/// confirmed.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long one call to a chunkserver (create, set version) may take.
const CHUNKSERVER_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// The most entries one listing returns; a larger directory is refused
/// with a message (paging is left for later).
pub const MAX_LISTING_ENTRIES: usize = 100_000;

/// One running master node.
#[derive(Clone)]
pub struct MasterServer {
    node: Node<MasterState>,
    /// Chunk locations, liveness and leases (volatile).
    pub(crate) table: Owner<ChunkTable>,
    pub(crate) peers: Arc<Peers>,
    /// Clients for clones, whose calls last longer.
    pub(crate) clone_peers: Arc<Peers>,
    pub(crate) settings: FsSettings,
}

impl std::fmt::Debug for MasterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterServer")
            .field("node", &self.node)
            .finish()
    }
}

impl MasterServer {
    /// Recovers the node from `disk` and starts it. Serve
    /// [`router`](Self::router) on the node's own URL from `config.peers`.
    pub fn start(config: NodeConfig, disk: Arc<dyn Disk>) -> Result<Self, StartError> {
        Self::start_with(config, disk, FsSettings::default())
    }

    /// [`start`](Self::start) with the store's sizes and times.
    pub fn start_with(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        settings: FsSettings,
    ) -> Result<Self, StartError> {
        let node = Node::start(config, disk, MasterState::new())?;
        let server = Self {
            node,
            table: Owner::spawn(ChunkTable::new(settings.clone())),
            peers: Arc::new(Peers::new(CHUNKSERVER_CALL_TIMEOUT)),
            clone_peers: Arc::new(Peers::new(crate::master_heal::CLONE_TIMEOUT)),
            settings,
        };
        tokio::spawn(server.clone().purge_expired_forever());
        tokio::spawn(crate::master_heal::run(server.clone()));
        Ok(server)
    }

    /// The Raft node underneath.
    pub fn node(&self) -> &Node<MasterState> {
        &self.node
    }

    /// The gRPC services of this node: Raft (for peers) and Master (for
    /// clients and chunkservers), to serve on one port.
    pub fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder()
            .add_service(self.node.raft_service())
            .add_service(self.node.members_service())
            .add_service(MasterGrpcServer::new(self.clone()))
    }

    /// The same services as [`router`](Self::router), as routes that
    /// `cairn_rpc::serve_routes` serves with every limit.
    #[cfg(not(madsim))]
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.node.raft_service())
            .add_service(self.node.members_service())
            .add_service(MasterGrpcServer::new(self.clone()))
    }

    fn error(&self, error: SubmitError) -> Status {
        self.node.error_status(error)
    }

    pub(crate) async fn submit(&self, command: &MasterCommand) -> Result<MasterReply, Status> {
        let output = self
            .node
            .submit(Bytes::from(command.encode_to_vec()), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.error(e))?;
        MasterReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the master's state: {e}")))
    }
}

/// Checks a change before it reaches the log: a session, an operation,
/// paths within the length limit (their content is checked when applied,
/// where a refusal is remembered like any answer).
fn validate(command: &MasterCommand) -> Result<(), Status> {
    if command.client_id == 0 || command.seq == 0 {
        return Err(Status::invalid_argument(
            "changes need a session id and a sequence number above 0 (call Register first)",
        ));
    }
    let paths: Vec<&[u8]> = match &command.op {
        None => {
            return Err(Status::invalid_argument(
                "no operation given; send mkdir, create, delete, rename or add_chunk",
            ));
        }
        Some(Op::Register(_)) => {
            return Err(Status::invalid_argument(
                "a registration is not a change; call Register to open a session",
            ));
        }
        Some(Op::Mkdir(m)) => vec![&m.path],
        Some(Op::Create(c)) => vec![&c.path],
        Some(Op::Delete(d)) => vec![&d.path],
        Some(Op::Undelete(u)) => vec![&u.path],
        Some(Op::Purge(_)) => {
            return Err(Status::invalid_argument(
                "a purge is the master's own command (it purges deletions past their retention by itself); to delete at once, delete with skip_trash",
            ));
        }
        Some(Op::Rename(r)) => vec![&r.from, &r.to],
        Some(Op::AddChunk(a)) => vec![&a.path],
        Some(Op::SetReplication(r)) => vec![&r.path],
        Some(Op::Snapshot(s)) => vec![&s.src, &s.dst],
        Some(Op::CopyOnWrite(_) | Op::CopyDone(_)) => {
            return Err(Status::invalid_argument(
                "copy-on-write is the master's own command (it copies a shared chunk before the first write to it); write to the file instead",
            ));
        }
        Some(Op::Decommission(_)) => {
            return Err(Status::invalid_argument(
                "a decommission is the master's own command (it checks the node first); call the Decommission RPC (`cairn fs decommission NODE`)",
            ));
        }
        Some(Op::GrantVersion(_) | Op::AdoptVersion(_)) => {
            return Err(Status::invalid_argument(
                "chunk versions are the master's own commands (raised when it grants a lease, adopted from chunkservers' reports); ask Locate for a chunk's primary instead",
            ));
        }
    };
    if let Some(long) = paths.iter().find(|p| p.len() > MAX_PATH_BYTES) {
        return Err(Status::invalid_argument(format!(
            "a path of {} bytes; paths are limited to {MAX_PATH_BYTES}",
            long.len()
        )));
    }
    Ok(())
}

/// The wire form of a namespace entry, with its chunks' versions (and a
/// file's goal, `default` unless set).
fn entry_info(entry: &Entry, state: &MasterState, default: usize) -> EntryInfo {
    let replication = match &entry.inode {
        Inode::File { goal: 0, .. } => default as u32,
        Inode::File { goal, .. } => *goal,
        Inode::Directory => 0,
    };
    let chunks = match &entry.inode {
        Inode::Directory => Vec::new(),
        Inode::File { chunks, .. } => chunks
            .iter()
            .map(|&handle| ChunkInfo {
                handle,
                version: state
                    .namespace()
                    .chunk(handle)
                    .map_or(0, |meta| meta.version),
            })
            .collect(),
    };
    EntryInfo {
        path: entry.path.to_string(),
        directory: entry.inode == Inode::Directory,
        chunks,
        length: 0,
        replication,
    }
}

/// Answers a lookup from the state.
fn lookup(state: &MasterState, path: &FsPath, list: bool, default: usize) -> LookupReply {
    let refused = |error: crate::namespace::FsError| LookupReply {
        error: error_code(&error) as i32,
        message: error.to_string(),
        ..LookupReply::default()
    };
    let namespace = state.namespace();
    let entries = if list {
        match namespace.list(path) {
            Ok(entries) => entries,
            Err(error) => return refused(error),
        }
    } else {
        match namespace.get(path) {
            Ok(inode) => vec![Entry {
                path: path.clone(),
                inode: inode.clone(),
            }],
            Err(error) => return refused(error),
        }
    };
    if entries.len() > MAX_LISTING_ENTRIES {
        return LookupReply {
            error: FsErrorCode::DirectoryNotEmpty as i32,
            message: format!(
                "{path} has {} entries; listings are limited to {MAX_LISTING_ENTRIES}: list a subdirectory",
                entries.len()
            ),
            ..LookupReply::default()
        };
    }
    LookupReply {
        entries: entries
            .iter()
            .map(|e| entry_info(e, state, default))
            .collect(),
        ..LookupReply::default()
    }
}

#[tonic::async_trait]
impl Master for MasterServer {
    async fn mutate(
        &self,
        request: Request<MasterCommand>,
    ) -> Result<Response<MasterReply>, Status> {
        let mut command = request.into_inner();
        validate(&command)?;
        self.stamp(&mut command);
        if let Some(Op::Snapshot(_)) = &command.op {
            return Ok(Response::new(self.snapshot(&command).await?));
        }
        Ok(Response::new(self.submit(&command).await?))
    }

    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let registration = MasterCommand {
            op: Some(Op::Register(Register {})),
            ..MasterCommand::default()
        };
        let reply = self.submit(&registration).await?;
        Ok(Response::new(RegisterReply {
            client_id: reply.client_id,
        }))
    }

    async fn lookup(
        &self,
        request: Request<LookupRequest>,
    ) -> Result<Response<LookupReply>, Status> {
        let request = request.into_inner();
        let path = match FsPath::from_bytes(&request.path) {
            Ok(path) => path,
            Err(error) => {
                return Ok(Response::new(LookupReply {
                    error: FsErrorCode::InvalidPath as i32,
                    message: error.to_string(),
                    ..LookupReply::default()
                }));
            }
        };
        let list = request.list;
        let default = self.settings.replication;
        let mut reply = self
            .node
            .read(
                move |state: &MasterState| lookup(state, &path, list, default),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.error(e))?;
        // Sizes come from the chunkservers' reports, which this node keeps.
        let chunk_bytes = self.settings.chunk_bytes;
        reply.entries = self
            .table
            .with(move |t| {
                for entry in &mut reply.entries {
                    if let Some(last) = entry.chunks.last() {
                        let full = (entry.chunks.len() as u64 - 1).saturating_mul(chunk_bytes);
                        entry.length =
                            full.saturating_add(t.chunk_length(last.handle, last.version));
                    }
                }
                reply.entries
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(reply))
    }

    async fn locate(
        &self,
        request: Request<LocateRequest>,
    ) -> Result<Response<LocateReply>, Status> {
        Ok(Response::new(
            self.handle_locate(request.into_inner()).await?,
        ))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Ok(Response::new(
            self.handle_heartbeat(request.into_inner()).await?,
        ))
    }

    async fn usage(&self, _request: Request<UsageRequest>) -> Result<Response<UsageReply>, Status> {
        // The decommissioning marks as this node applied them (any node
        // answers, as for the reports).
        let marked = self.goals_and_decommissioning(false).await.ok();
        let now = tokio::time::Instant::now();
        let servers = self
            .table
            .with(move |t| {
                let mut usage = t.usage(now);
                if let Some((goals, decommissioning)) = marked {
                    t.set_decommissioning(decommissioning);
                    usage = t.usage(now);
                    t.mark_draining(&mut usage, &goals, now);
                }
                usage
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(UsageReply {
            servers,
            min_free_bytes: self.settings.min_free_bytes,
        }))
    }

    async fn fsck(&self, request: Request<FsckRequest>) -> Result<Response<FsckReply>, Status> {
        Ok(Response::new(self.handle_fsck(request.into_inner()).await?))
    }

    async fn trash_list(
        &self,
        request: Request<TrashListRequest>,
    ) -> Result<Response<TrashListReply>, Status> {
        Ok(Response::new(
            self.handle_trash_list(request.into_inner()).await?,
        ))
    }

    async fn safemode(
        &self,
        request: Request<SafemodeRequest>,
    ) -> Result<Response<SafemodeReply>, Status> {
        Ok(Response::new(
            self.handle_safemode(request.into_inner()).await?,
        ))
    }

    async fn decommission(
        &self,
        request: Request<DecommissionRequest>,
    ) -> Result<Response<DecommissionReply>, Status> {
        Ok(Response::new(
            self.handle_decommission(request.into_inner()).await?,
        ))
    }

    async fn balance(
        &self,
        request: Request<BalanceRequest>,
    ) -> Result<Response<BalanceReply>, Status> {
        Ok(Response::new(
            self.handle_balance(request.into_inner()).await?,
        ))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.node.status().to_reply()))
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use cairn_rpc::fs::{AdoptVersion, Create, GrantVersion, Purge};

    use super::*;

    fn command(op: Op) -> MasterCommand {
        MasterCommand {
            client_id: 7,
            seq: 1,
            op: Some(op),
        }
    }

    #[test]
    fn a_client_cannot_send_the_master_s_own_commands() {
        let own = [
            Op::GrantVersion(GrantVersion {
                handle: 1,
                expected: 0,
                replicas: vec!["http://cs".into()],
            }),
            Op::AdoptVersion(AdoptVersion {
                handle: 1,
                version: 99,
            }),
            Op::Purge(Purge::default()),
            Op::Decommission(cairn_rpc::fs::Decommission::default()),
        ];
        for op in own {
            let status = validate(&command(op.clone())).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{op:?}");
            assert!(status.message().contains("master's own"), "{status:?}");
        }
        let create = Op::Create(Create {
            path: b"/f".to_vec(),
        });
        assert!(validate(&command(create)).is_ok());
    }
}
