//! The balancer's decisions (HDFS's balancer semantics): which replicas to
//! move so that every live chunkserver's used share of its capacity ends
//! within `threshold` percentage points of the cluster's (the sum of used
//! bytes over the sum of capacities). Pure and synchronous like the
//! healer: the leader's [`ChunkTable`](crate::chunk_table::ChunkTable)
//! owns a [`Balancer`], feeds it the servers' fill and the chunks, and
//! carries the moves out as clones (`master_heal.rs`).
//!
//! A move copies a healthy chunk (its goal of good replicas, nothing in
//! progress) from a server above the mean to one below it that holds no
//! replica of it, as the healer clones (verified before it counts); the
//! chunk then has one replica too many, and the deletion of extra replicas
//! picks the move's source. Sources are the servers above the threshold,
//! and, while some are below it, those above the mean; targets the
//! servers below the threshold, and, while some are above it, those below
//! the mean. A move never takes a server past the mean's far side of the
//! threshold. The balancer plans a round only when the previous one's
//! moves are all done, so its figures are never ahead of the reports; it
//! is finished when every server is within the threshold, or stuck when
//! no move is possible (it says why).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::namespace::ChunkHandle;

/// The most moves one round plans (each also bound by the per-server
/// clone limit).
pub const MAX_MOVES_PER_ROUND: usize = 32;
/// A move whose source's replica is not deleted by then is forgotten (the
/// next round sees the chunk as it is).
const MOVE_EXPIRY: Duration = Duration::from_secs(60);

/// A live chunkserver in service, as the balancer sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerFill {
    pub url: String,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    /// It may take a new replica (not full).
    pub takes_new: bool,
}

impl ServerFill {
    fn share(&self, used: u64) -> f64 {
        used as f64 / self.capacity_bytes.max(1) as f64
    }
}

/// A chunk as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Movable {
    pub handle: ChunkHandle,
    pub length: u64,
    /// Its good replicas are at least its goal, and nothing is in progress.
    pub healthy: bool,
    /// Every live server holding it at the latest version.
    pub replicas: Vec<String>,
}

/// One move: copy `handle` from `source` to `target`, then delete it on
/// `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub handle: ChunkHandle,
    pub source: String,
    pub target: String,
}

/// Where a balancing run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Running,
    Balanced,
    /// Not balanced and no move can help: why.
    Stuck(String),
}

/// A move in progress: planned, then cloned (its source's replica is then
/// the one to delete).
#[derive(Debug, Clone)]
struct InFlight {
    source: String,
    cloned: bool,
    started: Instant,
}

/// The leader's balancing run.
#[derive(Debug, Clone)]
pub(crate) struct Balancer {
    pub threshold_percent: u32,
    pub outcome: Outcome,
    pub moves_done: u64,
    moves: BTreeMap<ChunkHandle, InFlight>,
}

/// What a round decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    Balanced,
    Moves(Vec<Move>),
    /// Nothing to do this round (every candidate busy): try again.
    Wait,
    Stuck(String),
}

/// The cluster's used share: the sum of used bytes over the sum of
/// capacities.
pub(crate) fn mean_share(servers: &[ServerFill]) -> f64 {
    let used: u64 = servers.iter().map(|s| s.used_bytes).sum();
    let capacity: u64 = servers.iter().map(|s| s.capacity_bytes).sum();
    used as f64 / capacity.max(1) as f64
}

/// The moves of one round (see the module's doc). `room(url)` says how
/// many more clones `url` may join now (the per-server bound).
pub(crate) fn plan(
    servers: &[ServerFill],
    chunks: &[Movable],
    threshold_percent: u32,
    room: impl Fn(&str) -> usize,
) -> Plan {
    let mean = mean_share(servers);
    let threshold = f64::from(threshold_percent) / 100.0;
    let mut used: BTreeMap<&str, u64> = servers
        .iter()
        .map(|s| (s.url.as_str(), s.used_bytes))
        .collect();
    let share = |used: &BTreeMap<&str, u64>, s: &ServerFill| s.share(used[s.url.as_str()]);
    if servers
        .iter()
        .all(|s| (share(&used, s) - mean).abs() <= threshold)
    {
        return Plan::Balanced;
    }
    let mut planned: BTreeMap<&str, usize> = BTreeMap::new();
    let mut moves: Vec<Move> = Vec::new();
    let mut busy_only = false;
    while moves.len() < MAX_MOVES_PER_ROUND {
        let over = servers.iter().any(|s| share(&used, s) > mean + threshold);
        let under = servers.iter().any(|s| share(&used, s) < mean - threshold);
        if !over && !under {
            break;
        }
        let mut sources: Vec<&ServerFill> = servers
            .iter()
            .filter(|s| share(&used, s) > if under { mean } else { mean + threshold })
            .collect();
        sources.sort_by(|a, b| share(&used, b).total_cmp(&share(&used, a)));
        let mut targets: Vec<&ServerFill> = servers
            .iter()
            .filter(|s| s.takes_new)
            .filter(|s| share(&used, s) < if over { mean } else { mean - threshold })
            .collect();
        targets.sort_by(|a, b| share(&used, a).total_cmp(&share(&used, b)));
        let found = sources.iter().find_map(|source| {
            targets.iter().find_map(|target| {
                let free = |url: &str| room(url) > planned.get(url).copied().unwrap_or(0);
                if !free(&source.url) || !free(&target.url) {
                    return None;
                }
                chunks
                    .iter()
                    .filter(|c| c.replicas.contains(&source.url))
                    .filter(|c| !c.replicas.contains(&target.url))
                    .filter(|c| !moves.iter().any(|m| m.handle == c.handle))
                    .filter(|c| {
                        // Neither side crosses the mean by more than the
                        // threshold.
                        let from = source.share(used[source.url.as_str()] - c.length);
                        let to = target.share(used[target.url.as_str()] + c.length);
                        c.length > 0 && from >= mean - threshold && to <= mean + threshold
                    })
                    .find(|c| {
                        busy_only |= !c.healthy;
                        c.healthy
                    })
                    .map(|c| (c, *source, *target))
            })
        });
        let Some((chunk, source, target)) = found else {
            break;
        };
        *used.get_mut(source.url.as_str()).expect("a server") -= chunk.length;
        *used.get_mut(target.url.as_str()).expect("a server") += chunk.length;
        *planned.entry(&source.url).or_default() += 1;
        *planned.entry(&target.url).or_default() += 1;
        moves.push(Move {
            handle: chunk.handle,
            source: source.url.clone(),
            target: target.url.clone(),
        });
    }
    match moves.is_empty() {
        false => Plan::Moves(moves),
        true if busy_only || servers.iter().any(|s| room(&s.url) == 0) => Plan::Wait,
        true => Plan::Stuck(format!(
            "no replica on a server above the mean can move to one below it without crossing the mean by more than {threshold_percent} points (chunks too large for the spread, or every below-mean server full or holding them already); try a larger --threshold or add chunkservers"
        )),
    }
}

impl Balancer {
    pub(crate) fn new(threshold_percent: u32) -> Self {
        Self {
            threshold_percent,
            outcome: Outcome::Running,
            moves_done: 0,
            moves: BTreeMap::new(),
        }
    }

    /// Moves planned or cloned whose source has not deleted its replica.
    pub(crate) fn in_flight(&self) -> usize {
        self.moves.len()
    }

    /// Records moves as started.
    pub(crate) fn start(&mut self, moves: &[Move], now: Instant) {
        for m in moves {
            let flight = InFlight {
                source: m.source.clone(),
                cloned: false,
                started: now,
            };
            self.moves.insert(m.handle, flight);
        }
    }

    /// The clone of a move ended: a failed one is dropped.
    pub(crate) fn cloned(&mut self, handle: ChunkHandle, succeeded: bool) {
        if succeeded {
            if let Some(flight) = self.moves.get_mut(&handle) {
                flight.cloned = true;
            }
        } else {
            self.moves.remove(&handle);
        }
    }

    /// The replica to delete of `handle`, if a move cloned it: its source.
    pub(crate) fn source_to_delete(&self, handle: ChunkHandle) -> Option<&str> {
        self.moves
            .get(&handle)
            .filter(|flight| flight.cloned)
            .map(|flight| flight.source.as_str())
    }

    /// `url` was told to delete its replica of `handle`: a move from there
    /// is done.
    pub(crate) fn deleted(&mut self, url: &str, handle: ChunkHandle) {
        if self.source_to_delete(handle) == Some(url) {
            self.moves.remove(&handle);
            self.moves_done += 1;
        }
    }

    /// Forgets moves that took too long (their chunk changed meanwhile).
    pub(crate) fn expire(&mut self, now: Instant) {
        self.moves
            .retain(|_, flight| now < flight.started + MOVE_EXPIRY);
    }
}

#[cfg(all(test, not(madsim)))]
mod tests;
