//! [`Wal`]: opening the log and its write path (append, truncate, set the
//! state, sync). Compaction is in `compact.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::wal::error::{WalError, io_error};
use crate::wal::record::{BEGIN_RECORD_BYTES, Begin, MAX_RECORD_BYTES, Record};
use crate::wal::recovery::recover;
use crate::wal::replay::Loc;
use crate::wal::segment::{create_file, segment_path};
use crate::{Disk, DiskFile, OpenMode};

/// The default [`WalOptions::segment_bytes`]: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Encoded records are buffered in memory until a sync, or until the buffer
/// passes this size (1 MiB); then it is written to the active segment (not
/// synced) and emptied.
pub(crate) const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// How the log is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A sync that leaves the active segment at least this long starts a new
    /// one. A segment can exceed it by the records of one sync.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// A Raft log entry as the log stores it; `data` is opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// The entry's log index (1-based).
    pub index: u64,
    /// The term of the leader that created the entry.
    pub term: u64,
    /// The payload.
    pub data: Bytes,
}

impl WalEntry {
    /// An entry.
    pub fn new(index: u64, term: u64, data: impl Into<Bytes>) -> Self {
        Self {
            index,
            term,
            data: data.into(),
        }
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last state set with [`Wal::set_state`], if any survived.
    pub state: Option<Bytes>,
    /// The entries after `compacted_to`, in index order.
    pub entries: Vec<WalEntry>,
    /// The highest index passed to [`Wal::compact`].
    pub compacted_to: u64,
}

/// A segmented, checksummed write-ahead log for Raft entries and hard state.
/// See the [module docs](super) for the format and the guarantees.
pub struct Wal {
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) dir: PathBuf,
    pub(crate) options: WalOptions,
    /// Every segment file: sequence number to length (the active one's
    /// includes the buffered bytes).
    pub(crate) segments: BTreeMap<u64, u64>,
    pub(crate) active: Box<dyn DiskFile>,
    pub(crate) active_seq: u64,
    /// Bytes of the active segment already handed to the file.
    pub(crate) written: u64,
    /// Encoded records not yet handed to the file.
    pub(crate) buffer: Vec<u8>,
    /// Whether anything was written since the last sync.
    pub(crate) unsynced: bool,
    /// Where entry `compacted_to + 1 + k` lies, for every live entry.
    pub(crate) live: VecDeque<Loc>,
    pub(crate) live_entry_bytes: u64,
    pub(crate) compacted_to: u64,
    pub(crate) state: Option<Bytes>,
    /// Where the record of `state` lies.
    pub(crate) state_loc: Option<Loc>,
    pub(crate) poisoned: bool,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("active_seq", &self.active_seq)
            .field("compacted_to", &self.compacted_to)
            .field("last_index", &self.last_index())
            .field("live_bytes", &self.live_bytes())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if missing) the log in `dir` and recovers it.
    ///
    /// A torn last record of the newest segment (an interrupted, unsynced
    /// append) is dropped and cut off the file. Any other bad record, or
    /// segments that do not fit together, fail with [`WalError::Corrupt`]
    /// naming the file and byte offset.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        let mut log = recover(&*disk, dir)?;
        let (active_seq, active) = open_active(&*disk, dir, &mut log.segments)?;
        let replayed = log.replayed;
        let (state, state_loc) = match replayed.state {
            Some((state, loc)) => (Some(state), Some(loc)),
            None => (None, None),
        };
        let live: VecDeque<Loc> = replayed.entries.iter().map(|(_, loc)| *loc).collect();
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            options,
            written: log.segments[&active_seq],
            segments: log.segments,
            active,
            active_seq,
            buffer: Vec::new(),
            unsynced: false,
            live_entry_bytes: live.iter().map(|loc| loc.len).sum(),
            live,
            compacted_to: replayed.compacted_to,
            state,
            state_loc,
            poisoned: false,
        };
        let recovered = Recovered {
            state: wal.state.clone(),
            entries: replayed.entries.into_iter().map(|(e, _)| e).collect(),
            compacted_to: wal.compacted_to,
        };
        Ok((wal, recovered))
    }

    /// Adds entries after the last one, or, if the first entry's index is at
    /// most [`last_index`](Self::last_index), replaces the entries from that
    /// index on (a conflict truncation, recorded so that recovery repeats
    /// it). Not durable until [`sync`](Self::sync).
    ///
    /// # Panics
    ///
    /// If the indexes are not consecutive, or the first is not in
    /// `compacted_to() + 1 ..= last_index() + 1`: a caller bug.
    pub fn append(&mut self, entries: &[WalEntry]) -> Result<(), WalError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                first.index + offset as u64,
                "appended entries must have consecutive indexes"
            );
        }
        self.check_range(first.index, "append at");
        for entry in entries {
            check_size(entry_record(entry).encoded_len())?;
        }
        self.guard(|wal| {
            if first.index <= wal.last_index() {
                wal.push(&Record::Truncate { from: first.index })?;
                wal.drop_from(first.index);
            }
            for entry in entries {
                let loc = wal.push(&entry_record(entry))?;
                wal.live.push_back(loc);
                wal.live_entry_bytes += loc.len;
            }
            Ok(())
        })
    }

    /// Removes the entries at `from` and after (recorded, so that recovery
    /// repeats it). Not durable until [`sync`](Self::sync).
    ///
    /// # Panics
    ///
    /// If `from` is not in `compacted_to() + 1 ..= last_index() + 1`.
    pub fn truncate(&mut self, from: u64) -> Result<(), WalError> {
        self.check_range(from, "truncate from");
        if from > self.last_index() {
            return Ok(());
        }
        self.guard(|wal| {
            wal.push(&Record::Truncate { from })?;
            wal.drop_from(from);
            Ok(())
        })
    }

    /// Records the Raft hard state (opaque bytes) in the log, so that it
    /// becomes durable with the entries of the same batch, at the same
    /// [`sync`](Self::sync). Recovery returns the last one set.
    pub fn set_state(&mut self, state: &[u8]) -> Result<(), WalError> {
        let record = Record::State(state);
        check_size(record.encoded_len())?;
        self.guard(|wal| {
            let loc = wal.push(&record)?;
            wal.state = Some(Bytes::copy_from_slice(state));
            wal.state_loc = Some(loc);
            Ok(())
        })
    }

    /// Makes everything appended, truncated and set so far durable with one
    /// fsync (group commit). Then, if the active segment has reached
    /// [`WalOptions::segment_bytes`], starts a new segment that opens with
    /// the current state, so that older segments can be deleted.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.guard(Self::sync_now)
    }

    /// Bytes of live Raft state: the encoded size of the entries after
    /// [`compacted_to`](Self::compacted_to) plus that of the state record.
    /// This is what 6.824 calls `RaftStateSize`.
    pub fn live_bytes(&self) -> u64 {
        self.live_entry_bytes + self.state_loc.map_or(0, |loc| loc.len)
    }

    /// The index of the last entry; `compacted_to()` if no entry follows it
    /// (0 for an empty log).
    pub fn last_index(&self) -> u64 {
        self.compacted_to + self.live.len() as u64
    }

    /// The highest index passed to [`compact`](Self::compact).
    pub fn compacted_to(&self) -> u64 {
        self.compacted_to
    }

    /// The total size of the segment files (buffered bytes included).
    pub fn disk_bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check_range(&self, index: u64, what: &str) {
        assert!(
            index > self.compacted_to && index <= self.last_index() + 1,
            "{what} index {index} outside {} ..= {} (compacted to {}, last index {})",
            self.compacted_to + 1,
            self.last_index() + 1,
            self.compacted_to,
            self.last_index()
        );
    }

    /// Runs a mutation unless the log is poisoned, and poisons it if the
    /// mutation fails in a way that leaves the disk in an unknown state.
    pub(crate) fn guard<T>(
        &mut self,
        mutation: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let result = mutation(self);
        if let Err(error) = &result {
            self.poisoned |= error.poisons();
        }
        result
    }

    /// Drops live entries at `from` and after from the in-memory index.
    fn drop_from(&mut self, from: u64) {
        let keep = (from - self.compacted_to - 1) as usize;
        for loc in self.live.drain(keep..) {
            self.live_entry_bytes -= loc.len;
        }
    }

    /// Buffers one encoded record in the active segment; returns where it
    /// will lie. Writes the buffer out when it passes [`WRITE_BUFFER_BYTES`].
    pub(crate) fn push(&mut self, record: &Record<'_>) -> Result<Loc, WalError> {
        let loc = Loc {
            seq: self.active_seq,
            offset: self.written + self.buffer.len() as u64,
            len: record.encoded_len() as u64,
        };
        record.encode(&mut self.buffer);
        *self.segments.entry(self.active_seq).or_default() += loc.len;
        self.unsynced = true;
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(loc)
    }

    fn flush(&mut self) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.active_seq);
        self.active
            .write_at(self.written, &self.buffer)
            .map_err(io_error(&path))?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Writes out the buffer, fsyncs the active segment, and rotates if it
    /// is full.
    pub(crate) fn sync_now(&mut self) -> Result<(), WalError> {
        if self.unsynced {
            self.flush()?;
            let path = segment_path(&self.dir, self.active_seq);
            self.active.sync().map_err(io_error(&path))?;
            self.unsynced = false;
            if self.written >= self.options.segment_bytes {
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// The first records of a new segment: its begin record and the current
    /// state. Returns them and the state record's location. A rotated
    /// segment joins the log after its last entry; a self-contained one (a
    /// rewrite) after the compacted prefix, since the live entries follow.
    pub(crate) fn prelude(&self, seq: u64, self_contained: bool) -> (Vec<u8>, Option<Loc>) {
        let begin = Begin {
            seq,
            last_index: if self_contained {
                self.compacted_to
            } else {
                self.last_index()
            },
            compacted_to: self.compacted_to,
            self_contained,
        };
        let mut bytes = Vec::new();
        Record::Begin(begin).encode(&mut bytes);
        let state_loc = self.state.as_ref().map(|state| {
            let record = Record::State(state);
            record.encode(&mut bytes);
            Loc {
                seq,
                offset: BEGIN_RECORD_BYTES as u64,
                len: record.encoded_len() as u64,
            }
        });
        (bytes, state_loc)
    }

    /// Creates the next segment, durable, holding only its prelude, and
    /// makes it the active segment. The caller synced the previous one.
    fn rotate(&mut self) -> Result<(), WalError> {
        debug_assert!(self.buffer.is_empty() && !self.unsynced);
        let seq = self.active_seq + 1;
        let (bytes, state_loc) = self.prelude(seq, false);
        let path = segment_path(&self.dir, seq);
        self.active = create_file(&*self.disk, &path, &bytes)?;
        self.active_seq = seq;
        self.written = bytes.len() as u64;
        self.segments.insert(seq, self.written);
        if let Some(loc) = state_loc {
            self.state_loc = Some(loc);
        }
        Ok(())
    }
}

/// Opens the newest segment for appending, or creates the first segment of
/// a new log (adding it to `segments`).
fn open_active(
    disk: &dyn Disk,
    dir: &Path,
    segments: &mut BTreeMap<u64, u64>,
) -> Result<(u64, Box<dyn DiskFile>), WalError> {
    if let Some((&seq, _)) = segments.last_key_value() {
        let path = segment_path(dir, seq);
        let file = disk.open(&path, OpenMode::Write).map_err(io_error(&path))?;
        return Ok((seq, file));
    }
    let begin = Begin {
        seq: 1,
        last_index: 0,
        compacted_to: 0,
        self_contained: true,
    };
    let mut bytes = Vec::new();
    Record::Begin(begin).encode(&mut bytes);
    let file = create_file(disk, &segment_path(dir, 1), &bytes)?;
    segments.insert(1, bytes.len() as u64);
    Ok((1, file))
}

fn entry_record(entry: &WalEntry) -> Record<'_> {
    Record::Entry {
        index: entry.index,
        term: entry.term,
        data: &entry.data,
    }
}

fn check_size(bytes: usize) -> Result<(), WalError> {
    if bytes > MAX_RECORD_BYTES {
        return Err(WalError::RecordTooLarge {
            bytes: bytes as u64,
            max: MAX_RECORD_BYTES as u64,
        });
    }
    Ok(())
}
