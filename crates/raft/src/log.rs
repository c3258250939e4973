//! [`RaftLog`]: the in-memory log after the last snapshot, with the commit,
//! persist and apply positions.

use std::collections::VecDeque;

use crate::types::{Entry, LogIndex, Term};

/// The log as this node sees it.
///
/// Invariants (checked by [`RaftLog::assert_invariants`]):
/// - `entries` hold indices `snapshot_index + 1 ..= last_index()`,
///   consecutive, with non-decreasing terms, none below `snapshot_term`;
/// - `snapshot_index <= applied <= commit <= last_index()`;
/// - `snapshot_index <= persisted <= last_index()`; entries above
///   `persisted` are the ones the next `Ready` asks the caller to persist.
#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    pub(crate) snapshot_index: LogIndex,
    pub(crate) snapshot_term: Term,
    entries: VecDeque<Entry>,
    pub(crate) commit: LogIndex,
    pub(crate) applied: LogIndex,
    pub(crate) persisted: LogIndex,
}

impl RaftLog {
    /// A log that starts after a snapshot (or at 0) with `entries`, all
    /// already durable.
    pub(crate) fn restore(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) -> Self {
        let mut log = Self {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            commit: 0,
            applied: snapshot_index,
            persisted: 0,
        };
        log.persisted = log.last_index();
        log.commit = commit.clamp(snapshot_index, log.last_index());
        log.assert_invariants();
        log
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot_index + 1
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`, if this log knows it (the snapshot's
    /// last entry counts; compacted entries before it do not).
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.first_index()) as usize].term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.first_index()) as usize])
    }

    /// Whether a candidate with this last entry is at least as up to date as
    /// this log (Raft §5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The first index of the term of the entry at `index`, scanning back no
    /// further than the snapshot.
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut first = index;
        while first > self.first_index() && self.term(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index holding an entry of `term`, if any.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let position = self.entries.iter().rposition(|e| e.term == term)?;
        Some(self.first_index() + position as u64)
    }

    /// Entries `from ..= to`, at most `max_bytes` of them (at least one).
    pub(crate) fn slice(&self, from: LogIndex, to: LogIndex, max_bytes: u64) -> Vec<Entry> {
        assert!(
            from > self.snapshot_index,
            "slice from {from} reaches into the snapshot at {}",
            self.snapshot_index
        );
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in from..=to.min(self.last_index()) {
            let entry = &self.entries[(index - self.first_index()) as usize];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Appends entries that follow the leader's `prev_index`, truncating any
    /// conflicting suffix first. Returns the index of the last entry given,
    /// and the index from which the log was written (any entries there
    /// before were replaced), if anything was.
    ///
    /// # Panics
    /// If a conflict would remove a committed entry: a safety violation.
    pub(crate) fn append_after(
        &mut self,
        prev_index: LogIndex,
        entries: &[Entry],
    ) -> (LogIndex, Option<LogIndex>) {
        let mut skip = 0;
        for entry in entries {
            match self.term(entry.index) {
                Some(term) if term == entry.term => skip += 1,
                Some(_) => {
                    assert!(
                        entry.index > self.commit,
                        "conflicting entry at {} would remove committed entries (commit {})",
                        entry.index,
                        self.commit
                    );
                    self.truncate_from(entry.index);
                    break;
                }
                None => break,
            }
        }
        for entry in &entries[skip..] {
            self.push(entry.clone());
        }
        let written_from = entries.get(skip).map(|e| e.index);
        (prev_index + entries.len() as u64, written_from)
    }

    /// Appends one entry at `last_index() + 1`.
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log entries must be consecutive"
        );
        assert!(
            entry.term >= self.last_term(),
            "log terms must not decrease"
        );
        self.entries.push_back(entry);
    }

    fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.snapshot_index);
        self.entries.truncate((index - self.first_index()) as usize);
        self.persisted = self.persisted.min(index - 1);
    }

    /// Entries not yet handed to the caller to persist.
    pub(crate) fn unpersisted(&self) -> Vec<Entry> {
        if self.persisted >= self.last_index() {
            return Vec::new();
        }
        self.slice(self.persisted + 1, self.last_index(), u64::MAX)
    }

    /// Marks entries up to `index` of `term` persisted, unless the log
    /// changed under them since.
    pub(crate) fn persisted_to(&mut self, index: LogIndex, term: Term) {
        if index > self.persisted && self.term(index) == Some(term) {
            self.persisted = index;
        }
    }

    /// Committed entries not yet applied, at most `max_bytes` (at least one).
    pub(crate) fn next_to_apply(&self, max_bytes: u64) -> Vec<Entry> {
        let to = self.commit.min(self.persisted);
        if self.applied >= to {
            return Vec::new();
        }
        self.slice(self.applied + 1, to, max_bytes)
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index > self.commit {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond the last index {}",
                self.last_index()
            );
            self.commit = index;
        }
    }

    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.commit,
            "applied {index} beyond commit {}",
            self.commit
        );
        assert!(
            index >= self.applied,
            "applied went back from {} to {index}",
            self.applied
        );
        self.applied = index;
    }

    /// Drops entries up to `index` (the service snapshotted through it).
    pub(crate) fn compact(&mut self, index: LogIndex) {
        assert!(
            index <= self.applied,
            "compacting to {index} beyond applied {}",
            self.applied
        );
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term(index).expect("compact index is in the log");
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn reset_to_snapshot(&mut self, index: LogIndex, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit = index;
        self.persisted = index;
        self.applied = index;
    }

    /// Checks the invariants: the whole log in debug builds, the positions
    /// always.
    pub(crate) fn assert_invariants(&self) {
        if cfg!(debug_assertions) {
            let mut term = self.snapshot_term;
            for (expected, entry) in (self.first_index()..).zip(self.entries.iter()) {
                assert_eq!(entry.index, expected, "log indices not consecutive");
                assert!(entry.term >= term, "log terms decrease at {}", entry.index);
                term = entry.term;
            }
        }
        assert!(
            self.snapshot_index <= self.applied,
            "applied below the snapshot"
        );
        assert!(
            self.applied <= self.commit,
            "applied {} beyond commit {}",
            self.applied,
            self.commit
        );
        assert!(self.commit <= self.last_index(), "commit beyond the log");
        assert!(
            self.persisted <= self.last_index(),
            "persisted beyond the log"
        );
    }
}
