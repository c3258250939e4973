//! [`ChunkServer`]: a chunkserver — its replicas, the data flow and the
//! primary-backup write path (GFS §3.1-§3.3) — answering `cairn.fs.Chunk`,
//! and reporting to every master in heartbeats (§2.6.2).
//!
//! One task owns the state ([`ChunkStore`], pushed data, roles); handlers
//! send it messages. A primary serializes each chunk's mutations through a
//! queue of its own ([`MAX_QUEUED_MUTATIONS`]): it takes every mutation
//! waiting there (up to [`MAX_BATCH`]), numbers them, makes them locally
//! as one write with one sync while every secondary applies the same batch
//! (group commit), and only then takes the next, so that every replica
//! applies them in the same order.
//!
//! Here: the setup and the gRPC handlers. The write path is in
//! `pipeline.rs`, reads in `reads.rs`, the heartbeat in `heartbeat.rs`,
//! clones in `cloning.rs`, inspection and the scrub in `inspect.rs`,
//! short-circuit reads in `local_reads.rs`, the state task in `state.rs`.

mod cloning;
#[cfg(all(test, not(madsim)))]
mod disk_full_tests;
mod heartbeat;
mod inspect;
#[cfg(not(madsim))]
mod local_reads;
mod pipeline;
mod reads;

/// The simulation has no Unix sockets: a chunkserver there offers no
/// short-circuit reads, and its clients read through the RPC.
#[cfg(madsim)]
impl ChunkServer {
    pub fn serve_local_reads(
        &self,
        _root: &std::path::Path,
    ) -> std::io::Result<std::path::PathBuf> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "short-circuit reads are not simulated",
        ))
    }
}
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use cairn_rpc::RpcClient;
use cairn_rpc::fs::chunk_server::{Chunk, ChunkServer as ChunkGrpcServer};
use cairn_rpc::fs::{
    AppendRequest, ApplyBatchReply, ApplyBatchRequest, ApplyRequest, CloneRequest,
    CopyChunkRequest, CreateReplicaRequest, InspectReply, InspectRequest, LocalReadsReply,
    LocalReadsRequest, MutationReply, PushReply, PushRequest, ReadReply, ReadRequest,
    SetVersionReply, SetVersionRequest, WriteRequest,
};
use cairn_storage::Disk;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

pub use cloning::MAX_CLONES_IN_FLIGHT;
pub use inspect::MAX_INSPECT_HANDLES;
use inspect::{ScrubCounters, inspect_replica, scrub_loop};
#[cfg(not(madsim))]
pub use local_reads::{LOCAL_READS_SOCKET, MAX_LOCAL_READERS};
use pipeline::name_disk;
use reads::run_plan;
pub use state::PrimaryObserver;
use state::{MutationKind, ServerState, status_of};

use crate::chunk_store::{ChunkError, ChunkStore};
use crate::clock::Clock;
use crate::owner::Owner;
use crate::peers::{Peers, chunk_stub};
use crate::push_buffer::PushBuffer;
use crate::settings::FsSettings;

/// The most mutations waiting on one chunk's primary; beyond it a write or
/// append is refused (`RESOURCE_EXHAUSTED`: retry after a pause).
pub const MAX_QUEUED_MUTATIONS: usize = 64;
/// The most bytes one read returns (and one mutation carries).
pub const MAX_READ_BYTES: u64 = 4 << 20;
/// The largest message a chunkserver takes or sends (a push of
/// [`MAX_READ_BYTES`] and its envelope).
pub const MAX_MESSAGE_BYTES: usize = 5 << 20;
/// How long one call to a peer (forwarding, applying) may take.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The most mutations of one chunk a primary makes as one batch (one sync
/// on each replica).
pub const MAX_BATCH: usize = 32;

/// How a chunkserver is set up.
#[derive(Clone)]
pub struct ChunkServerConfig {
    /// The URL others reach this server at: its name for the master.
    pub url: String,
    /// Every master node's URL.
    pub masters: Vec<String>,
    /// Where the replicas live on the disk.
    pub dir: PathBuf,
    pub settings: FsSettings,
    /// Called each time a replica accepts a mutation as primary (tests).
    pub observer: Option<PrimaryObserver>,
    /// The clock leases are measured by ([`Clock::default`]: the
    /// runtime's; tests skew it).
    pub clock: Clock,
    /// The disk under the replicas: its name and free space (none: only
    /// `settings.capacity_bytes` bounds the space offered).
    pub space: Option<DiskSpace>,
    /// The background scrub's rate in bytes per second over idle replicas
    /// (0: no scrub).
    pub scrub_bytes_per_sec: u64,
}

/// Measures the free bytes of the file system the replicas live on.
pub type FreeSpaceProbe = Arc<dyn Fn() -> std::io::Result<u64> + Send + Sync>;

/// The disk a chunkserver's replicas live on, as it reports it.
#[derive(Clone)]
pub struct DiskSpace {
    /// How messages name it (the data directory).
    pub label: String,
    pub probe: FreeSpaceProbe,
}

impl std::fmt::Debug for ChunkServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkServerConfig")
            .field("url", &self.url)
            .field("masters", &self.masters)
            .field("dir", &self.dir)
            .field("settings", &self.settings)
            .field("clock", &self.clock)
            .field("disk", &self.space.as_ref().map(|d| &d.label))
            .field("scrub_bytes_per_sec", &self.scrub_bytes_per_sec)
            .finish_non_exhaustive()
    }
}

struct Inner {
    url: String,
    settings: FsSettings,
    clock: Clock,
    /// How messages name the disk, and its free space.
    disk: String,
    probe: Option<FreeSpaceProbe>,
    /// Set by a write that found the disk full, cleared by one that
    /// succeeds: reported as no free space meanwhile.
    disk_full: AtomicBool,
    /// Clones running here (bounded by [`MAX_CLONES_IN_FLIGHT`]).
    clones: AtomicUsize,
    state: Owner<ServerState>,
    masters: Vec<RpcClient>,
    peers: Peers,
    scrub: Arc<ScrubCounters>,
    /// Where short-circuit reads are served, once they are
    /// ([`ChunkServer::serve_local_reads`]; never in simulation).
    local_reads: std::sync::OnceLock<LocalReadsReply>,
}

/// A running chunkserver. Cheap to clone.
#[derive(Clone)]
pub struct ChunkServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChunkServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkServer")
            .field("url", &self.inner.url)
            .finish()
    }
}

fn stopped(error: crate::owner::Stopped) -> Status {
    Status::unavailable(error.to_string())
}

impl ChunkServer {
    /// Opens the replicas in `config.dir` of `disk` and starts the state
    /// task and the heartbeat loop. Serve [`router`](Self::router) on
    /// `config.url`.
    pub fn start(config: ChunkServerConfig, disk: Arc<dyn Disk>) -> std::io::Result<Self> {
        let store = ChunkStore::open(disk, &config.dir, config.settings.chunk_bytes)?;
        let options = cairn_rpc::ClientOptions {
            connect_timeout: config.settings.heartbeat_interval,
            call_timeout: config.settings.heartbeat_interval,
        };
        let masters = config
            .masters
            .iter()
            .map(|url| RpcClient::new(url.clone(), options.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let state = ServerState {
            url: config.url.clone(),
            store,
            buffer: PushBuffer::default(),
            roles: Default::default(),
            pipelines: Default::default(),
            observer: config.observer,
            mutated: Default::default(),
            incarnation: rand::Rng::r#gen(&mut cairn_rpc::seeded_rng()),
            changes: 0,
        };
        let (disk, probe) = match config.space {
            Some(space) => (space.label, Some(space.probe)),
            None => (config.dir.display().to_string(), None),
        };
        let inner = Arc::new(Inner {
            url: config.url,
            settings: config.settings,
            clock: config.clock,
            disk,
            probe,
            disk_full: AtomicBool::new(false),
            clones: AtomicUsize::new(0),
            state: Owner::spawn(state),
            masters,
            peers: Peers::new(PEER_CALL_TIMEOUT),
            scrub: Arc::default(),
            local_reads: std::sync::OnceLock::new(),
        });
        tokio::spawn(heartbeat::heartbeat_loop(inner.clone()));
        if config.scrub_bytes_per_sec > 0 {
            tokio::spawn(scrub_loop(
                inner.state.clone(),
                inner.scrub.clone(),
                config.scrub_bytes_per_sec,
                inner.settings.lease,
            ));
        }
        Ok(Self { inner })
    }

    /// This server's URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The gRPC services of this server, to serve on its port.
    pub fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder().add_service(
            ChunkGrpcServer::new(self.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// The same service as [`router`](Self::router), as routes that
    /// `cairn_rpc::serve_routes` serves with every limit.
    #[cfg(not(madsim))]
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(
            ChunkGrpcServer::new(self.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }
}

#[tonic::async_trait]
impl Chunk for ChunkServer {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let mut request = request.into_inner();
        let key = (request.client_id, request.data_id);
        let data = std::mem::take(&mut request.data);
        let kept = data.clone();
        let now = Instant::now();
        self.inner
            .state
            .with(move |s| s.buffer.insert(key, kept, now))
            .await
            .map_err(stopped)?
            .map_err(|full| Status::resource_exhausted(full.to_string()))?;
        if request.chain.is_empty() {
            return Ok(Response::new(PushReply {}));
        }
        let next = request.chain.remove(0);
        let forward = PushRequest {
            client_id: request.client_id,
            data_id: request.data_id,
            data,
            chain: request.chain,
        };
        let peer = self
            .inner
            .peers
            .get(&next)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        peer.call(forward, |c, r| async move { chunk_stub(c).push(r).await })
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "forwarding the data to {next} failed ({e}); push again"
                ))
            })?;
        Ok(Response::new(PushReply {}))
    }

    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<MutationReply>, Status> {
        let r = request.into_inner();
        let kind = MutationKind::Write { offset: r.offset };
        self.submit(r.handle, r.version, kind, (r.client_id, r.data_id))
            .await
    }

    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<MutationReply>, Status> {
        let r = request.into_inner();
        self.submit(
            r.handle,
            r.version,
            MutationKind::Append,
            (r.client_id, r.data_id),
        )
        .await
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<MutationReply>, Status> {
        let request = request.into_inner();
        let result = self
            .inner
            .state
            .with(move |s| s.apply(&request))
            .await
            .map_err(stopped)?
            .map(Response::new);
        name_disk(&self.inner, result)
    }

    async fn apply_batch(
        &self,
        request: Request<ApplyBatchRequest>,
    ) -> Result<Response<ApplyBatchReply>, Status> {
        let request = request.into_inner();
        let applied = self
            .inner
            .state
            .with(move |s| s.apply_batch(&request.mutations))
            .await
            .map_err(stopped)?;
        name_disk(&self.inner, applied)?;
        Ok(Response::new(ApplyBatchReply {}))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let r = request.into_inner();
        let plan = self.plan_read(r).await?;
        // The I/O and the checksums run off the async workers (many
        // reads side by side), and the state task stays free for writes
        // and heartbeats.
        let (data, version) = match run_plan(plan).await {
            Err(ChunkError::Corrupt { .. }) => self.read_in_order(r).await?,
            read => read.map_err(status_of)?,
        };
        Ok(Response::new(ReadReply { data, version }))
    }

    async fn local_reads(
        &self,
        _request: Request<LocalReadsRequest>,
    ) -> Result<Response<LocalReadsReply>, Status> {
        Ok(Response::new(
            self.inner.local_reads.get().cloned().unwrap_or_default(),
        ))
    }

    async fn set_version(
        &self,
        request: Request<SetVersionRequest>,
    ) -> Result<Response<SetVersionReply>, Status> {
        let request = request.into_inner();
        let reply = self
            .inner
            .state
            .with(move |s| s.set_version(request))
            .await
            .map_err(stopped)??;
        Ok(Response::new(reply))
    }

    async fn inspect(
        &self,
        request: Request<InspectRequest>,
    ) -> Result<Response<InspectReply>, Status> {
        let handles = request.into_inner().handles;
        if handles.len() > MAX_INSPECT_HANDLES {
            return Err(Status::invalid_argument(format!(
                "{} replicas in one inspection; ask for at most {MAX_INSPECT_HANDLES} at a time",
                handles.len()
            )));
        }
        let mut replicas = Vec::with_capacity(handles.len());
        for handle in handles {
            replicas.push(inspect_replica(&self.inner.state, handle, 0).await.0);
        }
        Ok(Response::new(InspectReply { replicas }))
    }

    async fn create_replica(
        &self,
        request: Request<CreateReplicaRequest>,
    ) -> Result<Response<SetVersionReply>, Status> {
        let handle = request.into_inner().handle;
        let created = self
            .inner
            .state
            .with(move |s| match s.store.create(handle, 0) {
                Ok(()) => Ok(s.changed(0)),
                // A retried create: the empty replica is already here.
                Err(ChunkError::AlreadyExists(_))
                    if s.store.replica(handle).is_some_and(|r| r.version == 0) =>
                {
                    Ok(s.changed(0))
                }
                Err(error) => Err(status_of(error)),
            })
            .await
            .map_err(stopped)?;
        let reply = name_disk(&self.inner, created)?;
        Ok(Response::new(reply))
    }

    async fn copy_chunk(
        &self,
        request: Request<CopyChunkRequest>,
    ) -> Result<Response<SetVersionReply>, Status> {
        let request = request.into_inner();
        let copied = self
            .inner
            .state
            .with(move |s| s.copy_local(&request))
            .await
            .map_err(stopped)?;
        Ok(Response::new(name_disk(&self.inner, copied)?))
    }

    async fn clone_replica(
        &self,
        request: Request<CloneRequest>,
    ) -> Result<Response<SetVersionReply>, Status> {
        let request = request.into_inner();
        cloning::check(&self.inner, &request)?;
        let _slot = cloning::CloneSlot::take(&self.inner.clones)?;
        let (handle, version, length) = (request.handle, request.version, request.length);
        let here = self
            .inner
            .state
            .with(move |s| {
                let needed = s.clone_needed(handle, version, length)?;
                Ok::<_, Status>((!needed).then(|| s.changed(length)))
            })
            .await
            .map_err(stopped)??;
        if let Some(reply) = here {
            return Ok(Response::new(reply));
        }
        let copy = cloning::fetch(&self.inner, &request).await?;
        let installed = self
            .inner
            .state
            .with(move |s| s.install(handle, version, &copy))
            .await
            .map_err(stopped)?;
        let reply = name_disk(&self.inner, installed)?;
        tracing::info!(handle, version, length = reply.length, source = %request.source, "replica cloned");
        Ok(Response::new(reply))
    }
}
