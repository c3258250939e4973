//! [`WalError`]: what can go wrong opening or writing the log.

use std::io;
use std::path::{Path, PathBuf};

/// An operating error of the [`Wal`](super::Wal). Caller bugs (an append
/// that leaves a gap, a truncation into the compacted prefix) panic instead.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file or directory operation failed. The log is poisoned afterwards
    /// (see [`WalError::Poisoned`]).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A record that is not the torn tail of the newest segment is damaged,
    /// or the segments do not fit together. Opening refuses to guess:
    /// restore the node from a peer (or a backup).
    #[error("{}: corrupt write-ahead log at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The byte offset of the bad record in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry or state is too large for one record. Nothing was written.
    #[error("a {bytes}-byte record exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The record's encoded size.
        bytes: u64,
        /// [`MAX_RECORD_BYTES`](super::MAX_RECORD_BYTES).
        max: u64,
    },
    /// An earlier write, sync or compaction failed, so what is on disk is
    /// unknown (a failed fsync may have dropped writes). Every later call
    /// fails with this; reopen the log to recover from what is durable.
    #[error("the write-ahead log failed earlier and refuses further use; reopen it")]
    Poisoned,
}

impl WalError {
    /// Whether this error poisons the log it came from.
    pub(crate) fn poisons(&self) -> bool {
        matches!(self, WalError::Io { .. } | WalError::Corrupt { .. })
    }
}

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A [`WalError::Corrupt`] for `path` at `offset`.
pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}
