//! Verifying replicas on demand (`Inspect`, for `cairn fs fsck` and
//! `cairn fs checksum`) and in the background (the scrub: "during idle
//! periods, chunkservers can scan and verify the contents of inactive
//! chunks", GFS §5.2).
//!
//! Both read a replica in pieces of [`PIECE_BLOCKS`] blocks, each piece one
//! message to the state task (so a large chunk never holds it for long),
//! check every block against its checksum with the check a read makes
//! ([`ChunkStore::scan`](crate::ChunkStore::scan)), and compute a CRC32C
//! of the bytes outside the state task. A replica with a bad block, or
//! whose data file is gone, is then set aside as one a read found corrupt:
//! it drops out of the heartbeats, so the master stops naming it.
//!
//! The scrub walks the replicas in handle order, one at a time, skipping
//! those mutated within the last lease period, at a bounded rate (bytes
//! per second; 0 turns it off), and counts the bytes it verified and the
//! corrupt replicas it found for the heartbeats (`cairn fs report`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_rpc::fs::{HeartbeatRequest, InspectReplica};
use tokio::time::Instant;

use super::state::ServerState;
use crate::chunk_store::{BLOCK_BYTES, ChunkError, Scanned};
use crate::namespace::ChunkHandle;
use crate::owner::Owner;

/// The most replicas one `Inspect` request names.
pub const MAX_INSPECT_HANDLES: usize = 64;
/// The blocks one piece of an inspection reads (1 MiB).
const PIECE_BLOCKS: u64 = 16;
/// The scrub's pause after a pass over every replica (or when none is
/// idle).
const SCRUB_PASS_PAUSE: Duration = Duration::from_secs(1);

/// What the scrub has done since the chunkserver started.
#[derive(Debug, Default)]
pub(crate) struct ScrubCounters {
    bytes: AtomicU64,
    corruptions: AtomicU64,
}

impl ScrubCounters {
    /// Adds the figures to a heartbeat.
    pub(crate) fn report(&self, request: &mut HeartbeatRequest) {
        request.scrubbed_bytes = self.bytes.load(Ordering::Relaxed);
        request.scrub_corruptions = self.corruptions.load(Ordering::Relaxed);
    }
}

impl ServerState {
    /// The first replica after `after` not mutated within `idle` of `now`.
    fn scrub_candidate(
        &self,
        mut after: Option<ChunkHandle>,
        now: Instant,
        idle: Duration,
    ) -> Option<ChunkHandle> {
        while let Some(handle) = self.store.next_handle(after) {
            let busy = self
                .mutated
                .get(&handle)
                .is_some_and(|&at| now.saturating_duration_since(at) < idle);
            if !busy {
                return Some(handle);
            }
            after = Some(handle);
        }
        None
    }

    /// Sets aside a replica an inspection found damaged (as a read that
    /// meets a bad block does).
    fn set_aside_damaged(&mut self, handle: ChunkHandle, block: u64) {
        let _ = self.checked::<()>(handle, Err(ChunkError::Corrupt { handle, block }));
    }
}

/// Whether an inspection found the replica damaged (bad blocks, or its
/// data unreadable because its file is gone).
fn damaged(error: &ChunkError) -> bool {
    matches!(error, ChunkError::Io(e) if e.kind() == std::io::ErrorKind::NotFound
        || e.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// Verifies every block of the replica of `handle` now, piece by piece
/// (`bytes_per_sec` above 0: no faster than that), and describes it. A
/// damaged replica is set aside (the `bool`: this one was).
pub(crate) async fn inspect_replica(
    state: &Owner<ServerState>,
    handle: ChunkHandle,
    bytes_per_sec: u64,
) -> (InspectReplica, bool) {
    let mut out = InspectReplica {
        handle,
        ..InspectReplica::default()
    };
    let mut first = 0;
    loop {
        let piece = state
            .with(move |s| s.store.scan(handle, first, PIECE_BLOCKS))
            .await;
        let scanned: Scanned = match piece {
            Err(stopped) => {
                out.error = stopped.to_string();
                return (out, false);
            }
            Ok(Err(ChunkError::NoSuchChunk(_))) if first == 0 => return (out, false),
            Ok(Err(error)) => {
                out.present = true;
                out.error = format!("{error}; it cannot be verified");
                let set_aside = damaged(&error);
                if set_aside {
                    let _ = state
                        .with(move |s| s.set_aside_damaged(handle, first))
                        .await;
                }
                return (out, set_aside);
            }
            Ok(Ok(scanned)) => scanned,
        };
        if first == 0 {
            (out.present, out.version, out.length) = (true, scanned.version, scanned.length);
        } else if (scanned.version, scanned.length) != (out.version, out.length) {
            out.error = format!(
                "the replica of chunk {handle} changed while it was inspected (a write); inspect it again when it is idle"
            );
            return (out, false);
        }
        out.crc32c = crc32c::crc32c_append(out.crc32c, &scanned.bytes);
        out.corrupt_blocks.extend(scanned.corrupt);
        if bytes_per_sec > 0 && !scanned.bytes.is_empty() {
            let seconds = scanned.bytes.len() as f64 / bytes_per_sec as f64;
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        }
        first += PIECE_BLOCKS;
        if first.saturating_mul(BLOCK_BYTES) >= out.length {
            break;
        }
    }
    let Some(&block) = out.corrupt_blocks.first() else {
        return (out, false);
    };
    let _ = state
        .with(move |s| s.set_aside_damaged(handle, block))
        .await;
    (out, true)
}

/// The background scrub: verifies idle replicas, one after another, at
/// `bytes_per_sec`, for as long as the state task runs. `idle`: how long a
/// replica must have taken no mutation.
pub(crate) async fn scrub_loop(
    state: Owner<ServerState>,
    counters: std::sync::Arc<ScrubCounters>,
    bytes_per_sec: u64,
    idle: Duration,
) {
    let mut after = None;
    loop {
        let now = Instant::now();
        let Ok(next) = state
            .with(move |s| s.scrub_candidate(after, now, idle))
            .await
        else {
            return; // the server stopped
        };
        let Some(handle) = next else {
            after = None;
            tokio::time::sleep(SCRUB_PASS_PAUSE).await;
            continue;
        };
        after = Some(handle);
        let (inspected, set_aside) = inspect_replica(&state, handle, bytes_per_sec).await;
        counters
            .bytes
            .fetch_add(inspected.length, Ordering::Relaxed);
        if set_aside {
            counters.corruptions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                handle,
                blocks = ?inspected.corrupt_blocks,
                error = %inspected.error,
                "the scrub found a damaged replica and set it aside"
            );
        }
    }
}
