//! The backup file: a state machine's snapshot with what it takes to trust
//! and place it — which service it belongs to, the log index and term it
//! covers, its length and a checksum over everything.
//!
//! ```text
//! "CAIRNBAK"                 8 bytes, the magic
//! version                    u32, little-endian (1)
//! kind length, kind          u16, then that many UTF-8 bytes ("kv", ...)
//! index, term                u64 each: the last entry the snapshot covers
//! size                       u64: the number of data bytes
//! data                       the state machine's snapshot
//! crc32c                     u32: CRC-32C of every byte before it
//! ```
//!
//! The file is written as it streams in ([`BackupHeader::encode`], then
//! [`BackupChecksum`] over the header and every chunk) and read whole
//! ([`BackupFile::decode`]), which checks everything before anything is
//! restored: a truncated, damaged or foreign file is refused with what to
//! do, never half-used.

use bytes::{Buf, BufMut, Bytes};

use crate::{LogIndex, Term};

const MAGIC: &[u8; 8] = b"CAIRNBAK";
/// The backup file format this build writes and reads.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// The longest service kind a header may name.
pub(crate) const MAX_KIND_BYTES: usize = 64;
const CHECKSUM_BYTES: usize = 4;

/// What a backup holds, besides its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHeader {
    /// The service the state belongs to ("kv").
    pub kind: String,
    /// The last log index the snapshot covers.
    pub index: LogIndex,
    /// That entry's term.
    pub term: Term,
    /// The number of data bytes.
    pub size: u64,
}

impl BackupHeader {
    /// The header's bytes, the start of the file.
    pub fn encode(&self) -> Vec<u8> {
        let kind = self.kind.as_bytes();
        assert!(kind.len() <= MAX_KIND_BYTES, "a service kind is short");
        let mut out = Vec::with_capacity(8 + 4 + 2 + kind.len() + 24);
        out.extend_from_slice(MAGIC);
        out.put_u32_le(BACKUP_FORMAT_VERSION);
        out.put_u16_le(kind.len() as u16);
        out.extend_from_slice(kind);
        out.put_u64_le(self.index);
        out.put_u64_le(self.term);
        out.put_u64_le(self.size);
        out
    }

    /// Reads a header from the front of `bytes`, leaving the rest.
    fn decode(bytes: &mut &[u8]) -> Result<Self, BackupFileError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(BackupFileError::NotABackup);
        }
        bytes.advance(MAGIC.len());
        let truncated = BackupFileError::Truncated;
        if bytes.remaining() < 6 {
            return Err(truncated);
        }
        let version = bytes.get_u32_le();
        if version != BACKUP_FORMAT_VERSION {
            return Err(BackupFileError::Version(version));
        }
        let kind_len = usize::from(bytes.get_u16_le());
        if kind_len > MAX_KIND_BYTES {
            return Err(BackupFileError::Damaged);
        }
        if bytes.remaining() < kind_len + 24 {
            return Err(truncated);
        }
        let kind =
            String::from_utf8(bytes[..kind_len].to_vec()).map_err(|_| BackupFileError::Damaged)?;
        bytes.advance(kind_len);
        Ok(Self {
            kind,
            index: bytes.get_u64_le(),
            term: bytes.get_u64_le(),
            size: bytes.get_u64_le(),
        })
    }
}

/// The running CRC-32C of a file being written: the header, then each
/// chunk, then [`finish`](Self::finish) gives the trailer.
#[derive(Debug, Default, Clone, Copy)]
pub struct BackupChecksum(u32);

impl BackupChecksum {
    /// Adds `bytes` (written to the file) to the checksum.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }

    /// The file's last four bytes.
    pub fn finish(self) -> [u8; CHECKSUM_BYTES] {
        self.0.to_le_bytes()
    }
}

/// A whole backup, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// Its header.
    pub header: BackupHeader,
    /// The state machine's snapshot.
    pub data: Bytes,
}

impl BackupFile {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.encode();
        out.extend_from_slice(&self.data);
        let mut checksum = BackupChecksum::default();
        checksum.update(&out);
        out.extend_from_slice(&checksum.finish());
        out
    }

    /// Reads and checks a backup of a `kind` service: the magic, the
    /// version, the length, the checksum, then the kind.
    pub fn decode(bytes: &[u8], kind: &str) -> Result<Self, BackupFileError> {
        let mut rest = bytes;
        let header = BackupHeader::decode(&mut rest)?;
        let expected = u64::try_from(rest.len()).unwrap_or(u64::MAX);
        let wanted = header.size.saturating_add(CHECKSUM_BYTES as u64);
        if expected < wanted {
            return Err(BackupFileError::Truncated);
        }
        if expected > wanted {
            return Err(BackupFileError::Damaged);
        }
        let (body, trailer) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        let mut checksum = BackupChecksum::default();
        checksum.update(body);
        if checksum.finish() != trailer {
            return Err(BackupFileError::Damaged);
        }
        if header.kind != kind {
            return Err(BackupFileError::WrongKind {
                found: header.kind,
                expected: kind.to_string(),
            });
        }
        let data = Bytes::copy_from_slice(&rest[..rest.len() - CHECKSUM_BYTES]);
        Ok(Self { header, data })
    }
}

/// Why a backup file cannot be used; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupFileError {
    /// The file does not start as a Cairn backup does.
    #[error(
        "this is not a Cairn backup (it does not start with CAIRNBAK); pass a file written by \
         `cairn kv snapshot save`"
    )]
    NotABackup,
    /// Another format version.
    #[error(
        "this backup has format version {0}, and this cairn reads version \
         {BACKUP_FORMAT_VERSION}; restore it with the cairn release that wrote it"
    )]
    Version(u32),
    /// The file ends early.
    #[error(
        "this backup is truncated (the file ends before its data does); it was not copied whole: \
         copy it again or take a new backup"
    )]
    Truncated,
    /// A byte differs from what was written (the checksum, a length).
    #[error(
        "this backup is damaged (its checksum does not match its bytes); use another copy or \
         take a new backup"
    )]
    Damaged,
    /// A backup of another service.
    #[error(
        "this is a backup of a {found:?} service, not of a {expected:?} one; restore it with \
         that service's command"
    )]
    WrongKind {
        /// The kind the file names.
        found: String,
        /// The kind asked for.
        expected: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BackupFile {
        let data = Bytes::from((0..=255u8).cycle().take(3000).collect::<Vec<u8>>());
        BackupFile {
            header: BackupHeader {
                kind: "kv".into(),
                index: 1234,
                term: 7,
                size: data.len() as u64,
            },
            data,
        }
    }

    #[test]
    fn a_backup_round_trips() {
        let file = sample();
        assert_eq!(BackupFile::decode(&file.encode(), "kv"), Ok(file));
    }

    #[test]
    fn written_in_chunks_it_is_the_same_file() {
        let file = sample();
        let mut streamed = file.header.encode();
        let mut checksum = BackupChecksum::default();
        checksum.update(&streamed);
        for chunk in file.data.chunks(1000) {
            checksum.update(chunk);
            streamed.extend_from_slice(chunk);
        }
        streamed.extend_from_slice(&checksum.finish());
        assert_eq!(streamed, file.encode());
    }

    #[test]
    fn every_damaged_byte_is_refused() {
        let bytes = sample().encode();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            let error = BackupFile::decode(&damaged, "kv").expect_err("a damaged byte is seen");
            assert!(
                matches!(
                    error,
                    BackupFileError::Damaged
                        | BackupFileError::NotABackup
                        | BackupFileError::Truncated
                        | BackupFileError::Version(_)
                ),
                "byte {at}: {error}"
            );
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            let error = BackupFile::decode(&bytes[..len], "kv").expect_err("a short file");
            assert!(
                matches!(
                    error,
                    BackupFileError::Truncated | BackupFileError::NotABackup
                ),
                "{len} bytes: {error}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            BackupFile::decode(&longer, "kv"),
            Err(BackupFileError::Damaged)
        );
    }

    #[test]
    fn a_backup_of_another_service_is_refused() {
        let error = BackupFile::decode(&sample().encode(), "shardctrler").unwrap_err();
        assert_eq!(
            error,
            BackupFileError::WrongKind {
                found: "kv".into(),
                expected: "shardctrler".into()
            }
        );
        assert!(error.to_string().contains("\"kv\" service"), "{error}");
    }

    #[test]
    fn another_version_is_named() {
        let mut bytes = sample().encode();
        bytes[8] = 9;
        let error = BackupFile::decode(&bytes, "kv").unwrap_err();
        assert_eq!(error, BackupFileError::Version(9));
    }
}
