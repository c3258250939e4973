//! The intermediate file format and the partition function.
//!
//! Map output is a sequence of records, each `varint(key length) key
//! varint(value length) value`, with keys in increasing byte order (a
//! *sorted run*). A map task writes one run per reduce partition; a reducer
//! merges the runs it fetched. Varints are LEB128, so a word-count record is
//! usually the word plus three bytes.

use std::io::{self, BufRead, Write};

/// The lab's `ihash`: FNV-1a 32-bit, masked to 31 bits, so that partitions
/// (and therefore output files) match the 6.824 reference.
pub fn partition_of(key: &[u8], reduces: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash & 0x7fff_ffff) % reduces
}

/// Appends a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends one record.
pub(crate) fn put_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Writes records to a sorted run.
#[derive(Debug)]
pub(crate) struct RunWriter<W: Write> {
    out: W,
    buffer: Vec<u8>,
    /// Bytes written so far.
    pub(crate) bytes: u64,
    /// Records written so far.
    pub(crate) records: u64,
}

/// The run writer's buffer is flushed when it passes this size.
const RUN_WRITER_BUFFER_BYTES: usize = 256 * 1024;

impl<W: Write> RunWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        Self {
            out,
            buffer: Vec::with_capacity(RUN_WRITER_BUFFER_BYTES),
            bytes: 0,
            records: 0,
        }
    }

    pub(crate) fn write(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let before = self.buffer.len();
        put_record(&mut self.buffer, key, value);
        self.bytes += (self.buffer.len() - before) as u64;
        self.records += 1;
        if self.buffer.len() >= RUN_WRITER_BUFFER_BYTES {
            self.out.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Flushes and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&self.buffer)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads records from a sorted run, reusing its key and value buffers.
#[derive(Debug)]
pub(crate) struct RunReader<R: BufRead> {
    input: R,
    /// The current record's key.
    pub(crate) key: Vec<u8>,
    /// The current record's value.
    pub(crate) value: Vec<u8>,
}

/// No key or value in an intermediate file may be longer than this; a
/// longer length means the file is corrupt.
const MAX_FIELD_BYTES: u64 = 1 << 31;

impl<R: BufRead> RunReader<R> {
    pub(crate) fn new(input: R) -> Self {
        Self {
            input,
            key: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Reads the next record into `key` and `value`; false at the end.
    pub(crate) fn advance(&mut self) -> io::Result<bool> {
        let Some(key_len) = self.read_varint(true)? else {
            return Ok(false);
        };
        read_field(&mut self.input, key_len, &mut self.key)?;
        let value_len = self
            .read_varint(false)?
            .expect("read_varint fails instead of ending");
        read_field(&mut self.input, value_len, &mut self.value)?;
        Ok(true)
    }

    fn read_varint(&mut self, end_ok: bool) -> io::Result<Option<u64>> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let mut byte = [0u8];
            if self.input.read(&mut byte)? == 0 {
                if end_ok && shift == 0 {
                    return Ok(None);
                }
                return Err(corrupt("the file ends inside a record"));
            }
            value |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                if value > MAX_FIELD_BYTES {
                    return Err(corrupt("a record length is implausibly large"));
                }
                return Ok(Some(value));
            }
        }
        Err(corrupt("a varint is longer than 10 bytes"))
    }
}

fn read_field(input: &mut impl BufRead, len: u64, field: &mut Vec<u8>) -> io::Result<()> {
    field.clear();
    field.resize(len as usize, 0);
    input.read_exact(field).map_err(|error| match error.kind() {
        io::ErrorKind::UnexpectedEof => corrupt("the file ends inside a record"),
        _ => error,
    })
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt intermediate file: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_the_lab_hash() {
        // FNV-1a of "" is the offset basis; masked and reduced mod 10.
        assert_eq!(partition_of(b"", 10), (0x811c_9dc5u32 & 0x7fff_ffff) % 10);
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(partition_of(b"a", 1 << 31), 0xe40c_292c & 0x7fff_ffff);
    }

    #[test]
    fn records_round_trip_and_truncation_is_an_error() {
        let mut writer = RunWriter::new(Vec::new());
        let long = vec![b'x'; 300];
        writer.write(b"a", b"1").unwrap();
        writer.write(&long, b"").unwrap();
        let bytes = writer.finish().unwrap();
        let mut reader = RunReader::new(&bytes[..]);
        assert!(reader.advance().unwrap());
        assert_eq!((&reader.key[..], &reader.value[..]), (&b"a"[..], &b"1"[..]));
        assert!(reader.advance().unwrap());
        assert_eq!(reader.key, long);
        assert!(!reader.advance().unwrap());

        let mut torn = RunReader::new(&bytes[..bytes.len() - 2]);
        assert!(torn.advance().unwrap());
        assert_eq!(
            torn.advance().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
