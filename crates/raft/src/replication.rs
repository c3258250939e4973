//! Log replication (Raft §5.3), commitment (§5.4.2) and snapshot transfer
//! (§7).

use crate::membership::ConfigEntry;
use crate::message::{
    AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse, InstallSnapshot,
    InstallSnapshotResponse, MessageBody, Reject,
};
use crate::node::{Raft, Role};
use crate::progress::ProgressState;
use crate::types::{EntryKind, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};

impl Raft {
    /// Sends what each follower is missing, as far as flow control allows.
    pub(crate) fn broadcast_append(&mut self) {
        let followers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in followers {
            self.send_append(to, false);
        }
    }

    /// Sends `to` the entries from its `next_index`, or a snapshot chunk when
    /// those are compacted. With `even_if_empty`, sends an empty append to
    /// carry the commit index or to probe.
    pub(crate) fn send_append(&mut self, to: NodeId, even_if_empty: bool) {
        let Some(progress) = self.progress.get(&to) else {
            return;
        };
        if let ProgressState::Snapshot { .. } = progress.state() {
            self.send_snapshot_chunk(to);
            return;
        }
        if !progress.can_send(self.config.max_inflight_appends) {
            return;
        }
        let next = progress.next_index();
        let prev_index = next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // The entries it needs are compacted away: send the snapshot.
            self.start_snapshot(to);
            return;
        };
        let entries = if next <= self.log.last_index() {
            self.log
                .slice(next, self.log.last_index(), self.config.max_append_bytes)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !even_if_empty {
            return;
        }
        let last = entries.last().map(|e| e.index);
        let commit = self.log.commit;
        let request = AppendEntries {
            prev_index,
            prev_term,
            entries,
            commit,
        };
        self.send(to, MessageBody::AppendEntries(request));
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.sent(last);
            progress.commit_was_sent(commit.min(last.unwrap_or(prev_index)));
        }
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let (commit, read_round) = (self.log.commit, self.read_round);
        let mut heartbeats = Vec::with_capacity(self.progress.len());
        for (&to, progress) in &mut self.progress {
            let heartbeat = Heartbeat {
                commit: commit.min(progress.match_index()),
                read_round,
            };
            progress.commit_was_sent(heartbeat.commit);
            heartbeats.push((to, heartbeat));
        }
        for (to, heartbeat) in heartbeats {
            self.send(to, MessageBody::Heartbeat(heartbeat));
        }
    }

    pub(crate) fn handle_append_entries(&mut self, from: NodeId, mut request: AppendEntries) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        if !append_is_well_formed(&request, self.term) || !self.skip_committed(&mut request) {
            // No correct leader sends this: refuse it, change nothing.
            let response = AppendEntriesResponse {
                match_index: self.log.last_index(),
                reject: Some(Reject {
                    rejected_index: request.prev_index,
                    conflict_term: None,
                    conflict_index: self.log.commit + 1,
                }),
            };
            return self.send(from, MessageBody::AppendEntriesResponse(response));
        }
        let response = if self.log.term(request.prev_index) == Some(request.prev_term) {
            let (match_index, written_from) =
                self.log.append_after(request.prev_index, &request.entries);
            if let Some(from) = written_from {
                self.record_configurations(from, &request.entries);
            }
            self.log.commit_to(request.commit.min(match_index));
            AppendEntriesResponse {
                match_index,
                reject: None,
            }
        } else {
            let (conflict_term, conflict_index) = match self.log.term(request.prev_index) {
                Some(term) => (
                    Some(term),
                    self.log.first_index_of_term_at(request.prev_index),
                ),
                None => (None, self.log.last_index() + 1),
            };
            let reject = Reject {
                rejected_index: request.prev_index,
                conflict_term,
                conflict_index,
            };
            AppendEntriesResponse {
                match_index: self.log.last_index(),
                reject: Some(reject),
            }
        };
        self.send(from, MessageBody::AppendEntriesResponse(response));
    }

    /// Drops the entries of `request` at or below our commit index: they
    /// are committed, so a correct leader's match ours (Leader
    /// Completeness). Returns false if they do not, or if what remains
    /// would not follow our committed log: the request contradicts what
    /// this node knows is committed.
    fn skip_committed(&self, request: &mut AppendEntries) -> bool {
        let commit = self.log.commit;
        if request.prev_index >= commit {
            return true;
        }
        let skip = ((commit - request.prev_index) as usize).min(request.entries.len());
        let contradicts = request.entries[..skip]
            .iter()
            .any(|e| self.log.term(e.index).is_some_and(|term| term != e.term));
        if contradicts {
            return false;
        }
        request.entries.drain(..skip);
        request.prev_index = commit;
        request.prev_term = self
            .log
            .term(commit)
            .expect("the commit index is in the log");
        if request
            .entries
            .first()
            .is_some_and(|e| e.index != commit + 1)
        {
            request.entries.clear();
        }
        request
            .entries
            .first()
            .is_none_or(|first| first.term >= request.prev_term)
    }

    pub(crate) fn handle_append_entries_response(
        &mut self,
        from: NodeId,
        response: AppendEntriesResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.heard_from();
        match response.reject {
            None => {
                let was_probe = progress.state() == ProgressState::Probe;
                let moved = progress.update_match(response.match_index.min(last_index));
                if was_probe {
                    progress.become_replicate();
                }
                if moved {
                    self.maybe_commit();
                }
                self.send_append(from, false);
                self.maybe_finish_transfer(from);
            }
            Some(reject) => {
                if reject.conflict_term.is_none() && reject.conflict_index <= progress.match_index()
                {
                    // Its log ends (at conflict_index - 1) before what it
                    // had acknowledged: it lost entries.
                    progress.lost_entries(reject.conflict_index.saturating_sub(1));
                    return self.send_append(from, true);
                }
                let hint_next = match reject.conflict_term {
                    Some(term) => match self.log.last_index_of_term(term) {
                        Some(index) => index + 1,
                        None => reject.conflict_index,
                    },
                    None => reject.conflict_index,
                };
                if progress.reject(reject.rejected_index, hint_next.max(1)) {
                    self.send_append(from, true);
                }
            }
        }
    }

    /// Tells followers that have not heard of the current commit index,
    /// with an empty append. Called once per tick after the commit index
    /// moved, so that several commits within a tick cost one message per
    /// follower.
    pub(crate) fn flush_commit(&mut self) {
        if !std::mem::take(&mut self.commit_broadcast_due) {
            return;
        }
        let commit = self.log.commit;
        let stale: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, p)| p.commit_sent() < commit.min(p.match_index()))
            .map(|(&id, _)| id)
            .collect();
        for to in stale {
            self.send_append(to, true);
        }
    }

    /// The log was written from `from` on with the tail of `entries`: the
    /// configurations of the entries it replaced are rolled back, those of
    /// the new ones take effect (a configuration applies once appended).
    fn record_configurations(&mut self, from: LogIndex, entries: &[crate::types::Entry]) {
        self.membership.truncate_from(from);
        for entry in entries
            .iter()
            .filter(|e| e.index >= from && e.kind == EntryKind::Config)
        {
            let decoded = ConfigEntry::decode(entry.data.clone())
                .expect("configuration entries are checked on receipt");
            self.membership.push(entry.index, entry.term, decoded);
        }
    }

    /// Commits the highest index a quorum of voters has stored, if it is of
    /// this term (Raft §5.4.2: never count replicas of an older term's
    /// entry). This node counts only if it is a voter of its latest
    /// configuration. Returns whether the commit index moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let candidate = self.cluster().quorum_value(|id| {
            if id == self.config.id {
                self.log.persisted
            } else {
                self.progress.get(&id).map_or(0, |p| p.match_index())
            }
        });
        if candidate > self.log.commit && self.log.term(candidate) == Some(self.term) {
            self.log.commit_to(candidate);
            self.commit_broadcast_due = true;
            self.release_reads_after_commit();
            self.configuration_committed();
            return true;
        }
        false
    }

    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, heartbeat: Heartbeat) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        let last_index = self.log.last_index();
        self.log.commit_to(heartbeat.commit.min(last_index));
        self.send(
            from,
            MessageBody::HeartbeatResponse(HeartbeatResponse {
                read_round: heartbeat.read_round,
                lacking: (heartbeat.commit > last_index).then_some(last_index),
            }),
        );
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, response: HeartbeatResponse) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.heard_from();
        progress.acknowledge_read(response.read_round);
        if let Some(follower_last) = response.lacking {
            progress.lost_entries(follower_last);
        }
        // A heartbeat round trip means the link works: resend whatever may
        // have been lost.
        progress.heartbeat_answered(self.config.max_inflight_appends);
        let behind = progress.match_index() < last_index;
        if behind {
            self.send_append(from, true);
        }
        self.advance_reads();
    }

    fn start_snapshot(&mut self, to: NodeId) {
        let Some(snapshot) = &self.snapshot else {
            panic!("node {to} needs compacted entries but there is no snapshot");
        };
        let index = snapshot.meta.index;
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(index);
        }
        self.send_snapshot_chunk(to);
    }

    /// Sends the chunk at the follower's offset, unless one is unanswered.
    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot { index, offset } = progress.state() else {
            return;
        };
        if progress.is_paused() {
            return;
        }
        if index != snapshot.meta.index {
            // A newer snapshot replaced the one being sent: start over.
            progress.snapshot_continues(snapshot.meta.index, 0);
            return self.send_snapshot_chunk(to);
        }
        progress.snapshot_chunk_sent();
        let total = snapshot.data.len() as u64;
        let start = offset.min(total);
        let end = (start + self.config.snapshot_chunk_bytes).min(total);
        // The configuration as this node knows it now: a snapshot it took
        // as a joining node, before it had heard of any configuration,
        // holds none (`ClusterConfig::joining`).
        let meta = SnapshotMeta {
            config: self.membership.at(snapshot.meta.index).clone(),
            ..snapshot.meta.clone()
        };
        let request = InstallSnapshot {
            meta,
            total_bytes: total,
            offset: start,
            data: snapshot.data.slice(start as usize..end as usize),
        };
        self.send(to, MessageBody::InstallSnapshot(request));
    }

    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, request: InstallSnapshot) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        let meta = request.meta.clone();
        let respond = |raft: &mut Self, next_offset: u64, done: bool| {
            let response = InstallSnapshotResponse {
                snapshot_index: meta.index,
                next_offset,
                done,
            };
            raft.send(from, MessageBody::InstallSnapshotResponse(response));
        };
        if meta.index <= self.log.commit {
            // Our log already covers it.
            self.incoming_snapshot = None;
            return respond(self, request.total_bytes, true);
        }
        if !snapshot_chunk_is_well_formed(&request, self.term) {
            // No correct leader sends this: forget any partial snapshot and
            // ask for it again from the start.
            self.incoming_snapshot = None;
            return respond(self, 0, false);
        }
        if request.offset == 0 {
            // The buffer grows with what arrives: the total a chunk claims
            // reserves nothing.
            self.incoming_snapshot = Some((meta.clone(), Vec::new()));
        }
        let Some((incoming_meta, buffer)) = &mut self.incoming_snapshot else {
            return respond(self, 0, false);
        };
        if *incoming_meta != meta || buffer.len() as u64 != request.offset {
            let expected = if *incoming_meta == meta {
                buffer.len() as u64
            } else {
                0
            };
            return respond(self, expected, false);
        }
        buffer.extend_from_slice(&request.data);
        let received = buffer.len() as u64;
        if received < request.total_bytes {
            return respond(self, received, false);
        }
        let (meta, data) = self.incoming_snapshot.take().expect("checked above");
        self.install_snapshot(Snapshot {
            meta,
            data: data.into(),
        });
        respond(self, received, true);
    }

    /// Adopts a complete snapshot from the leader (Raft §7): if the log holds
    /// its last entry, only the commit index moves; otherwise the log is
    /// replaced and the state machine will be restored from it.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        if self.log.term(meta.index) == Some(meta.term) {
            self.log.commit_to(meta.index);
            return;
        }
        self.log.reset_to_snapshot(meta.index, meta.term);
        self.membership.reset(meta.index, meta.config.clone());
        self.snapshot = Some(snapshot.clone());
        self.snapshot_to_install = Some(snapshot);
    }

    pub(crate) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        response: InstallSnapshotResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.heard_from();
        let ProgressState::Snapshot { index, .. } = progress.state() else {
            return;
        };
        if response.snapshot_index != index {
            return;
        }
        if response.done {
            progress.update_match(index);
            progress.become_replicate();
            self.send_append(from, false);
        } else {
            progress.snapshot_continues(index, response.next_offset);
            self.send_snapshot_chunk(from);
        }
    }
}

/// The most bytes a snapshot from a leader may have. A chunk claiming more is
/// refused: the follower buffers a snapshot in memory until it is complete.
pub const MAX_SNAPSHOT_BYTES: u64 = 16 << 30;

/// Whether an append is possible from a correct leader of `term`: entries
/// consecutive from `prev_index + 1`, terms never decreasing from
/// `prev_term`, none newer than the leader's term.
fn append_is_well_formed(request: &AppendEntries, term: Term) -> bool {
    if request.prev_term > term || (request.prev_index == 0 && request.prev_term != 0) {
        return false;
    }
    let mut expected_index = request.prev_index;
    let mut last_term = request.prev_term;
    for entry in &request.entries {
        let Some(next) = expected_index.checked_add(1) else {
            return false;
        };
        if entry.index != next || entry.term < last_term || entry.term > term {
            return false;
        }
        if entry.kind == EntryKind::Config && ConfigEntry::decode(entry.data.clone()).is_none() {
            return false;
        }
        expected_index = next;
        last_term = entry.term;
    }
    true
}

/// Whether a snapshot chunk is possible from a correct leader of `term`.
fn snapshot_chunk_is_well_formed(request: &InstallSnapshot, term: Term) -> bool {
    let meta = &request.meta;
    let end = request.offset.checked_add(request.data.len() as u64);
    meta.index > 0
        && meta.term > 0
        && meta.term <= term
        && !meta.config.voters.is_empty()
        && meta.config.is_valid()
        && request.total_bytes <= MAX_SNAPSHOT_BYTES
        && end.is_some_and(|end| end <= request.total_bytes)
}
