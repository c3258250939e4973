//! [`LocationCache`]: where chunks are, as the master last answered, kept
//! by a client until a deadline (GFS §2.7.1: a client caches chunk
//! locations for a limited time, so that reading or writing a file does
//! not cost a master round trip per call).
//!
//! A client keeps two: the primaries of the chunks it mutates (until the
//! lease the master reported ends) and the replicas of the chunks it reads
//! (for one lease period). Entries are keyed by path and chunk index, so
//! after this client deletes, renames or restores a path, or snapshots
//! it, the entries at and below it are dropped: a file of that name is
//! then another file with other chunks.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::client::ChunkLocation;
use crate::path::FsPath;

/// The most chunk locations one cache holds; beyond it the cache is
/// emptied (the master answers again).
pub const MAX_CACHED_LOCATIONS: usize = 4096;

/// (path, chunk index) -> where the chunk is, and until when to trust it.
#[derive(Debug, Default)]
pub(crate) struct LocationCache {
    entries: BTreeMap<(String, u64), (ChunkLocation, Instant)>,
}

impl LocationCache {
    /// The location of chunk `index` of `path`, if cached and not expired.
    pub(crate) fn get(&self, path: &FsPath, index: u64) -> Option<ChunkLocation> {
        let (location, until) = self.entries.get(&key(path, index))?;
        (Instant::now() < *until).then(|| location.clone())
    }

    /// Keeps `location` for chunk `index` of `path` until `until`.
    pub(crate) fn insert(
        &mut self,
        path: &FsPath,
        index: u64,
        location: ChunkLocation,
        until: Instant,
    ) {
        if self.entries.len() >= MAX_CACHED_LOCATIONS {
            self.entries.clear();
        }
        self.entries.insert(key(path, index), (location, until));
    }

    /// Drops the location of chunk `index` of `path`.
    pub(crate) fn forget(&mut self, path: &FsPath, index: u64) {
        self.entries.remove(&key(path, index));
    }

    /// Drops the locations of `path` and of every path below it.
    pub(crate) fn forget_within(&mut self, path: &FsPath) {
        self.entries
            .retain(|(cached, _), _| FsPath::parse(cached).map_or(true, |p| !p.is_within(path)));
    }
}

fn key(path: &FsPath, index: u64) -> (String, u64) {
    (path.as_str().to_string(), index)
}
