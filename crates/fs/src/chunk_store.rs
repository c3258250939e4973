//! [`ChunkStore`]: a chunkserver's replicas on its local disk, each
//! checksummed per block and stamped with the chunk's version.
//!
//! Each replica is two files in the store's directory:
//! - `HANDLE.chunk`: the bytes, as written (GFS keeps a chunk as a plain
//!   Linux file, paper §2.5);
//! - `HANDLE.meta`: the replica's version, its length, and a CRC32C per
//!   [`BLOCK_BYTES`] block of the data (§5.2), followed by a CRC32C of the
//!   metadata itself. Replaced atomically (temp file, sync, rename, sync
//!   the directory).
//!
//! **Reads verify** every block they touch against its checksum before a
//! byte is returned; a mismatch is [`ChunkError::Corrupt`], for the reader to
//! try another replica and for the master to hear about.
//!
//! **Writes** check the replica's version (a mutation carrying another
//! version is refused: it comes from a primary of an older or newer lease),
//! verify the blocks they only partly cover (so a corrupt block is never
//! re-checksummed as if good), write the data and sync it, then replace the
//! metadata. A block's checksum covers only the bytes below the replica's
//! length, so:
//! - a crash during an **append** (the common case: record appends and
//!   sequential writes) leaves the old metadata describing the old bytes,
//!   which are intact: the replica comes back at its old length;
//! - a crash during an **overwrite** of existing bytes can leave a block
//!   whose bytes and checksum disagree: it reads as corrupt, never as wrong
//!   data (the master then re-replicates it from a good replica).
//!
//! A **batch** of writes ([`ChunkStore::write_batch`]: a primary's group
//! commit) writes all their data, syncs it once, then replaces the metadata
//! once: a crash leaves the replica as before the batch or after it.
//!
//! Nothing here is acknowledged before the data and the metadata are both
//! durable.

mod format;
mod read_plan;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_storage::{Disk, OpenMode, write_atomic};
use thiserror::Error;

use format::{block_verifies, decode_meta, encode_meta, write_unsynced};
pub use read_plan::{PlannedBlocks, ReadPlan};

use crate::namespace::ChunkHandle;

/// The bytes one checksum covers (GFS: 64 KB).
pub const BLOCK_BYTES: u64 = 64 << 10;

/// A replica's durable description.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replica {
    version: u64,
    length: u64,
    /// One CRC32C per block, over the block's bytes below `length`.
    checksums: Vec<u32>,
}

/// What a chunkserver reports about one replica (at start and in
/// heartbeats): enough for the master to tell current from stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaReport {
    pub handle: ChunkHandle,
    pub version: u64,
    pub length: u64,
}

/// Blocks of a replica read as they are on disk ([`ChunkStore::scan`]),
/// with those that fail their checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub version: u64,
    /// The replica's whole length (not the piece's).
    pub length: u64,
    pub bytes: Bytes,
    /// Block numbers (of [`BLOCK_BYTES`]) whose bytes fail their checksum.
    pub corrupt: Vec<u64>,
}

/// Why a replica operation failed.
#[derive(Debug, Error)]
pub enum ChunkError {
    #[error("this chunkserver holds no replica of chunk {0}")]
    NoSuchChunk(ChunkHandle),
    #[error("this chunkserver already holds a replica of chunk {0}")]
    AlreadyExists(ChunkHandle),
    #[error(
        "chunk {handle} is at version {have} here, the request carries {given}: it comes from another lease; ask the master for the current primary"
    )]
    VersionMismatch {
        handle: ChunkHandle,
        have: u64,
        given: u64,
    },
    #[error("the write ends at byte {end} of chunk {handle}, past the chunk size of {chunk_bytes}")]
    BeyondChunk {
        handle: ChunkHandle,
        end: u64,
        chunk_bytes: u64,
    },
    #[error(
        "block {block} of chunk {handle} fails its checksum on this chunkserver; read another replica"
    )]
    Corrupt { handle: ChunkHandle, block: u64 },
    #[error("the local disk failed: {0}")]
    Io(#[from] io::Error),
}

/// A chunkserver's replicas. Owned by one task; every method is
/// synchronous I/O on the [`Disk`].
#[derive(Debug)]
pub struct ChunkStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    chunk_bytes: u64,
    replicas: BTreeMap<ChunkHandle, Replica>,
    /// Replicas found unreadable when the store opened (bad metadata, data
    /// shorter than recorded); reported so the master can replace them.
    damaged: BTreeSet<ChunkHandle>,
}

impl ChunkStore {
    /// Opens (creating if needed) the store in `dir` of `disk`, for chunks of
    /// at most `chunk_bytes`. Leftovers of interrupted operations (temporary
    /// files, data without metadata) are removed; damaged replicas are set
    /// aside in [`ChunkStore::damaged`].
    pub fn open(disk: Arc<dyn Disk>, dir: &Path, chunk_bytes: u64) -> io::Result<Self> {
        assert!(chunk_bytes > 0, "a chunk holds at least one byte");
        disk.create_dir_durable(dir)?;
        let mut store = Self {
            disk,
            dir: dir.to_path_buf(),
            chunk_bytes,
            replicas: BTreeMap::new(),
            damaged: BTreeSet::new(),
        };
        let names = store.disk.list(dir)?;
        for name in &names {
            if name.ends_with(".tmp") {
                store.disk.remove_file(&dir.join(name))?;
                continue;
            }
            let Some((stem, kind)) = name.split_once('.') else {
                continue;
            };
            let Ok(handle) = u64::from_str_radix(stem, 16) else {
                continue;
            };
            match kind {
                "meta" => store.load(handle)?,
                "chunk" if !names.contains(&format!("{stem}.meta")) => {
                    store.disk.remove_file(&dir.join(name))?;
                }
                _ => {}
            }
        }
        Ok(store)
    }

    /// Reads one replica's metadata and checks it against its data file.
    fn load(&mut self, handle: ChunkHandle) -> io::Result<()> {
        let meta = self.disk.read(&self.meta_path(handle))?;
        let data_length = match self.disk.open(&self.data_path(handle), OpenMode::Read) {
            Ok(file) => file.len()?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        match decode_meta(handle, &meta) {
            Some(replica)
                if replica.length <= data_length && replica.length <= self.chunk_bytes =>
            {
                self.replicas.insert(handle, replica);
            }
            _ => {
                tracing::warn!(
                    handle,
                    "replica damaged (metadata unreadable or data short); reporting it"
                );
                self.damaged.insert(handle);
            }
        }
        Ok(())
    }

    fn data_path(&self, handle: ChunkHandle) -> PathBuf {
        self.dir.join(format!("{handle:016x}.chunk"))
    }

    fn meta_path(&self, handle: ChunkHandle) -> PathBuf {
        self.dir.join(format!("{handle:016x}.meta"))
    }

    /// The largest a chunk may grow.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    /// Every readable replica (handle, version, length), in handle order.
    pub fn report(&self) -> Vec<ReplicaReport> {
        self.replicas
            .iter()
            .map(|(&handle, replica)| ReplicaReport {
                handle,
                version: replica.version,
                length: replica.length,
            })
            .collect()
    }

    /// Sets aside a replica found corrupt while running: it is no longer
    /// reported nor served (its files stay for the operator to look at), so
    /// the master, no longer hearing of it here, names other replicas.
    pub fn set_aside(&mut self, handle: ChunkHandle) {
        if self.replicas.remove(&handle).is_some() {
            tracing::warn!(
                handle,
                "replica fails its checksums; set aside, no longer served"
            );
            self.damaged.insert(handle);
        }
    }

    /// The first readable replica's handle after `after` (from the lowest
    /// if `None`), in handle order: a scrub's walk.
    pub fn next_handle(&self, after: Option<ChunkHandle>) -> Option<ChunkHandle> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.replicas
            .range((from, Bound::Unbounded))
            .next()
            .map(|(&handle, _)| handle)
    }

    /// Replicas found damaged when the store opened or set aside since.
    pub fn damaged(&self) -> impl Iterator<Item = ChunkHandle> + '_ {
        self.damaged.iter().copied()
    }

    /// A replica's version and length.
    pub fn replica(&self, handle: ChunkHandle) -> Option<ReplicaReport> {
        self.replicas.get(&handle).map(|replica| ReplicaReport {
            handle,
            version: replica.version,
            length: replica.length,
        })
    }

    /// Creates an empty replica at `version`, durably.
    pub fn create(&mut self, handle: ChunkHandle, version: u64) -> Result<(), ChunkError> {
        if self.replicas.contains_key(&handle) {
            return Err(ChunkError::AlreadyExists(handle));
        }
        let mut data = self
            .disk
            .open(&self.data_path(handle), OpenMode::Truncate)?;
        data.sync()?;
        let replica = Replica {
            version,
            length: 0,
            checksums: Vec::new(),
        };
        self.save(handle, &replica)?;
        self.damaged.remove(&handle);
        self.replicas.insert(handle, replica);
        Ok(())
    }

    /// Sets a replica's version (the master does this before it names a new
    /// primary, GFS §4.5). A version never goes back.
    pub fn set_version(&mut self, handle: ChunkHandle, version: u64) -> Result<(), ChunkError> {
        let replica = self.replica_mut(handle)?;
        if version < replica.version {
            return Err(ChunkError::VersionMismatch {
                handle,
                have: replica.version,
                given: version,
            });
        }
        let mut updated = replica.clone();
        updated.version = version;
        self.save(handle, &updated)?;
        self.replicas.insert(handle, updated);
        Ok(())
    }

    fn replica_mut(&mut self, handle: ChunkHandle) -> Result<&mut Replica, ChunkError> {
        self.replicas
            .get_mut(&handle)
            .ok_or(ChunkError::NoSuchChunk(handle))
    }

    /// Reads up to `length` bytes at `offset` (fewer at the replica's end),
    /// after checking every block they touch. Returns them with the
    /// replica's version.
    pub fn read(
        &self,
        handle: ChunkHandle,
        offset: u64,
        length: u64,
    ) -> Result<(Bytes, u64), ChunkError> {
        self.plan_read(handle, offset, length)?.run()
    }

    /// What a read of up to `length` bytes at `offset` needs, taken from
    /// the replica's metadata now: [`ReadPlan::run`] then does the I/O and
    /// the checks anywhere, without this store. A write made meanwhile
    /// can make the plan's checksums disagree with the bytes: a plan that
    /// fails with [`ChunkError::Corrupt`] proves nothing until a read
    /// through the store (ordered with the writes) fails the same way.
    pub fn plan_read(
        &self,
        handle: ChunkHandle,
        offset: u64,
        length: u64,
    ) -> Result<ReadPlan, ChunkError> {
        let replica = self
            .replicas
            .get(&handle)
            .ok_or(ChunkError::NoSuchChunk(handle))?;
        let end = offset.saturating_add(length).min(replica.length);
        let first = offset.min(end) / BLOCK_BYTES;
        let start = first * BLOCK_BYTES;
        let stop = end
            .div_ceil(BLOCK_BYTES)
            .saturating_mul(BLOCK_BYTES)
            .min(replica.length)
            .max(start);
        let touched = first as usize..stop.div_ceil(BLOCK_BYTES) as usize;
        Ok(ReadPlan {
            disk: self.disk.clone(),
            path: self.data_path(handle),
            blocks: PlannedBlocks {
                handle,
                version: replica.version,
                first,
                blocks: start..stop,
                wanted: offset.min(end)..end,
                checksums: replica.checksums[touched].to_vec(),
            },
        })
    }

    /// Reads up to `count` blocks of a replica from block `first`, as they
    /// are, checking each against its checksum (the check of
    /// [`read`](Self::read)) without stopping at a bad one: for a scrub or
    /// an inspection, which must find every corrupt block.
    pub fn scan(&self, handle: ChunkHandle, first: u64, count: u64) -> Result<Scanned, ChunkError> {
        let replica = self
            .replicas
            .get(&handle)
            .ok_or(ChunkError::NoSuchChunk(handle))?;
        let start = first.saturating_mul(BLOCK_BYTES).min(replica.length);
        let stop = first
            .saturating_add(count)
            .saturating_mul(BLOCK_BYTES)
            .min(replica.length);
        let mut bytes = vec![0; usize::try_from(stop - start).map_err(io::Error::other)?];
        if !bytes.is_empty() {
            let mut file = self.disk.open(&self.data_path(handle), OpenMode::Read)?;
            file.read_exact_at(start, &mut bytes)?;
        }
        let corrupt = bytes
            .chunks(BLOCK_BYTES as usize)
            .enumerate()
            .map(|(i, block)| (first + i as u64, block))
            .filter(|&(index, block)| !block_verifies(replica, index, block))
            .map(|(index, _)| index)
            .collect();
        Ok(Scanned {
            version: replica.version,
            length: replica.length,
            bytes: Bytes::from(bytes),
            corrupt,
        })
    }

    /// Writes `data` at `offset` of a replica whose version must be
    /// `version`; a gap before `offset` reads as zeros. Durable when it
    /// returns. Returns the replica's new length.
    pub fn write(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, ChunkError> {
        self.write_batch(handle, version, &[(offset, data)])
    }

    /// Makes several writes, in order, as one: the data of all of them is
    /// synced once, then one metadata file covers them all (group commit).
    /// A crash leaves the replica as before the batch or after it (or, as
    /// for one write, an overwritten block reading as corrupt). Returns the
    /// replica's new length.
    pub fn write_batch(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        writes: &[(u64, &[u8])],
    ) -> Result<u64, ChunkError> {
        let chunk_bytes = self.chunk_bytes;
        let mut replica = self.replica_mut(handle)?.clone();
        if replica.version != version {
            return Err(ChunkError::VersionMismatch {
                handle,
                have: replica.version,
                given: version,
            });
        }
        for (offset, data) in writes {
            let end = offset.saturating_add(data.len() as u64);
            if end > chunk_bytes {
                return Err(ChunkError::BeyondChunk {
                    handle,
                    end,
                    chunk_bytes,
                });
            }
        }
        let mut file = self.disk.open(&self.data_path(handle), OpenMode::Write)?;
        for (offset, data) in writes {
            write_unsynced(&mut *file, handle, &mut replica, *offset, data)?;
        }
        file.sync()?;
        let length = replica.length;
        self.save(handle, &replica)?;
        self.replicas.insert(handle, replica);
        Ok(length)
    }

    /// Writes a whole replica copied from another chunkserver
    /// (re-replication) at `version`, replacing any replica of `handle`
    /// here (an older or damaged one is deleted first). The data is written
    /// and synced before the metadata that makes it a replica, so a crash
    /// leaves either no replica (data without metadata is removed at open)
    /// or the whole new one: never a short replica at the new version.
    pub fn install(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        data: &[u8],
    ) -> Result<(), ChunkError> {
        let end = data.len() as u64;
        if end > self.chunk_bytes {
            return Err(ChunkError::BeyondChunk {
                handle,
                end,
                chunk_bytes: self.chunk_bytes,
            });
        }
        if self.replicas.contains_key(&handle) || self.damaged.contains(&handle) {
            self.delete(handle)?;
        }
        let mut file = self
            .disk
            .open(&self.data_path(handle), OpenMode::Truncate)?;
        let mut replica = Replica {
            version,
            length: 0,
            checksums: Vec::new(),
        };
        write_unsynced(&mut *file, handle, &mut replica, 0, data)?;
        file.sync()?;
        self.save(handle, &replica)?;
        self.replicas.insert(handle, replica);
        Ok(())
    }

    /// Deletes a replica (the metadata first, so a crash halfway leaves data
    /// without metadata, which the next open removes).
    pub fn delete(&mut self, handle: ChunkHandle) -> Result<(), ChunkError> {
        if self.replicas.remove(&handle).is_none() && !self.damaged.remove(&handle) {
            return Err(ChunkError::NoSuchChunk(handle));
        }
        self.disk.remove_file(&self.meta_path(handle))?;
        self.disk.sync_dir(&self.dir)?;
        match self.disk.remove_file(&self.data_path(handle)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Replaces a replica's metadata file, atomically and durably.
    fn save(&self, handle: ChunkHandle, replica: &Replica) -> io::Result<()> {
        write_atomic(
            self.disk.as_ref(),
            &self.meta_path(handle),
            &encode_meta(handle, replica),
        )
    }
}

#[cfg(test)]
mod tests;
