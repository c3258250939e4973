//! Opening a log directory: which segments to read, replaying them, and
//! cleaning up what a crash left behind.

use std::collections::BTreeMap;
use std::path::Path;

use crate::wal::error::{WalError, corrupt, io_error};
use crate::wal::record::Record;
use crate::wal::replay::{Replay, Replayed};
use crate::wal::segment::{
    TEMP_SUFFIX, parse_segment_name, read_begin, read_file, scan, segment_path, sync_dir,
};
use crate::{Disk, OpenMode};

/// What recovery found: the replayed log and the segments that hold it.
#[derive(Debug, Default)]
pub(crate) struct RecoveredLog {
    pub(crate) replayed: Replayed,
    /// Segment sequence number to file length, oldest first. Empty for a
    /// new log.
    pub(crate) segments: BTreeMap<u64, u64>,
}

/// Recovers the log in `dir` (created if missing).
///
/// 1. Removes leftover temporary files of interrupted rewrites.
/// 2. Removes the newest segment if it holds no complete record (a crash
///    while it was being created).
/// 3. Picks the segments to replay: the newest run of consecutive sequence
///    numbers, from its newest self-contained segment if it has one (older
///    segments are leftovers of an interrupted compaction).
/// 4. Replays them, truncating a torn tail off the newest and failing with
///    [`WalError::Corrupt`] on anything else that does not decode or fit.
/// 5. Removes the leftover segments before the replayed ones.
pub(crate) fn recover(disk: &dyn Disk, dir: &Path) -> Result<RecoveredLog, WalError> {
    disk.create_dir_durable(dir).map_err(io_error(dir))?;
    remove_temp_files(disk, dir)?;
    let mut seqs = list_segments(disk, dir)?;
    drop_empty_newest(disk, dir, &mut seqs)?;
    if seqs.is_empty() {
        return Ok(RecoveredLog::default());
    }
    let start = replay_start(disk, dir, &seqs)?;
    let run = &seqs[start..];
    let mut replay = Replay::default();
    let mut segments = BTreeMap::new();
    for (position, &seq) in run.iter().enumerate() {
        let path = segment_path(dir, seq);
        let is_last = position + 1 == run.len();
        let buf = read_file(disk, &path)?;
        let scan = scan(&path, &buf, is_last)?;
        if !matches!(scan.records.first(), Some(first) if first.offset == 0 && matches!(first.record, Record::Begin(_)))
        {
            return Err(corrupt(
                &path,
                0,
                "the segment does not start with a begin record",
            ));
        }
        for located in &scan.records {
            replay.apply(&path, seq, located)?;
        }
        if scan.torn {
            truncate(disk, &path, scan.good_len)?;
        }
        segments.insert(seq, scan.good_len);
    }
    let replayed = replay.finish(&segment_path(dir, run[0]))?;
    remove_segments(disk, dir, &seqs[..start])?;
    Ok(RecoveredLog { replayed, segments })
}

fn remove_temp_files(disk: &dyn Disk, dir: &Path) -> Result<(), WalError> {
    crate::disk::remove_temp_files(disk, dir, TEMP_SUFFIX)
        .map(drop)
        .map_err(|(path, source)| WalError::Io { path, source })
}

/// The sequence numbers of the segments in `dir`, ascending.
fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<u64>, WalError> {
    let names = disk.list(dir).map_err(io_error(dir))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// A crash while a segment was being created leaves it empty or with a torn
/// first record; it holds nothing durable, so it goes.
fn drop_empty_newest(disk: &dyn Disk, dir: &Path, seqs: &mut Vec<u64>) -> Result<(), WalError> {
    let Some(&seq) = seqs.last() else {
        return Ok(());
    };
    let path = segment_path(dir, seq);
    if read_begin(disk, &path)?.is_some() {
        return Ok(());
    }
    let buf = read_file(disk, &path)?;
    let scan = scan(&path, &buf, true)?;
    if !scan.records.is_empty() {
        // Valid records that do not start with a begin record: replay
        // reports it.
        return Ok(());
    }
    disk.remove_file(&path).map_err(io_error(&path))?;
    sync_dir(disk, dir)?;
    seqs.pop();
    Ok(())
}

/// The position in `seqs` of the first segment to replay.
fn replay_start(disk: &dyn Disk, dir: &Path, seqs: &[u64]) -> Result<usize, WalError> {
    let mut start = seqs.len() - 1;
    while start > 0 && seqs[start - 1] + 1 == seqs[start] {
        start -= 1;
    }
    for position in (start..seqs.len()).rev() {
        let begin = read_begin(disk, &segment_path(dir, seqs[position]))?;
        if begin.is_some_and(|begin| begin.self_contained) {
            return Ok(position);
        }
    }
    Ok(start)
}

/// Cuts a torn tail off and makes the cut durable, so that a later append
/// cannot end up behind leftover garbage.
fn truncate(disk: &dyn Disk, path: &Path, len: u64) -> Result<(), WalError> {
    let mut file = disk.open(path, OpenMode::Write).map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    file.sync().map_err(io_error(path))
}

/// Removes segments, oldest first, then syncs the directory.
pub(crate) fn remove_segments(disk: &dyn Disk, dir: &Path, seqs: &[u64]) -> Result<(), WalError> {
    if seqs.is_empty() {
        return Ok(());
    }
    for &seq in seqs {
        let path = segment_path(dir, seq);
        disk.remove_file(&path).map_err(io_error(&path))?;
    }
    sync_dir(disk, dir)
}
