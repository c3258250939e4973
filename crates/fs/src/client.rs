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

mod mutations;
mod reads;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use cairn_rpc::fs::{EntryInfo, FsErrorCode, LocateReply, TrashEntry};
use rand::Rng;
use rand::rngs::StdRng;

pub(crate) use reads::read_from;
pub(crate) use retry::Failure;

use crate::chunkserver::MAX_READ_BYTES;
use crate::location_cache::LocationCache;
use crate::master_client::{MasterClient, MasterError};
use crate::namespace::ChunkHandle;
use crate::path::FsPath;
use crate::peers::Peers;
use crate::settings::FsSettings;
use crate::short_circuit::ShortCircuit;

/// The most bytes one mutation carries; larger writes are split.
pub(crate) const MAX_MUTATION_BYTES: u64 = MAX_READ_BYTES;
/// How long one call to a chunkserver may take.
const CHUNK_CALL_TIMEOUT: Duration = Duration::from_secs(2);

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
}
