//! # cairn-storage: everything that touches a disk
//!
//! All file access in Cairn goes through the [`Disk`] and [`DiskFile`]
//! traits, so that the same code runs on real files ([`RealDisk`]) and, in
//! tests and simulation, on [`MemDisk`], a disk that models a crash:
//!
//! - a write is only durable after [`DiskFile::sync`];
//! - [`MemDisk::crash`] throws away every write not yet synced, except that
//!   the last unsynced write of a file may survive in part (a *torn* write),
//!   as a power loss in the middle of a write would leave it;
//! - handles opened before a crash stop working, as the old process's file
//!   descriptors would.
//!
//! On this disk sit the two things a Raft node must find again after a
//! crash (Raft paper §5, Figure 2, and §7), both storage-agnostic of Raft:
//! entries, state and snapshots are opaque bytes with an index and a term.
//!
//! ## The write-ahead log ([`Wal`], module [`wal`])
//!
//! 1. [`Wal::open`] recovers the log directory: it replays the segment
//!    files in order, drops a torn tail of the newest one, and refuses to
//!    start ([`WalError::Corrupt`], naming file and byte offset) on damage
//!    anywhere else. It returns the last hard state, the entries after the
//!    compacted prefix, and the compacted index ([`Recovered`]).
//! 2. For each Raft `Ready`, the runtime calls [`Wal::append`] with the new
//!    entries (an append that starts at or below the last index replaces
//!    the conflicting suffix, §5.3), [`Wal::set_state`] with the hard state
//!    (term, vote, commit) if it changed, then [`Wal::sync`]: one fsync for
//!    the whole batch (group commit). Only then may it send the messages
//!    that depend on what was persisted.
//! 3. When the state machine's snapshot at index `i` is saved (below), the
//!    runtime calls [`Wal::compact`]`(i)`: segments holding only entries up
//!    to `i` are deleted, and a log that is mostly dead bytes is rewritten
//!    into one fresh segment, so disk usage follows the live log.
//!    [`Wal::live_bytes`] is what the runtime compares to 6.824's
//!    `maxraftstate`.
//!
//! Every record carries a header CRC and a payload CRC; the format and the
//! exact crash guarantees are in the [`wal`] module docs.
//!
//! ## Snapshots ([`SnapshotStore`], module [`snapshot`])
//!
//! [`SnapshotStore::save`] writes the snapshot to a temporary file, fsyncs
//! it, renames it into place and syncs the directory, then deletes older
//! snapshots; [`SnapshotStore::load_latest`] checks the CRC. The order that
//! keeps a node recoverable: save the snapshot, then compact the log. A
//! crash in between leaves a snapshot and a log that still has the entries
//! it covers, which is harmless.
//!
//! ## Implementation caveats
//!
//! - Directory operations (create, rename, remove) are durable at once on
//!   [`MemDisk`]; on a real file system they need a directory sync, which
//!   [`Disk::sync_dir`] performs and [`write_atomic`], the WAL and the
//!   snapshot store call.
//! - A removed file's open handles fail on [`MemDisk`] (POSIX would keep the
//!   inode alive until they close). Cairn never uses a removed file.
//! - The traits are synchronous. Callers in async code keep the calls short
//!   (a batch per call) or move them off the executor.
//! - The WAL does not keep entry data in memory: [`Wal::open`] returns it
//!   once, and the caller (Raft's in-memory log) owns it from then on. There
//!   is no read-back API.
//! - Recovery reads one segment at a time, whole, into memory: a segment is
//!   [`WalOptions::segment_bytes`] plus at most one sync's worth of records.
//! - A damaged last record of the newest segment cannot be told from a torn
//!   write and is dropped, even if it had been synced. Stale bytes that a
//!   file system exposes after a crash are taken for garbage unless they
//!   hold a record with valid CRCs, in which case opening reports
//!   corruption rather than guess. Likewise a file system that persisted
//!   an unsynced write's pages out of order (losing an earlier page, keeping
//!   a later one) is reported as corruption: a false alarm, but in the safe
//!   direction (the node does not start, instead of silently losing a
//!   record that might have been synced).
//! - A failed write or fsync poisons the [`Wal`]; the node must reopen it
//!   (after a failed fsync, the page cache may no longer hold what was
//!   written). There are no retries inside the storage layer.
//! - The snapshot store reads a whole snapshot into memory (at most
//!   [`MAX_SNAPSHOT_BYTES`]); there is no streaming install of large
//!   snapshots yet.

mod crash_points;
mod disk;
mod mem_disk;
mod real_disk;
pub mod snapshot;
pub mod wal;

pub use crash_points::CrashPoints;
pub use disk::{Disk, DiskFile, OpenMode, write_atomic};
pub use mem_disk::MemDisk;
pub use real_disk::RealDisk;
pub use snapshot::{MAX_SNAPSHOT_BYTES, SnapshotError, SnapshotStore, StoredSnapshot};
pub use wal::{
    DEFAULT_SEGMENT_BYTES, MAX_ENTRY_DATA_BYTES, MAX_RECORD_BYTES, REWRITE_MIN_DEAD_BYTES,
    Recovered, Wal, WalEntry, WalError, WalOptions,
};
