//! Decommissioning, as the chunk table sees it: which chunkservers are
//! being drained (a copy of the set in the log's state, refreshed each time
//! the leader reads that state), whether one may be drained at all, and
//! how far each one is.
//!
//! A server being decommissioned keeps serving reads and stays in the
//! leases of chunks it holds, but takes no new chunk and no clone, and its
//! replicas do not count toward a chunk's goal: the healer copies them
//! elsewhere (from it, if it is the only source left). It is drained
//! ("decommissioned") once every chunk it holds at the latest version has
//! its goal of good replicas on other live servers: then it can be stopped
//! without leaving any chunk short.

use std::collections::{BTreeMap, BTreeSet};

use cairn_rpc::fs::{FsErrorCode, ServerUsage};
use tokio::time::Instant;

use super::ChunkTable;
use crate::namespace::ChunkHandle;

/// Each chunk's latest version and replication goal.
pub(crate) type ChunkGoals = BTreeMap<ChunkHandle, (u64, usize)>;

impl ChunkTable {
    /// Takes the set of servers being decommissioned from the log's state.
    pub(crate) fn set_decommissioning(&mut self, urls: BTreeSet<String>) {
        self.decommissioning = urls;
    }

    /// Whether new chunks and clones may go to `url` (not full, not being
    /// decommissioned).
    pub(crate) fn takes_new(&self, url: &str) -> bool {
        !self.full(url) && !self.decommissioning.contains(url)
    }

    /// Why `url` may not be decommissioned now, if it may not: no such
    /// server, or too few live servers in service would be left for the
    /// largest goal of any file (`largest_goal`).
    pub(crate) fn check_decommission(
        &self,
        url: &str,
        largest_goal: usize,
        now: Instant,
    ) -> Result<(), (FsErrorCode, String)> {
        if !self.servers.contains_key(url) {
            let known: Vec<&String> = self.servers.keys().collect();
            return Err((
                FsErrorCode::UnknownNode,
                format!(
                    "no chunkserver {url} has reported to the master (it knows {known:?}); give the URL as `cairn fs df` lists it"
                ),
            ));
        }
        let left = self
            .servers
            .keys()
            .filter(|other| *other != url && self.live(other, now))
            .filter(|other| !self.decommissioning.contains(*other))
            .count();
        if left < largest_goal {
            return Err((
                FsErrorCode::TooFewNodes,
                format!(
                    "decommissioning {url} would leave {left} live chunkservers in service, fewer than the replication goal {largest_goal} of some files; start another chunkserver first, or lower those files' goal with `cairn fs setrep`"
                ),
            ));
        }
        Ok(())
    }

    /// How many chunks `url` holds at their latest version that lack their
    /// goal of good replicas elsewhere (`chunks`: the namespace's).
    pub(crate) fn draining_chunks(&self, url: &str, chunks: &ChunkGoals, now: Instant) -> u64 {
        let Some(server) = self.servers.get(url) else {
            return 0;
        };
        server
            .replicas
            .iter()
            .filter(|(handle, (version, _))| {
                chunks.get(handle).is_some_and(|&(latest, goal)| {
                    *version == latest && self.good(**handle, latest, now).len() < goal
                })
            })
            .count() as u64
    }

    /// Fills in how far each server being decommissioned is.
    pub(crate) fn mark_draining(
        &self,
        usage: &mut [ServerUsage],
        chunks: &ChunkGoals,
        now: Instant,
    ) {
        for server in usage.iter_mut().filter(|s| s.decommissioning) {
            server.draining_chunks = self.draining_chunks(&server.url, chunks, now);
            server.decommissioned = server.draining_chunks == 0;
        }
    }
}
