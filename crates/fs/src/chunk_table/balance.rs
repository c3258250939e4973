//! The balancer in the chunk table: the servers' fill and the chunks as
//! the [`balancer`](crate::balancer) plans with them, its moves turned
//! into clone orders (carried out as the healer's), the replica to delete
//! once a move's clone counts (its source), and the figures a `Balance`
//! reply shows.

use cairn_rpc::fs::{BalanceReply, BalanceServer};
use tokio::time::Instant;

use super::ChunkTable;
use crate::balancer::{self, Balancer, Movable, Outcome, Plan, ServerFill};
use crate::healer::{ChunkHealth, CloneOrder};
use crate::namespace::ChunkHandle;

impl ChunkTable {
    /// The live chunkservers in service (not being decommissioned), with
    /// the bytes their replicas hold and their capacity.
    pub(crate) fn fills(&self, now: Instant) -> Vec<ServerFill> {
        self.servers
            .iter()
            .filter(|(url, _)| self.live(url, now) && !self.decommissioning.contains(*url))
            .map(|(url, s)| {
                let used: u64 = s.replicas.values().map(|&(_, length)| length).sum();
                let capacity = match s.capacity_bytes {
                    0 => used + s.free_bytes,
                    capacity => capacity,
                };
                ServerFill {
                    url: url.clone(),
                    used_bytes: used,
                    capacity_bytes: capacity,
                    takes_new: !self.full(url),
                }
            })
            .collect()
    }

    /// Starts a new balancing run (`start`), or keeps the one going (and
    /// starts one if this leader has none, as after a leader change).
    pub(crate) fn request_balance(&mut self, threshold_percent: u32, start: bool) {
        let same = self
            .balancer
            .as_ref()
            .is_some_and(|b| b.threshold_percent == threshold_percent);
        if start || !same {
            self.balancer = Some(Balancer::new(threshold_percent));
        }
    }

    /// This round's moves as clone orders, each chunk taken like a grant
    /// (`health`: this round's chunks). None while the healer has work,
    /// while the last round's moves are in progress, or once the run has
    /// ended.
    pub(crate) fn balance_orders(
        &mut self,
        health: &[ChunkHealth],
        per_server: usize,
        now: Instant,
    ) -> Vec<CloneOrder> {
        let Some(balancer) = self.balancer.as_mut() else {
            return Vec::new();
        };
        balancer.expire(now);
        if balancer.outcome != Outcome::Running || balancer.in_flight() > 0 {
            return Vec::new();
        }
        let fills = self.fills(now);
        let movables: Vec<Movable> = health
            .iter()
            .map(|c| Movable {
                handle: c.handle,
                length: self.chunk_length(c.handle, c.version),
                healthy: !c.busy && c.good.len() >= c.goal,
                replicas: c.replicas.clone(),
            })
            .collect();
        let healing = &self.healing;
        let room = |url: &str| per_server.saturating_sub(healing.load(url));
        let Some(balancer) = self.balancer.as_mut() else {
            return Vec::new();
        };
        let threshold = balancer.threshold_percent;
        let moves = match balancer::plan(&fills, &movables, threshold, room) {
            Plan::Moves(moves) => moves,
            Plan::Wait => return Vec::new(),
            Plan::Balanced => {
                balancer.outcome = Outcome::Balanced;
                return Vec::new();
            }
            Plan::Stuck(why) => {
                balancer.outcome = Outcome::Stuck(why);
                return Vec::new();
            }
        };
        let mut orders = Vec::new();
        let mut started = Vec::new();
        for m in moves {
            let Some(chunk) = health.iter().find(|c| c.handle == m.handle) else {
                continue;
            };
            if !self.begin(m.handle, now) {
                continue;
            }
            orders.push(CloneOrder {
                handle: m.handle,
                version: chunk.version,
                good: chunk.replicas.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
            });
            started.push(m);
        }
        if let Some(balancer) = self.balancer.as_mut() {
            balancer.start(&started, now);
        }
        orders
    }

    /// A clone ended; if it was a move's, the move goes on (its source's
    /// replica is now the extra one) or is dropped.
    pub(crate) fn move_cloned(&mut self, handle: ChunkHandle, succeeded: bool) {
        if let Some(balancer) = self.balancer.as_mut() {
            balancer.cloned(handle, succeeded);
        }
    }

    /// Of `good` (more than the goal), the replica to delete: a move's
    /// source once its clone counts, else the one on the fullest server.
    pub(crate) fn extra_replica<'a>(
        &self,
        handle: ChunkHandle,
        good: &'a [String],
    ) -> Option<&'a str> {
        let source = self
            .balancer
            .as_ref()
            .and_then(|b| b.source_to_delete(handle));
        match good.iter().find(|url| Some(url.as_str()) == source) {
            Some(url) => Some(url.as_str()),
            None => self.fullest(good),
        }
    }

    /// `url` was told to delete its replica of `handle`.
    pub(crate) fn replica_deleted(&mut self, url: &str, handle: ChunkHandle) {
        if let Some(balancer) = self.balancer.as_mut() {
            balancer.deleted(url, handle);
        }
    }

    /// How the balancing run stands.
    pub(crate) fn balance_status(&self, now: Instant) -> BalanceReply {
        let fills = self.fills(now);
        let mut reply = BalanceReply {
            mean_percent: balancer::mean_share(&fills) * 100.0,
            servers: fills
                .iter()
                .map(|s| BalanceServer {
                    url: s.url.clone(),
                    used_percent: s.used_bytes as f64 * 100.0 / s.capacity_bytes.max(1) as f64,
                })
                .collect(),
            ..BalanceReply::default()
        };
        let Some(balancer) = &self.balancer else {
            return reply;
        };
        reply.moves_done = balancer.moves_done;
        reply.moves_in_flight = balancer.in_flight() as u64;
        match &balancer.outcome {
            Outcome::Running => {}
            Outcome::Balanced => {
                reply.balanced = true;
                reply.message = format!(
                    "every live chunkserver is within {} points of the mean",
                    balancer.threshold_percent
                );
            }
            Outcome::Stuck(why) => {
                reply.stuck = true;
                reply.message = why.clone();
            }
        }
        reply
    }
}
