//! The chunkserver's state, owned by one task: the replicas on disk, the
//! pushed data, and what the master said about each chunk (its version,
//! primary and secondaries; for a primary, its lease).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cairn_rpc::fs::{
    ApplyRequest, HeartbeatRequest, LeaseClaim, MutationReply, ReplicaState, SetVersionRequest,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

use crate::chunk_store::{ChunkError, ChunkStore};
use crate::namespace::ChunkHandle;
use crate::push_buffer::PushBuffer;

/// What the master told this chunkserver about one chunk (volatile: lost
/// at a restart, when the replica waits for the next grant).
#[derive(Debug, Clone)]
pub(crate) struct Role {
    pub version: u64,
    pub primary: String,
    pub secondaries: Vec<String>,
    /// As primary: when the lease ends by this server's clock, margin
    /// taken off; `None` until the master first confirms it.
    pub lease_end: Option<Instant>,
    /// As primary: gave the lease up after a failed mutation.
    pub relinquished: bool,
    /// As primary, the last mutation's serial; as secondary, the last
    /// applied.
    pub serial: u64,
}

/// A mutation the primary serializes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MutationKind {
    Write { offset: u64 },
    Append,
}

/// One queued mutation on a primary.
#[derive(Debug)]
pub(crate) struct Mutation {
    pub handle: ChunkHandle,
    pub version: u64,
    pub kind: MutationKind,
    pub data_key: (u64, u64),
    pub reply: tokio::sync::oneshot::Sender<Result<MutationReply, Status>>,
}

/// A mutation the primary made locally, for its secondaries to apply.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub apply: ApplyRequest,
    pub secondaries: Vec<String>,
    pub reply: MutationReply,
}

/// Why the primary could not make a mutation now.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Designated primary, but the lease is not (or no longer) confirmed.
    NeedLease,
    Status(Status),
}

/// Called when a replica accepts a mutation as primary, with (handle,
/// version, this server's URL): a hook for tests that check for split brain.
pub type PrimaryObserver = Arc<dyn Fn(ChunkHandle, u64, &str) + Send + Sync>;

pub(crate) struct ServerState {
    pub url: String,
    pub store: ChunkStore,
    pub buffer: PushBuffer,
    pub roles: BTreeMap<ChunkHandle, Role>,
    /// Per chunk this server is primary of: the queue of its mutations.
    pub pipelines: BTreeMap<ChunkHandle, mpsc::Sender<Mutation>>,
    pub observer: Option<PrimaryObserver>,
}

/// How a refusal for a full disk begins (the handlers add the server and
/// the disk's name).
pub(crate) const DISK_FULL: &str = "no space left on the disk under the replicas";

/// The gRPC status of a replica error, with what to do next.
pub(crate) fn status_of(error: ChunkError) -> Status {
    let message = error.to_string();
    match error {
        ChunkError::NoSuchChunk(_) => Status::not_found(message),
        ChunkError::AlreadyExists(_) => Status::already_exists(message),
        ChunkError::VersionMismatch { .. } => Status::failed_precondition(message),
        ChunkError::BeyondChunk { .. } => Status::out_of_range(message),
        ChunkError::Corrupt { .. } => Status::data_loss(message),
        ChunkError::Io(error) if error.kind() == std::io::ErrorKind::StorageFull => {
            Status::resource_exhausted(format!(
                "{DISK_FULL} ({error}); free space on it: the master places no new chunk here and leaves this replica out of new leases meanwhile; retry"
            ))
        }
        ChunkError::Io(_) => {
            Status::unavailable(format!("{message}; retry, or use another replica"))
        }
    }
}

impl ServerState {
    /// Passes `result` on; if it says the replica of `handle` is corrupt,
    /// first sets the replica aside and forgets its role (no lease claimed,
    /// no mutation taken), so the master stops naming this server for it
    /// and grants the next lease elsewhere.
    pub(crate) fn checked<T>(
        &mut self,
        handle: ChunkHandle,
        result: Result<T, ChunkError>,
    ) -> Result<T, ChunkError> {
        if let Err(ChunkError::Corrupt { .. }) = &result {
            self.store.set_aside(handle);
            self.roles.remove(&handle);
            self.pipelines.remove(&handle);
        }
        result
    }

    /// The role, if this server is the (not relinquished) primary of
    /// `handle` at `version`; else why not.
    pub(crate) fn designated(&self, handle: ChunkHandle, version: u64) -> Result<&Role, Status> {
        match self.roles.get(&handle) {
            Some(role)
                if role.primary == self.url && !role.relinquished && role.version == version =>
            {
                Ok(role)
            }
            Some(role) if role.version != version => Err(Status::failed_precondition(format!(
                "chunk {handle} is at version {} here, the request carries {version}; ask the master for the current primary",
                role.version
            ))),
            _ => Err(Status::failed_precondition(format!(
                "this chunkserver holds no lease on chunk {handle}; ask the master for the current primary"
            ))),
        }
    }

    /// As primary: checks the lease, makes the mutation locally (durably)
    /// and numbers it for the secondaries.
    pub(crate) fn prepare(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        kind: &MutationKind,
        data_key: (u64, u64),
        now: Instant,
    ) -> Result<Prepared, Refusal> {
        let role = self.designated(handle, version).map_err(Refusal::Status)?;
        if role.lease_end.is_none_or(|end| now >= end) {
            return Err(Refusal::NeedLease);
        }
        let secondaries = role.secondaries.clone();
        let chunk_bytes = self.store.chunk_bytes();
        let data = self.buffer.take(data_key).ok_or_else(|| {
            Refusal::Status(Status::not_found(format!(
                "no pushed data {data_key:?} on the primary (expired, or lost with a restart); push it again"
            )))
        })?;
        let length = self
            .store
            .replica(handle)
            .map(|r| r.length)
            .ok_or_else(|| Refusal::Status(status_of(ChunkError::NoSuchChunk(handle))))?;
        let (offset, pad) = match kind {
            MutationKind::Write { offset } => (*offset, false),
            MutationKind::Append if data.len() as u64 > chunk_bytes / 4 => {
                return Err(Refusal::Status(Status::invalid_argument(format!(
                    "a record of {} bytes; records are at most a quarter of a chunk ({} bytes)",
                    data.len(),
                    chunk_bytes / 4
                ))));
            }
            MutationKind::Append => (length, length + data.len() as u64 > chunk_bytes),
        };
        let bytes = if pad {
            Bytes::from(vec![0; (chunk_bytes - offset) as usize])
        } else {
            data
        };
        if !bytes.is_empty() {
            let written = self.store.write(handle, version, offset, &bytes);
            self.checked(handle, written)
                .map_err(|e| Refusal::Status(status_of(e)))?;
        }
        let role = self.roles.get_mut(&handle).expect("checked above");
        role.serial += 1;
        if let Some(observer) = &self.observer {
            observer(handle, version, &self.url);
        }
        Ok(Prepared {
            apply: ApplyRequest {
                handle,
                version,
                primary: self.url.clone(),
                serial: role.serial,
                offset,
                client_id: data_key.0,
                data_id: data_key.1,
                pad,
            },
            secondaries,
            reply: MutationReply {
                offset,
                padded: pad,
            },
        })
    }

    /// As secondary: applies the primary's mutation, once, in its order.
    pub(crate) fn apply(&mut self, request: &ApplyRequest) -> Result<MutationReply, Status> {
        let handle = request.handle;
        let reply = MutationReply {
            offset: request.offset,
            padded: request.pad,
        };
        let role = match self.roles.get(&handle) {
            Some(role) if role.version == request.version && role.primary == request.primary => {
                role
            }
            Some(role) => {
                return Err(Status::failed_precondition(format!(
                    "chunk {handle} here is at version {} with primary {}; a mutation at version {} from {} is refused",
                    role.version, role.primary, request.version, request.primary
                )));
            }
            None => {
                return Err(Status::failed_precondition(format!(
                    "this chunkserver was told of no primary for chunk {handle} (it restarted?); the master must grant a new lease"
                )));
            }
        };
        if request.serial <= role.serial {
            return Ok(reply); // applied already, or superseded
        }
        let chunk_bytes = self.store.chunk_bytes();
        let bytes = if request.pad {
            Bytes::from(vec![0; chunk_bytes.saturating_sub(request.offset) as usize])
        } else {
            let key = (request.client_id, request.data_id);
            self.buffer.take(key).ok_or_else(|| {
                Status::not_found(format!(
                    "no pushed data {key:?} on this secondary; the client must push it again"
                ))
            })?
        };
        if !bytes.is_empty() {
            let written = self
                .store
                .write(handle, request.version, request.offset, &bytes);
            self.checked(handle, written).map_err(status_of)?;
        }
        if let Some(role) = self.roles.get_mut(&handle) {
            role.serial = request.serial;
        }
        Ok(reply)
    }

    /// From the master: the new version, durable, and who is primary.
    pub(crate) fn set_version(&mut self, request: SetVersionRequest) -> Result<u64, Status> {
        let handle = request.handle;
        self.store
            .set_version(handle, request.version)
            .map_err(status_of)?;
        self.pipelines.remove(&handle);
        self.roles.insert(
            handle,
            Role {
                version: request.version,
                primary: request.primary,
                secondaries: request.secondaries,
                lease_end: None,
                relinquished: false,
                serial: 0,
            },
        );
        Ok(self.store.replica(handle).map_or(0, |r| r.length))
    }

    /// Gives up the lease on `handle` (a secondary failed a mutation): the
    /// master grants a new one, with a new version, once it expires.
    pub(crate) fn relinquish(&mut self, handle: ChunkHandle, version: u64) {
        if let Some(role) = self.roles.get_mut(&handle)
            && role.version == version
        {
            role.relinquished = true;
            self.pipelines.remove(&handle);
        }
    }

    /// The report for the masters, and the leases to extend as (handle,
    /// version).
    pub(crate) fn heartbeat(&self, capacity: u64) -> (HeartbeatRequest, Vec<(ChunkHandle, u64)>) {
        let replicas: Vec<ReplicaState> = self
            .store
            .report()
            .into_iter()
            .map(|r| ReplicaState {
                handle: r.handle,
                version: r.version,
                length: r.length,
            })
            .collect();
        let used: u64 = replicas.iter().map(|r| r.length).sum();
        let claims: Vec<LeaseClaim> = self
            .roles
            .iter()
            .filter(|(_, role)| role.primary == self.url && !role.relinquished)
            .map(|(&handle, role)| LeaseClaim {
                handle,
                version: role.version,
                secondaries: role.secondaries.clone(),
            })
            .collect();
        let extend = claims.iter().map(|c| (c.handle, c.version)).collect();
        let request = HeartbeatRequest {
            url: self.url.clone(),
            replicas,
            free_bytes: capacity.saturating_sub(used),
            claims,
            ..HeartbeatRequest::default()
        };
        (request, extend)
    }

    /// Extends the leases the master confirmed, to `end` by this clock.
    pub(crate) fn extend(&mut self, confirmed: &[(ChunkHandle, u64)], end: Instant) {
        for (handle, version) in confirmed {
            if let Some(role) = self.roles.get_mut(handle)
                && role.version == *version
                && !role.relinquished
            {
                role.lease_end = Some(role.lease_end.map_or(end, |old| old.max(end)));
            }
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests;
