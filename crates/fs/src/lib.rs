//! # cairn-fs: a GFS-style file store
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
//!   adopt a version; delete into the trash, undelete, purge: GFS §4.4),
//!   deterministic so every master applies them alike, each refusing
//!   before it changes anything; [`snapshot`] encodes it;
//! - [`MasterState`]: the master's state machine on `cairn-rsm`, applying
//!   the commands of `proto/fs.proto` with sessions, so a retried command is
//!   applied once;
//! - [`MasterServer`]: a master node (an `rsm::Node` running
//!   [`MasterState`]) answering the `cairn.fs.Master` gRPC service: changes
//!   through the log, lookups (stat, list) at a read index on any node;
//!   [`MasterClient`] is its clerk (leader finding, retries, sessions);
//!   a new leader is in safemode (no placement, no lease grant) until the
//!   chunkservers have reported enough chunks, or a timeout passes;
//! - [`ChunkStore`]: a chunkserver's replicas on its disk, with the write
//!   order that makes an append crash-safe (data synced before the metadata
//!   that covers it), tested at every I/O crash point;
//! - [`ChunkServer`]: a chunkserver's service (`cairn.fs.Chunk`) and its
//!   heartbeats to every master; [`Client`]: the library programs use,
//!   with a streaming [`FileWriter`] and [`FileReader`];
//! - [`fsck`]: the store's health, every replica verified now by its
//!   chunkserver (`Inspect`) and compared across replicas, with the
//!   master's view (`Fsck`); [`file_checksum`]: a file's CRC32C from
//!   verified chunks; chunkservers scrub idle replicas in the background.
//!
//! ## A write, end to end (GFS §3.1-§3.3, §4.5)
//!
//! 1. The client asks the leader to `Locate` chunk *i* of the file for a
//!    mutation. The leader adds the chunk if asked (`AddChunk` through the
//!    log) and places it on up to three live chunkservers (`CreateReplica`,
//!    version 0). If no lease is live it grants one: `GrantVersion` raises
//!    the version through the log, every live replica at the old version
//!    stores the new one (`SetVersion`, naming the primary and the
//!    secondaries), and only then the client hears of the primary.
//! 2. The client pushes the bytes along the chain of replicas (`Push`,
//!    kept under its client id and a data id, bounded and expiring).
//! 3. It asks the primary to `Write` (or `Append`). The primary checks its
//!    lease by its own clock, picks the mutation's place (an
//!    append at its length, or padding to the chunk's end if the record does
//!    not fit: "retry on the next chunk"), numbers it, and has every
//!    secondary `Apply` it while it makes it locally; one chunk's mutations
//!    go one at a time, so every replica applies them in one order. Success only if all applied; else
//!    the primary gives its lease up and the client retries from step 1.
//! 4. Leases: a primary claims its leases in every heartbeat; the leader
//!    extends them after a read index (so it still leads), from the time the
//!    heartbeat was sent, so the lease ends at the primary first. A new
//!    leader takes over a claimed lease at the current version at once, and
//!    otherwise waits one lease period (plus a clock margin) before granting
//!    to anyone: never two primaries.
//!
//! `docs/fs.md` is the protocol in full, with the consistency table and
//! the scenarios the simulation suites run (`tests/`: M1 in `master.rs`;
//! B1-B4 in `data_path.rs`; F1, F3, F4, M3, M4, M6, X1 in `faults.rs`; F2,
//! F9, M7 in `failover.rs`; X2 in `clock_skew.rs`; files deleted or renamed
//! under a writer, oversized records and damaged replica files in
//! `bad_input.rs`; R1, fsck after damage, and the scrub in `fsck.rs`; G1,
//! deletion with retention, in `retention.rs`; M2 (safemode after a cold
//! start) and M5 in `safemode.rs`; F5-F8 and replication goals in
//! `healing.rs`; balance and decommission in `balance.rs`). Leases assume the nodes' monotonic clocks run at nearly
//! the same rate ([`Clock`] states the bound), not that they agree.
//!
//! ## Implementation caveats
//!
//! - A crash in the middle of an *overwrite* can leave a block whose bytes
//!   and checksum disagree on that replica: it then reads as corrupt (never
//!   as wrong data), and a good replica must replace it. A replica found
//!   corrupt (by a read, an inspection or the scrub) is set aside (no
//!   longer reported or served) and replaced by a clone from a good one (the leader's healer,
//!   `master_heal.rs`).
//! - Every batch of mutations rewrites the replica's metadata file (with a
//!   directory sync). A primary makes one chunk's waiting mutations as one
//!   batch (one data sync and one metadata rewrite per replica), but
//!   mutations of different chunks on one chunkserver are synced apart.
//! - A primary serializes one chunk's batches end to end (the local write
//!   and every secondary's, at once), so one chunk takes one batch per
//!   round trip: a client keeps several mutations in flight
//!   ([`FileWriter`]) to overlap the data flow with that.
//! - The state task of a chunkserver does its writes' disk I/O itself, so
//!   one slow sync delays every other mutation to that server. Reads only
//!   take a plan there (version, checksums) and do their I/O and checks
//!   in their own request's task, side by side.
//! - Deletion retention is measured on the leader's wall clock (stamped
//!   into the log entry): a leader whose clock runs ahead purges early by
//!   its skew. Snapshots (copy-on-write, GFS §3.4) are not built yet.
//! - Chunkservers report every replica in every heartbeat (no incremental
//!   reports). The leader deletes stale, orphaned and extra replicas
//!   through heartbeat replies and re-replicates chunks below their goal
//!   (`healer.rs`, `master_heal.rs`); a clone is held in memory (one
//!   chunk) on its target until written. A chunkserver being
//!   decommissioned (a mark in the log) takes no new chunks and its
//!   replicas do not count toward a goal; the balancer moves replicas
//!   (clone, then the source deleted as the extra one) from the leader's
//!   heal rounds, one round of moves at a time, and plans over every
//!   chunk each round (fine for the namespaces the master holds in
//!   memory, not incremental).
//! - File sizes (`Lookup`'s `length`) and the space `Usage` reports are as of
//!   the chunkservers' last heartbeats to the node that answers: they lag a
//!   write in progress, and a node that just started knows none until the
//!   first reports. A file's chunks before the last count as full.
//! - A chunkserver on a full disk is left out of new chunks, new leases
//!   and clones, but its replicas stay (they count toward the goal).

mod balancer;
mod chunk_store;
mod chunk_table;
mod chunkserver;
mod client;
mod clock;
mod file_checksum;
mod file_reader;
mod file_writer;
mod fsck;
mod healer;
mod location_cache;
mod master;
mod master_balance;
mod master_chunks;
mod master_client;
mod master_decommission;
mod master_fsck;
mod master_heal;
mod master_snapshot;
mod master_state;
mod master_trash;
mod namespace;
mod owner;
mod path;
mod peers;
mod push_buffer;
mod safemode;
mod settings;
mod short_circuit;
pub mod snapshot;

pub use balancer::MAX_MOVES_PER_ROUND;
/// What a master is started with (its id, its peers), so that a program
/// that starts masters needs no direct use of the replication layer.
pub use cairn_rsm::NodeConfig;
pub use chunk_store::{
    BLOCK_BYTES, ChunkError, ChunkStore, PlannedBlocks, ReadPlan, ReplicaReport, Scanned,
};
pub use chunk_table::MAX_CHUNKSERVERS;
pub use chunkserver::{
    ChunkServer, ChunkServerConfig, DiskSpace, FreeSpaceProbe, MAX_BATCH, MAX_CLONES_IN_FLIGHT,
    MAX_INSPECT_HANDLES, MAX_MESSAGE_BYTES, MAX_QUEUED_MUTATIONS, MAX_READ_BYTES, PrimaryObserver,
};
#[cfg(not(madsim))]
pub use chunkserver::{LOCAL_READS_SOCKET, MAX_LOCAL_READERS};
pub use client::{ChunkLocation, Client, ClientError};
pub use clock::Clock;
pub use file_checksum::{ChunkChecksum, FileChecksum, file_checksum};
pub use file_reader::{FileReader, READ_WINDOW};
pub use file_writer::{FileWriter, WRITE_WINDOW};
pub use fsck::{
    CHUNKS_PER_ROUND, ChunkHealth, FileHealth, FsckReport, Problem, ReplicaHealth, ReplicaState,
    fsck,
};
pub use healer::{CloneRecord, HealingStatus, MAX_CLONE_HISTORY, MAX_CLONES_PER_ROUND};
pub use location_cache::MAX_CACHED_LOCATIONS;
pub use master::{MAX_LISTING_ENTRIES, MasterServer};
pub use master_chunks::MAX_CHUNKS_ADDED_AT_ONCE;
pub use master_client::{MasterClient, MasterError};
pub use master_fsck::MAX_FSCK_HANDLES;
pub use master_state::{MAX_GRANT_REPLICAS, MAX_SESSIONS, MasterState, error_code};
pub use master_trash::MAX_PURGES_PER_ROUND;
pub use namespace::{
    ChunkHandle, ChunkMeta, Entry, FsError, Inode, MAX_CHUNKS_PER_FILE, MAX_ENTRIES,
    MAX_REPLICATION, MAX_TRASH_ENTRIES, Namespace, TrashId, Trashed,
};
pub use owner::MAX_QUEUED_CHANGES;
pub use path::{FsPath, MAX_NAME_BYTES, MAX_PATH_BYTES, PathError};
pub use peers::MAX_PEER_CLIENTS;
pub use push_buffer::{MAX_BUFFERED_BYTES, PUSH_EXPIRY};
pub use settings::FsSettings;
