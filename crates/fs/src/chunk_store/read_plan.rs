//! A read planned apart from the store: [`ChunkStore::plan_read`] takes the
//! blocks a read touches and their checksums from the replica's metadata;
//! [`ReadPlan::run`] then reads and verifies them anywhere (off the task
//! that owns the store, many at once), and [`PlannedBlocks`] alone serves a
//! short-circuit reader that was handed the data file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_storage::{Disk, OpenMode};

#[cfg(doc)]
use super::ChunkStore;
use super::format::verify;
use super::{BLOCK_BYTES, ChunkError};
use crate::namespace::ChunkHandle;

/// A read planned by [`ChunkStore::plan_read`], to run off the task that
/// owns the store (many at once: each opens the data file for itself).
#[derive(Debug)]
pub struct ReadPlan {
    pub(super) disk: Arc<dyn Disk>,
    pub(super) path: PathBuf,
    pub(super) blocks: PlannedBlocks,
}

impl ReadPlan {
    /// Reads the blocks, checks every one against its checksum, and
    /// returns the bytes wanted (no copy: a slice of what was read) with
    /// the replica's version as planned.
    pub fn run(self) -> Result<(Bytes, u64), ChunkError> {
        if self.blocks.wanted.is_empty() {
            return Ok((Bytes::new(), self.blocks.version));
        }
        let mut file = self.disk.open(&self.path, OpenMode::Read)?;
        self.blocks
            .run_on(|offset, length| file.read_exact_vec_at(offset, length))
    }

    /// The replica's data file, as the store's disk names it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What to read and check, without the file.
    pub fn blocks(&self) -> &PlannedBlocks {
        &self.blocks
    }
}

/// The blocks a read touches, their checksums, and the bytes wanted
/// within them: what a reader of the data file needs to return only
/// verified bytes below the replica's length (the chunkserver itself, or a
/// short-circuit reader given the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBlocks {
    pub handle: ChunkHandle,
    pub version: u64,
    /// The first block the read touches.
    pub first: u64,
    /// The bytes of the whole blocks touched (the last one ends at the
    /// replica's length), and the bytes wanted within them.
    pub blocks: std::ops::Range<u64>,
    pub wanted: std::ops::Range<u64>,
    /// The checksums of the blocks touched, in order.
    pub checksums: Vec<u32>,
}

impl PlannedBlocks {
    /// Whether the ranges and checksums fit together (a plan from
    /// elsewhere is checked before use): whole blocks from `first`, one
    /// checksum each, the wanted bytes within them.
    pub fn is_consistent(&self) -> bool {
        let block_count = (self.blocks.end.saturating_sub(self.blocks.start)).div_ceil(BLOCK_BYTES);
        self.blocks.start == self.first.saturating_mul(BLOCK_BYTES)
            && self.blocks.start <= self.blocks.end
            && self.blocks.start <= self.wanted.start
            && self.wanted.start <= self.wanted.end
            && self.wanted.end <= self.blocks.end
            && self.checksums.len() as u64 == block_count
    }

    /// Reads the blocks with `read` (offset, length), checks every one
    /// against its checksum, and returns the bytes wanted (a slice of what
    /// was read) with the version planned.
    pub fn run_on(
        &self,
        read: impl FnOnce(u64, usize) -> io::Result<Vec<u8>>,
    ) -> Result<(Bytes, u64), ChunkError> {
        let length =
            usize::try_from(self.blocks.end - self.blocks.start).map_err(io::Error::other)?;
        let blocks = read(self.blocks.start, length)?;
        verify(self.handle, &self.checksums, self.first, &blocks)?;
        let from = (self.wanted.start - self.blocks.start) as usize;
        let to = (self.wanted.end - self.blocks.start) as usize;
        Ok((Bytes::from(blocks).slice(from..to), self.version))
    }
}
