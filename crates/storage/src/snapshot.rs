//! [`SnapshotStore`]: the newest Raft snapshot, written atomically.
//!
//! A snapshot (Raft paper §7) is the state machine's state as of a log
//! index, with that index's term; the log before it can then go
//! ([`Wal::compact`](crate::Wal::compact)). The store keeps one snapshot
//! per directory, in a file named `snapshot-{index:016x}-{term:016x}.snap`:
//!
//! ```text
//! offset  size  field (little-endian)
//!      0     8  magic "CAIRNSNP"
//!      8     4  format version (1)
//!     12     8  last included index
//!     20     8  last included term
//!     28     8  data length
//!     36     4  CRC-32 of bytes 8..36 and of the data
//!     40     n  data (opaque)
//! ```
//!
//! [`SnapshotStore::save`] writes a temporary file, syncs it, renames it to
//! its final name and syncs the directory: a crash leaves the old snapshot
//! or the new one, never a mix. Only then are older snapshots deleted.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::{Disk, OpenMode};

/// The first bytes of every snapshot file.
const MAGIC: &[u8; 8] = b"CAIRNSNP";

/// The snapshot file format this code writes and reads.
const VERSION: u32 = 1;

/// Bytes before a snapshot's data.
const HEADER_BYTES: usize = 40;

/// The largest snapshot data: 1 GiB. Saving more is
/// [`SnapshotError::TooLarge`]; a file that claims more is corrupt.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// A snapshot read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The last log index the snapshot includes.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The state machine's snapshot (opaque).
    pub data: Bytes,
}

/// An operating error of the [`SnapshotStore`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A complete (renamed) snapshot file is damaged.
    #[error("{}: corrupt snapshot: {reason}", path.display())]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data is larger than [`MAX_SNAPSHOT_BYTES`]. Nothing was written.
    #[error("a {bytes}-byte snapshot exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The data's size.
        bytes: u64,
        /// [`MAX_SNAPSHOT_BYTES`].
        max: u64,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The snapshots in one directory; see the [module docs](self).
#[derive(Debug)]
pub struct SnapshotStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    /// Index and term of the newest snapshot file.
    latest: Option<(u64, u64)>,
}

impl SnapshotStore {
    /// Opens the store in `dir` (created if missing), removing temporary
    /// files left by a crash during [`save`](Self::save).
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> Result<SnapshotStore, SnapshotError> {
        disk.create_dir_durable(dir).map_err(io_error(dir))?;
        let names = crate::disk::remove_temp_files(&*disk, dir, TEMP_SUFFIX)
            .map_err(|(path, source)| SnapshotError::Io { path, source })?;
        let latest = names.iter().filter_map(|name| parse_name(name)).max();
        Ok(SnapshotStore {
            disk,
            dir: dir.to_path_buf(),
            latest,
        })
    }

    /// Saves a snapshot: writes a temporary file, fsyncs it, renames it to
    /// its final name, syncs the directory, then removes older snapshots.
    ///
    /// # Panics
    ///
    /// If `index` is below the newest saved snapshot's: Raft never moves
    /// its snapshot back.
    pub fn save(&mut self, index: u64, term: u64, data: &[u8]) -> Result<(), SnapshotError> {
        if let Some((latest, _)) = self.latest {
            assert!(
                index >= latest,
                "snapshot at index {index} is older than the saved one at {latest}"
            );
        }
        let bytes = data.len() as u64;
        if bytes > MAX_SNAPSHOT_BYTES {
            return Err(SnapshotError::TooLarge {
                bytes,
                max: MAX_SNAPSHOT_BYTES,
            });
        }
        let path = self.dir.join(file_name(index, term));
        let mut temp_name = file_name(index, term);
        temp_name.push_str(".tmp");
        let temp = self.dir.join(temp_name);
        let mut file = self
            .disk
            .open(&temp, OpenMode::Truncate)
            .map_err(io_error(&temp))?;
        let header = encode_header(index, term, data);
        file.write_at(0, &header).map_err(io_error(&temp))?;
        file.write_at(HEADER_BYTES as u64, data)
            .map_err(io_error(&temp))?;
        file.sync().map_err(io_error(&temp))?;
        drop(file);
        self.disk.rename(&temp, &path).map_err(io_error(&temp))?;
        self.sync_dir()?;
        self.latest = Some((index, term));
        self.remove_others(index, term)
    }

    /// The newest complete snapshot, or `None` if none was saved.
    pub fn load_latest(&self) -> Result<Option<StoredSnapshot>, SnapshotError> {
        let Some((index, term)) = self.latest else {
            return Ok(None);
        };
        let path = self.dir.join(file_name(index, term));
        let bad = |reason: String| SnapshotError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut file = self
            .disk
            .open(&path, OpenMode::Read)
            .map_err(io_error(&path))?;
        let len = file.len().map_err(io_error(&path))?;
        if len < HEADER_BYTES as u64 || len - HEADER_BYTES as u64 > MAX_SNAPSHOT_BYTES {
            return Err(bad(format!("the file is {len} bytes long")));
        }
        let mut buf = vec![0; len as usize];
        file.read_exact_at(0, &mut buf).map_err(io_error(&path))?;
        let header = Header::decode(&buf).map_err(&bad)?;
        if (header.index, header.term) != (index, term) {
            return Err(bad(format!(
                "the header says index {} term {}, the name index {index} term {term}",
                header.index, header.term
            )));
        }
        if header.data_len != len - HEADER_BYTES as u64 {
            return Err(bad(format!(
                "the header says {} bytes of data, the file holds {}",
                header.data_len,
                len - HEADER_BYTES as u64
            )));
        }
        if checksum(&buf[8..36], &buf[HEADER_BYTES..]) != header.crc {
            return Err(bad("checksum mismatch".to_string()));
        }
        let data = Bytes::from(buf).slice(HEADER_BYTES..);
        Ok(Some(StoredSnapshot { index, term, data }))
    }

    /// Index and term of the newest snapshot, if any.
    pub fn latest_meta(&self) -> Option<(u64, u64)> {
        self.latest
    }

    fn sync_dir(&self) -> Result<(), SnapshotError> {
        self.disk.sync_dir(&self.dir).map_err(io_error(&self.dir))
    }

    /// Removes every snapshot file but the one for (`index`, `term`).
    fn remove_others(&self, index: u64, term: u64) -> Result<(), SnapshotError> {
        let names = self.disk.list(&self.dir).map_err(io_error(&self.dir))?;
        let mut removed = false;
        for name in names {
            if parse_name(&name).is_some_and(|meta| meta != (index, term)) {
                let path = self.dir.join(name);
                self.disk.remove_file(&path).map_err(io_error(&path))?;
                removed = true;
            }
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }
}

fn file_name(index: u64, term: u64) -> String {
    format!("{PREFIX}{index:016x}-{term:016x}{SUFFIX}")
}

/// Index and term from a snapshot file name; `None` for other files.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (index, term) = middle.split_once('-')?;
    let number = |digits: &str| {
        let lower_hex = digits
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        (digits.len() == 16 && lower_hex)
            .then(|| u64::from_str_radix(digits, 16).ok())
            .flatten()
    };
    Some((number(index)?, number(term)?))
}

fn checksum(header_fields: &[u8], data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_fields);
    hasher.update(data);
    hasher.finalize()
}

fn encode_header(index: u64, term: u64, data: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&index.to_le_bytes());
    header.extend_from_slice(&term.to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = checksum(&header[8..36], data);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// The fields of a snapshot header.
struct Header {
    index: u64,
    term: u64,
    data_len: u64,
    crc: u32,
}

impl Header {
    /// Decodes the header at the start of `buf` (at least
    /// [`HEADER_BYTES`] long).
    fn decode(buf: &[u8]) -> Result<Header, String> {
        if &buf[0..8] != MAGIC {
            return Err("not a snapshot file (bad magic)".to_string());
        }
        let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!("unknown format version {version}"));
        }
        Ok(Header {
            index: u64_at(12),
            term: u64_at(20),
            data_len: u64_at(28),
            crc: u32_at(36),
        })
    }
}
