//! Jobs over the file store (`fs://PATH`), as the paper's jobs run over
//! GFS (§3.1, §3.4): inputs and outputs named `fs:///dir/file` are read and
//! written through `cairn-fs`'s [`Client`], never through a shared local
//! path.
//!
//! - **Inputs.** [`plan_store_splits`] expands each input (a file, a
//!   directory: its files, or a last component with `*`/`?`: the matching
//!   files), asks the master where each chunk's replicas are, and cuts each
//!   chunk into splits of at most the split size, so that no split crosses a
//!   chunk boundary and each split has the replicas of its chunk as hosts
//!   for locality-aware scheduling. [`read_store_split`] reads the lines
//!   that *start* inside a split, as the local splitter does: a line that
//!   crosses a split (or chunk) boundary belongs to the split where it
//!   starts.
//! - **Outputs.** A reduce attempt writes its output to a temporary file
//!   `OUT/_tmp/NAME.attempt-W-A` ([`temp_output`]); the coordinator's commit
//!   renames one attempt's file to `OUT/NAME` and deletes the others, so
//!   exactly one attempt's output exists per partition.

use std::path::Path;
use std::time::Duration;

use cairn_fs::{Client, ClientError, FsPath, FsSettings};
use cairn_rpc::mapreduce::Split;
use cairn_storage::{Disk, OpenMode};

use crate::AppError;
use crate::progress::Progress;

/// The prefix of a path in the file store.
pub const STORE_SCHEME: &str = "fs://";
/// The directory under a job's output directory that holds reduce
/// attempts' temporary files until one is committed.
pub const TEMP_DIR: &str = "_tmp";
/// How long one store operation may take, retries included.
pub(crate) const STORE_DEADLINE: Duration = Duration::from_secs(30);
/// The most bytes read from the store at once past a split's end while
/// looking for the end of its last line.
const LINE_PROBE_BYTES: u64 = 64 * 1024;
/// How much of a reduce output [`upload`] reads and writes at once.
const UPLOAD_PIECE_BYTES: u64 = 4 << 20;

/// Why a job cannot read or write the file store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{name} is not a path in the store ({reason}); write fs:///dir/file")]
    BadPath { name: String, reason: String },
    #[error("the job reads or writes fs:// paths but names no masters; pass --fs-masters URL,...")]
    NoMasters,
    #[error("{input} names no file in the store; check the path (cairn fs ls {directory})")]
    NoMatch { input: String, directory: String },
}

/// The store path of `fs://PATH`, or `None` for a local path.
pub fn store_path(name: &str) -> Option<&str> {
    name.strip_prefix(STORE_SCHEME)
}

/// Parses `fs://PATH` (or a bare store path) into a store path.
pub(crate) fn parse_store_path(name: &str) -> Result<FsPath, StoreError> {
    let path = store_path(name).unwrap_or(name);
    FsPath::parse(path).map_err(|e| StoreError::BadPath {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// A client of the store whose masters are `masters`.
pub(crate) fn connect(masters: &[String]) -> Result<Client, StoreError> {
    if masters.is_empty() {
        return Err(StoreError::NoMasters);
    }
    Ok(Client::new(masters, FsSettings::default(), STORE_DEADLINE)?)
}

/// A split of a store file and the chunkservers holding its chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSplit {
    pub split: Split,
    /// The URLs of the chunkservers with a replica of the split's chunk.
    pub hosts: Vec<String>,
}

/// Splits the store inputs `inputs` (each `fs://PATH`) along chunk
/// boundaries, at most `split_bytes` each; an empty file is one empty split.
pub async fn plan_store_splits(
    client: &mut Client,
    inputs: &[String],
    split_bytes: u64,
) -> Result<Vec<StoreSplit>, StoreError> {
    assert!(split_bytes > 0, "split size must be positive");
    let chunk_bytes = FsSettings::default().chunk_bytes;
    let mut splits: Vec<StoreSplit> = Vec::new();
    for input in inputs {
        for file in expand(client, input).await? {
            let length = file_length(client, &file, chunk_bytes).await?;
            let name = format!("{STORE_SCHEME}{file}");
            for (chunk, (start, end)) in chunk_ranges(length, chunk_bytes).enumerate() {
                let hosts = if length == 0 {
                    Vec::new()
                } else {
                    client.locate(&file, chunk as u64, false).await?.replicas
                };
                for (offset, length) in pieces(start, end, split_bytes) {
                    splits.push(StoreSplit {
                        split: Split {
                            index: splits.len() as u32,
                            path: name.clone(),
                            offset,
                            length,
                        },
                        hosts: hosts.clone(),
                    });
                }
            }
        }
    }
    Ok(splits)
}

/// The length of `file`. The master knows its last chunk's length only as
/// of the chunkservers' last heartbeats, so what was written since (a file
/// put a moment ago) is read to the end of that chunk and counted.
async fn file_length(
    client: &mut Client,
    file: &FsPath,
    chunk_bytes: u64,
) -> Result<u64, ClientError> {
    let entry = client.open(file).await?;
    let Some(last) = (entry.chunks.len() as u64).checked_sub(1) else {
        return Ok(0);
    };
    let known = entry.length.max(last * chunk_bytes);
    let capacity = (last + 1) * chunk_bytes;
    let mut reader = client.reader(file, known, capacity - known);
    let mut unreported = 0;
    while let Some(bytes) = reader.next().await? {
        unreported += bytes.len() as u64;
    }
    Ok(known + unreported)
}

/// The byte ranges of the chunks of a file of `length` bytes (one empty
/// range for an empty file).
fn chunk_ranges(length: u64, chunk_bytes: u64) -> impl Iterator<Item = (u64, u64)> {
    let count = length.div_ceil(chunk_bytes).max(1);
    (0..count).map(move |i| (i * chunk_bytes, ((i + 1) * chunk_bytes).min(length)))
}

/// `[start, end)` cut into pieces of at most `size` bytes (one empty piece
/// for an empty range).
fn pieces(start: u64, end: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out = vec![(start, size.min(end - start))];
    let mut offset = start + out[0].1;
    while offset < end {
        let length = size.min(end - offset);
        out.push((offset, length));
        offset += length;
    }
    out
}

/// The files an input names: itself, a directory's files, or the files
/// of a directory whose names match a last component with `*` or `?`.
async fn expand(client: &Client, input: &str) -> Result<Vec<FsPath>, StoreError> {
    let path = parse_store_path(input)?;
    let name = path.name().to_string();
    let pattern = (name.contains('*') || name.contains('?')).then(|| glob_regex(&name));
    let (directory, wanted) = match &pattern {
        Some(_) => (path.parent().unwrap_or_else(FsPath::root), true),
        None => (path.clone(), false),
    };
    if !wanted && !client.stat(&path).await?.directory {
        return Ok(vec![path]);
    }
    let mut files: Vec<FsPath> = Vec::new();
    for entry in client.list(&directory).await? {
        let file = parse_store_path(&entry.path)?;
        let matches = pattern.as_ref().is_none_or(|p| p.is_match(file.name()));
        if !entry.directory && matches {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(StoreError::NoMatch {
            input: input.to_string(),
            directory: directory.to_string(),
        });
    }
    files.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(files)
}

/// A regular expression matching the names a glob (`*`, `?`) matches.
fn glob_regex(glob: &str) -> regex::Regex {
    let mut pattern = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => pattern.push_str(".*"),
            '?' => pattern.push('.'),
            c => pattern.push_str(&regex::escape(&c.to_string())),
        }
    }
    pattern.push('$');
    regex::Regex::new(&pattern).expect("an escaped glob is a valid expression")
}

/// Reads the whole lines that start inside `split` of a store file into
/// `data` (cleared first; a worker passes the same buffer for every split,
/// so its pages are mapped once).
pub(crate) async fn read_store_split(
    client: &mut Client,
    split: &Split,
    data: &mut Vec<u8>,
) -> Result<(), StoreError> {
    data.clear();
    let path = parse_store_path(&split.path)?;
    if split.length == 0 {
        return Ok(());
    }
    // One byte before the split tells whether a line starts at its offset.
    let from = split.offset.saturating_sub(1);
    {
        let mut reader = client.reader(&path, from, split.length + (split.offset - from));
        while let Some(piece) = reader.next().await? {
            data.extend_from_slice(&piece);
        }
    }
    let start = if split.offset == 0 {
        0
    } else {
        match memchr::memchr(b'\n', data) {
            Some(newline) => newline + 1,
            None => {
                data.clear();
                return Ok(());
            }
        }
    };
    // The last line runs on past the split to its newline (or the end).
    let mut at = from + data.len() as u64;
    while data.last().is_some_and(|byte| *byte != b'\n') {
        let more = client.read(&path, at, LINE_PROBE_BYTES).await?;
        let Some(newline) = memchr::memchr(b'\n', &more) else {
            data.extend_from_slice(&more);
            if (more.len() as u64) < LINE_PROBE_BYTES {
                break;
            }
            at += more.len() as u64;
            continue;
        };
        data.extend_from_slice(&more[..=newline]);
    }
    if start >= data.len() {
        data.clear();
    } else {
        data.drain(..start);
    }
    Ok(())
}

/// Copies the local file `local` on `disk` to the new store file `to`
/// (`fs://PATH`), a piece at a time, advancing `progress` by the bytes
/// acknowledged.
pub(crate) async fn upload(
    client: &mut Client,
    disk: &dyn Disk,
    local: &Path,
    to: &str,
    progress: &Progress,
) -> Result<(), AppError> {
    let target = parse_store_path(to)?;
    let mut file = disk.open(local, OpenMode::Read)?;
    let length = file.len()?;
    client.create(&target).await?;
    let mut writer = client.writer(&target, 0);
    let mut buffer = vec![0u8; UPLOAD_PIECE_BYTES as usize];
    let mut offset = 0;
    while offset < length {
        let piece = &mut buffer[..UPLOAD_PIECE_BYTES.min(length - offset) as usize];
        file.read_exact_at(offset, piece)?;
        writer.write(piece).await?;
        progress.advance(piece.len() as u64);
        offset += piece.len() as u64;
    }
    writer.finish().await?;
    Ok(())
}

/// The temporary file of a reduce attempt's output `name` in `output_dir`
/// (`fs://OUT`): `OUT/_tmp/NAME.attempt-W-A`.
pub(crate) fn temp_output(output_dir: &str, name: &str, worker: u64, attempt: u32) -> String {
    let dir = output_dir.trim_end_matches('/');
    format!("{dir}/{TEMP_DIR}/{name}.attempt-{worker}-{attempt}")
}

/// The committed output file `name` in `output_dir` (`fs://OUT/NAME`).
pub(crate) fn final_output(output_dir: &str, name: &str) -> String {
    format!("{}/{name}", output_dir.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_never_cross_a_chunk_boundary() {
        let ranges: Vec<_> = chunk_ranges(250, 100).collect();
        assert_eq!(ranges, [(0, 100), (100, 200), (200, 250)]);
        assert_eq!(chunk_ranges(0, 100).collect::<Vec<_>>(), [(0, 0)]);
        assert_eq!(pieces(100, 200, 40), [(100, 40), (140, 40), (180, 20)]);
        assert_eq!(pieces(0, 0, 40), [(0, 0)]);
    }

    #[test]
    fn globs_match_whole_names() {
        let glob = glob_regex("2026-*.log");
        assert!(glob.is_match("2026-01.log"));
        assert!(!glob.is_match("x2026-01.log"));
        assert!(!glob.is_match("2026-01.log.gz"));
        assert!(glob_regex("a?c").is_match("abc"));
        assert!(glob_regex("a.c").is_match("a.c") && !glob_regex("a.c").is_match("abc"));
    }

    #[test]
    fn temporary_and_final_names() {
        assert_eq!(
            temp_output("fs:///out/job/", "mr-out-3", 2, 1),
            "fs:///out/job/_tmp/mr-out-3.attempt-2-1"
        );
        assert_eq!(final_output("fs:///out", "mr-out-3"), "fs:///out/mr-out-3");
        assert_eq!(store_path("fs:///a/b"), Some("/a/b"));
        assert_eq!(store_path("/a/b"), None);
        assert!(parse_store_path("fs://relative").is_err());
    }
}
