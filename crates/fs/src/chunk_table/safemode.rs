//! Safemode in the chunk table: whether the leader may place, lease,
//! re-replicate or delete yet (see [`crate::safemode`]), counted from the
//! chunkservers' reports, and the refusal a client gets meanwhile.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::{ChunkTable, Decision};
use crate::namespace::ChunkHandle;
use crate::safemode::{ReportCount, SafemodeStatus};

impl ChunkTable {
    /// Whether this node, as leader, is in safemode at `now` (see
    /// `safemode.rs`): it then places no replica, grants no lease, and
    /// must not re-replicate nor delete replicas. True on a node that has
    /// not led yet.
    pub(crate) fn in_safemode(&self, now: Instant) -> bool {
        self.safemode.in_safemode(now)
    }

    /// Whether safemode is on and why.
    pub(crate) fn safemode_status(&self, now: Instant) -> SafemodeStatus {
        self.safemode.status(now)
    }

    /// An operator's `safemode enter` (`true`) or `leave` (`false`).
    pub(crate) fn set_safemode(&mut self, on: bool) {
        if on {
            self.safemode.enter();
        } else {
            self.safemode.leave();
        }
    }

    /// Whether safemode still waits for the reports to reach its threshold
    /// (the caller then counts them with [`count_reports`](Self::count_reports)).
    pub(crate) fn safemode_counting(&self, now: Instant) -> bool {
        self.safemode.counting(now)
    }

    /// Counts the chunks of the namespace (`chunks`: handle and version)
    /// with a replica at that version or above on a live chunkserver, for
    /// safemode; logs its end once.
    pub(crate) fn count_reports(&mut self, chunks: &[(ChunkHandle, u64)], now: Instant) {
        let mut newest: BTreeMap<ChunkHandle, u64> = BTreeMap::new();
        for (url, server) in &self.servers {
            if !self.live(url, now) {
                continue;
            }
            for (&handle, &(version, _)) in &server.replicas {
                let best = newest.entry(handle).or_insert(version);
                *best = (*best).max(version);
            }
        }
        let reported = chunks
            .iter()
            .filter(|(handle, version)| newest.get(handle).is_some_and(|v| v >= version))
            .count();
        let count = ReportCount {
            reported: reported as u64,
            total: chunks.len() as u64,
        };
        self.safemode.record(count, now);
        self.safemode.announce(now);
    }

    /// Logs safemode's end once it has ended (by the timeout, say).
    pub(crate) fn announce_safemode(&mut self, now: Instant) {
        self.safemode.announce(now);
    }

    /// The refusal while in safemode: why, and what to do.
    pub(super) fn safemode_wait(&self, now: Instant) -> Option<Decision> {
        self.in_safemode(now).then(|| {
            Decision::Wait(format!(
                "the master is in safemode ({}): it places and leases nothing until it has heard from the chunkservers; retry in a few seconds, start the chunkservers that are down, or see `cairn fs safemode get`",
                self.safemode.status(now).reason
            ))
        })
    }
}
