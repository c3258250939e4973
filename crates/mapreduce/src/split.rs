//! Input splitting (paper §3.1, §4.4): files are cut into splits of about
//! `split_size` bytes; a split owns every line that *starts* inside it, so a
//! line cut by a boundary is read whole by the split where it begins.

use std::io;
use std::path::Path;

use cairn_rpc::mapreduce::Split;
use cairn_storage::{Disk, OpenMode};

/// The default split size, 64 MiB, as in the paper.
pub const DEFAULT_SPLIT_BYTES: u64 = 64 * 1024 * 1024;

/// Cuts `paths` into splits of at most `split_size` bytes (before line
/// alignment). An empty file is one empty split, so it still has a map task.
pub fn plan_splits(disk: &dyn Disk, paths: &[String], split_size: u64) -> io::Result<Vec<Split>> {
    assert!(split_size > 0, "split size must be positive");
    let mut splits = Vec::new();
    for path in paths {
        let len = disk
            .open(Path::new(path), OpenMode::Read)
            .and_then(|file| file.len())
            .map_err(|e| io::Error::new(e.kind(), format!("input file {path}: {e}")))?;
        let mut offset = 0;
        loop {
            let length = split_size.min(len - offset);
            splits.push(Split {
                index: splits.len() as u32,
                path: path.clone(),
                offset,
                length,
            });
            offset += length;
            if offset >= len {
                break;
            }
        }
    }
    Ok(splits)
}

/// Reads the whole lines that start inside `split`.
#[cfg(test)]
pub(crate) fn read_split(disk: &dyn Disk, split: &Split) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    read_split_into(disk, split, &mut data)?;
    Ok(data)
}

/// Reads the whole lines that start inside `split` into `data` (replacing
/// what it held), so that a worker can reuse one buffer for every split instead
/// of mapping fresh pages.
pub(crate) fn read_split_into(
    disk: &dyn Disk,
    split: &Split,
    data: &mut Vec<u8>,
) -> io::Result<()> {
    let mut file = disk.open(Path::new(&split.path), OpenMode::Read)?;
    let len = file.len()?;
    let start = if split.offset == 0 {
        0
    } else {
        match find_newline(&mut *file, split.offset - 1, len)? {
            Some(newline) => newline + 1,
            None => len,
        }
    };
    let nominal_end = (split.offset + split.length).min(len);
    let end = if nominal_end >= len || split.length == 0 {
        nominal_end.max(start).min(len)
    } else {
        match find_newline(&mut *file, nominal_end - 1, len)? {
            Some(newline) => newline + 1,
            None => len,
        }
    };
    if split.length == 0 || start >= end {
        data.clear();
        return Ok(());
    }
    // Only bytes the buffer never held are zeroed first: the read
    // overwrites them all (zeroing a whole split each time cost about 3% of
    // a word count).
    let length = (end - start) as usize;
    data.truncate(length);
    data.resize(length, 0);
    file.read_exact_at(start, data)
}

/// The offset of the first `\n` at or after `from`.
fn find_newline(
    file: &mut dyn cairn_storage::DiskFile,
    from: u64,
    len: u64,
) -> io::Result<Option<u64>> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < len {
        let n = file.read_at(at, &mut buffer)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buffer[..n].iter().position(|byte| *byte == b'\n') {
            return Ok(Some(at + i as u64));
        }
        at += n as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemDisk;

    #[test]
    fn every_line_lands_in_exactly_one_split() {
        let disk = MemDisk::new();
        let text: String = (0..200)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 17)))
            .collect();
        let text = text + "last line without newline";
        let mut file = disk.open(Path::new("in.txt"), OpenMode::Create).unwrap();
        file.write_at(0, text.as_bytes()).unwrap();
        for split_size in [1, 7, 64, 1000, 1 << 20] {
            let splits = plan_splits(&disk, &["in.txt".to_string()], split_size).unwrap();
            let joined: Vec<u8> = splits
                .iter()
                .flat_map(|s| read_split(&disk, s).unwrap())
                .collect();
            assert_eq!(
                String::from_utf8(joined).unwrap(),
                text,
                "split size {split_size}"
            );
        }
        let mut empty = disk.open(Path::new("empty.txt"), OpenMode::Create).unwrap();
        empty.sync().unwrap();
        let splits = plan_splits(&disk, &["empty.txt".to_string()], 10).unwrap();
        assert_eq!(splits.len(), 1);
        assert!(read_split(&disk, &splits[0]).unwrap().is_empty());
    }
}
