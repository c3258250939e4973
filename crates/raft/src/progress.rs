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
/// Invariant: `match_index < next_index`.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The highest index known to match the leader's log.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    /// How entries are being sent.
    pub state: ProgressState,
    /// In `Probe` and `Snapshot`: a message is out and unanswered, so sending
    /// pauses until an answer or the next heartbeat response.
    pub paused: bool,
    /// In `Replicate`: the last index of each AppendEntries in flight.
    pub inflight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The highest read round this follower has acknowledged.
    pub read_round: u64,
    /// The highest commit index sent to this follower.
    pub commit_sent: LogIndex,
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
