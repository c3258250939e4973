//! [`Progress`]: what a leader knows about one follower's log.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader is sending to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches: one
    /// AppendEntries at a time, until one is accepted.
    Probe,
    /// The follower's log matches up to `match_index`: appends are pipelined
    /// (up to `max_inflight_appends` in flight) and `next_index` advances as
    /// they are sent.
    Replicate,
    /// The follower needs entries the leader has compacted: it is being sent
    /// the snapshot at `index`, one chunk at a time.
    Snapshot {
        /// The snapshot being sent.
        index: LogIndex,
        /// The offset of the next chunk to send.
        offset: u64,
    },
}

/// The leader's view of one follower (Raft Figure 2, "volatile state on
/// leaders", plus flow control).
///
/// Invariant: `match_index < next_index`. The fields are private: the
/// leader changes them only through the named transitions below (as etcd's
/// `tracker.Progress`), and tests read them through the getters.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The highest index known to match the leader's log.
    match_index: LogIndex,
    /// The next index to send.
    next_index: LogIndex,
    /// How entries are being sent.
    state: ProgressState,
    /// In `Probe` and `Snapshot`: a message is out and unanswered, so sending
    /// pauses until an answer or the next heartbeat response.
    paused: bool,
    /// In `Replicate`: the last index of each AppendEntries in flight.
    inflight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum round.
    recent_active: bool,
    /// The highest read round this follower has acknowledged.
    read_round: u64,
    /// The highest commit index sent to this follower.
    commit_sent: LogIndex,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Self {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            paused: false,
            inflight: VecDeque::new(),
            recent_active: true,
            read_round: 0,
            commit_sent: 0,
        }
    }

    /// The highest index known to match the leader's log.
    pub fn match_index(&self) -> LogIndex {
        self.match_index
    }

    /// The next index to send.
    pub fn next_index(&self) -> LogIndex {
        self.next_index
    }

    /// How entries are being sent.
    pub fn state(&self) -> ProgressState {
        self.state
    }

    /// Whether sending waits for an answer (in `Probe` and `Snapshot`).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// In `Replicate`: the last index of each AppendEntries in flight.
    pub fn inflight(&self) -> &VecDeque<LogIndex> {
        &self.inflight
    }

    /// Whether the follower was heard from since the last check-quorum
    /// round.
    pub fn is_recently_active(&self) -> bool {
        self.recent_active
    }

    /// The highest read round this follower has acknowledged.
    pub fn read_round(&self) -> u64 {
        self.read_round
    }

    /// The highest commit index sent to this follower.
    pub fn commit_sent(&self) -> LogIndex {
        self.commit_sent
    }

    /// The follower answered something: it counts as active this round.
    pub(crate) fn heard_from(&mut self) {
        self.recent_active = true;
    }

    /// Check quorum: whether the follower was heard from since the last
    /// round, and a fresh round starts.
    pub(crate) fn take_recently_active(&mut self) -> bool {
        std::mem::take(&mut self.recent_active)
    }

    /// The follower acknowledged read round `round`.
    pub(crate) fn acknowledge_read(&mut self, round: u64) {
        self.read_round = self.read_round.max(round);
    }

    /// A message carrying commit index `commit` went to the follower.
    pub(crate) fn commit_was_sent(&mut self, commit: LogIndex) {
        self.commit_sent = self.commit_sent.max(commit);
    }

    /// A heartbeat came back, so the link works: sending resumes, and a
    /// full window of appends frees its oldest slot (the appends in it may
    /// have been lost; etcd's `FreeFirstOne`).
    pub(crate) fn heartbeat_answered(&mut self, max_inflight: usize) {
        self.paused = false;
        if self.state == ProgressState::Replicate && self.inflight.len() >= max_inflight {
            self.inflight.pop_front();
        }
    }

    /// A snapshot chunk went out: wait for its answer.
    pub(crate) fn snapshot_chunk_sent(&mut self) {
        debug_assert!(matches!(self.state, ProgressState::Snapshot { .. }));
        self.paused = true;
    }

    /// The follower took the chunks of snapshot `index` up to `offset`
    /// (or a newer snapshot replaced the one being sent, from 0): the next
    /// chunk may go.
    pub(crate) fn snapshot_continues(&mut self, index: LogIndex, offset: u64) {
        assert!(
            matches!(self.state, ProgressState::Snapshot { .. }),
            "only a follower being sent a snapshot continues one"
        );
        self.state = ProgressState::Snapshot { index, offset };
        self.paused = false;
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.paused = false;
        self.inflight.clear();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.paused = false;
        self.inflight.clear();
    }

    pub(crate) fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ProgressState::Snapshot { index, offset: 0 };
        self.paused = false;
        self.inflight.clear();
    }

    /// Records an acknowledged match. Returns whether it moved forward.
    pub(crate) fn update_match(&mut self, index: LogIndex) -> bool {
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
            self.paused = false;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        moved
    }

    /// The follower's log ends at `last`, below what it had acknowledged:
    /// it lost entries (a node restarted on an empty or replaced disk). The
    /// leader probes again from there, the one case where `match_index`
    /// goes down; a snapshot follows if the leader's log no longer reaches
    /// back that far. The commit index does not move back: what the
    /// follower lost was stored by a quorum when it was committed.
    pub(crate) fn lost_entries(&mut self, last: LogIndex) {
        if last >= self.match_index {
            return;
        }
        self.match_index = last;
        if !matches!(self.state, ProgressState::Snapshot { .. }) {
            self.become_probe();
        }
    }

    /// Whether the leader may send another AppendEntries now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.paused,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Records an AppendEntries sent with entries up to `last` (or none).
    pub(crate) fn sent(&mut self, last: Option<LogIndex>) {
        match self.state {
            ProgressState::Probe => self.paused = true,
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Handles a rejection of the append after `rejected_index`; `hint_next`
    /// is where the leader computed the logs may match. Returns false when
    /// the rejection is stale.
    pub(crate) fn reject(&mut self, rejected_index: LogIndex, hint_next: LogIndex) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected_index <= self.match_index {
                    return false;
                }
                self.become_probe();
                self.next_index = hint_next.min(rejected_index).max(self.match_index + 1);
                true
            }
            ProgressState::Probe => {
                if rejected_index + 1 != self.next_index {
                    return false;
                }
                self.next_index = hint_next.min(rejected_index).max(self.match_index + 1);
                self.paused = false;
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }
}
