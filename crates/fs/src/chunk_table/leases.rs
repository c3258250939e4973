//! Leases in the chunk table (GFS §3.1): where a read may go, what a
//! mutation needs (a live lease, a wait, a placement or a new grant with a
//! raised version), the leases a primary claims in its heartbeats taken
//! over and extended, and who may still hold one when it must be revoked.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_rpc::fs::LeaseClaim;
use tokio::time::Instant;

use super::{ChunkTable, Decision, Lease};
use crate::namespace::ChunkHandle;

/// How long a grant in progress holds off other grants of the same chunk.
const GRANT_DEADLINE: Duration = Duration::from_secs(5);

impl ChunkTable {
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

    /// The live replicas the log says the latest `version` was granted to
    /// (`granted`) which never stored it, and the lowest of their versions.
    /// They hold every acknowledged mutation: one at `version` needs every
    /// replica granted it to have applied it (a secondary refuses another
    /// version), so there was none; and they held every earlier one, since
    /// every raise of the version names only replicas that did: a lease's
    /// grant names those at the version before and those this function
    /// finds for it (the same argument, one version down); a clone's or a
    /// snapshot's raise names those at the version before and the holders
    /// of its lease (named in that lease's grant). A version never goes
    /// back, so one below `version` is the one they had then; and an
    /// adopted version clears the log's list (`MasterState::granted_to`),
    /// whose replicas say nothing of it. When no replica at `version` is
    /// alive, they, and only they, may take the next grant and serve reads.
    pub(super) fn fallback(
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

    /// Whether every one of `urls` last reported `handle` at `version`.
    fn stored_by_all(&self, handle: ChunkHandle, version: u64, urls: &[String]) -> bool {
        urls.iter().all(|url| {
            self.servers
                .get(url)
                .and_then(|s| s.replicas.get(&handle))
                .is_some_and(|&(v, _)| v == version)
        })
    }

    /// Records that `urls` failed to store a new version of `handle`.
    pub(crate) fn versions_refused(
        &mut self,
        handle: ChunkHandle,
        urls: Vec<String>,
        now: Instant,
    ) {
        let window = self.settings.lease;
        self.refused_versions
            .retain(|_, &mut at| now.saturating_duration_since(at) < window);
        for url in urls {
            self.refused_versions.insert((handle, url), now);
        }
    }

    /// Whether `url` failed to store a new version of `handle` within the
    /// last lease period.
    fn refused_lately(&self, handle: ChunkHandle, url: &str, now: Instant) -> bool {
        self.refused_versions
            .get(&(handle, url.to_string()))
            .is_some_and(|&at| now.saturating_duration_since(at) < self.settings.lease)
    }

    pub(super) fn no_replica(&self, handle: ChunkHandle, version: u64) -> String {
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
        // A claim whose secondaries do not all hold its version comes from
        // a grant that ended before every replica stored it (a `SetVersion`
        // failed, or the master died midway): every mutation under it would
        // fail at such a secondary, after the primary made it, leaving the
        // primary longer than the others. Neither taken over nor extended
        // (`extend`): the next grant names them all again (below).
        if let Some(lease) = self.claimed(handle, version, now)
            && self.stored_by_all(handle, version, &lease.secondaries)
        {
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
        // The live replicas at the latest version, and those the version
        // was granted to that never stored it: they hold every acknowledged
        // mutation too (see `fallback`). Left out, the chunk would shrink
        // to the replicas that happened to store the version before a
        // master died or a call failed, and the next writes would be
        // acknowledged on fewer replicas until the healer copied them. One
        // that failed to store a version on this leader lately stays out
        // while a replica at the version is live, so that a broken replica
        // cannot fail every grant (and once a grant without it succeeds,
        // the log no longer names it). The length and full-disk rules
        // below apply to all of them.
        let mut candidates = self.replicas_at(handle, version, now);
        let behind = self.fallback(handle, version, granted, now).0;
        if candidates.is_empty() {
            candidates = behind;
        } else {
            candidates.extend(
                behind
                    .into_iter()
                    .filter(|url| !self.refused_lately(handle, url, now)),
            );
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
    pub(super) fn claimed(&self, handle: ChunkHandle, version: u64, now: Instant) -> Option<Lease> {
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
                    None => {
                        !self.granting.contains_key(&claim.handle)
                            && self.stored_by_all(claim.handle, claim.version, &claim.secondaries)
                    }
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

    /// Whether a lease, a grant or a clone of `handle` (at `version`) is
    /// in progress, as far as this leader knows.
    pub(super) fn busy(&self, handle: ChunkHandle, version: u64, now: Instant) -> bool {
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
}
