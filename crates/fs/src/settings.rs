//! [`FsSettings`]: the sizes and times every party of the store agrees on.

use std::time::Duration;

/// Chunk size, lease and heartbeat settings. Masters, chunkservers and
/// clients of one store must use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSettings {
    /// The largest a chunk grows (GFS: 64 MB).
    pub chunk_bytes: u64,
    /// How long a primary's lease lasts (GFS: 60 s). A dead primary blocks
    /// writes to its chunks for at most this long (plus the clock margin).
    pub lease: Duration,
    /// How often a chunkserver reports to every master.
    pub heartbeat_interval: Duration,
    /// How many replicas a new chunk gets.
    pub replication: usize,
    /// The space a chunkserver offers (reported as free space minus what
    /// its replicas use).
    pub capacity_bytes: u64,
    /// The free-space floor: a chunkserver reporting less free space is
    /// not given new chunks, nor new leases on chunks it holds while other
    /// replicas have room (default: one chunk).
    pub min_free_bytes: u64,
    /// How long a deleted file or tree is kept for `undelete` before the
    /// leader purges it and its chunks become garbage (GFS: 3 days). The
    /// leader's value counts: it stamps it into undeletes and purges.
    pub retention: Duration,
    /// Safemode (a new leader's wait for chunk reports): the share of the
    /// namespace's chunks, in thousandths, that must have a reported
    /// replica before it places, grants or deletes anything (default 999).
    pub safemode_threshold_per_mille: u32,
    /// The longest a new leader stays in safemode, threshold met or not
    /// (default 30 s), so a chunkserver that never returns does not keep
    /// the store read-only.
    pub safemode_timeout: Duration,
    /// The most clones (re-replication) the master has in flight per
    /// chunkserver, as source or target (default 2; 0 turns
    /// re-replication off, so damage stays as found, for inspection).
    pub clones_per_server: usize,
    /// The most bytes per second one clone reads from its source (GFS
    /// §4.3: each chunkserver throttles its reads to the source, so that
    /// re-replication leaves room for clients); 0: no limit. With
    /// `clones_per_server` it bounds a chunkserver's healing traffic.
    pub clone_bytes_per_sec: u64,
}

impl Default for FsSettings {
    fn default() -> Self {
        Self {
            chunk_bytes: 64 << 20,
            lease: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            replication: 3,
            capacity_bytes: 1 << 40,
            min_free_bytes: 64 << 20,
            retention: Duration::from_secs(3 * 24 * 3600),
            safemode_threshold_per_mille: 999,
            safemode_timeout: Duration::from_secs(30),
            clones_per_server: 2,
            clone_bytes_per_sec: 200 << 20,
        }
    }
}

impl FsSettings {
    /// The allowance for clock drift between a primary and the master: the
    /// primary stops this much before its lease ends by its own clock, the
    /// master waits this much after it ends by its clock.
    pub fn clock_margin(&self) -> Duration {
        self.lease / 10
    }

    /// A chunkserver silent for this long is considered dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat_interval * 4
    }

    /// How often the leader looks for deletions past their retention: a
    /// tenth of it, between 100 ms and a minute.
    pub fn purge_interval(&self) -> Duration {
        (self.retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }

    /// How long a new leader waits before it heals (every live chunkserver
    /// has reported by then), and how long a replica no file references
    /// stays before it is deleted.
    pub fn heal_after(&self) -> Duration {
        self.dead_after()
    }

    /// The largest record an append takes: a quarter of a chunk (GFS §3.3).
    pub fn max_record_bytes(&self) -> u64 {
        self.chunk_bytes / 4
    }
}
