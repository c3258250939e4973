//! [`ChunkTable`]: the master's volatile knowledge of chunks (GFS §2.6.2,
//! §3.1): where replicas are and at which version (from heartbeats, which
//! every master node records), which chunkservers are alive, and — on the
//! leader only — the leases it granted. A new leader starts with no leases
//! and waits one lease period (plus the clock margin) before it grants one
//! to a replica that may not hold the old one; the primary of the current
//! version keeps its lease through the change by claiming it in its
//! heartbeats.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_rpc::fs::{
    FsckReplica, HeartbeatRequest, LeaseClaim, ReplicaState, ServerUsage, SetVersionReply,
};
use tokio::time::Instant;

use crate::healer::{ChunkHealth, Healing, ServerLoad};
use crate::namespace::ChunkHandle;
use crate::safemode::Safemode;
use crate::settings::FsSettings;

/// The most chunkservers the master tracks; reports from more are ignored
/// (with a warning) until one is forgotten.
pub const MAX_CHUNKSERVERS: usize = 10_000;
/// How long a grant in progress holds off other grants of the same chunk.
const GRANT_DEADLINE: Duration = Duration::from_secs(5);

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

    /// Where a read may go: live replicas at the latest version, and the
    /// version to read at (lower only after a grant that not every replica
    /// stored, see [`fallback`](Self::fallback)).
    pub(crate) fn read_decision(
        &self,
        handle: ChunkHandle,
        version: u64,
        granted: &[String],
        now: Instant,
    ) -> Result<(Vec<String>, u64), Decision> {
        let replicas = self.replicas_at(handle, version, now);
        if !replicas.is_empty() {
            return Ok((replicas, version));
        }
        let (fallback, lowest) = self.fallback(handle, version, granted, now);
        if !fallback.is_empty() {
            return Ok((fallback, lowest));
        }
        if version == 0 && !self.anywhere(handle) {
            return Err(self.safemode_wait(now).unwrap_or(Decision::Place));
        }
        Err(Decision::Wait(self.no_replica(handle, version)))
    }

    /// When no replica at the latest `version` is alive: the live replicas
    /// the log says that version was granted to (`granted`) which never
    /// stored it, and the lowest of their versions. They hold every
    /// acknowledged mutation: one at `version` needs every replica granted
    /// it to have applied it (a secondary refuses another version), so there
    /// was none; and they held every earlier one, being the up-to-date
    /// replicas when the grant was made (a version never goes back, so one
    /// below `version` is the one they had then). So they, and only they,
    /// may take the next grant.
    fn fallback(
        &self,
        handle: ChunkHandle,
        version: u64,
        granted: &[String],
        now: Instant,
    ) -> (Vec<String>, u64) {
        let mut lowest = version;
        let found = granted
            .iter()
            .filter(|url| self.live(url, now))
            .filter_map(|url| {
                let &(v, _) = self.servers.get(url)?.replicas.get(&handle)?;
                (v < version).then(|| {
                    lowest = lowest.min(v);
                    url.clone()
                })
            })
            .collect();
        (found, lowest)
    }

    fn no_replica(&self, handle: ChunkHandle, version: u64) -> String {
        format!(
            "no live chunkserver holds chunk {handle} at its latest version {version} (others: {:?}); waiting for one to report: retry later",
            self.others(handle, version)
        )
    }

    /// What to do for a mutation of `handle`, whose version in the log is
    /// `version` (the leader only).
    pub(crate) fn decide(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        granted: &[String],
        now: Instant,
    ) -> Decision {
        let margin = self.settings.clock_margin();
        if let Some(lease) = self.leases.get(&handle) {
            if lease.version == version && now < lease.expires && self.all_live(lease, now) {
                return Decision::Lease(lease.clone());
            }
            if now < lease.expires + margin {
                return Decision::Wait(format!(
                    "{} holds the lease on chunk {handle} for {:?} more (it or a secondary stopped answering, or it gave the lease up; it will not be extended); retry then",
                    lease.primary,
                    lease.expires + margin - now
                ));
            }
            self.leases.remove(&handle);
        }
        if self.granting.get(&handle).is_some_and(|&until| now < until) {
            return Decision::Wait(format!("a lease on chunk {handle} is being granted; retry"));
        }
        if let Some(lease) = self.claimed(handle, version, now) {
            self.leases.insert(handle, lease.clone());
            return Decision::Lease(lease);
        }
        // A predecessor's lease can only exist on a chunk that was ever
        // granted one (every grant raises the version from 0), and only if
        // there was a predecessor (the leader of term 1 has none).
        let since = self.leader_since.unwrap_or(now);
        let free_at = since + self.settings.lease + margin;
        if version > 0 && self.led_term > 1 && now < free_at {
            return Decision::Wait(format!(
                "this master became leader {:?} ago and waits {:?} more for leases its predecessor granted to end; retry then",
                now - since,
                free_at - now
            ));
        }
        if let Some(wait) = self.safemode_wait(now) {
            return wait;
        }
        let mut candidates = self.replicas_at(handle, version, now);
        if candidates.is_empty() {
            candidates = self.fallback(handle, version, granted, now).0;
        }
        if candidates.is_empty() {
            if version == 0 && !self.anywhere(handle) {
                self.granting.insert(handle, now + GRANT_DEADLINE);
                return Decision::Place;
            }
            return Decision::Wait(self.no_replica(handle, version));
        }
        // Replicas of one version that differ in length missed the end of
        // a mutation that was never acknowledged (a secondary restarted and
        // lost the unsynced bytes of an append that then failed). Granted
        // to a shorter one, the primary's next append would land past a
        // hole there: the same version and length as the others, other
        // bytes. Only the longest take part (every replica of the version
        // holds every acknowledged byte); the others go stale, and the
        // healer clones good replicas in their place.
        let length = |url: &String| self.servers.get(url).and_then(|s| s.replicas.get(&handle));
        let longest = candidates.iter().filter_map(length).map(|&(_, l)| l).max();
        candidates.retain(|url| length(url).map(|&(_, l)| l) == longest);
        // A replica on a full disk would fail the mutations: leave it out
        // (it goes stale) while a replica with room remains.
        if candidates.iter().any(|url| !self.full(url)) {
            candidates.retain(|url| !self.full(url));
        }
        candidates.truncate(crate::master_state::MAX_GRANT_REPLICAS);
        self.granting.insert(handle, now + GRANT_DEADLINE);
        Decision::Grant(candidates)
    }

    /// A lease a live chunkserver claims at the current version: granted by
    /// this leader's predecessor (or by this leader before it learned of
    /// it); taking it over creates no second primary.
    fn claimed(&self, handle: ChunkHandle, version: u64, now: Instant) -> Option<Lease> {
        let (url, claim) = self.servers.iter().find_map(|(url, s)| {
            let claim = s.claims.get(&handle)?;
            let live = self.live(url, now) && claim.secondaries.iter().all(|s| self.live(s, now));
            (claim.version == version && live).then_some((url, claim))
        })?;
        Some(Lease {
            primary: url.clone(),
            secondaries: claim.secondaries.clone(),
            version,
            expires: now + self.settings.lease,
        })
    }

    /// Starts placing or granting `handle`, unless another request does.
    pub(crate) fn begin(&mut self, handle: ChunkHandle, now: Instant) -> bool {
        if self.granting.get(&handle).is_some_and(|&until| now < until) {
            return false;
        }
        self.granting.insert(handle, now + GRANT_DEADLINE);
        true
    }

    /// The grant of `handle` ended (granted or not).
    pub(crate) fn grant_done(&mut self, handle: ChunkHandle, lease: Option<Lease>) {
        self.granting.remove(&handle);
        if let Some(lease) = lease {
            self.leases.insert(handle, lease);
        }
    }

    /// Extends the leases `url` claims, for chunks whose latest version is
    /// `versions[handle]`, to `now + lease`. Returns the handles extended.
    /// Call only after confirming leadership (a read index) that started
    /// after the heartbeat arrived.
    pub(crate) fn extend(
        &mut self,
        url: &str,
        claims: &[LeaseClaim],
        versions: &BTreeMap<ChunkHandle, u64>,
        now: Instant,
    ) -> Vec<ChunkHandle> {
        let mut extended = Vec::new();
        for claim in claims {
            if versions.get(&claim.handle) != Some(&claim.version) {
                continue;
            }
            // A lease whose replicas are not all alive is left to end, so
            // that the next grant leaves the dead ones out.
            let replicas_live =
                self.live(url, now) && claim.secondaries.iter().all(|s| self.live(s, now));
            let ours = replicas_live
                && match self.leases.get(&claim.handle) {
                    Some(lease) => lease.primary == url && lease.version == claim.version,
                    None => !self.granting.contains_key(&claim.handle),
                };
            if !ours {
                continue;
            }
            self.leases.insert(
                claim.handle,
                Lease {
                    primary: url.to_string(),
                    secondaries: claim.secondaries.clone(),
                    version: claim.version,
                    expires: now + self.settings.lease,
                },
            );
            extended.push(claim.handle);
        }
        extended
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

    /// Whether a lease, a grant or a clone of `handle` (at `version`) is
    /// in progress, as far as this leader knows.
    fn busy(&self, handle: ChunkHandle, version: u64, now: Instant) -> bool {
        self.leased(handle, version, now)
            || self.granting.get(&handle).is_some_and(|&until| now < until)
            || self.healing.cloning(handle)
    }

    /// Whether a primary may hold a lease on `handle` at `version` now:
    /// one this leader granted or took over (until it surely ended), or
    /// one a live chunkserver claims.
    pub(crate) fn leased(&self, handle: ChunkHandle, version: u64, now: Instant) -> bool {
        let margin = self.settings.clock_margin();
        self.leases
            .get(&handle)
            .is_some_and(|lease| now < lease.expires + margin)
            || self.claimed(handle, version, now).is_some()
    }

    /// The primary and secondaries of a lease on `handle` at `version`
    /// that may still be in force (granted here or claimed in a heartbeat),
    /// each with whether it is live: a snapshot must reach each of them to
    /// revoke it.
    pub(crate) fn lease_holders(
        &self,
        handle: ChunkHandle,
        version: u64,
        now: Instant,
    ) -> Vec<(String, bool)> {
        let margin = self.settings.clock_margin();
        let granted = self
            .leases
            .get(&handle)
            .filter(|lease| lease.version == version && now < lease.expires + margin)
            .cloned();
        granted
            .into_iter()
            .chain(self.claimed(handle, version, now))
            .flat_map(|lease| std::iter::once(lease.primary).chain(lease.secondaries))
            .map(|url| {
                let live = self.live(&url, now);
                (url, live)
            })
            .collect()
    }

    /// Forgets the lease on `handle`: its replicas stored a new version
    /// that names no primary, so none mutates it any more.
    pub(crate) fn revoke(&mut self, handle: ChunkHandle) {
        self.leases.remove(&handle);
    }

    /// Live replicas of `handle` at `version` that count toward its goal
    /// (none on a server being decommissioned).
    fn good(&self, handle: ChunkHandle, version: u64, now: Instant) -> Vec<String> {
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
    fn fullest<'a>(&self, urls: &'a [String]) -> Option<&'a str> {
        urls.iter()
            .min_by_key(|url| (self.servers.get(*url).map_or(0, |s| s.free_bytes), *url))
            .map(String::as_str)
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
mod safemode;
pub(crate) use decommission::ChunkGoals;
