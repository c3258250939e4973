//! [`file_checksum`]: a file's checksum composed from its chunks' (as
//! HDFS's `getFileChecksum`): each chunk's CRC32C comes from a replica that
//! verified every block now (`Inspect`), and the chunks' CRCs are combined
//! into the CRC32C of the file's bytes as a reader sees them (a chunk
//! before the last that is shorter than a chunk reads as zeros up to its
//! end). So equal content gives an equal checksum whichever replicas
//! answered, and it equals `crc32c` of the file's bytes computed anywhere.

use cairn_rpc::fs::InspectReplica;

use crate::client::{ChunkLocation, Client, ClientError};
use crate::fsck::{INSPECT_CALL_TIMEOUT, inspect};
use crate::namespace::ChunkHandle;
use crate::path::FsPath;
use crate::peers::Peers;

/// A file's checksum, and the chunks' it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChecksum {
    /// CRC32C (Castagnoli) of the file's bytes.
    pub crc32c: u32,
    pub length: u64,
    pub chunks: Vec<ChunkChecksum>,
}

/// One chunk's checksum, and the replica that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkChecksum {
    pub handle: ChunkHandle,
    pub crc32c: u32,
    pub length: u64,
    pub url: String,
}

/// The checksum of the file at `path`. Fails, naming the chunk and what
/// each replica answered, if a chunk has no replica that verifies.
pub async fn file_checksum(client: &Client, path: &FsPath) -> Result<FileChecksum, ClientError> {
    let entry = client.open(path).await?;
    let peers = Peers::new(INSPECT_CALL_TIMEOUT);
    let count = entry.chunks.len();
    let mut sum = FileChecksum {
        crc32c: 0,
        length: 0,
        chunks: Vec::with_capacity(count),
    };
    for index in 0..count {
        let location = client.locate(path, index as u64, false).await?;
        let chunk = verified_chunk(&peers, &location, path, index).await?;
        sum.crc32c = crc32c::crc32c_combine(sum.crc32c, chunk.crc32c, chunk.length as usize);
        sum.length += chunk.length;
        if index + 1 < count && chunk.length < client.settings.chunk_bytes {
            let gap = client.settings.chunk_bytes - chunk.length;
            sum.crc32c = append_zeros(sum.crc32c, gap);
            sum.length += gap;
        }
        sum.chunks.push(chunk);
    }
    Ok(sum)
}

/// The checksum of the first replica of the chunk at `location` that
/// verifies now at the version reads are served at.
async fn verified_chunk(
    peers: &Peers,
    location: &ChunkLocation,
    path: &FsPath,
    index: usize,
) -> Result<ChunkChecksum, ClientError> {
    let handle = location.handle;
    let mut answers = Vec::new();
    for url in &location.replicas {
        match inspect(peers, url, vec![handle]).await {
            Ok(replicas) => match replicas.first() {
                Some(replica) if verified(replica, location.version) => {
                    return Ok(ChunkChecksum {
                        handle,
                        crc32c: replica.crc32c,
                        length: replica.length,
                        url: url.clone(),
                    });
                }
                other => answers.push(format!("{url}: {}", why_not(other, location.version))),
            },
            Err(error) => answers.push(format!("{url}: {error}")),
        }
    }
    if location.replicas.is_empty() {
        answers.push("the master knows no live replica".into());
    }
    Err(ClientError::NoGoodReplica(format!(
        "chunk {index} (handle {handle}) of {path} has no replica that verifies ({}); run `cairn fs fsck {path} --locations` to see its replicas",
        answers.join("; ")
    )))
}

fn verified(replica: &InspectReplica, version: u64) -> bool {
    replica.present
        && replica.error.is_empty()
        && replica.corrupt_blocks.is_empty()
        && replica.version >= version
}

/// Why an inspected replica does not count, for the error message.
fn why_not(replica: Option<&InspectReplica>, version: u64) -> String {
    match replica {
        None => "no answer for the chunk".into(),
        Some(r) if !r.present => "holds no replica now".into(),
        Some(r) if !r.corrupt_blocks.is_empty() => {
            format!("blocks {:?} fail their checksums", r.corrupt_blocks)
        }
        Some(r) if !r.error.is_empty() => r.error.clone(),
        Some(r) => format!("stale (version {} < {version})", r.version),
    }
}

/// `crc` extended by `count` zero bytes.
fn append_zeros(mut crc: u32, mut count: u64) -> u32 {
    let zeros = [0u8; 64 << 10];
    while count > 0 {
        let n = count.min(zeros.len() as u64) as usize;
        crc = crc32c::crc32c_append(crc, &zeros[..n]);
        count -= n as u64;
    }
    crc
}
