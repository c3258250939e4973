//! [`Client`]: the file store for programs — namespace calls (through
//! [`MasterClient`]), and reads, writes and record appends on chunks
//! (GFS §3.1-§3.3).
//!
//! A write or an append: ask the master for the chunk's primary and
//! secondaries (cached until the lease ends), push the data along the
//! chain of replicas, then ask the primary to commit it. Any failure drops
//! the cached location and retries from the start, with a new data id,
//! backing off, until the client's deadline: a region may then be
//! inconsistent between replicas, exactly as the paper's table says. A
//! read goes to any live replica at the latest version, and to another on
//! an error or a checksum failure.
//!
//! Bulk transfers stream: a [`FileWriter`] keeps several pieces in flight
//! (pushing the next while the primary commits the last), and a
//! [`FileReader`] prefetches several pieces from the replicas in turn.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::{
    AppendRequest, EntryInfo, FsErrorCode, LocateReply, MutationReply, PushRequest, ReadRequest,
    TrashEntry, WriteRequest,
};
use cairn_rpc::{RpcClient, RpcError};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tonic::Code;

use crate::file_reader::{FileReader, READ_WINDOW};
use crate::file_writer::FileWriter;

use crate::chunkserver::MAX_READ_BYTES;
use crate::location_cache::LocationCache;
use crate::master_client::{MasterClient, MasterError};
use crate::namespace::ChunkHandle;
use crate::path::FsPath;
use crate::peers::{Peers, chunk_stub};
use crate::settings::FsSettings;
use crate::short_circuit::ShortCircuit;

/// The most bytes one mutation carries; larger writes are split.
pub(crate) const MAX_MUTATION_BYTES: u64 = MAX_READ_BYTES;
/// How long one call to a chunkserver may take.
const CHUNK_CALL_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Why a file operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The master refused or could not answer (see [`MasterError`]).
    #[error(transparent)]
    Master(#[from] MasterError),
    /// A record larger than a quarter of a chunk.
    #[error(
        "a record of {len} bytes; records are at most {max} bytes (a quarter of a chunk): split it"
    )]
    RecordTooLarge { len: u64, max: u64 },
    /// A chunkserver refused the request for a reason retrying cannot
    /// change.
    #[error("a chunkserver refused the request: {0}")]
    Refused(String),
    /// No replica of a chunk verified now (`checksum`): the message names
    /// the chunk and what each replica answered.
    #[error("{0}")]
    NoGoodReplica(String),
    /// No attempt succeeded within the client's deadline. A write or
    /// append may have been applied on some replicas (the region is
    /// inconsistent until a later write succeeds).
    #[error(
        "{what} did not succeed within {after:?} (last error: {last}); check that the chunkservers and masters run, then retry"
    )]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
}

/// Where a chunk is, as the master answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    pub handle: ChunkHandle,
    pub version: u64,
    /// For a mutation: the primary.
    pub primary: Option<String>,
    /// For a mutation, the secondaries; for a read, every live replica at
    /// the latest version.
    pub replicas: Vec<String>,
    /// How many chunks the file had.
    pub chunk_count: u64,
}

impl ChunkLocation {
    fn from_reply(reply: LocateReply) -> Self {
        Self {
            handle: reply.handle,
            version: reply.version,
            primary: (!reply.primary.is_empty()).then_some(reply.primary),
            replicas: reply.replicas,
            chunk_count: reply.chunk_count,
        }
    }
}

/// Retry or give up.
#[derive(Debug)]
pub(crate) enum Failure {
    Retry(String),
    Final(ClientError),
}

/// Whether a chunkserver's refusal may go away on a retry.
fn classify(error: RpcError) -> Failure {
    match &error {
        RpcError::Rejected { status, .. }
            if matches!(status.code(), Code::InvalidArgument | Code::OutOfRange) =>
        {
            Failure::Final(ClientError::Refused(status.message().to_string()))
        }
        _ => Failure::Retry(error.to_string()),
    }
}

/// Pauses between attempts, growing, with jitter, until a deadline.
pub(crate) struct Backoff {
    what: String,
    started: Instant,
    deadline: Duration,
    pause: Duration,
}

impl Backoff {
    pub(crate) fn new(what: String, deadline: Duration) -> Self {
        Self {
            what,
            started: Instant::now(),
            deadline,
            pause: FIRST_PAUSE,
        }
    }

    pub(crate) async fn wait(&mut self, rng: &mut StdRng, last: String) -> Result<(), ClientError> {
        if self.started.elapsed() >= self.deadline {
            return Err(ClientError::Timeout {
                what: std::mem::take(&mut self.what),
                after: self.deadline,
                last,
            });
        }
        let pause = self.pause / 2 + self.pause.mul_f64(rng.r#gen::<f64>() / 2.0);
        tokio::time::sleep(pause).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Ok(())
    }
}

/// A file-store client. Calls take `&mut self`: one operation at a time
/// per client (use several clients for concurrency).
#[derive(Debug)]
pub struct Client {
    master: MasterClient,
    pub(crate) peers: Peers,
    pub(crate) settings: FsSettings,
    /// Names this client's pushed data on the chunkservers.
    client_id: u64,
    next_data_id: u64,
    pub(crate) deadline: Duration,
    pub(crate) rng: StdRng,
    /// Primary and secondaries of the chunks this client mutates, until
    /// the lease ends.
    mutations: LocationCache,
    /// Replicas of the chunks this client reads, for one lease period.
    reads: LocationCache,
    /// Reads through file descriptors from chunkservers on this machine.
    pub(crate) short_circuit: Arc<ShortCircuit>,
}

impl Client {
    /// A client of the store whose masters are at `masters`; each operation
    /// retries until `deadline`.
    pub fn new(
        masters: &[String],
        settings: FsSettings,
        deadline: Duration,
    ) -> Result<Self, ClientError> {
        let master = MasterClient::new(masters, Duration::from_secs(1), deadline)?;
        let mut rng = cairn_rpc::seeded_rng();
        Ok(Self {
            master,
            peers: Peers::new(CHUNK_CALL_TIMEOUT),
            settings,
            client_id: rng.r#gen(),
            next_data_id: 0,
            deadline,
            rng,
            mutations: LocationCache::default(),
            reads: LocationCache::default(),
            short_circuit: Arc::new(ShortCircuit::new(true)),
        })
    }

    /// Turns short-circuit reads (from chunkservers on this machine,
    /// through file descriptors; on by default) on or off. Off, every read
    /// is a Read RPC.
    pub fn set_short_circuit(&mut self, on: bool) {
        self.short_circuit = Arc::new(ShortCircuit::new(on));
    }

    /// The namespace clerk underneath.
    pub fn master(&mut self) -> &mut MasterClient {
        &mut self.master
    }

    pub async fn mkdir(&mut self, path: &FsPath, parents: bool) -> Result<(), ClientError> {
        Ok(self.master.mkdir(path, parents).await?)
    }

    pub async fn create(&mut self, path: &FsPath) -> Result<(), ClientError> {
        self.forget_within(path);
        Ok(self.master.create(path).await?)
    }

    /// Deletes into the trash (restorable until the retention ends).
    pub async fn delete(&mut self, path: &FsPath, recursive: bool) -> Result<(), ClientError> {
        self.forget_within(path);
        self.master.delete(path, recursive).await?;
        Ok(())
    }

    /// Deletes at once (`--skip-trash`).
    pub async fn delete_skipping_trash(
        &mut self,
        path: &FsPath,
        recursive: bool,
    ) -> Result<(), ClientError> {
        self.forget_within(path);
        self.master.delete_skipping_trash(path, recursive).await?;
        Ok(())
    }

    /// Restores the latest deletion of `path` within the retention.
    pub async fn undelete(&mut self, path: &FsPath) -> Result<(), ClientError> {
        self.forget_within(path);
        Ok(self.master.undelete(path).await?)
    }

    /// Drops the cached locations of `path` and below: after this client
    /// deletes, renames or restores a path, a file of that name is another
    /// file with other chunks, and a read or write must not go to the old
    /// ones.
    fn forget_within(&mut self, path: &FsPath) {
        self.mutations.forget_within(path);
        self.reads.forget_within(path);
    }

    /// The deletions of `path` or below it that can still be restored.
    pub async fn trash(&self, path: &FsPath) -> Result<Vec<TrashEntry>, ClientError> {
        Ok(self.master.trash(path).await?)
    }

    /// Sets how many replicas the file `path` should have (1 to 16); the
    /// master's healer then clones or deletes replicas to match.
    pub async fn set_replication(&mut self, path: &FsPath, goal: u32) -> Result<(), ClientError> {
        Ok(self.master.set_replication(path, goal).await?)
    }

    pub async fn rename(
        &mut self,
        from: &FsPath,
        to: &FsPath,
        replace: bool,
    ) -> Result<(), ClientError> {
        self.forget_within(from);
        self.forget_within(to);
        Ok(self.master.rename(from, to, replace).await?)
    }

    /// Copies `src` (a file or a directory tree) to `dst` at once (GFS
    /// §3.4): the copy shares the chunks, and the first write to a shared
    /// chunk, on either side, copies it on its chunkservers.
    pub async fn snapshot(&mut self, src: &FsPath, dst: &FsPath) -> Result<(), ClientError> {
        self.forget_within(src);
        self.forget_within(dst);
        Ok(self.master.snapshot(src, dst).await?)
    }

    /// The file at `path` (its chunks and their versions), refusing a
    /// directory: what a program checks before reading or writing it.
    pub async fn open(&self, path: &FsPath) -> Result<EntryInfo, ClientError> {
        let entry = self.master.stat(path).await?;
        if entry.directory {
            return Err(MasterError::Refused {
                code: FsErrorCode::IsADirectory,
                message: format!("{path} is a directory; open a file"),
            }
            .into());
        }
        Ok(entry)
    }

    pub async fn stat(&self, path: &FsPath) -> Result<EntryInfo, ClientError> {
        Ok(self.master.stat(path).await?)
    }

    pub async fn list(&self, path: &FsPath) -> Result<Vec<EntryInfo>, ClientError> {
        Ok(self.master.list(path).await?)
    }

    /// Where chunk `index` of `path` is (for a read: every live replica at
    /// the latest version; for a mutation: its primary).
    pub async fn locate(
        &self,
        path: &FsPath,
        index: u64,
        mutate: bool,
    ) -> Result<ChunkLocation, ClientError> {
        let reply = self.master.locate(path, index, mutate, mutate).await?;
        Ok(ChunkLocation::from_reply(reply))
    }

    pub(crate) async fn mutation_location(
        &mut self,
        path: &FsPath,
        index: u64,
    ) -> Result<ChunkLocation, ClientError> {
        // This client's reads of the chunk then ask the master again: a
        // replica that misses this mutation keeps the old version, which a
        // read at the old version would accept.
        self.reads.forget(path, index);
        if let Some(location) = self.mutations.get(path, index) {
            return Ok(location);
        }
        let reply = self.master.locate(path, index, true, true).await?;
        // Never cached past a lease of ours (nor an absurd answer).
        let valid = Duration::from_millis(reply.valid_ms).min(self.settings.lease);
        let until = Instant::now() + valid;
        let location = ChunkLocation::from_reply(reply);
        self.mutations.insert(path, index, location.clone(), until);
        Ok(location)
    }

    pub(crate) fn forget(&mut self, path: &FsPath, index: u64) {
        self.mutations.forget(path, index);
    }

    /// Writes `data` at `offset` of the file, adding chunks as needed. Each
    /// piece (within a chunk, at most [`MAX_READ_BYTES`]) is one mutation,
    /// several in flight at once: a failure part-way leaves some pieces
    /// written and others not.
    pub async fn write(
        &mut self,
        path: &FsPath,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let mut writer = self.writer(path, offset);
        writer.write(data).await?;
        writer.finish().await?;
        Ok(())
    }

    /// A writer of the file at `path` from `offset` on, which keeps several
    /// mutations in flight; call [`FileWriter::finish`] at the end.
    pub fn writer(&mut self, path: &FsPath, offset: u64) -> FileWriter<'_> {
        FileWriter::new(self, path.clone(), offset)
    }

    /// Appends `record` atomically, at least once, at an offset the store
    /// picks (GFS record append); returns that offset in the file.
    pub async fn append(&mut self, path: &FsPath, record: &[u8]) -> Result<u64, ClientError> {
        let max = self.settings.max_record_bytes();
        if record.len() as u64 > max {
            return Err(ClientError::RecordTooLarge {
                len: record.len() as u64,
                max,
            });
        }
        let entry = self.master.stat(path).await?;
        let mut index = (entry.chunks.len() as u64).saturating_sub(1);
        loop {
            let reply = self
                .mutate(path, index, None, Bytes::copy_from_slice(record))
                .await?;
            if !reply.padded {
                return Ok(index * self.settings.chunk_bytes + reply.offset);
            }
            index += 1;
        }
    }

    /// One mutation of chunk `index`: a write at `within`, or an append.
    pub(crate) async fn mutate(
        &mut self,
        path: &FsPath,
        index: u64,
        within: Option<u64>,
        data: Bytes,
    ) -> Result<MutationReply, ClientError> {
        let what = match within {
            Some(at) => format!(
                "writing {} bytes at {at} of chunk {index} of {path}",
                data.len()
            ),
            None => format!("appending {} bytes to {path}", data.len()),
        };
        let mut backoff = Backoff::new(what, self.deadline);
        loop {
            let location = self.mutation_location(path, index).await?;
            match self.attempt(&location, within, data.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry(last)) => {
                    self.forget(path, index);
                    backoff.wait(&mut self.rng, last).await?;
                }
            }
        }
    }

    /// One attempt at a mutation, as a task of its own (it borrows
    /// nothing): push the data along the replicas, then ask the primary to
    /// commit it.
    pub(crate) fn attempt(
        &mut self,
        location: &ChunkLocation,
        within: Option<u64>,
        data: Bytes,
    ) -> impl Future<Output = Result<MutationReply, Failure>> + Send + 'static {
        self.next_data_id += 1;
        let (client_id, data_id) = (self.client_id, self.next_data_id);
        let first = location
            .primary
            .as_ref()
            .ok_or_else(|| Failure::Retry("the master named no primary".into()))
            .and_then(|primary| {
                self.peers
                    .get(primary)
                    .map_err(|e| Failure::Retry(e.to_string()))
            });
        let push = PushRequest {
            client_id,
            data_id,
            data,
            chain: location.replicas.clone(),
        };
        let (handle, version) = (location.handle, location.version);
        async move {
            let first = first?;
            first
                .call(push, |c, r| async move { chunk_stub(c).push(r).await })
                .await
                .map_err(classify)?;
            let result = match within {
                Some(offset) => {
                    let request = WriteRequest {
                        handle,
                        version,
                        offset,
                        client_id,
                        data_id,
                    };
                    first
                        .call(
                            request,
                            |c, r| async move { ChunkClient::new(c).write(r).await },
                        )
                        .await
                }
                None => {
                    let request = AppendRequest {
                        handle,
                        version,
                        client_id,
                        data_id,
                    };
                    first
                        .call(request, |c, r| async move {
                            ChunkClient::new(c).append(r).await
                        })
                        .await
                }
            };
            result.map_err(classify)
        }
    }

    /// Reads up to `length` bytes at `offset`; fewer at the end of the
    /// file (the end of the first chunk shorter than asked, or of the last
    /// chunk).
    pub async fn read(
        &mut self,
        path: &FsPath,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut reader = self.reader(path, offset, length);
        // Room for what is asked up front (bounded: a length may mean "to
        // the end"), so the pieces are copied once, not again as it grows.
        let room = length.min(MAX_READ_BYTES * READ_WINDOW as u64);
        let mut out = Vec::with_capacity(usize::try_from(room).unwrap_or(0));
        while let Some(bytes) = reader.next().await? {
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// A reader of up to `length` bytes of the file at `path` from
    /// `offset` on (as [`read`](Self::read) ends), prefetching several
    /// pieces. It asks the master where each chunk is once, and keeps the
    /// answer while it lives (as a GFS client caches locations until the
    /// file is opened again), unless a replica fails.
    pub fn reader(&mut self, path: &FsPath, offset: u64, length: u64) -> FileReader<'_> {
        FileReader::new(self, path.clone(), offset, length)
    }

    /// Where chunk `index` is for a read, cached for one lease period (GFS
    /// §2.7.1: within it, a replica that missed another client's later
    /// mutations may serve their old bytes, never corrupt ones); `None` if
    /// the file has no such chunk (not cached: the file may grow).
    pub(crate) async fn read_location(
        &mut self,
        path: &FsPath,
        index: u64,
    ) -> Result<Option<ChunkLocation>, ClientError> {
        if let Some(location) = self.reads.get(path, index) {
            return Ok(Some(location));
        }
        let location = self.fresh_read_location(path, index).await?;
        if let Some(location) = &location {
            let until = Instant::now() + self.settings.lease;
            self.reads.insert(path, index, location.clone(), until);
        }
        Ok(location)
    }

    /// Drops the cached read location of chunk `index` of `path` (one of
    /// its replicas failed).
    pub(crate) fn forget_read(&mut self, path: &FsPath, index: u64) {
        self.reads.forget(path, index);
    }

    /// Where chunk `index` is for a read, as the master answers now.
    async fn fresh_read_location(
        &self,
        path: &FsPath,
        index: u64,
    ) -> Result<Option<ChunkLocation>, ClientError> {
        match self.master.locate(path, index, false, false).await {
            Ok(reply) => Ok(Some(ChunkLocation::from_reply(reply))),
            Err(error) if error.code() == Some(FsErrorCode::NoSuchChunk) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Reads within one chunk from any up-to-date replica, asking the
    /// master again after each round of failures; `None` if the file has
    /// no chunk `index`.
    pub(crate) async fn read_piece(
        &mut self,
        path: &FsPath,
        index: u64,
        within: u64,
        length: u64,
    ) -> Result<Option<Bytes>, ClientError> {
        let what = format!("reading {length} bytes at {within} of chunk {index} of {path}");
        let mut backoff = Backoff::new(what, self.deadline);
        loop {
            self.forget_read(path, index);
            let Some(location) = self.read_location(path, index).await? else {
                return Ok(None);
            };
            let mut errors = Vec::new();
            let n = location.replicas.len().max(1);
            let start = self.rng.gen_range(0..n);
            for i in 0..location.replicas.len() {
                let url = &location.replicas[(start + i) % n];
                match self
                    .read_replica(url, location.handle, location.version, within, length)
                    .await
                {
                    Ok((bytes, _)) => return Ok(Some(bytes)),
                    Err(error) => errors.push(format!("{url}: {error}")),
                }
            }
            backoff.wait(&mut self.rng, errors.join("; ")).await?;
        }
    }

    /// Reads from one replica (which refuses if older than `version`),
    /// checked against its checksums there; returns the bytes and the
    /// replica's version.
    pub async fn read_replica(
        &self,
        url: &str,
        handle: ChunkHandle,
        version: u64,
        offset: u64,
        length: u64,
    ) -> Result<(Bytes, u64), RpcError> {
        let peer = self.peers.get(url)?;
        read_from(
            peer,
            self.short_circuit.clone(),
            handle,
            version,
            offset,
            length,
        )
        .await
    }
}

/// Reads from the replica `peer` serves (see [`Client::read_replica`]),
/// through a file descriptor when it shares this machine ([`ShortCircuit`]).
pub(crate) async fn read_from(
    peer: Arc<RpcClient>,
    local: Arc<ShortCircuit>,
    handle: ChunkHandle,
    version: u64,
    offset: u64,
    length: u64,
) -> Result<(Bytes, u64), RpcError> {
    let request = ReadRequest {
        handle,
        version,
        offset,
        length: length.min(MAX_READ_BYTES),
    };
    if let Some(read) = local.read(&peer, request).await {
        return Ok(read);
    }
    let reply = peer
        .call(request, |c, r| async move { chunk_stub(c).read(r).await })
        .await?;
    Ok((reply.data, reply.version))
}
