//! The master's snapshot: the [`Namespace`] as bytes, and back.
//!
//! Format (little-endian): the magic `CRNFSNS3`; the next chunk handle;
//! the number of chunks, then each handle, version, replication goal (u32)
//! and the handle it is a pending copy of (0: none); the number of
//! entries, then each entry's kind (0 directory, 1 file), its path (length
//! and UTF-8 bytes) and, for a file, its chunk count and handles and its
//! replication goal (u32); then the trash: the next deletion id, the number
//! of deletions, and for each its id, deletion time (ms), path, and entry
//! count and entries (encoded as above); last, a CRC32C of everything
//! before it. A chunk's reference count is not stored: decoding counts
//! the files and copies that list it. Older encodings still decode:
//! `CRNFSNS2` (no goals, no copies: every goal 0, the store's setting) and
//! `CRNFSNS1` (neither, and no trash section: an empty trash). The decoder checks every length against
//! the bytes left before allocating, parses every path, and rebuilds the
//! namespace through its own consistency checks, so a damaged or hostile
//! snapshot is an error, never a panic or a namespace that breaks later.

use std::collections::BTreeMap;

use crate::namespace::{ChunkMeta, Inode, Namespace, TrashId, Trashed};
use crate::path::FsPath;

const MAGIC: &[u8; 8] = b"CRNFSNS3";
/// The encoding before replication goals: no goal after a file's handles.
const MAGIC_V2: &[u8; 8] = b"CRNFSNS2";
/// The encoding before the trash: no goals, no trash section.
const MAGIC_V1: &[u8; 8] = b"CRNFSNS1";

/// What an encoding holds besides the entries.
#[derive(Clone, Copy)]
struct Format {
    goals: bool,
    trash: bool,
}

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
        out.extend_from_slice(&meta.goal.to_le_bytes());
        out.extend_from_slice(&meta.copy_of.unwrap_or(0).to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (path, inode) in entries {
        encode_entry(&mut out, path, inode);
    }
    let (trash, next_trash_id) = namespace.trash_parts();
    out.extend_from_slice(&next_trash_id.to_le_bytes());
    out.extend_from_slice(&(trash.len() as u64).to_le_bytes());
    for (id, trashed) in trash {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&trashed.deleted_at_ms.to_le_bytes());
        encode_path(&mut out, &trashed.path);
        out.extend_from_slice(&(trashed.entries.len() as u64).to_le_bytes());
        for (path, inode) in &trashed.entries {
            encode_entry(&mut out, path, inode);
        }
    }
    let trailer = crc32c::crc32c(&out);
    out.extend_from_slice(&trailer.to_le_bytes());
    out
}

fn encode_path(out: &mut Vec<u8>, path: &FsPath) {
    out.extend_from_slice(&(path.as_str().len() as u32).to_le_bytes());
    out.extend_from_slice(path.as_str().as_bytes());
}

fn encode_entry(out: &mut Vec<u8>, path: &FsPath, inode: &Inode) {
    out.push(match inode {
        Inode::Directory => 0,
        Inode::File { .. } => 1,
    });
    encode_path(out, path);
    if let Inode::File { chunks, goal } = inode {
        out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        for handle in chunks {
            out.extend_from_slice(&handle.to_le_bytes());
        }
        out.extend_from_slice(&goal.to_le_bytes());
    }
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
    let formats = [
        (
            MAGIC,
            Format {
                goals: true,
                trash: true,
            },
        ),
        (
            MAGIC_V2,
            Format {
                goals: false,
                trash: true,
            },
        ),
        (
            MAGIC_V1,
            Format {
                goals: false,
                trash: false,
            },
        ),
    ];
    let (rest, format) = formats
        .iter()
        .find_map(|(magic, format)| Some((body.strip_prefix(*magic)?, *format)))
        .ok_or("not a file-store master snapshot (bad magic)")?;
    let mut reader = Reader(rest, format);
    let next_handle = reader.u64()?;
    let chunk_count = reader.count(if format.goals { 28 } else { 16 })?;
    let mut chunks = BTreeMap::new();
    for _ in 0..chunk_count {
        let handle = reader.u64()?;
        let version = reader.u64()?;
        let (goal, copy_of) = if format.goals {
            (reader.u32()?, Some(reader.u64()?).filter(|&h| h != 0))
        } else {
            (0, None)
        };
        let meta = ChunkMeta {
            version,
            goal,
            refs: 0,
            copy_of,
        };
        if chunks.insert(handle, meta).is_some() {
            return Err(format!("chunk {handle} is listed twice"));
        }
    }
    let entry_count = reader.count(5)?;
    let mut entries = BTreeMap::new();
    for _ in 0..entry_count {
        let (path, inode) = reader.entry()?;
        if path.is_root() || entries.insert(path.clone(), inode).is_some() {
            return Err(format!("{path} is listed twice (or is the root)"));
        }
    }
    let trash = if format.trash {
        reader.trash()?
    } else {
        (BTreeMap::new(), 1)
    };
    if !reader.0.is_empty() {
        return Err(format!("{} bytes follow the last entry", reader.0.len()));
    }
    Namespace::from_parts(entries, chunks, next_handle, trash)
}

/// Reads fixed-size fields off the front of a byte slice, in a format.
struct Reader<'a>(&'a [u8], Format);

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

    fn path(&mut self) -> Result<FsPath, String> {
        let length = self.u32()? as usize;
        FsPath::from_bytes(self.take(length)?).map_err(|e| e.to_string())
    }

    /// One entry as [`encode_entry`] wrote it.
    fn entry(&mut self) -> Result<(FsPath, Inode), String> {
        let kind = self.take(1)?[0];
        let path = self.path()?;
        let inode = match kind {
            0 => Inode::Directory,
            1 => {
                let count = self.u32()? as usize;
                if count > self.0.len() / 8 {
                    return Err(format!("{path} claims more chunks than the snapshot holds"));
                }
                let chunks = (0..count).map(|_| self.u64()).collect::<Result<_, _>>()?;
                let goal = if self.1.goals { self.u32()? } else { 0 };
                Inode::File { chunks, goal }
            }
            other => return Err(format!("{path} has unknown kind {other}")),
        };
        Ok((path, inode))
    }

    /// The trash section: its deletions and the next deletion id.
    fn trash(&mut self) -> Result<(BTreeMap<TrashId, Trashed>, TrashId), String> {
        let next_trash_id = self.u64()?;
        let count = self.count(28)?;
        let mut trash = BTreeMap::new();
        for _ in 0..count {
            let id = self.u64()?;
            let deleted_at_ms = self.u64()?;
            let path = self.path()?;
            let entries = (0..self.count(5)?)
                .map(|_| self.entry())
                .collect::<Result<_, _>>()?;
            let trashed = Trashed {
                path,
                deleted_at_ms,
                entries,
            };
            if trash.insert(id, trashed).is_some() {
                return Err(format!("deletion {id} is listed twice"));
            }
        }
        Ok((trash, next_trash_id))
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
        ns.create(&p("/logs/gone")).unwrap();
        ns.add_chunk(&p("/logs/gone"), 0).unwrap();
        ns.trash(&p("/logs/gone"), false, 1_000).unwrap();
        ns.set_replication(&p("/logs/2026/day1"), 2).unwrap();
        ns
    }

    #[test]
    fn a_namespace_round_trips() {
        let ns = sample();
        assert_eq!(decode(&encode(&ns)), Ok(ns));
        assert_eq!(decode(&encode(&Namespace::new())), Ok(Namespace::new()));
    }

    /// The older encodings still decode, every goal the store's setting:
    /// `CRNFSNS2` (no goals) and `CRNFSNS1` (no goals, no trash section:
    /// an empty trash).
    #[test]
    fn older_encodings_still_decode() {
        let mut ns = Namespace::new();
        let p = |t: &str| FsPath::parse(t).unwrap();
        ns.mkdir(&p("/logs"), true).unwrap();
        ns.create(&p("/logs/a")).unwrap();
        ns.add_chunk(&p("/logs/a"), 0).unwrap();
        for (magic, trash) in [(MAGIC_V2, true), (MAGIC_V1, false)] {
            // Next handle 2; one chunk (1 at version 0); two entries.
            let mut old = magic.to_vec();
            for n in [2u64, 1, 1, 0, 2] {
                old.extend_from_slice(&n.to_le_bytes());
            }
            for (kind, name, chunk) in [(0u8, "/logs", None), (1, "/logs/a", Some(1u64))] {
                old.push(kind);
                old.extend_from_slice(&(name.len() as u32).to_le_bytes());
                old.extend_from_slice(name.as_bytes());
                if let Some(handle) = chunk {
                    old.extend_from_slice(&1u32.to_le_bytes());
                    old.extend_from_slice(&handle.to_le_bytes());
                }
            }
            if trash {
                // An empty trash: the next deletion id, no deletions.
                old.extend_from_slice(&1u64.to_le_bytes());
                old.extend_from_slice(&0u64.to_le_bytes());
            }
            let crc = crc32c::crc32c(&old);
            old.extend_from_slice(&crc.to_le_bytes());
            assert_eq!(
                decode(&old),
                Ok(ns.clone()),
                "{}",
                String::from_utf8_lossy(magic)
            );
        }
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
