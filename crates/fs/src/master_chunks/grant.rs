//! Placing and granting chunks (GFS §3.1, §4.2): a new chunk's empty
//! replicas created on the chunkservers with the most free space; and a
//! lease granted in order, so that no client learns of a primary before
//! its version is durable everywhere: the version raised through the log,
//! stored by every up-to-date replica (naming the primary and the
//! secondaries), and only then the lease recorded.

use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{
    CreateReplicaRequest, FsErrorCode, GrantVersion, SetVersionReply, SetVersionRequest,
};
use tokio::time::Instant;
use tonic::Status;

use super::stopped;
use crate::chunk_table::Lease;
use crate::master::MasterServer;
use crate::namespace::ChunkHandle;

/// How often the master tries to have a replica store a new version.
const SET_VERSION_ATTEMPTS: usize = 3;

/// A version raised by [`MasterServer::raise_version`].
pub(crate) struct Raised {
    pub version: u64,
    /// The replicas that stored it, with their lengths.
    pub stored: Vec<(String, u64)>,
    /// Why the others did not.
    pub errors: Vec<String>,
}

impl MasterServer {
    /// Creates a new chunk's empty replicas on up to `replication` live
    /// chunkservers.
    pub(super) async fn place(&self, handle: ChunkHandle) -> Result<(), Status> {
        let now = Instant::now();
        let (servers, (live, full)) = self
            .table
            .with(move |t| (t.placement(now), t.live_and_full(now)))
            .await
            .map_err(stopped)?;
        if servers.is_empty() {
            self.table
                .with(move |t| t.grant_done(handle, None))
                .await
                .map_err(stopped)?;
            if full > 0 {
                return Err(Status::resource_exhausted(format!(
                    "every live chunkserver ({live}) has less than {} bytes free; free space on their disks, raise their --capacity, or start another (cairn fs serve-chunk), then retry (`cairn fs df` shows the space)",
                    self.settings.min_free_bytes
                )));
            }
            return Err(Status::unavailable(
                "no live chunkserver to place a new chunk on; start one (cairn fs serve-chunk) and retry",
            ));
        }
        if servers.len() < self.settings.replication {
            tracing::warn!(
                handle,
                live = servers.len(),
                wanted = self.settings.replication,
                "fewer live chunkservers than the replication asks for; placing on those"
            );
        }
        let calls = servers.iter().map(|url| async move {
            let peer = self.peers.get(url).map_err(|e| e.to_string())?;
            let reply = peer
                .call(CreateReplicaRequest { handle }, |c, r| async move {
                    ChunkClient::new(c).create_replica(r).await
                })
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((url.clone(), reply))
        });
        let results = futures::future::join_all(calls).await;
        let created: Vec<(String, SetVersionReply)> =
            results.iter().filter_map(|r| r.clone().ok()).collect();
        let now = Instant::now();
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        let none = self
            .table
            .with(move |t| {
                for (url, reply) in &created {
                    t.record_replica(url, handle, 0, reply, now);
                }
                t.grant_done(handle, None);
                created.is_empty()
            })
            .await
            .map_err(stopped)?;
        if none {
            return Err(Status::unavailable(format!(
                "no chunkserver created a replica of chunk {handle} ({}); retry",
                errors.join("; ")
            )));
        }
        Ok(())
    }

    /// Grants a new lease on `handle` to `candidates[0]`: version up
    /// through the log, then stored by every candidate.
    pub(super) async fn grant(
        &self,
        handle: ChunkHandle,
        version: u64,
        candidates: Vec<String>,
    ) -> Result<Lease, Status> {
        let result = self.grant_steps(handle, version, &candidates).await;
        let lease = result.as_ref().ok().cloned();
        self.table
            .with(move |t| t.grant_done(handle, lease))
            .await
            .map_err(stopped)?;
        result
    }

    async fn grant_steps(
        &self,
        handle: ChunkHandle,
        version: u64,
        candidates: &[String],
    ) -> Result<Lease, Status> {
        let (primary, secondaries) = (candidates[0].clone(), candidates[1..].to_vec());
        let raised = self
            .raise_version(handle, version, candidates, &primary, &secondaries)
            .await?;
        let (new_version, errors) = (raised.version, raised.errors);
        let now = Instant::now();
        if !errors.is_empty() {
            return Err(Status::unavailable(format!(
                "replicas did not store version {new_version} of chunk {handle} ({}); retry (the next grants leave them out for a lease period)",
                errors.join("; ")
            )));
        }
        Ok(Lease {
            primary,
            secondaries,
            version: new_version,
            expires: now + self.settings.lease,
        })
    }

    /// Raises the version of `handle` from `version` through the log, then
    /// has every one of `replicas` store it (naming `primary`, which may be
    /// none: ""), and records those that did.
    pub(crate) async fn raise_version(
        &self,
        handle: ChunkHandle,
        version: u64,
        replicas: &[String],
        primary: &str,
        secondaries: &[String],
    ) -> Result<Raised, Status> {
        let reply = self
            .submit_internal(Op::GrantVersion(GrantVersion {
                handle,
                expected: version,
                replicas: replicas.to_vec(),
            }))
            .await?;
        if reply.error != FsErrorCode::Ok as i32 {
            return Err(Status::unavailable(format!("{}; retry", reply.message)));
        }
        let new_version = reply.version;
        let calls = replicas.iter().map(|url| {
            let request = SetVersionRequest {
                handle,
                version: new_version,
                primary: primary.to_string(),
                secondaries: secondaries.to_vec(),
            };
            self.store_version(url, request)
        });
        let results = futures::future::join_all(calls).await;
        let now = Instant::now();
        let replies: Vec<(String, SetVersionReply)> =
            results.iter().filter_map(|r| r.clone().ok()).collect();
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        let stored: Vec<(String, u64)> = replies
            .iter()
            .map(|(url, reply)| (url.clone(), reply.length))
            .collect();
        let refused: Vec<String> = replicas
            .iter()
            .filter(|url| !stored.iter().any(|(s, _)| s == *url))
            .cloned()
            .collect();
        self.table
            .with(move |t| {
                for (url, reply) in &replies {
                    t.record_replica(url, handle, new_version, reply, now);
                }
                t.versions_refused(handle, refused, now);
            })
            .await
            .map_err(stopped)?;
        Ok(Raised {
            version: new_version,
            stored,
            errors,
        })
    }

    /// Has the replica at `url` store a new version (retried: storing a
    /// version is idempotent); returns its reply.
    pub(super) async fn store_version(
        &self,
        url: &str,
        request: SetVersionRequest,
    ) -> Result<(String, SetVersionReply), String> {
        let peer = self.peers.get(url).map_err(|e| format!("{url}: {e}"))?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = peer
                .call(request.clone(), |c, r| async move {
                    ChunkClient::new(c).set_version(r).await
                })
                .await;
            match result {
                Ok(reply) => return Ok((url.to_string(), reply)),
                Err(e) if e.outcome_unknown() && attempts < SET_VERSION_ATTEMPTS => {}
                Err(e) => return Err(format!("{url}: {e}")),
            }
        }
    }
}
