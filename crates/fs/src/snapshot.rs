//! The master's snapshot: the [`Namespace`] as bytes, and back.
//!
//! Format (little-endian): the magic `CRNFSNS2`; the next chunk handle;
//! the number of chunks, then each handle and version; the number of
//! entries, then each entry's kind (0 directory, 1 file), its path (length
//! and UTF-8 bytes) and, for a file, its chunk count and handles and its
//! replication goal (u32); last, a CRC32C of everything before it. A
//! snapshot with the magic `CRNFSNS1` (before goals) has no goal after the
//! handles and decodes with every goal 0 (the store's setting). The decoder checks every length against
//! the bytes left before allocating, parses every path, and rebuilds the
//! namespace through its own consistency checks, so a damaged or hostile
//! snapshot is an error, never a panic or a namespace that breaks later.

use std::collections::BTreeMap;

use crate::namespace::{ChunkMeta, Inode, Namespace};
use crate::path::FsPath;

const MAGIC: &[u8; 8] = b"CRNFSNS2";
/// The format before replication goals, still decoded.
const MAGIC_V1: &[u8; 8] = b"CRNFSNS1";

/// Encodes `namespace`.
pub fn encode(namespace: &Namespace) -> Vec<u8> {
    let (entries, chunks, next_handle) = namespace.parts();
    let mut out = Vec::with_capacity(32 + 16 * chunks.len() + 32 * entries.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&next_handle.to_le_bytes());
    out.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
    for (handle, meta) in chunks {
        out.extend_from_slice(&handle.to_le_bytes());
        out.extend_from_slice(&meta.version.to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (path, inode) in entries {
        out.push(match inode {
            Inode::Directory => 0,
            Inode::File { .. } => 1,
        });
        out.extend_from_slice(&(path.as_str().len() as u32).to_le_bytes());
        out.extend_from_slice(path.as_str().as_bytes());
        if let Inode::File { chunks, goal } = inode {
            out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
            for handle in chunks {
                out.extend_from_slice(&handle.to_le_bytes());
            }
            out.extend_from_slice(&goal.to_le_bytes());
        }
    }
    let trailer = crc32c::crc32c(&out);
    out.extend_from_slice(&trailer.to_le_bytes());
    out
}

/// Decodes a snapshot made by [`encode`]; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Namespace, String> {
    let body = bytes
        .len()
        .checked_sub(4)
        .map(|at| bytes.split_at(at))
        .filter(|(body, trailer)| {
            <[u8; 4]>::try_from(*trailer).map(u32::from_le_bytes).ok() == Some(crc32c::crc32c(body))
        })
        .map(|(body, _)| body)
        .ok_or("the snapshot fails its checksum")?;
    let (with_goals, rest) = match (body.strip_prefix(MAGIC), body.strip_prefix(MAGIC_V1)) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => return Err("not a file-store master snapshot (bad magic)".to_string()),
    };
    let mut reader = Reader(rest);
    let next_handle = reader.u64()?;
    let chunk_count = reader.count(16)?;
    let mut chunks = BTreeMap::new();
    for _ in 0..chunk_count {
        let handle = reader.u64()?;
        let version = reader.u64()?;
        if chunks
            .insert(handle, ChunkMeta { version, goal: 0 })
            .is_some()
        {
            return Err(format!("chunk {handle} is listed twice"));
        }
    }
    let entry_count = reader.count(5)?;
    let mut entries = BTreeMap::new();
    for _ in 0..entry_count {
        let kind = reader.take(1)?[0];
        let length = reader.u32()? as usize;
        let path = FsPath::from_bytes(reader.take(length)?).map_err(|e| e.to_string())?;
        let inode = match kind {
            0 => Inode::Directory,
            1 => {
                let count = reader.u32()? as usize;
                if count > reader.0.len() / 8 {
                    return Err(format!("{path} claims more chunks than the snapshot holds"));
                }
                let chunks = (0..count).map(|_| reader.u64()).collect::<Result<_, _>>()?;
                let goal = if with_goals { reader.u32()? } else { 0 };
                Inode::File { chunks, goal }
            }
            other => return Err(format!("{path} has unknown kind {other}")),
        };
        if path.is_root() || entries.insert(path.clone(), inode).is_some() {
            return Err(format!("{path} is listed twice (or is the root)"));
        }
    }
    if !reader.0.is_empty() {
        return Err(format!("{} bytes follow the last entry", reader.0.len()));
    }
    Namespace::from_parts(entries, chunks, next_handle)
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the snapshot ends early".to_string());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A count of items at least `item_bytes` long each, checked against
    /// the bytes left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, String> {
        let count = self.u64()?;
        if count > (self.0.len() / item_bytes) as u64 {
            return Err(format!(
                "a count of {count} is more than the snapshot holds"
            ));
        }
        Ok(count as usize)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Namespace {
        let mut ns = Namespace::new();
        let p = |t: &str| FsPath::parse(t).unwrap();
        ns.mkdir(&p("/logs/2026"), true).unwrap();
        ns.create(&p("/logs/2026/day1")).unwrap();
        let handle = ns.add_chunk(&p("/logs/2026/day1"), 0).unwrap();
        ns.add_chunk(&p("/logs/2026/day1"), 1).unwrap();
        ns.bump_version(handle, 0).unwrap();
        ns.create(&p("/empty")).unwrap();
        ns.set_replication(&p("/logs/2026/day1"), 2).unwrap();
        ns
    }

    #[test]
    fn a_namespace_round_trips() {
        let ns = sample();
        assert_eq!(decode(&encode(&ns)), Ok(ns));
        assert_eq!(decode(&encode(&Namespace::new())), Ok(Namespace::new()));
    }

    /// A snapshot from before replication goals decodes, every goal the
    /// store's setting.
    #[test]
    fn a_snapshot_without_goals_still_decodes() {
        let mut ns = Namespace::new();
        let p = |t: &str| FsPath::parse(t).unwrap();
        ns.mkdir(&p("/logs"), true).unwrap();
        ns.create(&p("/logs/a")).unwrap();
        ns.add_chunk(&p("/logs/a"), 0).unwrap();
        // The version-1 encoding: the same, without the goal after each
        // file's handles.
        let mut old = MAGIC_V1.to_vec();
        old.extend_from_slice(&2u64.to_le_bytes());
        old.extend_from_slice(&1u64.to_le_bytes());
        old.extend_from_slice(&1u64.to_le_bytes());
        old.extend_from_slice(&0u64.to_le_bytes());
        old.extend_from_slice(&2u64.to_le_bytes());
        for (kind, name, chunks) in [(0u8, "/logs", None), (1, "/logs/a", Some(1u64))] {
            old.push(kind);
            old.extend_from_slice(&(name.len() as u32).to_le_bytes());
            old.extend_from_slice(name.as_bytes());
            if let Some(handle) = chunks {
                old.extend_from_slice(&1u32.to_le_bytes());
                old.extend_from_slice(&handle.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&old), Ok(ns));
    }

    #[test]
    fn damage_is_reported() {
        let mut bytes = encode(&sample());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let last = bytes.len() - 5;
        bytes[last] ^= 1;
        assert_eq!(
            decode(&bytes),
            Err("the snapshot fails its checksum".to_string())
        );
        assert!(decode(b"").is_err());
    }

    proptest! {
        /// Any bytes, and any bytes with a valid checksum, decode to an
        /// error or a well-formed namespace; never a panic.
        #[test]
        fn the_decoder_is_total(garbage in proptest::collection::vec(any::<u8>(), 0..300),
                                cut in 0usize..400, flip in 0usize..400) {
            let _ = decode(&garbage);
            let mut signed = MAGIC.to_vec();
            signed.extend_from_slice(&garbage);
            let crc = crc32c::crc32c(&signed);
            signed.extend_from_slice(&crc.to_le_bytes());
            let _ = decode(&signed);
            // A valid snapshot, cut or with a byte changed, re-signed: the
            // structural checks alone must catch it or decode it sanely.
            let valid = encode(&sample());
            let mut body = valid[..valid.len() - 4].to_vec();
            body.truncate(cut.max(8).min(body.len()));
            if flip < body.len() && flip >= 8 { body[flip] ^= 0x01; }
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            if let Ok(ns) = decode(&body) {
                prop_assert_eq!(decode(&encode(&ns)), Ok(ns));
            }
        }
    }
}
