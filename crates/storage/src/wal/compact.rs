//! Compaction: forgetting the prefix a snapshot covers, deleting the
//! segments that hold only that prefix, and rewriting the live records into
//! a fresh segment when the files are mostly dead bytes.

use std::collections::{BTreeMap, VecDeque};

use crate::wal::Wal;
use crate::wal::error::{WalError, corrupt, io_error};
use crate::wal::record::{BEGIN_RECORD_BYTES, Decoded, Record, decode};
use crate::wal::recovery::remove_segments;
use crate::wal::replay::Loc;
use crate::wal::segment::{segment_path, sync_dir, temp_path};
use crate::{DiskFile, OpenMode};

/// A compaction rewrites the live records into a fresh segment when the
/// dead bytes (file bytes that are not live records or the new segment's
/// begin record) exceed both the live bytes and this much (1 MiB), or
/// [`WalOptions::segment_bytes`](super::WalOptions::segment_bytes) if that
/// is smaller. Exceeding the live bytes makes the copying cost at most one
/// byte per byte appended since the last rewrite; the floor keeps a small
/// log from being rewritten for a few bytes.
pub const REWRITE_MIN_DEAD_BYTES: u64 = 1 << 20;

/// A rewrite copies live records through a buffer of this size (1 MiB),
/// writing it out whenever it fills.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// Where a rewrite is reading from: a segment and its open handle.
type Source = Option<(u64, Box<dyn DiskFile>)>;

impl Wal {
    /// Forgets the entries up to `index`, which a saved snapshot now covers
    /// (the caller saved it durably first). Records the compaction and syncs
    /// (so this also makes everything before it durable), deletes the
    /// segments that hold nothing live (never the one with the latest state),
    /// then rewrites the live records into a fresh segment if the files are
    /// mostly dead bytes (see [`REWRITE_MIN_DEAD_BYTES`]).
    ///
    /// `index` may be past [`last_index`](Self::last_index) (a snapshot
    /// received from the leader): then every entry goes and the log
    /// continues at `index + 1`. An `index` at or below
    /// [`compacted_to`](Self::compacted_to) does nothing. Recovery after
    /// `compact(i)` returns `compacted_to = max(previous, i)` and only
    /// entries after it.
    pub fn compact(&mut self, index: u64) -> Result<(), WalError> {
        self.guard(|wal| {
            if index <= wal.compacted_to {
                return Ok(());
            }
            wal.push(&Record::Compact { index })?;
            wal.forget_through(index);
            wal.sync_now()?;
            wal.delete_dead_segments()?;
            if wal.rewrite_pays() {
                wal.rewrite()?;
            }
            Ok(())
        })
    }

    /// Drops the entries up to `index` from the in-memory index.
    fn forget_through(&mut self, index: u64) {
        let covered = (index - self.compacted_to).min(self.live.len() as u64) as usize;
        for loc in self.live.drain(..covered) {
            self.live_entry_bytes -= loc.len;
        }
        self.compacted_to = index;
    }

    /// Deletes the oldest segments, up to the first that holds a live entry,
    /// the latest state record, or is active. Replay of the rest starts from
    /// the first one kept: its begin record says where it joins the log, and
    /// every entry before that is compacted.
    fn delete_dead_segments(&mut self) -> Result<(), WalError> {
        let mut keep_from = self.active_seq;
        if let Some(loc) = self.state_loc {
            keep_from = keep_from.min(loc.seq);
        }
        if let Some(loc) = self.live.front() {
            keep_from = keep_from.min(loc.seq);
        }
        let doomed: Vec<u64> = self.segments.range(..keep_from).map(|(&s, _)| s).collect();
        remove_segments(&*self.disk, &self.dir, &doomed)?;
        for seq in doomed {
            self.segments.remove(&seq);
        }
        Ok(())
    }

    fn rewrite_pays(&self) -> bool {
        let live = self.live_bytes();
        let dead = self
            .disk_bytes()
            .saturating_sub(live + BEGIN_RECORD_BYTES as u64);
        dead > live && dead > REWRITE_MIN_DEAD_BYTES.min(self.options.segment_bytes)
    }

    /// Writes the live records (state, then entries) into a new segment
    /// under a temporary name, syncs it, renames it into place, syncs the
    /// directory, then deletes every older segment. The new segment's begin
    /// record is marked self-contained, so that recovery after a crash
    /// before the deletions ignores (and deletes) the older ones.
    fn rewrite(&mut self) -> Result<(), WalError> {
        let seq = self.active_seq + 1;
        let temp = temp_path(&self.dir, seq);
        let (prelude, state_loc) = self.prelude(seq, true);
        let mut file = self
            .disk
            .open(&temp, OpenMode::Truncate)
            .map_err(io_error(&temp))?;
        let (live, len) = self.copy_live(&mut *file, seq, prelude)?;
        file.sync().map_err(io_error(&temp))?;
        drop(file);
        let path = segment_path(&self.dir, seq);
        self.disk.rename(&temp, &path).map_err(io_error(&temp))?;
        sync_dir(&*self.disk, &self.dir)?;
        let active = self
            .disk
            .open(&path, OpenMode::Write)
            .map_err(io_error(&path))?;
        let old: Vec<u64> = self.segments.keys().copied().collect();
        self.active = active;
        self.active_seq = seq;
        self.written = len;
        self.segments = BTreeMap::from([(seq, len)]);
        self.live = live;
        self.state_loc = state_loc;
        remove_segments(&*self.disk, &self.dir, &old)
    }

    /// Writes `out` (the new segment's prelude) and a copy of every live
    /// entry record to `file`; returns the entries' new locations and the
    /// file's length.
    fn copy_live(
        &self,
        file: &mut dyn DiskFile,
        seq: u64,
        mut out: Vec<u8>,
    ) -> Result<(VecDeque<Loc>, u64), WalError> {
        let temp = temp_path(&self.dir, seq);
        let mut written = 0;
        let mut source: Source = None;
        let mut record = Vec::new();
        let mut live = VecDeque::with_capacity(self.live.len());
        for (position, loc) in self.live.iter().enumerate() {
            let index = self.compacted_to + 1 + position as u64;
            self.read_entry_record(&mut source, loc, index, &mut record)?;
            live.push_back(Loc {
                seq,
                offset: written + out.len() as u64,
                len: loc.len,
            });
            out.extend_from_slice(&record);
            if out.len() >= COPY_BUFFER_BYTES {
                file.write_at(written, &out).map_err(io_error(&temp))?;
                written += out.len() as u64;
                out.clear();
            }
        }
        file.write_at(written, &out).map_err(io_error(&temp))?;
        written += out.len() as u64;
        Ok((live, written))
    }

    /// Reads the record of entry `index` at `loc` into `record`, checking
    /// that it is that entry.
    fn read_entry_record(
        &self,
        source: &mut Source,
        loc: &Loc,
        index: u64,
        record: &mut Vec<u8>,
    ) -> Result<(), WalError> {
        let path = segment_path(&self.dir, loc.seq);
        if !matches!(source, Some((seq, _)) if *seq == loc.seq) {
            let file = self
                .disk
                .open(&path, OpenMode::Read)
                .map_err(io_error(&path))?;
            *source = Some((loc.seq, file));
        }
        let (_, file) = source.as_mut().expect("opened above");
        record.resize(loc.len as usize, 0);
        file.read_exact_at(loc.offset, record)
            .map_err(io_error(&path))?;
        let found = match decode(record) {
            Decoded::Record(Record::Entry { index: found, .. }, len) if len == record.len() => {
                found
            }
            _ => 0,
        };
        if found != index {
            return Err(corrupt(
                &path,
                loc.offset,
                format!("expected the record of entry {index} while compacting"),
            ));
        }
        Ok(())
    }
}
