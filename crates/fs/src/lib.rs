//! # cairn-fs: a GFS-style file store (being built)
//!
//! The store of the GFS paper (Ghemawat, Gobioff, Leung, SOSP 2003), with
//! its single master made fault tolerant by Cairn's Raft:
//!
//! - the **master** keeps the namespace (directories, and each file as an
//!   ordered list of chunk handles) and every chunk's version number as a
//!   replicated state machine on `cairn-rsm`: the Raft log is GFS's
//!   operation log (§2.6.3), its snapshots are the checkpoints. Chunk
//!   locations are not replicated: chunkservers report them (§2.6.2);
//! - **chunkservers** keep each replica of a chunk as a local file,
//!   checksummed per 64 KiB block and verified on every read (§5.2), and
//!   stamped with the chunk's version, which the master raises each time it
//!   grants a lease (§4.5), so a replica that missed mutations is stale and
//!   can be told apart.
//!
//! ## What is here so far
//!
//! - [`FsPath`]: the checked, normalized path every operation takes;
//! - [`Namespace`]: the master's replicated metadata and its operations
//!   (mkdir, create, delete, atomic rename, list, add a chunk, raise or
//!   adopt a version), deterministic so every master applies them alike,
//!   each refusing before it changes anything; [`snapshot`] encodes it;
//! - [`MasterState`]: the master's state machine on `cairn-rsm`, applying
//!   the commands of `proto/fs.proto` with sessions, so a retried command is
//!   applied once;
//! - [`MasterServer`]: a master node (an `rsm::Node` running
//!   [`MasterState`]) answering the `cairn.fs.Master` gRPC service: changes
//!   through the log, lookups (stat, list) at a read index on any node;
//!   [`MasterClient`] is its clerk (leader finding, retries, sessions);
//! - [`ChunkStore`]: a chunkserver's replicas on its disk, with the write
//!   order that makes an append crash-safe (data synced before the metadata
//!   that covers it), tested at every I/O crash point.
//!
//! Leases, the chunkservers' service and primary-backup write path, the
//! file client and `cairn fs` are the next steps.
//!
//! ## Implementation caveats
//!
//! - A crash in the middle of an *overwrite* can leave a block whose bytes
//!   and checksum disagree on that replica: it then reads as corrupt (never
//!   as wrong data), and a good replica must replace it.
//! - Every write rewrites the replica's metadata file (with a directory
//!   sync); batching those across concurrent writes is left for later.

mod chunk_store;
mod master;
mod master_client;
mod master_state;
mod namespace;
mod path;
pub mod snapshot;

pub use chunk_store::{BLOCK_BYTES, ChunkError, ChunkStore, ReplicaReport};
pub use master::{MAX_LISTING_ENTRIES, MasterServer};
pub use master_client::{MasterClient, MasterError};
pub use master_state::{MAX_SESSIONS, MasterState, error_code};
pub use namespace::{
    ChunkHandle, ChunkMeta, Entry, FsError, Inode, MAX_CHUNKS_PER_FILE, MAX_ENTRIES, Namespace,
};
pub use path::{FsPath, MAX_NAME_BYTES, MAX_PATH_BYTES, PathError};
