//! The durable Raft log: a segmented write-ahead log of checksummed
//! records.
//!
//! [`Wal`] keeps what Raft must not forget across a crash (Raft paper §5,
//! Figure 2, "persistent state on all servers"): the log entries and the
//! hard state (`currentTerm`, `votedFor`, and the commit index), both as
//! opaque bytes. The hard state is a record in the log itself, so a batch
//! of entries and the state that goes with it become durable with one fsync
//! ([`Wal::sync`]: group commit).
//!
//! # Files
//!
//! A log directory holds segment files named `{seq:016x}.wal` (lowercase
//! hexadecimal, so names sort in order). Only the newest, the *active*
//! segment, is written; a sync that leaves it longer than
//! [`WalOptions::segment_bytes`] starts the next one. A rewrite (see
//! below) writes `{seq:016x}.wal.tmp` first; opening removes leftovers.
//!
//! # Record format
//!
//! Every record is a 13-byte header and a payload, integers little-endian:
//!
//! ```text
//! offset  size  field
//!      0     4  header CRC: CRC-32 (crc32fast) of bytes 4..13
//!      4     4  payload length
//!      8     1  type
//!      9     4  payload CRC: CRC-32 of the payload
//!     13     n  payload
//! ```
//!
//! | type | record | payload |
//! |---|---|---|
//! | 1 | Begin | seq u64, last index u64, compacted index u64, flags u8 (bit 0: self-contained) |
//! | 2 | Entry | index u64, term u64, data |
//! | 3 | State | the hard state bytes |
//! | 4 | Truncate | first removed index u64 |
//! | 5 | Compact | compacted index u64 |
//!
//! The header has its own CRC so that a damaged length is detected before
//! it is used (a flipped bit in a length could otherwise make a record in
//! the middle of the newest segment look like one the file ends inside: a
//! torn tail), and so that recovery can search the bytes after a bad record
//! for a valid one (telling damage from a tear) at the cost of a 9-byte CRC
//! per byte searched. A record is at most
//! [`MAX_RECORD_BYTES`] long: longer is an error when writing and corruption
//! when reading.
//!
//! Every segment starts with a Begin record: its own sequence number, and
//! where it joins the log (the last index and compacted index when it was
//! started). A segment started by rotation follows it with the current
//! State record, so that older segments can be deleted without losing the
//! state. A *self-contained* segment (a rewrite) holds the whole live log:
//! Begin (joining after the compacted index), State, every live entry.
//!
//! # Replay
//!
//! Opening reads the segments in order and applies their records: an Entry
//! must follow the last index exactly; a Truncate (written by an append
//! whose first index is at or below the last: a Raft conflict, §5.3)
//! removes a suffix; a Compact forgets a prefix; the last State wins. A
//! Begin must agree with the segments before it. Replay starts at the
//! newest self-contained segment, or at the oldest of the newest run of
//! consecutive sequence numbers; the entries before the first replayed
//! segment must all be compacted, otherwise a segment is missing and
//! opening fails with [`WalError::Corrupt`].
//!
//! # Crash guarantees
//!
//! - After [`Wal::sync`] (or [`Wal::compact`]) returns, everything appended,
//!   truncated and set before it is recovered.
//! - Writes not yet synced may be lost, wholly or from some record on:
//!   recovery returns the log as it was after some prefix of the records
//!   written, never a record in part.
//! - Only the newest segment can have a torn tail (older ones were synced
//!   before the next was created). A bad record there is a torn tail when
//!   the file ends inside it, or when no valid record follows it (what is
//!   left is zeros or garbage); recovery drops it and everything after it,
//!   and cuts the file back (durably) so later appends are clean. Every
//!   other bad record is [`WalError::Corrupt`], naming the file and byte
//!   offset: a bad record with a valid one after it, a bad record in an
//!   older segment, segments that do not fit together.
//! - Damage to the very last record of the newest segment cannot be told
//!   from a torn write, so that record is dropped even if it was synced
//!   (etcd's WAL has the same blind spot).
//! - A failed write or fsync poisons the log ([`WalError::Poisoned`]): a
//!   failed fsync may have dropped writes, so the only safe next step is to
//!   reopen and recover from what is durable.
//!
//! # Compaction and disk usage
//!
//! After a snapshot at index `i` is saved, [`Wal::compact`] records
//! `Compact(i)`, syncs, and deletes the oldest segments that hold no live
//! entry and not the latest state. When what remains is mostly dead bytes
//! (entries up to `i`, truncated entries, old states: more than the live
//! bytes and more than [`REWRITE_MIN_DEAD_BYTES`] or a segment), it
//! rewrites the live records into a fresh self-contained segment (write,
//! sync, rename, sync the directory) and deletes all older segments. So
//! the files stay within about twice the live bytes plus 1 MiB plus what
//! was appended since the last compaction. [`Wal::live_bytes`] is the
//! encoded size of the live entries and the state: 6.824's `RaftStateSize`.

mod compact;
mod error;
mod log;
mod record;
mod recovery;
mod replay;
mod segment;

pub use compact::REWRITE_MIN_DEAD_BYTES;
pub use error::WalError;
pub use log::{DEFAULT_SEGMENT_BYTES, Recovered, Wal, WalEntry, WalOptions};
pub use record::{MAX_ENTRY_DATA_BYTES, MAX_RECORD_BYTES};
