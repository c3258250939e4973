//! Membership change on the leader (thesis §4.2-4.3): proposing a
//! single-server change, whom the leader replicates to while the
//! configuration moves, and the removed leader's step-down.
//!
//! The rules, in the order a change meets them:
//! - only a leader that has committed an entry of its own term proposes a
//!   change (Ongaro's 2015 fix: until then it cannot know that no other
//!   change, proposed by an earlier leader on a diverged log, committed);
//! - one change at a time: none while the latest configuration entry is
//!   above the commit index;
//! - the new configuration is in effect from the moment its entry is
//!   appended, on the leader as on followers, so the entry itself commits
//!   under the new configuration;
//! - a leader that removed itself keeps leading (and replicating) without
//!   counting itself, until the change commits; then it steps down, hands
//!   over to the voter with the longest log known to match its own
//!   (`TimeoutNow`, as a leadership transfer does) so the group need not
//!   wait an election timeout, and, no longer a voter, never campaigns
//!   again.

use bytes::Bytes;

use crate::membership::{ConfChange, ConfChangeError, ConfigEntry};
use crate::message::MessageBody;
use crate::node::{Raft, Role};
use crate::progress::Progress;
use crate::types::{EntryKind, LogIndex, NodeId, Term};

impl Raft {
    /// Proposes one configuration change, with `context` (opaque to the
    /// core) stored in its entry. Like [`propose`](Self::propose), the
    /// answer is the entry's (index, term); the change is in effect at
    /// once and done when that entry is committed.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        context: Bytes,
    ) -> Result<(LogIndex, Term), ConfChangeError> {
        self.assert_no_ready();
        self.check_leader()?;
        if self.log.term(self.log.commit) != Some(self.term) {
            return Err(ConfChangeError::LeaderNotReady { term: self.term });
        }
        if let Some(index) = self.pending_conf_change() {
            return Err(ConfChangeError::ChangePending { index });
        }
        let entry = ConfigEntry::new(self.cluster().clone(), change, context)?;
        if let ConfChange::Promote(id) = change {
            self.check_caught_up(id)?;
        }
        let index = self.append_entry(EntryKind::Config, entry.encode());
        self.membership.push(index, self.term, entry);
        // A newcomer is sent the change itself first (and probes back).
        self.sync_progress(index);
        self.broadcast_append();
        // A smaller quorum may already hold entries of this term.
        self.maybe_commit();
        self.assert_invariants();
        Ok((index, self.term))
    }

    /// Leaders only: how many of the leader's entries learner `id` lacks
    /// (`None` if this node is not the leader or `id` is not a learner).
    /// The layer above shows it to an operator who wants to promote.
    pub fn learner_lag(&self, id: NodeId) -> Option<u64> {
        if self.role != Role::Leader || !self.cluster().is_learner(id) {
            return None;
        }
        let matched = self.progress.get(&id).map_or(0, |p| p.match_index());
        Some(self.log.last_index().saturating_sub(matched))
    }

    /// A learner may become a voter once it has stored all but
    /// `promote_max_lag_entries` of the leader's entries, and at least one
    /// (a learner never heard from could be a machine that never started).
    fn check_caught_up(&self, id: NodeId) -> Result<(), ConfChangeError> {
        let behind = self.learner_lag(id).expect("a learner, on the leader");
        let threshold = self.config.promote_max_lag_entries;
        let answered = self.progress.get(&id).is_some_and(|p| p.match_index() > 0);
        if behind > threshold || !answered {
            return Err(ConfChangeError::LearnerBehind {
                id,
                behind,
                threshold,
                answered,
            });
        }
        Ok(())
    }

    /// Makes the leader's progress map match whom it replicates to: every
    /// voter and learner but itself, plus, while a change is pending, the
    /// members of the configuration before it (so that a removed node
    /// hears of its removal). A newcomer starts probing at `next`.
    pub(crate) fn sync_progress(&mut self, next: LogIndex) {
        let mut targets: Vec<NodeId> = self.cluster().members().collect();
        if self.pending_conf_change().is_some() {
            targets.extend(self.membership.previous().members());
        }
        targets.retain(|&id| id != self.config.id);
        self.progress.retain(|id, _| targets.contains(id));
        for id in targets {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
        if self
            .transfer_target
            .is_some_and(|to| !self.cluster().is_voter(to))
        {
            self.transfer_target = None;
        }
    }

    /// The commit index moved on the leader: a committed change stops the
    /// replication to the nodes it removed, and a leader whose removal is
    /// committed steps down, handing over to a caught-up voter.
    pub(crate) fn configuration_committed(&mut self) {
        if self.membership.current_index() > self.log.commit {
            return;
        }
        if !self.cluster().is_voter(self.config.id) {
            // The voter with the longest log known to match ours; it holds
            // the change (a quorum does), so it knows it is a voter.
            let commit = self.log.commit;
            let successor = self
                .cluster()
                .voters
                .iter()
                .filter_map(|id| Some((self.progress.get(id)?.match_index(), *id)))
                .filter(|&(matched, _)| matched >= commit)
                .max_by_key(|&(matched, id)| (matched, std::cmp::Reverse(id)))
                .map(|(_, id)| id);
            self.become_follower(self.term, None);
            if let Some(to) = successor {
                self.send(to, MessageBody::TimeoutNow);
            }
            return;
        }
        self.sync_progress(self.log.last_index() + 1);
    }
}
