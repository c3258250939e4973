//! Re-replication on the target's side (GFS §4.3): the master names a
//! chunk, the version and length to copy and a source holding it; this
//! server reads the replica from the source in pieces of at most
//! [`MAX_READ_BYTES`](super::MAX_READ_BYTES) at that version (the source
//! verifies every block's checksum before it sends a byte, so a corrupt
//! source fails the clone instead of spreading), and only once it holds
//! every byte writes it as a new replica, synced, then answers. Nothing is
//! reported before that: a clone cut short leaves no replica.
//!
//! The copy is held in memory until written (at most one chunk), and at
//! most [`MAX_CLONES_IN_FLIGHT`] clones run here at once; the master keeps
//! its own, lower, bound per chunkserver.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::{CloneRequest, ReadRequest};
use tonic::Status;

use super::{Inner, MAX_MESSAGE_BYTES, MAX_READ_BYTES};

/// The most clones this chunkserver runs at once; beyond it a clone is
/// refused (`RESOURCE_EXHAUSTED`: the master retries later).
pub const MAX_CLONES_IN_FLIGHT: usize = 8;

/// Counts a clone in flight for as long as it lives.
pub(crate) struct CloneSlot<'a>(&'a AtomicUsize);

impl<'a> CloneSlot<'a> {
    pub(crate) fn take(count: &'a AtomicUsize) -> Result<Self, Status> {
        if count.fetch_add(1, Ordering::SeqCst) >= MAX_CLONES_IN_FLIGHT {
            count.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::resource_exhausted(format!(
                "{MAX_CLONES_IN_FLIGHT} clones already run on this chunkserver; retry later"
            )));
        }
        Ok(Self(count))
    }
}

impl Drop for CloneSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks a clone request before anything is read.
pub(crate) fn check(inner: &Inner, request: &CloneRequest) -> Result<(), Status> {
    if request.length > inner.settings.chunk_bytes {
        return Err(Status::invalid_argument(format!(
            "a clone of {} bytes; chunks hold at most {}: check the master's settings",
            request.length, inner.settings.chunk_bytes
        )));
    }
    if request.source == inner.url || request.source.is_empty() {
        return Err(Status::invalid_argument(
            "a clone needs a source other than this chunkserver; name another replica",
        ));
    }
    Ok(())
}

/// Waits as long as `bytes` take at `bytes_per_sec` (0: not at all), so
/// that a clone reads from its source no faster than the setting.
async fn throttle(bytes_per_sec: u64, bytes: usize) {
    if bytes_per_sec > 0 {
        let seconds = bytes as f64 / bytes_per_sec as f64;
        tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
    }
}

/// Reads the whole replica from the source, piece by piece, each at the
/// version asked for, no faster than `clone_bytes_per_sec`.
pub(crate) async fn fetch(inner: &Inner, request: &CloneRequest) -> Result<BytesMut, Status> {
    let source = &request.source;
    let peer = inner
        .peers
        .get(source)
        .map_err(|e| Status::invalid_argument(format!("source {source}: {e}")))?;
    let mut copy = BytesMut::with_capacity(request.length as usize);
    while (copy.len() as u64) < request.length {
        let offset = copy.len() as u64;
        let read = ReadRequest {
            handle: request.handle,
            version: request.version,
            offset,
            length: (request.length - offset).min(MAX_READ_BYTES),
        };
        let reply = peer
            .call(read, |c, r| async move {
                ChunkClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .read(r)
                    .await
            })
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "reading chunk {} from {source} failed ({e}); the master retries from another replica",
                    request.handle
                ))
            })?;
        if reply.version != request.version || reply.data.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{source} holds chunk {} at version {} with {offset} bytes, not version {} with {}; the master must look again",
                request.handle, reply.version, request.version, request.length
            )));
        }
        copy.extend_from_slice(&reply.data);
        throttle(inner.settings.clone_bytes_per_sec, reply.data.len()).await;
    }
    if copy.len() as u64 != request.length {
        return Err(Status::failed_precondition(format!(
            "{source} sent {} bytes of chunk {}, not {}; the master must look again",
            copy.len(),
            request.handle,
            request.length
        )));
    }
    Ok(copy)
}
