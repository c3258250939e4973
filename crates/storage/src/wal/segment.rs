//! Segment files: their names, reading one back into records (with the
//! torn-tail rule), and creating one.

use std::path::{Path, PathBuf};

use crate::wal::error::{WalError, corrupt, io_error};
use crate::wal::record::{BEGIN_RECORD_BYTES, Begin, Decoded, Record, decode};
use crate::{Disk, DiskFile, OpenMode};

/// The suffix of a segment file: `{seq:016x}.wal`.
const SEGMENT_SUFFIX: &str = ".wal";

/// The suffix of a segment being rewritten, before its rename.
pub(crate) const TEMP_SUFFIX: &str = ".wal.tmp";

/// Digits of the hexadecimal sequence number in a segment's name.
const SEQ_DIGITS: usize = 16;

/// The file name of segment `seq`; names sort in sequence order.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:0SEQ_DIGITS$x}{SEGMENT_SUFFIX}")
}

/// The path of segment `seq` in `dir`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_name(seq))
}

/// The path segment `seq` is written at before a rewrite renames it.
pub(crate) fn temp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:0SEQ_DIGITS$x}{TEMP_SUFFIX}"))
}

/// The sequence number in a segment file name, or `None` for other files.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if digits.len() != SEQ_DIGITS || !digits.chars().all(lower_hex) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// A record and where it lies in its file.
#[derive(Debug)]
pub(crate) struct Located<'a> {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) record: Record<'a>,
}

/// A segment read back.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    /// Every valid record, in file order.
    pub(crate) records: Vec<Located<'a>>,
    /// The length of the valid prefix: the end of the last valid record.
    pub(crate) good_len: u64,
    /// Whether bytes after `good_len` were dropped as a torn tail.
    pub(crate) torn: bool,
}

/// Decodes every record of a segment file's contents.
///
/// A record that fails to decode ends the scan. In the newest segment
/// (`is_last`) it is a torn tail, and dropped, when it is what an
/// interrupted append leaves: a prefix of the appended records, then a
/// record the file ends inside, or one that fails a CRC followed by no
/// valid record at all (zeros or garbage where the file system extended the
/// file but lost the data). A bad record with a valid record after it is
/// damage, not a tear: [`WalError::Corrupt`], as is any bad record in an
/// older segment, and a record whose CRCs pass but whose payload does not
/// fit its type.
pub(crate) fn scan<'a>(path: &Path, buf: &'a [u8], is_last: bool) -> Result<Scan<'a>, WalError> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let reason = match decode(&buf[offset..]) {
            Decoded::Record(record, len) => {
                records.push(Located {
                    offset: offset as u64,
                    len: len as u64,
                    record,
                });
                offset += len;
                continue;
            }
            Decoded::Incomplete if is_last => None,
            Decoded::Incomplete => Some("the segment ends inside a record".to_string()),
            Decoded::BadHeader(_) if is_last && !record_follows(buf, offset + 1) => None,
            Decoded::BadHeader(reason) => Some(reason),
            Decoded::BadPayload { len } if is_last && !record_follows(buf, offset + len) => None,
            Decoded::BadPayload { .. } => Some("payload checksum mismatch".to_string()),
            Decoded::Invalid(reason) => Some(reason),
        };
        return match reason {
            None => Ok(Scan {
                records,
                good_len: offset as u64,
                torn: true,
            }),
            Some(reason) => Err(corrupt(path, offset as u64, reason)),
        };
    }
    Ok(Scan {
        records,
        good_len: offset as u64,
        torn: false,
    })
}

/// Whether a record whose CRCs pass starts anywhere at or after `from`.
/// Header CRCs fail fast, so this costs a 9-byte CRC per byte searched.
fn record_follows(buf: &[u8], from: usize) -> bool {
    (from..buf.len()).any(|start| {
        matches!(
            decode(&buf[start..]),
            Decoded::Record(..) | Decoded::Invalid(_)
        )
    })
}

/// Reads a whole file.
pub(crate) fn read_file(disk: &dyn Disk, path: &Path) -> Result<Vec<u8>, WalError> {
    disk.read(path).map_err(io_error(path))
}

/// The begin record at the start of a segment, if it has a valid one.
pub(crate) fn read_begin(disk: &dyn Disk, path: &Path) -> Result<Option<Begin>, WalError> {
    let mut file = disk.open(path, OpenMode::Read).map_err(io_error(path))?;
    let mut buf = [0; BEGIN_RECORD_BYTES];
    let len = file.read_at(0, &mut buf).map_err(io_error(path))?;
    Ok(match decode(&buf[..len]) {
        Decoded::Record(Record::Begin(begin), _) => Some(begin),
        _ => None,
    })
}

/// Creates (or empties) the file at `path`, writes `bytes`, syncs it and
/// its directory.
pub(crate) fn create_file(
    disk: &dyn Disk,
    path: &Path,
    bytes: &[u8],
) -> Result<Box<dyn DiskFile>, WalError> {
    let mut file = disk
        .open(path, OpenMode::Truncate)
        .map_err(io_error(path))?;
    file.write_at(0, bytes).map_err(io_error(path))?;
    file.sync().map_err(io_error(path))?;
    sync_dir(disk, path.parent().unwrap_or(Path::new("")))?;
    Ok(file)
}

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), WalError> {
    disk.sync_dir(dir).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse_back() {
        assert_eq!(segment_name(1), "0000000000000001.wal");
        assert!(segment_name(9) < segment_name(10));
        assert!(segment_name(0xff) < segment_name(0x100));
        for seq in [0, 1, 10, 0xabc, u64::MAX] {
            assert_eq!(parse_segment_name(&segment_name(seq)), Some(seq));
        }
        for other in ["x.wal", "0000000000000001.wal.tmp", "000000000000000G.wal"] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }
}
