//! The chunkserver's state, owned by one task: the replicas on disk, the
//! pushed data, and what the master said about each chunk (its version,
//! primary and secondaries; for a primary, its lease).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::fs::{
    ApplyRequest, CopyChunkRequest, HeartbeatRequest, LeaseClaim, MutationReply, ReplicaState,
    SetVersionReply, SetVersionRequest,
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
    /// When the master named these roles (a primary claims its lease for
    /// one lease period after this, or after its last mutation).
    pub named: Instant,
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

/// A mutation the primary numbered, to make locally (`local`: the offset
/// and bytes, `None` for an empty write) and on its secondaries.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub local: Option<(u64, Bytes)>,
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
    /// When each replica last took a mutation (the scrub leaves busy ones
    /// alone); forgotten at a restart.
    pub mutated: BTreeMap<ChunkHandle, Instant>,
    /// This run of the server (drawn at start) and how many replica
    /// changes the master hears of in replies it has made (creations and
    /// new versions): both go into every report and every such reply, so
    /// the master can tell a report taken before a reply from one taken
    /// after it.
    pub incarnation: u64,
    pub changes: u64,
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
            self.forget_role(handle);
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

    /// As primary: checks the lease and the mutation, picks its offset (an
    /// append's: after mutations numbered but not made yet, which end at
    /// `pending_end`) and numbers it; the caller makes it locally and on
    /// the secondaries.
    pub(crate) fn prepare(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        kind: &MutationKind,
        data_key: (u64, u64),
        now: Instant,
        pending_end: u64,
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
            .map(|r| r.length.max(pending_end))
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
        let end = offset.saturating_add(bytes.len() as u64);
        if end > chunk_bytes {
            return Err(Refusal::Status(status_of(ChunkError::BeyondChunk {
                handle,
                end,
                chunk_bytes,
            })));
        }
        let role = self.roles.get_mut(&handle).expect("checked above");
        role.serial += 1;
        if let Some(observer) = &self.observer {
            observer(handle, version, &self.url);
        }
        Ok(Prepared {
            local: (!bytes.is_empty()).then_some((offset, bytes)),
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

    /// As primary: numbers a batch of one chunk's mutations in their order
    /// (see [`prepare`](Self::prepare)), each refused on its own if it must
    /// be. The caller makes the prepared ones as one batch.
    pub(crate) fn prepare_batch(
        &mut self,
        handle: ChunkHandle,
        requests: &[(u64, MutationKind, (u64, u64))],
        now: Instant,
    ) -> Vec<Result<Prepared, Refusal>> {
        let mut pending_end = 0;
        requests
            .iter()
            .map(|(version, kind, key)| {
                let prepared = self.prepare(handle, *version, kind, *key, now, pending_end)?;
                if let Some((offset, bytes)) = &prepared.local {
                    pending_end = pending_end.max(offset + bytes.len() as u64);
                }
                Ok(prepared)
            })
            .collect()
    }

    /// As secondary: applies a batch of the primary's mutations (ascending
    /// serials), each once, as one write: all of them or none.
    pub(crate) fn apply_batch(&mut self, requests: &[ApplyRequest]) -> Result<(), Status> {
        let Some(first) = requests.first() else {
            return Ok(());
        };
        let (handle, version) = (first.handle, first.version);
        if requests
            .iter()
            .any(|r| r.handle != handle || r.version != version || r.primary != first.primary)
            || requests.windows(2).any(|w| w[0].serial >= w[1].serial)
        {
            return Err(Status::invalid_argument(
                "a batch mixes chunks, versions or primaries, or its serials do not ascend",
            ));
        }
        let last = self.role_for_apply(first)?.serial;
        let fresh: Vec<&ApplyRequest> = requests.iter().filter(|r| r.serial > last).collect();
        let Some(newest) = fresh.last().map(|r| r.serial) else {
            return Ok(()); // applied already, or superseded
        };
        if let Some(missing) = fresh
            .iter()
            .find(|r| !r.pad && !self.buffer.contains((r.client_id, r.data_id)))
        {
            return Err(Status::not_found(format!(
                "no pushed data {:?} on this secondary; the client must push it again",
                (missing.client_id, missing.data_id)
            )));
        }
        let chunk_bytes = self.store.chunk_bytes();
        let writes: Vec<(u64, Bytes)> = fresh
            .iter()
            .map(|r| {
                let bytes = if r.pad {
                    Bytes::from(vec![0; chunk_bytes.saturating_sub(r.offset) as usize])
                } else {
                    self.buffer
                        .take((r.client_id, r.data_id))
                        .expect("checked above")
                };
                (r.offset, bytes)
            })
            .filter(|(_, bytes)| !bytes.is_empty())
            .collect();
        let slices: Vec<(u64, &[u8])> = writes.iter().map(|(o, b)| (*o, &b[..])).collect();
        if !slices.is_empty() {
            self.mutated.insert(handle, Instant::now());
            let written = self.store.write_batch(handle, version, &slices);
            self.checked(handle, written).map_err(status_of)?;
        }
        if let Some(role) = self.roles.get_mut(&handle) {
            role.serial = newest;
        }
        Ok(())
    }

    /// The role under which a secondary applies `request`, or why not.
    fn role_for_apply(&self, request: &ApplyRequest) -> Result<&Role, Status> {
        let handle = request.handle;
        match self.roles.get(&handle) {
            Some(role) if role.version == request.version && role.primary == request.primary => {
                Ok(role)
            }
            Some(role) => Err(Status::failed_precondition(format!(
                "chunk {handle} here is at version {} with primary {}; a mutation at version {} from {} is refused",
                role.version, role.primary, request.version, request.primary
            ))),
            None => Err(Status::failed_precondition(format!(
                "this chunkserver was told of no primary for chunk {handle} (it restarted?); the master must grant a new lease"
            ))),
        }
    }

    /// As secondary: applies the primary's mutation, once, in its order.
    pub(crate) fn apply(&mut self, request: &ApplyRequest) -> Result<MutationReply, Status> {
        self.apply_batch(std::slice::from_ref(request))?;
        Ok(MutationReply {
            offset: request.offset,
            padded: request.pad,
        })
    }

    /// From the master: the new version, durable, and who is primary.
    /// Counts a replica change the master hears of in the reply: the reply
    /// to send, with the replica's `length`.
    pub(crate) fn changed(&mut self, length: u64) -> SetVersionReply {
        self.changes += 1;
        SetVersionReply {
            length,
            incarnation: self.incarnation,
            changes: self.changes,
        }
    }

    pub(crate) fn set_version(
        &mut self,
        request: SetVersionRequest,
    ) -> Result<SetVersionReply, Status> {
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
                named: Instant::now(),
            },
        );
        let length = self.store.replica(handle).map_or(0, |r| r.length);
        Ok(self.changed(length))
    }

    /// Forgets the role and the mutation queue of `handle` (its replica is
    /// being replaced or deleted).
    fn forget_role(&mut self, handle: ChunkHandle) {
        self.roles.remove(&handle);
        self.pipelines.remove(&handle);
    }

    /// Whether a clone of `handle` at `version` and `length` is needed
    /// here: `Ok(false)` if this replica already is that one, an error if
    /// it is newer.
    pub(crate) fn clone_needed(
        &self,
        handle: ChunkHandle,
        version: u64,
        length: u64,
    ) -> Result<bool, Status> {
        match self.store.replica(handle) {
            Some(r) if r.version == version && r.length == length => Ok(false),
            Some(r) if r.version >= version => Err(Status::failed_precondition(format!(
                "the replica of chunk {handle} here is at version {}, not below {version}; the master must look again",
                r.version
            ))),
            _ => Ok(true),
        }
    }

    /// Copy-on-write after a snapshot: copies the replica of `from` here,
    /// which must be at `from_version` (a stale one would miss
    /// acknowledged writes) and verify, to a new replica `to` at `version`.
    /// A retry finds the copy made and answers it again.
    pub(crate) fn copy_local(
        &mut self,
        request: &CopyChunkRequest,
    ) -> Result<SetVersionReply, Status> {
        let from = self.store.replica(request.from).ok_or_else(|| {
            Status::not_found(format!(
                "this chunkserver holds no replica of chunk {}; the master must look again",
                request.from
            ))
        })?;
        if from.version != request.from_version {
            return Err(Status::failed_precondition(format!(
                "the replica of chunk {} here is at version {}, not {}; the master must look again",
                request.from, from.version, request.from_version
            )));
        }
        if let Some(to) = self.store.replica(request.to)
            && to.version == request.version
            && to.length == from.length
        {
            return Ok(self.changed(to.length));
        }
        let read = self.store.read(request.from, 0, from.length);
        let (data, _) = self.checked(request.from, read).map_err(status_of)?;
        self.install(request.to, request.version, &data)
    }

    /// Installs a replica copied from another chunkserver, replacing an
    /// older one here.
    pub(crate) fn install(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        data: &[u8],
    ) -> Result<SetVersionReply, Status> {
        if self.clone_needed(handle, version, data.len() as u64)? {
            self.forget_role(handle);
            self.store
                .install(handle, version, data)
                .map_err(status_of)?;
        }
        Ok(self.changed(data.len() as u64))
    }

    /// Deletes the replicas the leader listed, each only if it is still at
    /// the version listed (one cloned or raised since is kept).
    pub(crate) fn delete_listed(&mut self, listed: &[ReplicaState]) {
        for doomed in listed {
            let handle = doomed.handle;
            if self
                .store
                .replica(handle)
                .is_none_or(|r| r.version != doomed.version)
            {
                continue;
            }
            self.forget_role(handle);
            match self.store.delete(handle) {
                Ok(()) => tracing::info!(
                    handle,
                    version = doomed.version,
                    "replica deleted at the master's word"
                ),
                Err(error) => {
                    tracing::warn!(handle, %error, "deleting a replica failed; the master will ask again")
                }
            }
        }
    }

    /// Whether this server's lease on `handle` (as primary) is live at
    /// `now`; refuses if it is not the designated primary.
    pub(crate) fn lease_live(&self, handle: ChunkHandle, now: Instant) -> Result<bool, Status> {
        let role = self.roles.get(&handle).ok_or_else(|| {
            Status::failed_precondition(format!(
                "this chunkserver holds no lease on chunk {handle}; ask the master for the current primary"
            ))
        })?;
        let role = self.designated(handle, role.version)?;
        Ok(role.lease_end.is_some_and(|end| now < end))
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
    ///
    /// A primary claims its lease only while the chunk is in use: until one
    /// `lease` period has passed since it was named or last mutated (GFS
    /// §3.1: extensions ride on heartbeats "as long as the chunk is being
    /// mutated"). An idle chunk's lease so runs out, and the leader may then
    /// clone it or grant the next writer a new version; a mutation after
    /// that finds no lease and the client asks the master again.
    pub(crate) fn heartbeat(
        &self,
        capacity: u64,
        now: Instant,
        lease: Duration,
    ) -> (HeartbeatRequest, Vec<(ChunkHandle, u64)>) {
        let in_use = |handle: &ChunkHandle, role: &Role| {
            let last = self
                .mutated
                .get(handle)
                .map_or(role.named, |&m| m.max(role.named));
            now < last + lease
        };
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
            .filter(|(handle, role)| {
                role.primary == self.url && !role.relinquished && in_use(handle, role)
            })
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
            incarnation: self.incarnation,
            changes: self.changes,
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
