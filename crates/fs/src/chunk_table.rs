//! [`ChunkTable`]: the master's volatile knowledge of chunks (GFS §2.6.2,
//! §3.1): where replicas are and at which version (from heartbeats, which
//! every master node records), which chunkservers are alive, and — on the
//! leader only — the leases it granted. A new leader starts with no leases
//! and waits one lease period (plus the clock margin) before it grants one
//! to a replica that may not hold the old one; the primary of the current
//! version keeps its lease through the change by claiming it in its
//! heartbeats (if every secondary it names reports that version).
//!
//! Here: the reports and what they say. By idea: leases and grants
//! (`leases.rs`), healing and deletions (`healing.rs`), safemode
//! (`safemode.rs`), decommissioning (`decommission.rs`), the balancer
//! (`balance.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_rpc::fs::{FsckReplica, HeartbeatRequest, LeaseClaim, ServerUsage, SetVersionReply};
use tokio::time::Instant;

use crate::healer::Healing;
use crate::namespace::ChunkHandle;
use crate::safemode::Safemode;
use crate::settings::FsSettings;

/// The most chunkservers the master tracks; reports from more are ignored
/// (with a warning) until one is forgotten.
pub const MAX_CHUNKSERVERS: usize = 10_000;

/// What a chunkserver last reported.
#[derive(Debug, Clone)]
struct ServerEntry {
    last_seen: Instant,
    free_bytes: u64,
    capacity_bytes: u64,
    disk: String,
    /// handle -> (version, length): the last report, with what replies
    /// told since it was taken laid over it.
    replicas: BTreeMap<ChunkHandle, (u64, u64)>,
    /// The run of the server and its change count when it took the report
    /// `replicas` comes from.
    incarnation: u64,
    changes: u64,
    /// Replica changes replies told of that no report has shown yet:
    /// handle -> (version, length, incarnation, changes).
    learned: BTreeMap<ChunkHandle, (u64, u64, u64, u64)>,
    claims: BTreeMap<ChunkHandle, LeaseClaim>,
    /// The scrub's figures: (bytes verified, corrupt replicas found).
    scrub: (u64, u64),
}

/// A lease this leader granted (or took over from its predecessor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub primary: String,
    pub secondaries: Vec<String>,
    pub version: u64,
    /// When it ends by this master's clock (without the margin).
    pub expires: Instant,
}

/// What to do for a client that wants to mutate a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A live lease: answer it.
    Lease(Lease),
    /// Not now; the message says why and until when.
    Wait(String),
    /// The chunk has no replica anywhere yet: place it.
    Place,
    /// Grant a new lease: raise the version, tell these replicas (the
    /// first is the primary).
    Grant(Vec<String>),
}

#[derive(Debug)]
pub(crate) struct ChunkTable {
    settings: FsSettings,
    servers: BTreeMap<String, ServerEntry>,
    leases: BTreeMap<ChunkHandle, Lease>,
    granting: BTreeMap<ChunkHandle, Instant>,
    /// The term this node last led in, and when it first saw itself lead.
    led_term: u64,
    leader_since: Option<Instant>,
    /// A new leader's wait for chunk reports.
    safemode: Safemode,
    /// Re-replication in progress (the leader's).
    pub(crate) healing: Healing,
    /// (server, handle) -> when the replica was first reported with no
    /// file referencing it.
    orphans_since: BTreeMap<(String, ChunkHandle), Instant>,
    /// Chunkservers being decommissioned, as of the last read of the log's
    /// state (`decommission.rs`).
    decommissioning: BTreeSet<String>,
    /// The leader's balancer, if one was started (`balance.rs`).
    pub(crate) balancer: Option<crate::balancer::Balancer>,
    /// (handle, server) -> when the server last failed to store a new
    /// version of the chunk (`leases.rs`: kept out of the next grants a
    /// while, so that one broken replica does not fail every grant).
    refused_versions: BTreeMap<(ChunkHandle, String), Instant>,
}

/// What the leader's namespace says of the replicas one chunkserver
/// reported (read at a read index begun after the report arrived).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportedChunks {
    /// Referenced handles: (latest version, replication goal).
    pub referenced: BTreeMap<ChunkHandle, (u64, usize)>,
    /// Handles handed out that nothing references any more.
    pub orphans: BTreeSet<ChunkHandle>,
    /// The chunkservers being decommissioned.
    pub decommissioning: BTreeSet<String>,
}

impl ServerEntry {
    /// A server not heard from yet.
    fn new(now: Instant) -> Self {
        Self {
            last_seen: now,
            free_bytes: 0,
            capacity_bytes: 0,
            disk: String::new(),
            replicas: BTreeMap::new(),
            incarnation: 0,
            changes: 0,
            learned: BTreeMap::new(),
            claims: BTreeMap::new(),
            scrub: (0, 0),
        }
    }
}

impl ChunkTable {
    pub(crate) fn new(settings: FsSettings) -> Self {
        Self {
            settings: settings.clone(),
            servers: BTreeMap::new(),
            leases: BTreeMap::new(),
            granting: BTreeMap::new(),
            led_term: 0,
            leader_since: None,
            safemode: Safemode::new(&settings),
            healing: Healing::default(),
            orphans_since: BTreeMap::new(),
            decommissioning: BTreeSet::new(),
            balancer: None,
            refused_versions: BTreeMap::new(),
        }
    }

    /// Records a chunkserver's report.
    ///
    /// A report is a snapshot the server took when it sent it, and it can
    /// arrive after a reply to a change made later (a replica created, a
    /// new version stored): taken at face value it would erase that change,
    /// and a replica the master just counted would drop out of the next
    /// grant. So a report only stands for the changes it had seen (its
    /// `changes` count); what later replies told is laid over it, and a
    /// report older than the one recorded (a delayed delivery) refreshes
    /// only the server's liveness and space.
    pub(crate) fn record_heartbeat(&mut self, report: &HeartbeatRequest, now: Instant) {
        if !self.servers.contains_key(&report.url) && self.servers.len() >= MAX_CHUNKSERVERS {
            tracing::warn!(url = %report.url, "too many chunkservers; report ignored");
            return;
        }
        let entry = self
            .servers
            .entry(report.url.clone())
            .or_insert_with(|| ServerEntry::new(now));
        entry.last_seen = now;
        entry.free_bytes = report.free_bytes;
        entry.capacity_bytes = report.capacity_bytes;
        entry.disk = report.disk.clone();
        entry.scrub = (report.scrubbed_bytes, report.scrub_corruptions);
        if entry.incarnation == report.incarnation && entry.changes > report.changes {
            return;
        }
        entry.incarnation = report.incarnation;
        entry.changes = report.changes;
        entry.claims = report
            .claims
            .iter()
            .map(|c| (c.handle, c.clone()))
            .collect();
        entry.replicas = report
            .replicas
            .iter()
            .map(|r| (r.handle, (r.version, r.length)))
            .collect();
        entry
            .learned
            .retain(|_, &mut (_, _, incarnation, changes)| {
                incarnation == report.incarnation && changes > report.changes
            });
        for (&handle, &(version, length, _, _)) in &entry.learned {
            entry.replicas.insert(handle, (version, length));
        }
    }

    /// Records what the master itself learned of a replica from `reply`
    /// (it created it, or the replica took a new version): kept until a
    /// report taken after the change arrives, ignored if one already has.
    pub(crate) fn record_replica(
        &mut self,
        url: &str,
        handle: ChunkHandle,
        version: u64,
        reply: &SetVersionReply,
        now: Instant,
    ) {
        let entry = self
            .servers
            .entry(url.to_string())
            .or_insert_with(|| ServerEntry::new(now));
        if entry.incarnation == reply.incarnation && entry.changes >= reply.changes {
            return;
        }
        entry.replicas.insert(handle, (version, reply.length));
        entry.learned.insert(
            handle,
            (version, reply.length, reply.incarnation, reply.changes),
        );
    }

    /// Called on the leader with its current term: a new term forgets the
    /// leases (they were another leader's) and starts the wait.
    pub(crate) fn observe_term(&mut self, term: u64, now: Instant) {
        if term != self.led_term || self.leader_since.is_none() {
            self.led_term = term;
            self.leader_since = Some(now);
            self.leases.clear();
            self.granting.clear();
            self.safemode.restart(now);
        }
    }

    fn live(&self, url: &str, now: Instant) -> bool {
        self.servers
            .get(url)
            .is_some_and(|s| now.duration_since(s.last_seen) < self.settings.dead_after())
    }

    /// Whether the lease's primary and every secondary are alive.
    fn all_live(&self, lease: &Lease, now: Instant) -> bool {
        self.live(&lease.primary, now) && lease.secondaries.iter().all(|s| self.live(s, now))
    }

    /// Live replicas of `handle` at `version`, longest first.
    pub(crate) fn replicas_at(
        &self,
        handle: ChunkHandle,
        version: u64,
        now: Instant,
    ) -> Vec<String> {
        let mut found: Vec<(u64, &String)> = self
            .servers
            .iter()
            .filter(|(url, _)| self.live(url, now))
            .filter_map(|(url, s)| match s.replicas.get(&handle) {
                Some(&(v, length)) if v == version => Some((length, url)),
                _ => None,
            })
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        found.into_iter().map(|(_, url)| url.clone()).collect()
    }

    /// Whether any server, live or not, reported a replica of `handle`.
    fn anywhere(&self, handle: ChunkHandle) -> bool {
        self.servers
            .values()
            .any(|s| s.replicas.contains_key(&handle))
    }

    /// Replicas known at other versions than `version`, for messages.
    fn others(&self, handle: ChunkHandle, version: u64) -> Vec<String> {
        self.servers
            .iter()
            .filter_map(|(url, s)| match s.replicas.get(&handle) {
                Some(&(v, _)) if v != version => Some(format!("{url} at version {v}")),
                _ => None,
            })
            .collect()
    }

    /// Whether `url` last reported less free space than the floor.
    fn full(&self, url: &str) -> bool {
        self.servers
            .get(url)
            .is_some_and(|s| s.free_bytes < self.settings.min_free_bytes)
    }

    /// Up to `replication` live chunkservers for a new chunk, with free
    /// space above the floor: most free space first.
    pub(crate) fn placement(&self, now: Instant) -> Vec<String> {
        let mut live: Vec<(&String, &ServerEntry)> = self
            .servers
            .iter()
            .filter(|(url, _)| self.live(url, now) && self.takes_new(url))
            .collect();
        live.sort_by(|a, b| {
            b.1.free_bytes
                .cmp(&a.1.free_bytes)
                .then(a.1.replicas.len().cmp(&b.1.replicas.len()))
                .then(a.0.cmp(b.0))
        });
        live.into_iter()
            .take(self.settings.replication)
            .map(|(url, _)| url.clone())
            .collect()
    }

    /// How many live chunkservers there are, and how many of them are full
    /// (for the message when nothing can be placed).
    pub(crate) fn live_and_full(&self, now: Instant) -> (usize, usize) {
        let live: Vec<&String> = self
            .servers
            .keys()
            .filter(|url| self.live(url, now))
            .collect();
        let full = live.iter().filter(|url| self.full(url)).count();
        (live.len(), full)
    }

    /// The length of `handle` at `version` as the chunkservers last
    /// reported it: the longest replica at that version, or at any version
    /// if none reported that one.
    pub(crate) fn chunk_length(&self, handle: ChunkHandle, version: u64) -> u64 {
        let lengths = |exact: bool| {
            self.servers
                .values()
                .filter_map(|s| s.replicas.get(&handle))
                .filter(|&&(v, _)| !exact || v == version)
                .map(|&(_, length)| length)
                .max()
        };
        lengths(true).or_else(|| lengths(false)).unwrap_or(0)
    }

    /// Every chunkserver this node heard from, as of its last report.
    pub(crate) fn usage(&self, now: Instant) -> Vec<ServerUsage> {
        self.servers
            .iter()
            .map(|(url, s)| {
                let used: u64 = s.replicas.values().map(|&(_, length)| length).sum();
                ServerUsage {
                    url: url.clone(),
                    capacity_bytes: s.capacity_bytes,
                    used_bytes: used,
                    free_bytes: s.free_bytes,
                    chunks: s.replicas.len() as u64,
                    live: self.live(url, now),
                    last_seen_ms: now.saturating_duration_since(s.last_seen).as_millis() as u64,
                    disk: s.disk.clone(),
                    full: self.full(url),
                    scrubbed_bytes: s.scrub.0,
                    scrub_corruptions: s.scrub.1,
                    decommissioning: self.decommissioning.contains(url),
                    decommissioned: false,
                    draining_chunks: 0,
                }
            })
            .collect()
    }

    /// Every replica of `handle` this node heard of, live or not, for
    /// fsck.
    pub(crate) fn replicas_known(&self, handle: ChunkHandle, now: Instant) -> Vec<FsckReplica> {
        self.servers
            .iter()
            .filter_map(|(url, s)| {
                let &(version, length) = s.replicas.get(&handle)?;
                Some(FsckReplica {
                    url: url.clone(),
                    version,
                    length,
                    live: self.live(url, now),
                })
            })
            .collect()
    }

    /// Whether this leader has led long enough that every live chunkserver
    /// has reported to it, and is out of safemode: only then does it heal
    /// or delete.
    pub(crate) fn settled(&self, now: Instant) -> bool {
        self.leader_since
            .is_some_and(|since| now >= since + self.settings.heal_after())
            && !self.in_safemode(now)
    }

    /// The lease length, for heartbeat replies.
    pub(crate) fn lease(&self) -> Duration {
        self.settings.lease
    }
}

#[cfg(all(test, not(madsim)))]
mod tests;

mod balance;
mod decommission;
mod healing;
mod leases;
mod safemode;
pub(crate) use decommission::ChunkGoals;
