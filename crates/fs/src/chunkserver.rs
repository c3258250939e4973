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

mod cloning;
#[cfg(all(test, not(madsim)))]
mod disk_full_tests;
mod heartbeat;
mod inspect;
#[cfg(not(madsim))]
mod local_reads;

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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::chunk_server::{Chunk, ChunkServer as ChunkGrpcServer};
use cairn_rpc::fs::{
    AppendRequest, ApplyBatchReply, ApplyBatchRequest, ApplyRequest, CloneRequest,
    CopyChunkRequest, CreateReplicaRequest, InspectReply, InspectRequest, LocalReadsReply,
    LocalReadsRequest, MutationReply, PushReply, PushRequest, ReadReply, ReadRequest,
    SetVersionReply, SetVersionRequest, WriteRequest,
};
use cairn_rpc::{RpcClient, RpcError};
use cairn_storage::Disk;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

pub use cloning::MAX_CLONES_IN_FLIGHT;
pub use inspect::MAX_INSPECT_HANDLES;
use inspect::{ScrubCounters, inspect_replica, scrub_loop};
#[cfg(not(madsim))]
pub use local_reads::{LOCAL_READS_SOCKET, MAX_LOCAL_READERS};
pub use state::PrimaryObserver;
use state::{DISK_FULL, Mutation, MutationKind, Prepared, Refusal, ServerState, status_of};

use crate::chunk_store::{ChunkError, ChunkStore, ReadPlan};
use crate::clock::Clock;
use crate::namespace::ChunkHandle;
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
/// How often the primary tries a secondary's apply before giving up.
const APPLY_ATTEMPTS: usize = 3;
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

/// Runs a read's file I/O and checksums off the async workers (inline in
/// simulation, which has no threads of its own).
async fn run_plan(plan: ReadPlan) -> Result<(Bytes, u64), ChunkError> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(move || plan.run())
            .await
            .unwrap_or_else(|error| Err(std::io::Error::other(error.to_string()).into()))
    }
    #[cfg(madsim)]
    {
        plan.run()
    }
}

/// Names this chunkserver and its disk in a disk-full refusal (and
/// remembers the disk is full until a write succeeds).
fn name_disk<T>(inner: &Inner, result: Result<T, Status>) -> Result<T, Status> {
    match result {
        Ok(answer) => {
            inner.disk_full.store(false, Ordering::Relaxed);
            Ok(answer)
        }
        Err(status) if status.message().starts_with(DISK_FULL) => {
            inner.disk_full.store(true, Ordering::Relaxed);
            Err(Status::resource_exhausted(format!(
                "chunkserver {}: {} (disk {})",
                inner.url,
                status.message(),
                inner.disk
            )))
        }
        Err(status) => Err(status),
    }
}

/// Makes a batch of one chunk's mutations as primary: numbers them in
/// their order, then makes them (one write, one sync) locally and on every
/// secondary at once. Answers each mutation of the batch.
async fn mutate_batch(
    inner: &Arc<Inner>,
    batch: &[Mutation],
) -> Vec<Result<MutationReply, Status>> {
    let handle = batch[0].handle;
    let everyone = |status: Status| batch.iter().map(|_| Err(status.clone())).collect();
    let mut asked = false;
    let now = loop {
        let now = inner.clock.now();
        match inner.state.with(move |s| s.lease_live(handle, now)).await {
            Err(error) => return everyone(stopped(error)),
            Ok(Err(status)) => return everyone(status),
            Ok(Ok(true)) => break now,
            Ok(Ok(false)) if !asked => {
                asked = true;
                heartbeat::heartbeat_round(inner).await;
            }
            Ok(Ok(false)) => {
                return everyone(Status::failed_precondition(format!(
                    "the lease on chunk {handle} has expired here and the master did not extend it; ask the master for the current primary"
                )));
            }
        }
    };
    let requests: Vec<_> = batch
        .iter()
        .map(|m| (m.version, m.kind, m.data_key))
        .collect();
    let prepared = match inner
        .state
        .with(move |s| s.prepare_batch(handle, &requests, now))
        .await
    {
        Ok(prepared) => prepared,
        Err(error) => return everyone(stopped(error)),
    };
    let made: Vec<&Prepared> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
    let outcome = match made.first() {
        Some(first) => make_everywhere(inner, handle, first.apply.version, &made).await,
        None => Ok(()),
    };
    prepared
        .iter()
        .map(|p| match (p, &outcome) {
            (Err(Refusal::Status(status)), _) => Err(status.clone()),
            (Err(Refusal::NeedLease), _) => Err(Status::failed_precondition(format!(
                "the lease on chunk {handle} ended here; ask the master for the current primary"
            ))),
            (Ok(_), Err(status)) => Err(status.clone()),
            (Ok(made), Ok(())) => Ok(made.reply),
        })
        .collect()
}

/// Makes numbered mutations of one chunk locally (one batch) while every
/// secondary applies them (one batch each); gives the lease up if any
/// replica failed.
async fn make_everywhere(
    inner: &Arc<Inner>,
    handle: ChunkHandle,
    version: u64,
    made: &[&Prepared],
) -> Result<(), Status> {
    let writes: Vec<(u64, Bytes)> = made.iter().filter_map(|p| p.local.clone()).collect();
    // The local write and the secondaries' applies run at once: the order
    // is fixed already (the serial numbers), and success needs them all.
    let local = async {
        if writes.is_empty() {
            return Ok(());
        }
        let written = inner
            .state
            .with(move |s| {
                let slices: Vec<(u64, &[u8])> = writes.iter().map(|(o, b)| (*o, &b[..])).collect();
                s.mutated.insert(handle, Instant::now());
                let written = s.store.write_batch(handle, version, &slices);
                s.checked(handle, written)
            })
            .await
            .map_err(stopped)?
            .map(|_| ())
            .map_err(status_of);
        name_disk(inner, written)
    };
    let request = ApplyBatchRequest {
        mutations: made.iter().map(|p| p.apply.clone()).collect(),
    };
    let calls = made[0].secondaries.iter().map(|url| {
        let request = request.clone();
        async move { (url, apply_on(inner, url, request).await) }
    });
    let (local, applied) = futures::future::join(local, futures::future::join_all(calls)).await;
    let mut full_disk =
        matches!(&local, Err(status) if status.code() == tonic::Code::ResourceExhausted);
    let mut failures: Vec<String> = applied
        .into_iter()
        .filter_map(|(url, result)| {
            let error = result.err()?;
            full_disk |= error.to_string().contains(DISK_FULL);
            Some(format!("{url}: {error}"))
        })
        .collect();
    if let Err(status) = &local {
        failures.insert(0, format!("{}: {}", inner.url, status.message()));
    }
    if failures.is_empty() {
        return Ok(());
    }
    let _ = inner
        .state
        .with(move |s| s.relinquish(handle, version))
        .await;
    let message = format!(
        "not every replica made the mutation ({}); the primary gave up its lease on chunk {handle}: ask the master again and retry",
        failures.join("; ")
    );
    // A full disk keeps its code, so the client (and the operator) can
    // tell it from a replica that is down.
    Err(if full_disk {
        Status::resource_exhausted(message)
    } else {
        Status::unavailable(message)
    })
}

/// Has one secondary apply a batch, retrying transport failures (an apply
/// is idempotent: the serial numbers mark it).
async fn apply_on(inner: &Inner, url: &str, request: ApplyBatchRequest) -> Result<(), RpcError> {
    let peer = inner.peers.get(url)?;
    let mut last = None;
    for _ in 0..APPLY_ATTEMPTS {
        let result = peer
            .call(request.clone(), |c, r| async move {
                ChunkClient::new(c).apply_batch(r).await
            })
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(error) if error.outcome_unknown() => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Runs one chunk's mutations in order until the primary's role changes:
/// each time, every mutation waiting (up to [`MAX_BATCH`]) as one batch.
async fn pipeline(inner: Arc<Inner>, mut queue: mpsc::Receiver<Mutation>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(mutation) => batch.push(mutation),
                Err(_) => break,
            }
        }
        let results = mutate_batch(&inner, &batch).await;
        for (mutation, result) in batch.into_iter().zip(results) {
            let _ = mutation.reply.send(result);
        }
    }
}

impl ChunkServer {
    /// Queues a mutation on its chunk's pipeline and waits for it; a
    /// disk-full refusal names this chunkserver and its disk.
    async fn submit(
        &self,
        handle: ChunkHandle,
        version: u64,
        kind: MutationKind,
        data_key: (u64, u64),
    ) -> Result<Response<MutationReply>, Status> {
        let (reply, answer) = oneshot::channel();
        let mutation = Mutation {
            handle,
            version,
            kind,
            data_key,
            reply,
        };
        let inner = self.inner.clone();
        let queue = self
            .inner
            .state
            .with(move |s| {
                // Only a primary gets a queue: a request anywhere else is
                // refused here, so requests cannot make tasks pile up.
                s.designated(handle, version)?;
                Ok::<_, Status>(
                    s.pipelines
                        .entry(handle)
                        .or_insert_with(|| {
                            let (sender, queue) = mpsc::channel(MAX_QUEUED_MUTATIONS);
                            tokio::spawn(pipeline(inner, queue));
                            sender
                        })
                        .clone(),
                )
            })
            .await
            .map_err(stopped)??;
        queue.try_send(mutation).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(format!(
                "{MAX_QUEUED_MUTATIONS} mutations already wait on chunk {handle}; retry after a pause"
            )),
            mpsc::error::TrySendError::Closed(_) => Status::unavailable(format!(
                "the primary of chunk {handle} changed; ask the master again"
            )),
        })?;
        let result = match answer.await {
            Ok(result) => result.map(Response::new),
            Err(_) => Err(Status::unavailable(format!(
                "the primary of chunk {handle} stopped before the mutation finished; ask the master again and retry"
            ))),
        };
        name_disk(&self.inner, result)
    }
}

impl ChunkServer {
    /// The plan of the read `r` asks for, after the checks every read
    /// passes (its size, the replica's presence and version), taken on the
    /// state task: for the Read RPC and for short-circuit reads alike.
    async fn plan_read(&self, r: ReadRequest) -> Result<ReadPlan, Status> {
        if r.length > MAX_READ_BYTES {
            return Err(Status::invalid_argument(format!(
                "a read of {} bytes; reads are limited to {MAX_READ_BYTES}: read in pieces",
                r.length
            )));
        }
        let handle = r.handle;
        self.inner
            .state
            .with(move |s| {
                let replica = s
                    .store
                    .replica(handle)
                    .ok_or(ChunkError::NoSuchChunk(handle))
                    .map_err(status_of)?;
                if replica.version < r.version {
                    return Err(Status::failed_precondition(format!(
                        "the replica of chunk {handle} here is stale (version {} < {}); read another replica",
                        replica.version, r.version
                    )));
                }
                s.store
                    .plan_read(handle, r.offset, r.length)
                    .map_err(status_of)
            })
            .await
            .map_err(stopped)?
    }

    /// Reads again on the state task, in order with the writes: a read
    /// planned off that task can meet bytes a write changed meanwhile, so
    /// only this read decides that a replica is corrupt (and sets it aside).
    async fn read_in_order(&self, r: ReadRequest) -> Result<(Bytes, u64), Status> {
        self.inner
            .state
            .with(move |s| {
                let read = s.store.read(r.handle, r.offset, r.length);
                s.checked(r.handle, read).map_err(status_of)
            })
            .await
            .map_err(stopped)?
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
