//! The healer's decisions (GFS §4.3, §4.4): which chunks to re-replicate
//! first, from where to where, within which bounds; and the bookkeeping of
//! clones in flight. Pure and synchronous: the leader's
//! [`ChunkTable`](crate::chunk_table::ChunkTable) owns a [`Healing`] and
//! feeds it what the heartbeats said; `master_heal.rs` carries the
//! clones out.
//!
//! A round looks at every chunk the namespace holds. A chunk with fewer
//! *good* replicas (on live chunkservers, at the latest version, not on a
//! server being decommissioned) than its goal needs a clone; the neediest
//! go first: one good replica left before two, then the furthest below
//! the goal, then by handle. A chunk with a lease, a grant or a clone in
//! progress is left for a later round, and one with no good replica at
//! all cannot be helped (it waits for a server to come back).
//!
//! For each, the source is the good replica with the fewest clones in
//! flight, and the target the live chunkserver with the most free space
//! (then the fewest clones) that takes new chunks (not full, not
//! decommissioning), does not hold a good replica already, and has not
//! failed a clone of this chunk lately. A chunkserver is never in more
//! than `clones_per_server` clones at once (as source or target), and a
//! round starts at most [`MAX_CLONES_PER_ROUND`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::namespace::ChunkHandle;

/// The most clones one healing round starts.
pub const MAX_CLONES_PER_ROUND: usize = 32;
/// The most finished clones remembered for reports (oldest forgotten).
pub const MAX_CLONE_HISTORY: usize = 1024;
/// The most (chunk, target) pairs remembered as failed; beyond it the
/// oldest are forgotten (at worst a failed target is tried again early).
const MAX_AVOIDED: usize = 4096;

/// A chunk as the healer sees it this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkHealth {
    pub handle: ChunkHandle,
    pub version: u64,
    pub goal: usize,
    /// Live chunkservers holding it at the latest version (servers being
    /// decommissioned left out).
    pub good: Vec<String>,
    /// Every live chunkserver holding it at the latest version, those
    /// being decommissioned included: the sources a clone may copy from.
    pub replicas: Vec<String>,
    /// A lease, a grant or a clone is in progress: not this round.
    pub busy: bool,
}

/// A live chunkserver as a clone target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerLoad {
    pub url: String,
    pub free_bytes: u64,
    /// Not full and not being decommissioned.
    pub takes_new: bool,
}

/// One clone to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloneOrder {
    pub handle: ChunkHandle,
    pub version: u64,
    /// The live replicas at the latest version when planned (told of the
    /// clone's version).
    pub good: Vec<String>,
    pub source: String,
    pub target: String,
}

/// A clone as the healer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneRecord {
    pub handle: ChunkHandle,
    /// How many good replicas the chunk had when the clone was planned.
    pub good_before: usize,
    pub source: String,
    pub target: String,
    /// `None` while in flight; then whether the new replica counted.
    pub succeeded: Option<bool>,
}

/// What the healer is doing and has done, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealingStatus {
    /// Clones in flight per chunkserver (as source or target).
    pub in_flight: BTreeMap<String, usize>,
    /// The most clones ever in flight on one chunkserver at once.
    pub peak_per_server: usize,
    /// Clones started, oldest first (the last [`MAX_CLONE_HISTORY`]).
    pub history: Vec<CloneRecord>,
}

/// The leader's clones in flight and what it remembers of past ones.
#[derive(Debug, Default)]
pub(crate) struct Healing {
    in_flight: BTreeMap<ChunkHandle, CloneOrder>,
    per_server: BTreeMap<String, usize>,
    peak_per_server: usize,
    /// (chunk, target) -> until when that target is not tried again.
    avoided: BTreeMap<(ChunkHandle, String), Instant>,
    history: VecDeque<CloneRecord>,
}

impl Healing {
    /// Whether a clone of `handle` is in flight.
    pub(crate) fn cloning(&self, handle: ChunkHandle) -> bool {
        self.in_flight.contains_key(&handle)
    }

    pub(crate) fn load(&self, url: &str) -> usize {
        self.per_server.get(url).copied().unwrap_or(0)
    }

    /// The clones to start this round (see the module's doc for the
    /// order and the bounds).
    pub(crate) fn plan(
        &self,
        chunks: &[ChunkHealth],
        servers: &[ServerLoad],
        per_server: usize,
        now: Instant,
    ) -> Vec<CloneOrder> {
        let mut needy: Vec<&ChunkHealth> = chunks
            .iter()
            .filter(|c| !c.busy && !c.replicas.is_empty() && c.good.len() < c.goal)
            .filter(|c| !self.cloning(c.handle))
            .collect();
        needy.sort_by_key(|c| (c.good.len(), Reverse(c.goal - c.good.len()), c.handle));
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        let load_of = |load: &BTreeMap<&str, usize>, url: &str| {
            self.load(url) + load.get(url).copied().unwrap_or(0)
        };
        let mut orders = Vec::new();
        for chunk in needy {
            if orders.len() >= MAX_CLONES_PER_ROUND {
                break;
            }
            let source = chunk
                .replicas
                .iter()
                .filter(|url| load_of(&load, url) < per_server)
                .min_by_key(|url| (load_of(&load, url), *url));
            let target = servers
                .iter()
                .filter(|s| s.takes_new && !chunk.replicas.contains(&s.url))
                .filter(|s| load_of(&load, &s.url) < per_server)
                .filter(|s| {
                    self.avoided
                        .get(&(chunk.handle, s.url.clone()))
                        .is_none_or(|&until| now >= until)
                })
                .min_by_key(|s| (Reverse(s.free_bytes), load_of(&load, &s.url), &s.url));
            let (Some(source), Some(target)) = (source, target) else {
                continue;
            };
            *load.entry(source).or_default() += 1;
            *load.entry(&target.url).or_default() += 1;
            orders.push(CloneOrder {
                handle: chunk.handle,
                version: chunk.version,
                good: chunk.replicas.clone(),
                source: source.clone(),
                target: target.url.clone(),
            });
        }
        orders
    }

    /// Records clones as started.
    pub(crate) fn start(&mut self, orders: &[CloneOrder]) {
        for order in orders {
            for url in [&order.source, &order.target] {
                let count = self.per_server.entry(url.clone()).or_default();
                *count += 1;
                self.peak_per_server = self.peak_per_server.max(*count);
            }
            if self.history.len() >= MAX_CLONE_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(CloneRecord {
                handle: order.handle,
                good_before: order.good.len(),
                source: order.source.clone(),
                target: order.target.clone(),
                succeeded: None,
            });
            self.in_flight.insert(order.handle, order.clone());
        }
    }

    /// Records the end of the clone of `handle`; a failed one's target is
    /// not tried again for this chunk for `avoid_for`.
    pub(crate) fn finish(
        &mut self,
        handle: ChunkHandle,
        succeeded: bool,
        now: Instant,
        avoid_for: Duration,
    ) {
        let Some(order) = self.in_flight.remove(&handle) else {
            return;
        };
        for url in [&order.source, &order.target] {
            if let Some(count) = self.per_server.get_mut(url) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_server.remove(url);
                }
            }
        }
        if let Some(record) = self
            .history
            .iter_mut()
            .rev()
            .find(|r| r.handle == handle && r.succeeded.is_none())
        {
            record.succeeded = Some(succeeded);
        }
        if !succeeded {
            self.avoided.retain(|_, until| now < *until);
            if self.avoided.len() >= MAX_AVOIDED {
                self.avoided.pop_first();
            }
            self.avoided.insert((handle, order.target), now + avoid_for);
        }
    }

    /// What the healer is doing and has done.
    pub(crate) fn status(&self) -> HealingStatus {
        HealingStatus {
            in_flight: self.per_server.clone(),
            peak_per_server: self.peak_per_server,
            history: self.history.iter().cloned().collect(),
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests;
