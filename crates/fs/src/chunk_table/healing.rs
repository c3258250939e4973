//! Healing in the chunk table (GFS §4.3, §4.4): how each chunk stands
//! against its replication goal and which chunkservers can take a clone,
//! for the healer; and which replicas a chunkserver should delete
//! (orphans, stale replicas, a chunk's extra replica), told in the reply
//! to its heartbeat.

use cairn_rpc::fs::ReplicaState;
use tokio::time::Instant;

use super::{ChunkTable, ReportedChunks};
use crate::healer::{ChunkHealth, ServerLoad};
use crate::namespace::ChunkHandle;

impl ChunkTable {
    /// Live replicas of `handle` at `version` that count toward its goal
    /// (none on a server being decommissioned).
    pub(super) fn good(&self, handle: ChunkHandle, version: u64, now: Instant) -> Vec<String> {
        let mut good = self.replicas_at(handle, version, now);
        good.retain(|url| !self.decommissioning.contains(url));
        good
    }

    /// How each chunk stands, for the healer: `chunks` are (handle, latest
    /// version, goal).
    pub(crate) fn health(
        &self,
        chunks: &[(ChunkHandle, u64, usize)],
        now: Instant,
    ) -> Vec<ChunkHealth> {
        chunks
            .iter()
            .map(|&(handle, version, goal)| ChunkHealth {
                handle,
                version,
                goal,
                good: self.good(handle, version, now),
                replicas: self.replicas_at(handle, version, now),
                busy: self.busy(handle, version, now),
            })
            .collect()
    }

    /// Every live chunkserver as a clone target.
    pub(crate) fn loads(&self, now: Instant) -> Vec<ServerLoad> {
        self.servers
            .iter()
            .filter(|(url, _)| self.live(url, now))
            .map(|(url, s)| ServerLoad {
                url: url.clone(),
                free_bytes: s.free_bytes,
                takes_new: self.takes_new(url),
            })
            .collect()
    }

    /// The replicas `url` reported that it should delete (the leader,
    /// once settled): orphans seen for [`FsSettings::heal_after`]; stale
    /// replicas of chunks that have their goal of good ones; and, on a
    /// chunk with more good replicas than its goal and nothing in
    /// progress, the one on the fullest server. Each is forgotten here at
    /// once, so it is not counted, nor listed twice.
    pub(crate) fn deletions(
        &mut self,
        url: &str,
        reported: &ReportedChunks,
        now: Instant,
    ) -> Vec<ReplicaState> {
        let Some(server) = self.servers.get(url) else {
            return Vec::new();
        };
        let replicas = server.replicas.clone();
        self.decommissioning = reported.decommissioning.clone();
        self.orphans_since
            .retain(|(u, handle), _| u != url || reported.orphans.contains(handle));
        if !self.settled(now) {
            return Vec::new();
        }
        let grace = self.settings.heal_after();
        let mut doomed = Vec::new();
        for (&handle, &(version, length)) in &replicas {
            let delete = match reported.referenced.get(&handle) {
                None if reported.orphans.contains(&handle) => {
                    let since = *self
                        .orphans_since
                        .entry((url.to_string(), handle))
                        .or_insert(now);
                    now >= since + grace
                }
                None => false,
                Some(&(latest, goal)) => {
                    let good = self.good(handle, latest, now);
                    if version < latest {
                        good.len() >= goal
                    } else {
                        version == latest
                            && good.len() > goal
                            && !self.busy(handle, latest, now)
                            && self.extra_replica(handle, &good) == Some(url)
                    }
                }
            };
            if delete {
                doomed.push(ReplicaState {
                    handle,
                    version,
                    length,
                });
            }
        }
        if let Some(server) = self.servers.get_mut(url) {
            for replica in &doomed {
                server.replicas.remove(&replica.handle);
                server.learned.remove(&replica.handle);
            }
        }
        for replica in &doomed {
            self.replica_deleted(url, replica.handle);
        }
        doomed
    }

    /// Of `urls`, the server with the least free space.
    pub(super) fn fullest<'a>(&self, urls: &'a [String]) -> Option<&'a str> {
        urls.iter()
            .min_by_key(|url| (self.servers.get(*url).map_or(0, |s| s.free_bytes), *url))
            .map(String::as_str)
    }
}
