//! Snapshots and copy-on-write on the master (GFS §3.4).
//!
//! `Snapshot SRC DST` is a namespace operation (`namespace/sharing.rs`),
//! but before it is logged the leader makes sure no primary can still
//! mutate a chunk of SRC: otherwise a write acknowledged after the
//! snapshot could land in the shared chunk and show in DST. So it takes
//! every chunk of SRC like a grant (a client asking for a lease meanwhile
//! is told to retry), and revokes each live lease by raising the chunk's
//! version with no primary named (the clone's step 2, `master_heal.rs`);
//! only then is the snapshot submitted, and the chunks released.
//!
//! The first write to a shared chunk then finds it shared in `Locate`:
//! the leader logs `CopyOnWrite` (the file gets a new handle that is a
//! copy of the old one), has every chunkserver with a current replica of
//! the old chunk copy it locally (`Chunk.CopyChunk`: no bytes cross the
//! network, as in GFS), logs `CopyDone`, and goes on to grant a lease on
//! the new chunk as for any other. A leader that fails in between leaves
//! the copy pending in the log: the next write does the copies again
//! (each is idempotent), and reads meanwhile go to the old chunk.

use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{
    CopyChunkRequest, CopyDone, CopyOnWrite, FsErrorCode, MasterCommand, MasterReply,
};
use tokio::time::Instant;
use tonic::Status;

use crate::master::{MasterServer, REQUEST_DEADLINE};
use crate::master_chunks::{Found, stopped};
use crate::namespace::ChunkHandle;
use crate::path::FsPath;

/// How often a snapshot revokes its source's leases again when the source
/// gained a chunk meanwhile, before it asks the client to retry.
const SNAPSHOT_ATTEMPTS: usize = 5;

impl MasterServer {
    /// A client's `Snapshot`: revokes the leases on the source's chunks,
    /// then submits it, naming those chunks; again if the source gained a
    /// chunk meanwhile (a writer appending to a file in it adds chunks, and
    /// a new chunk's lease was not revoked).
    pub(crate) async fn snapshot(&self, command: &MasterCommand) -> Result<MasterReply, Status> {
        for _ in 0..SNAPSHOT_ATTEMPTS {
            let reply = self.snapshot_once(command.clone()).await?;
            if reply.error != FsErrorCode::SourceChanged as i32 {
                return Ok(reply);
            }
        }
        Err(Status::unavailable(format!(
            "the source gained chunks during each of {SNAPSHOT_ATTEMPTS} attempts to revoke their leases; retry the snapshot"
        )))
    }

    /// One attempt of [`Self::snapshot`].
    async fn snapshot_once(&self, mut command: MasterCommand) -> Result<MasterReply, Status> {
        let Some(Op::Snapshot(snapshot)) = &mut command.op else {
            unreachable!("called for snapshots only");
        };
        self.leading()?;
        let chunks = match FsPath::from_bytes(&snapshot.src) {
            Ok(src) => self.chunks_with_versions(src).await?,
            // The command itself reports the bad path.
            Err(_) => Vec::new(),
        };
        let handles: Vec<ChunkHandle> = chunks.iter().map(|&(h, _)| h).collect();
        snapshot.revoked_known = true;
        snapshot.revoked = handles.clone();
        let now = Instant::now();
        let taken = {
            let handles = handles.clone();
            self.table
                .with(move |t| {
                    let taken: Vec<ChunkHandle> = handles
                        .iter()
                        .copied()
                        .filter(|&h| t.begin(h, now))
                        .collect();
                    taken
                })
                .await
                .map_err(stopped)?
        };
        let result = if taken.len() < handles.len() {
            Err(Status::unavailable(
                "a lease on a chunk of the source is being granted; retry the snapshot",
            ))
        } else {
            match self.revoke_leases(&chunks).await {
                Ok(()) => self.submit(&command).await,
                Err(status) => Err(status),
            }
        };
        self.table
            .with(move |t| {
                for handle in taken {
                    t.grant_done(handle, None);
                }
            })
            .await
            .map_err(stopped)?;
        result
    }

    /// Every chunk under `src` with its version (none if `src` does not
    /// exist: the command then refuses).
    async fn chunks_with_versions(&self, src: FsPath) -> Result<Vec<(ChunkHandle, u64)>, Status> {
        self.node()
            .read(
                move |s| {
                    let ns = s.namespace();
                    ns.chunks_under(&src)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|h| (h, ns.chunk(h).map_or(0, |m| m.version)))
                        .collect()
                },
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))
    }

    /// Raises the version, naming no primary, of every chunk in `chunks`
    /// a primary may hold a lease on: on its live replicas and on every
    /// holder of the lease. A holder the master does not hear from (the
    /// only replica of a chunk with goal 1, say) refuses the snapshot
    /// before any version moves: it might write on into a chunk the
    /// snapshot would share, and its lease lapses by itself.
    async fn revoke_leases(&self, chunks: &[(ChunkHandle, u64)]) -> Result<(), Status> {
        let now = Instant::now();
        let chunks = chunks.to_vec();
        let lapse = self.settings.lease + self.settings.clock_margin();
        let leased: Vec<(ChunkHandle, u64, Vec<String>)> = self
            .table
            .with(move |t| {
                let mut leased = Vec::new();
                for (handle, version) in chunks {
                    if version == 0 || !t.leased(handle, version, now) {
                        continue;
                    }
                    let mut replicas = t.replicas_at(handle, version, now);
                    for (holder, live) in t.lease_holders(handle, version, now) {
                        if !live {
                            return Err(Status::unavailable(format!(
                                "chunk {handle}'s lease is held by {holder}, which does not answer heartbeats; the lease lapses within {lapse:?}: retry the snapshot then"
                            )));
                        }
                        if !replicas.contains(&holder) {
                            replicas.push(holder);
                        }
                    }
                    leased.push((handle, version, replicas));
                }
                Ok(leased)
            })
            .await
            .map_err(stopped)??;
        for (handle, version, replicas) in leased {
            let raised = self
                .raise_version(handle, version, &replicas, "", &[])
                .await?;
            if !raised.errors.is_empty() {
                return Err(Status::unavailable(format!(
                    "the lease on chunk {handle} could not be revoked ({}); retry the snapshot",
                    raised.errors.join("; ")
                )));
            }
            self.table
                .with(move |t| t.revoke(handle))
                .await
                .map_err(stopped)?;
        }
        Ok(())
    }

    /// Before a write: gives the file its own copy of a shared chunk, and
    /// makes a pending copy's replicas; returns the chunk to write.
    pub(crate) async fn unshare(
        &self,
        path: &FsPath,
        index: u64,
        mut found: Found,
    ) -> Result<Found, Status> {
        if found.shared {
            let reply = self
                .submit_internal(Op::CopyOnWrite(CopyOnWrite {
                    path: path.as_str().as_bytes().to_vec(),
                    index,
                }))
                .await?;
            if reply.error != FsErrorCode::Ok as i32 {
                return Err(Status::unavailable(format!("{}; retry", reply.message)));
            }
            found = self.found(reply.handle, found.count).await?;
        }
        let Some(old) = found.copy_of else {
            return Ok(found);
        };
        self.copy_replicas(old, found.handle, found.version).await?;
        self.submit_internal(Op::CopyDone(CopyDone {
            handle: found.handle,
        }))
        .await?;
        found.copy_of = None;
        Ok(found)
    }

    /// Before a read: a copy not yet made is read from the chunk it copies.
    pub(crate) async fn readable(&self, found: Found) -> Result<Found, Status> {
        match found.copy_of {
            Some(old) => self.found(old, found.count).await,
            None => Ok(found),
        }
    }

    /// `handle` as the namespace has it at a read index.
    async fn found(&self, handle: ChunkHandle, count: u64) -> Result<Found, Status> {
        self.node()
            .read(move |s| Found::of(s, handle, count), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.node().error_status(e))
    }

    /// Has every live, current replica of `old` copied locally to `new`
    /// at `version`; at least one must succeed (the healer restores the
    /// others' count later).
    async fn copy_replicas(
        &self,
        old: ChunkHandle,
        new: ChunkHandle,
        version: u64,
    ) -> Result<(), Status> {
        let source = self.found(old, 0).await?;
        let now = Instant::now();
        let from_version = source.version;
        let holders = self
            .table
            .with(move |t| t.replicas_at(old, from_version, now))
            .await
            .map_err(stopped)?;
        let calls = holders.iter().map(|url| {
            let request = CopyChunkRequest {
                from: old,
                from_version,
                to: new,
                version,
            };
            async move {
                let peer = self.peers.get(url).map_err(|e| format!("{url}: {e}"))?;
                peer.call(request, |c, r| async move {
                    ChunkClient::new(c).copy_chunk(r).await
                })
                .await
                .map(|reply| (url.clone(), reply))
                .map_err(|e| format!("{url}: {e}"))
            }
        });
        let results = futures::future::join_all(calls).await;
        let now = Instant::now();
        let copied: Vec<_> = results.iter().filter_map(|r| r.clone().ok()).collect();
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if copied.is_empty() {
            return Err(Status::unavailable(format!(
                "no replica of chunk {old} at version {from_version} could be copied to chunk {new} ({}); retry",
                if errors.is_empty() {
                    "none is live".to_string()
                } else {
                    errors.join("; ")
                }
            )));
        }
        self.table
            .with(move |t| {
                for (url, reply) in &copied {
                    t.record_replica(url, new, version, reply, now);
                }
            })
            .await
            .map_err(stopped)
    }
}
