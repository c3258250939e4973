//! How a chunkserver reads (GFS §5.2): a read is planned on the state
//! task (its size, the replica's presence and version), then its file I/O
//! and checksums run off the async workers, many reads side by side; only
//! a read in order with the writes may decide that a replica is corrupt.

use bytes::Bytes;
use cairn_rpc::fs::ReadRequest;
use tonic::Status;

use super::state::status_of;
use super::{ChunkServer, MAX_READ_BYTES, stopped};
use crate::chunk_store::{ChunkError, ReadPlan};

/// Runs a read's file I/O and checksums off the async workers (inline in
/// simulation, which has no threads of its own).
pub(super) async fn run_plan(plan: ReadPlan) -> Result<(Bytes, u64), ChunkError> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(move || plan.run())
            .await
            .unwrap_or_else(|error| Err(std::io::Error::other(error.to_string()).into()))
    }
    #[cfg(madsim)]
    {
        plan.run()
    }
}

impl ChunkServer {
    /// The plan of the read `r` asks for, after the checks every read
    /// passes (its size, the replica's presence and version), taken on the
    /// state task: for the Read RPC and for short-circuit reads alike.
    pub(super) async fn plan_read(&self, r: ReadRequest) -> Result<ReadPlan, Status> {
        if r.length > MAX_READ_BYTES {
            return Err(Status::invalid_argument(format!(
                "a read of {} bytes; reads are limited to {MAX_READ_BYTES}: read in pieces",
                r.length
            )));
        }
        let handle = r.handle;
        self.inner
            .state
            .with(move |s| {
                let replica = s
                    .store
                    .replica(handle)
                    .ok_or(ChunkError::NoSuchChunk(handle))
                    .map_err(status_of)?;
                if replica.version < r.version {
                    return Err(Status::failed_precondition(format!(
                        "the replica of chunk {handle} here is stale (version {} < {}); read another replica",
                        replica.version, r.version
                    )));
                }
                s.store
                    .plan_read(handle, r.offset, r.length)
                    .map_err(status_of)
            })
            .await
            .map_err(stopped)?
    }

    /// Reads again on the state task, in order with the writes: a read
    /// planned off that task can meet bytes a write changed meanwhile, so
    /// only this read decides that a replica is corrupt (and sets it aside).
    pub(super) async fn read_in_order(&self, r: ReadRequest) -> Result<(Bytes, u64), Status> {
        self.inner
            .state
            .with(move |s| {
                let read = s.store.read(r.handle, r.offset, r.length);
                s.checked(r.handle, read).map_err(status_of)
            })
            .await
            .map_err(stopped)?
    }
}
