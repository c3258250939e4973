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
//! The durable Raft log and snapshots that build on this come with the Raft
//! issue; this crate starts with the disk abstraction every layer needs.
//!
//! ## Implementation caveats
//!
//! - Directory operations (create, rename, remove) are durable at once on
//!   [`MemDisk`]; on a real file system they need a directory sync, which
//!   [`Disk::sync_dir`] performs and [`write_atomic`] calls.
//! - A removed file's open handles fail on [`MemDisk`] (POSIX would keep the
//!   inode alive until they close). Cairn never uses a removed file.
//! - The traits are synchronous. Callers in async code keep the calls short
//!   (a batch per call) or move them off the executor.

mod disk;
mod mem_disk;
mod real_disk;

pub use disk::{Disk, DiskFile, OpenMode, write_atomic};
pub use mem_disk::MemDisk;
pub use real_disk::RealDisk;
