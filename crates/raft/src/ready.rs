//! [`Ready`]: what the core asks its caller to do, in order, and the
//! [`Raft`] methods that hand it out and take it back.

use crate::message::Message;
use crate::node::{Raft, Role};
use crate::types::{Entry, HardState, LogIndex, Snapshot};

/// A batch of work for the caller of [`Raft`](crate::Raft), collected by
/// [`Raft::ready`](crate::Raft::ready). The caller performs these steps in
/// this order, and only then calls [`Raft::advance`](crate::Raft::advance):
///
/// 0. **Send** `early_messages`, before or while persisting: a leader's
///    appends and heartbeats, which depend on nothing unpersisted (the
///    leader's term and vote were durable before it could win; it counts
///    its own log toward commitment only once persisted). Writing the
///    leader's disk in parallel with replication (thesis §10.2.1) takes one
///    fsync off the commit path.
/// 1. **Persist** `snapshot` (if any), `entries` and `hard_state` (if any),
///    and, when `must_sync` says so, make them durable (one fsync for the
///    batch). `entries` may start
///    at or below the last index already stored: the stored entries from
///    `entries[0].index` on are replaced (a conflict truncation). After a
///    snapshot, stored entries up to its index are no longer needed.
/// 2. **Send** `messages`. They may depend on step 1 (a vote, an
///    acknowledgement of appended entries), so never before it.
/// 3. **Restore** the state machine from `snapshot`, if any.
/// 4. **Apply** `committed_entries` in order (skipping
///    [`EntryKind::Noop`](crate::EntryKind::Noop); an
///    [`EntryKind::Config`](crate::EntryKind::Config) entry is already in
///    effect in the core, and the layer above may read its
///    [`ConfigEntry`](crate::ConfigEntry), for example a new member's
///    address in its context).
/// 5. **Serve** the reads in `read_states` once the state machine has
///    applied their index.
/// 6. Call [`Raft::advance`](crate::Raft::advance) with this `Ready`.
///
/// No other call into the core may happen between `ready()` and
/// `advance()`; the core asserts it.
#[derive(Debug, Clone, Default)]
pub struct Ready {
    /// Term, vote and commit, when they changed.
    pub hard_state: Option<HardState>,
    /// Entries to append durably.
    pub entries: Vec<Entry>,
    /// Whether step 1 must end with an fsync (etcd's `MustSync`): new
    /// entries, a snapshot, or a new term or vote. A hard state that moves
    /// only the commit index is written but need not be synced by itself:
    /// the commit index is a hint the core recomputes, the entries it
    /// covers were synced already, and a crash that loses the record
    /// recovers an older, still true, commit index. That keeps an fsync
    /// off the path from a commit to the client's answer.
    pub must_sync: bool,
    /// A snapshot received from the leader, to persist and restore.
    pub snapshot: Option<Snapshot>,
    /// Messages that may be sent before step 1 (step 0).
    pub early_messages: Vec<Message>,
    /// Messages to send after step 1.
    pub messages: Vec<Message>,
    /// Entries committed and not yet applied, in index order.
    pub committed_entries: Vec<Entry>,
    /// Confirmed read-index requests.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.snapshot.is_none()
            && self.early_messages.is_empty()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }
}

/// A read-index request the leader has confirmed (thesis §6.4): once the
/// state machine has applied `index`, a read issued before the request was
/// made sees every write acknowledged before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's token from [`Raft::read_index`](crate::Raft::read_index).
    pub ctx: u64,
    /// The commit index when the request was made.
    pub index: LogIndex,
}

impl Raft {
    /// Collects what the caller must do now. See [`Ready`] for the order.
    pub fn ready(&mut self) -> Ready {
        self.assert_no_ready();
        let hard_state = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        };
        let entries = self.log.unpersisted();
        let snapshot = self.snapshot_to_install.take();
        let new_term_or_vote = (hard_state.term, hard_state.vote)
            != (self.last_hard_state.term, self.last_hard_state.vote);
        let ready = Ready {
            hard_state: (hard_state != self.last_hard_state).then_some(hard_state),
            must_sync: !entries.is_empty() || snapshot.is_some() || new_term_or_vote,
            entries,
            snapshot,
            early_messages: Vec::new(),
            messages: std::mem::take(&mut self.messages),
            committed_entries: self.log.next_to_apply(self.config.max_apply_bytes),
            read_states: std::mem::take(&mut self.read_states),
        };
        let mut ready = ready;
        if self.role == Role::Leader {
            let term = self.term;
            let (early, late): (Vec<Message>, Vec<Message>) = std::mem::take(&mut ready.messages)
                .into_iter()
                .partition(|m| m.term == term && m.is_leader_traffic());
            ready.early_messages = early;
            ready.messages = late;
        }
        self.last_hard_state = hard_state;
        self.ready_outstanding = !ready.is_empty();
        ready
    }

    /// Whether [`ready`](Self::ready) has anything.
    pub fn has_ready(&self) -> bool {
        let hard_state = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        };
        hard_state != self.last_hard_state
            || self.log.persisted < self.log.last_index()
            || self.snapshot_to_install.is_some()
            || !self.messages.is_empty()
            || self.log.applied < self.log.commit.min(self.log.persisted)
            || !self.read_states.is_empty()
    }

    /// Reports that the caller finished every step of `ready`.
    pub fn advance(&mut self, ready: &Ready) {
        self.ready_outstanding = false;
        if let Some(last) = ready.entries.last() {
            self.log.persisted_to(last.index, last.term);
        }
        if let Some(last) = ready.committed_entries.last() {
            self.log.applied_to(last.index);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.assert_invariants();
    }
}
