//! [`Replay`]: the log rebuilt from its records, checking as it goes that
//! they fit together.

use std::collections::VecDeque;
use std::path::Path;

use bytes::Bytes;

use crate::wal::WalEntry;
use crate::wal::error::{WalError, corrupt};
use crate::wal::record::{Begin, Record};
use crate::wal::segment::Located;

/// Where a record lies: segment, byte offset, encoded length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// The log as far as the records replayed so far tell.
///
/// The replay starts at some segment whose begin record says the log had
/// `last_index` entries before it; those earlier entries are unknown (their
/// segments were deleted, or have not been read). `base` is the index of the
/// last unknown entry: known entries are `base + 1 ..= last_index()`. At the
/// end every unknown entry must be compacted (`base <= compacted_to`),
/// otherwise a segment is missing.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    started: bool,
    base: u64,
    entries: VecDeque<(WalEntry, Loc)>,
    compacted_to: u64,
    state: Option<(Bytes, Loc)>,
}

/// The result of a replay.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Entries after `compacted_to`, in order, with their locations.
    pub(crate) entries: Vec<(WalEntry, Loc)>,
    pub(crate) compacted_to: u64,
    /// The latest state and where its record lies.
    pub(crate) state: Option<(Bytes, Loc)>,
}

impl Replay {
    /// The index of the last entry known so far (or of the compacted or
    /// unknown prefix if there is no entry after it).
    fn last_index(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Applies one record of segment `seq`, at `path`.
    pub(crate) fn apply(
        &mut self,
        path: &Path,
        seq: u64,
        located: &Located<'_>,
    ) -> Result<(), WalError> {
        let loc = Loc {
            seq,
            offset: located.offset,
            len: located.len,
        };
        let bad = |reason: String| Err(corrupt(path, located.offset, reason));
        if !self.started && !matches!(located.record, Record::Begin(_)) {
            return bad("the log does not start with a begin record".to_string());
        }
        match located.record {
            Record::Begin(begin) => return self.begin(path, seq, located.offset, begin),
            Record::Entry { index, term, data } => {
                let last = self.last_index();
                if index != last + 1 {
                    return bad(format!(
                        "entry {index} does not follow the last index {last}"
                    ));
                }
                let data = Bytes::copy_from_slice(data);
                self.entries
                    .push_back((WalEntry { index, term, data }, loc));
            }
            Record::State(data) => self.state = Some((Bytes::copy_from_slice(data), loc)),
            Record::Truncate { from } => {
                let last = self.last_index();
                if from <= self.compacted_to || from > last + 1 {
                    return bad(format!(
                        "truncation from {from} outside the log ({} ..= {last})",
                        self.compacted_to + 1
                    ));
                }
                if from <= self.base {
                    self.entries.clear();
                    self.base = from - 1;
                } else {
                    self.entries.truncate((from - self.base - 1) as usize);
                }
            }
            Record::Compact { index } => self.compact(index),
        }
        Ok(())
    }

    fn begin(&mut self, path: &Path, seq: u64, offset: u64, begin: Begin) -> Result<(), WalError> {
        let bad = |reason: String| Err(corrupt(path, offset, reason));
        if offset != 0 {
            return bad("a begin record inside a segment".to_string());
        }
        if begin.seq != seq {
            return bad(format!(
                "the segment says it is number {} but is named {seq}",
                begin.seq
            ));
        }
        if !self.started {
            self.started = true;
            self.base = begin.last_index;
            self.compacted_to = begin.compacted_to;
            return Ok(());
        }
        if begin.last_index != self.last_index() || begin.compacted_to != self.compacted_to {
            return bad(format!(
                "the segment starts after index {} (compacted to {}) but the segments before it \
                 end at {} (compacted to {}): a segment is missing or foreign",
                begin.last_index,
                begin.compacted_to,
                self.last_index(),
                self.compacted_to
            ));
        }
        Ok(())
    }

    fn compact(&mut self, index: u64) {
        if index <= self.compacted_to {
            return;
        }
        self.compacted_to = index;
        if index >= self.last_index() {
            self.entries.clear();
            self.base = index;
        } else if index > self.base {
            self.entries.drain(..(index - self.base) as usize);
            self.base = index;
        }
    }

    /// Checks that no live entry is unknown and returns the log. `first`
    /// is the path of the first segment replayed, for the error.
    pub(crate) fn finish(self, first: &Path) -> Result<Replayed, WalError> {
        if self.base > self.compacted_to {
            return Err(corrupt(
                first,
                0,
                format!(
                    "entries {} ..= {} are in no segment: they belong before this one, \
                     and the log is compacted only to {}",
                    self.compacted_to + 1,
                    self.base,
                    self.compacted_to
                ),
            ));
        }
        Ok(Replayed {
            entries: self.entries.into(),
            compacted_to: self.compacted_to,
            state: self.state,
        })
    }
}
