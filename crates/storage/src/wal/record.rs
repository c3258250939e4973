//! One record of the log: how it is encoded, and how a byte buffer is
//! decoded back into records. The layout is documented in the
//! [module docs](super).

/// Bytes before a record's payload: header CRC (4), payload length (4),
/// type (1), payload CRC (4).
pub(crate) const HEADER_BYTES: usize = 13;

/// The largest record, header included: 16 MiB. Writing a longer record is
/// [`WalError::RecordTooLarge`](super::WalError::RecordTooLarge); reading a
/// header that claims a longer one is corruption.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// Payload bytes of an entry record before its data: index and term.
pub(crate) const ENTRY_PREFIX_BYTES: usize = 16;

/// Payload bytes of a begin record: sequence number, last index, compacted
/// index, flags.
const BEGIN_PAYLOAD_BYTES: usize = 25;

/// The size of a begin record, which opens every segment.
pub(crate) const BEGIN_RECORD_BYTES: usize = HEADER_BYTES + BEGIN_PAYLOAD_BYTES;

/// The largest entry data that fits in one record.
pub const MAX_ENTRY_DATA_BYTES: usize = MAX_RECORD_BYTES - HEADER_BYTES - ENTRY_PREFIX_BYTES;

const TYPE_BEGIN: u8 = 1;
const TYPE_ENTRY: u8 = 2;
const TYPE_STATE: u8 = 3;
const TYPE_TRUNCATE: u8 = 4;
const TYPE_COMPACT: u8 = 5;

/// Flag bit of [`Begin`]: the segment holds the whole live log.
const FLAG_SELF_CONTAINED: u8 = 1;

/// The first record of every segment: where the segment joins the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Begin {
    /// The segment's sequence number (also its file name).
    pub(crate) seq: u64,
    /// The log's last index when the segment was started (entries up to it
    /// are in earlier segments or compacted).
    pub(crate) last_index: u64,
    /// The log's compacted index when the segment was started.
    pub(crate) compacted_to: u64,
    /// Whether this segment holds the whole live log (state and every entry
    /// after `compacted_to`), so that older segments are garbage.
    pub(crate) self_contained: bool,
}

/// A decoded record; payloads borrow from the buffer they were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// Opens a segment.
    Begin(Begin),
    /// A Raft log entry.
    Entry {
        index: u64,
        term: u64,
        data: &'a [u8],
    },
    /// The Raft hard state (opaque); the last one wins.
    State(&'a [u8]),
    /// Entries at `from` and after are removed (a conflict truncation).
    Truncate { from: u64 },
    /// Entries up to `index` are covered by a snapshot.
    Compact { index: u64 },
}

impl Record<'_> {
    /// The encoded size, header included.
    pub(crate) fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.payload_len()
    }

    fn payload_len(&self) -> usize {
        match self {
            Record::Begin(_) => BEGIN_PAYLOAD_BYTES,
            Record::Entry { data, .. } => ENTRY_PREFIX_BYTES + data.len(),
            Record::State(data) => data.len(),
            Record::Truncate { .. } | Record::Compact { .. } => 8,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Record::Begin(_) => TYPE_BEGIN,
            Record::Entry { .. } => TYPE_ENTRY,
            Record::State(_) => TYPE_STATE,
            Record::Truncate { .. } => TYPE_TRUNCATE,
            Record::Compact { .. } => TYPE_COMPACT,
        }
    }

    /// Appends the encoded record to `out`.
    ///
    /// # Panics
    ///
    /// If the record is longer than [`MAX_RECORD_BYTES`]: callers check
    /// [`encoded_len`](Self::encoded_len) first.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let total = self.encoded_len();
        assert!(
            total <= MAX_RECORD_BYTES,
            "a {total}-byte record exceeds MAX_RECORD_BYTES; callers check the size first"
        );
        let start = out.len();
        out.reserve(total);
        out.extend_from_slice(&[0; HEADER_BYTES]);
        match *self {
            Record::Begin(begin) => {
                out.extend_from_slice(&begin.seq.to_le_bytes());
                out.extend_from_slice(&begin.last_index.to_le_bytes());
                out.extend_from_slice(&begin.compacted_to.to_le_bytes());
                out.push(if begin.self_contained {
                    FLAG_SELF_CONTAINED
                } else {
                    0
                });
            }
            Record::Entry { index, term, data } => {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
                out.extend_from_slice(data);
            }
            Record::State(data) => out.extend_from_slice(data),
            Record::Truncate { from: value } | Record::Compact { index: value } => {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        let payload_len = (total - HEADER_BYTES) as u32;
        let payload_crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
        let header = &mut out[start..start + HEADER_BYTES];
        header[4..8].copy_from_slice(&payload_len.to_le_bytes());
        header[8] = self.kind();
        header[9..13].copy_from_slice(&payload_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&header[4..13]);
        header[0..4].copy_from_slice(&header_crc.to_le_bytes());
    }
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole, valid record of the given encoded length.
    Record(Record<'a>, usize),
    /// The buffer ends inside the header, or inside a payload whose header
    /// is valid.
    Incomplete,
    /// The header fails its CRC, or is valid but impossible (length over
    /// [`MAX_RECORD_BYTES`], unknown type).
    BadHeader(String),
    /// The header is valid and the whole payload present, but the payload
    /// fails its CRC. The record would be `len` bytes long.
    BadPayload { len: usize },
    /// Both CRCs pass but the payload does not fit its type (a bug in the
    /// writer, or a format this reader does not know).
    Invalid(String),
}

/// Decodes the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Decoded::Incomplete;
    };
    let header_crc = read_u32(&header[0..4]);
    if crc32fast::hash(&header[4..13]) != header_crc {
        return Decoded::BadHeader("header checksum mismatch".to_string());
    }
    let payload_len = read_u32(&header[4..8]) as usize;
    let kind = header[8];
    let total = HEADER_BYTES + payload_len;
    if total > MAX_RECORD_BYTES {
        return Decoded::BadHeader(format!(
            "record length {total} exceeds the maximum {MAX_RECORD_BYTES}"
        ));
    }
    if !(TYPE_BEGIN..=TYPE_COMPACT).contains(&kind) {
        return Decoded::BadHeader(format!("unknown record type {kind}"));
    }
    let Some(payload) = buf.get(HEADER_BYTES..total) else {
        return Decoded::Incomplete;
    };
    if crc32fast::hash(payload) != read_u32(&header[9..13]) {
        return Decoded::BadPayload { len: total };
    }
    match parse_payload(kind, payload) {
        Ok(record) => Decoded::Record(record, total),
        Err(reason) => Decoded::Invalid(reason),
    }
}

fn parse_payload(kind: u8, payload: &[u8]) -> Result<Record<'_>, String> {
    let fixed = |expected: usize| {
        if payload.len() == expected {
            Ok(())
        } else {
            Err(format!(
                "record of type {kind} has a {}-byte payload, expected {expected}",
                payload.len()
            ))
        }
    };
    Ok(match kind {
        TYPE_BEGIN => {
            fixed(BEGIN_PAYLOAD_BYTES)?;
            let flags = payload[24];
            if flags & !FLAG_SELF_CONTAINED != 0 {
                return Err(format!("begin record has unknown flags {flags:#x}"));
            }
            Record::Begin(Begin {
                seq: read_u64(&payload[0..8]),
                last_index: read_u64(&payload[8..16]),
                compacted_to: read_u64(&payload[16..24]),
                self_contained: flags & FLAG_SELF_CONTAINED != 0,
            })
        }
        TYPE_ENTRY => {
            if payload.len() < ENTRY_PREFIX_BYTES {
                return Err(format!("entry record payload of {} bytes", payload.len()));
            }
            Record::Entry {
                index: read_u64(&payload[0..8]),
                term: read_u64(&payload[8..16]),
                data: &payload[ENTRY_PREFIX_BYTES..],
            }
        }
        TYPE_STATE => Record::State(payload),
        TYPE_TRUNCATE => {
            fixed(8)?;
            Record::Truncate {
                from: read_u64(payload),
            }
        }
        _ => {
            fixed(8)?;
            Record::Compact {
                index: read_u64(payload),
            }
        }
    })
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut array = [0; 4];
    array.copy_from_slice(bytes);
    u32::from_le_bytes(array)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut array = [0; 8];
    array.copy_from_slice(bytes);
    u64::from_le_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(record: Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        record.encode(&mut out);
        assert_eq!(out.len(), record.encoded_len());
        out
    }

    #[test]
    fn every_record_type_round_trips() {
        let records = [
            Record::Begin(Begin {
                seq: 7,
                last_index: 40,
                compacted_to: 30,
                self_contained: true,
            }),
            Record::Entry {
                index: 41,
                term: 3,
                data: b"put x 1",
            },
            Record::Entry {
                index: 42,
                term: 3,
                data: b"",
            },
            Record::State(b"term 3 vote 1"),
            Record::State(b""),
            Record::Truncate { from: 42 },
            Record::Compact { index: 35 },
        ];
        for record in records {
            let bytes = encoded(record);
            assert_eq!(decode(&bytes), Decoded::Record(record, bytes.len()));
        }
        assert_eq!(
            BEGIN_RECORD_BYTES,
            encoded(Record::Begin(Begin {
                seq: 1,
                last_index: 0,
                compacted_to: 0,
                self_contained: false
            }))
            .len()
        );
    }

    #[test]
    fn every_prefix_is_incomplete_and_every_flip_is_caught() {
        let bytes = encoded(Record::Entry {
            index: 9,
            term: 2,
            data: b"hello world",
        });
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            match decode(&bad) {
                Decoded::BadHeader(_) | Decoded::BadPayload { .. } => {}
                other => panic!("flip at {at} decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn zeros_are_a_bad_header() {
        assert!(matches!(
            decode(&[0; HEADER_BYTES + 8]),
            Decoded::BadHeader(_)
        ));
    }
}
