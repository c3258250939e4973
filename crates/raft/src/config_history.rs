//! [`ConfigHistory`]: the configurations a node's log implies, by index.
//!
//! A configuration takes effect when its entry is appended, committed or
//! not (thesis §4.1), so a node's configuration is that of the latest
//! configuration entry in its log, or, with none after the snapshot, the
//! snapshot's (or the bootstrap one). The history keeps the base and each
//! configuration entry after it; a truncated entry is dropped and the one
//! before takes effect again, a compaction folds entries into the base.

use crate::membership::{ClusterConfig, ConfigEntry};
use crate::types::{LogIndex, Term};

/// The configuration as of each index of the log after the snapshot.
///
/// Invariant: `changes` are in increasing index order, all above
/// `base_index`.
#[derive(Debug, Clone)]
pub(crate) struct ConfigHistory {
    /// The configuration as of `base_index` (the snapshot's, or bootstrap).
    base: ClusterConfig,
    base_index: LogIndex,
    /// Each configuration entry in the log: (index, term, configuration).
    changes: Vec<(LogIndex, Term, ClusterConfig)>,
}

impl ConfigHistory {
    pub(crate) fn new(base: ClusterConfig, base_index: LogIndex) -> Self {
        Self {
            base,
            base_index,
            changes: Vec::new(),
        }
    }

    /// The configuration in effect: the latest one in the log.
    pub(crate) fn current(&self) -> &ClusterConfig {
        self.changes.last().map_or(&self.base, |(_, _, c)| c)
    }

    /// The index of the entry that made the current configuration
    /// (`base_index` when it comes from the snapshot or bootstrap).
    pub(crate) fn current_index(&self) -> LogIndex {
        self.changes.last().map_or(self.base_index, |&(i, _, _)| i)
    }

    /// The configuration as of `index` (at or above the base).
    pub(crate) fn at(&self, index: LogIndex) -> &ClusterConfig {
        self.changes
            .iter()
            .rev()
            .find(|(i, _, _)| *i <= index)
            .map_or(&self.base, |(_, _, c)| c)
    }

    /// The configuration just before the current one took effect.
    pub(crate) fn previous(&self) -> &ClusterConfig {
        self.at(self.current_index().saturating_sub(1))
    }

    /// A configuration entry was appended at `index`. A joining node that
    /// knew no configuration learns from the first one what came before.
    pub(crate) fn push(&mut self, index: LogIndex, term: Term, entry: ConfigEntry) {
        if self.changes.is_empty() && self.base.voters.is_empty() {
            self.base = entry.previous;
        }
        let config = entry.config;
        assert!(
            index > self.current_index(),
            "configuration at {index} appended after the one at {}: configurations take \
             effect in log order",
            self.current_index()
        );
        self.changes.push((index, term, config));
    }

    /// The log lost its entries from `index` on: their configurations are
    /// rolled back. Returns whether the current configuration changed.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) -> bool {
        let before = self.changes.len();
        self.changes.retain(|&(i, _, _)| i < index);
        self.changes.len() != before
    }

    /// The log was compacted through `index`.
    pub(crate) fn compact_to(&mut self, index: LogIndex) {
        if index <= self.base_index {
            return;
        }
        self.base = self.at(index).clone();
        self.base_index = index;
        self.changes.retain(|&(i, _, _)| i > index);
    }

    /// The log was replaced by a snapshot at `index` with `config`.
    pub(crate) fn reset(&mut self, index: LogIndex, config: ClusterConfig) {
        *self = Self::new(config, index);
    }

    /// How many configuration entries above `commit` are of `term`.
    pub(crate) fn uncommitted_of_term(&self, commit: LogIndex, term: Term) -> usize {
        self.changes
            .iter()
            .filter(|&&(i, t, _)| i > commit && t == term)
            .count()
    }

    pub(crate) fn assert_invariants(&self) {
        let mut last = self.base_index;
        for &(index, _, _) in &self.changes {
            assert!(
                index > last,
                "configuration entries out of log order: {index} after {last}"
            );
            last = index;
        }
    }
}
