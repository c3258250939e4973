//! A replica's bytes on disk (GFS §5.2): a CRC32C per [`BLOCK_BYTES`]
//! block, checked before a byte is returned and before a partly
//! overwritten block is checksummed again; and the metadata file that
//! holds the version, the length and those checksums, itself checksummed.

use std::io;

use cairn_storage::DiskFile;

use super::{BLOCK_BYTES, ChunkError, Replica};
use crate::namespace::ChunkHandle;

/// The first bytes of every metadata file.
const META_MAGIC: &[u8; 8] = b"CRNCHNK1";

/// Checks `blocks`, which start at block `first` of the replica, against
/// `checksums`, the checksums of the replica's blocks from `first` on.
pub(super) fn verify(
    handle: ChunkHandle,
    checksums: &[u32],
    first: u64,
    blocks: &[u8],
) -> Result<(), ChunkError> {
    for (i, block) in blocks.chunks(BLOCK_BYTES as usize).enumerate() {
        if checksums.get(i) != Some(&crc32c::crc32c(block)) {
            return Err(ChunkError::Corrupt {
                handle,
                block: first + i as u64,
            });
        }
    }
    Ok(())
}

/// Whether block `index` of the replica, `block`, matches its checksum.
pub(super) fn block_verifies(replica: &Replica, index: u64, block: &[u8]) -> bool {
    usize::try_from(index)
        .ok()
        .and_then(|index| replica.checksums.get(index))
        == Some(&crc32c::crc32c(block))
}

/// Writes `data` at `offset` of the data `file` (not synced) and updates
/// `replica`'s length and checksums to match (in memory): the blocks it
/// only partly covers are verified first, so a corrupt block is never
/// re-checksummed as if good. The offset is within the chunk (checked).
pub(super) fn write_unsynced(
    file: &mut dyn DiskFile,
    handle: ChunkHandle,
    replica: &mut Replica,
    offset: u64,
    data: &[u8],
) -> Result<(), ChunkError> {
    let end = offset + data.len() as u64;
    let new_length = replica.length.max(end);
    // The changed range, a gap of zeros included, block-aligned.
    let changed_from = offset.min(replica.length);
    let first = changed_from / BLOCK_BYTES;
    let start = first * BLOCK_BYTES;
    let stop = end
        .div_ceil(BLOCK_BYTES)
        .saturating_mul(BLOCK_BYTES)
        .min(new_length);
    // The new contents of those blocks: the old bytes (verified), then
    // zeros for a gap, then the data.
    let mut blocks = vec![0; usize::try_from(stop - start).map_err(io::Error::other)?];
    let old_stop = stop.min(replica.length);
    if old_stop > start {
        let old = &mut blocks[..(old_stop - start) as usize];
        file.read_exact_at(start, old)?;
        verify(handle, &replica.checksums[first as usize..], first, old)?;
    }
    let at = (offset - start) as usize;
    blocks[at..at + data.len()].copy_from_slice(data);
    file.write_at(changed_from, &blocks[(changed_from - start) as usize..])?;
    replica.length = new_length;
    let fresh: Vec<u32> = blocks
        .chunks(BLOCK_BYTES as usize)
        .map(crc32c::crc32c)
        .collect();
    let replaced = first as usize..(first as usize + fresh.len()).min(replica.checksums.len());
    replica.checksums.splice(replaced, fresh);
    debug_assert_eq!(
        replica.checksums.len() as u64,
        new_length.div_ceil(BLOCK_BYTES)
    );
    Ok(())
}

/// The metadata file: magic, handle, version, length, block count, the
/// blocks' CRC32Cs, and a CRC32C of everything before it (little-endian).
pub(super) fn encode_meta(handle: ChunkHandle, replica: &Replica) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + 4 * replica.checksums.len());
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(&handle.to_le_bytes());
    out.extend_from_slice(&replica.version.to_le_bytes());
    out.extend_from_slice(&replica.length.to_le_bytes());
    out.extend_from_slice(&(replica.checksums.len() as u32).to_le_bytes());
    for checksum in &replica.checksums {
        out.extend_from_slice(&checksum.to_le_bytes());
    }
    let trailer = crc32c::crc32c(&out);
    out.extend_from_slice(&trailer.to_le_bytes());
    out
}

/// Decodes a metadata file; `None` if it is not one for `handle` or is
/// damaged in any way.
pub(super) fn decode_meta(handle: ChunkHandle, bytes: &[u8]) -> Option<Replica> {
    let (body, trailer) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(trailer.try_into().ok()?) {
        return None;
    }
    let rest = body.strip_prefix(META_MAGIC)?;
    let (fixed, checksums) = rest.split_at_checked(28)?;
    let u64_at = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(fixed[24..28].try_into().expect("4 bytes")) as usize;
    let (stored_handle, version, length) = (u64_at(0), u64_at(8), u64_at(16));
    if stored_handle != handle
        || checksums.len() != count.checked_mul(4)?
        || count as u64 != length.div_ceil(BLOCK_BYTES)
    {
        return None;
    }
    Some(Replica {
        version,
        length,
        checksums: checksums
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    })
}
