//! The master's chunk requests: `Locate` (where a chunk is, its primary
//! under a lease, granting one if needed: GFS §3.1, §4.5) and `Heartbeat`
//! (chunkservers' reports, lease extensions, higher versions adopted).
//!
//! The order of a grant, so that no client learns of a primary before its
//! version is durable everywhere: the version is raised through the log
//! (`GrantVersion`), then every up-to-date replica stores it (`SetVersion`,
//! naming the primary and the secondaries), and only then the lease is
//! recorded and the client answered. If any replica fails to store it, no
//! lease results and the client retries (a new grant, a new version).
//!
//! A primary's lease runs from when *it* sent the heartbeat that the leader
//! confirmed with a read index begun after the heartbeat arrived, so the
//! lease ends at the primary before it ends at this leader and before any
//! later leader could grant another (which first waits one lease period).

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{
    AddChunk, AdoptVersion, CreateReplicaRequest, FsErrorCode, GrantVersion, HeartbeatReply,
    HeartbeatRequest, LocateReply, LocateRequest, MasterCommand, MasterReply, SafemodeReply,
    SafemodeRequest, SetVersionReply, SetVersionRequest,
};
use cairn_rsm::SubmitError;
use prost::Message as _;
use tokio::time::Instant;
use tonic::Status;

use crate::chunk_table::{Decision, Lease};
use crate::master::{MasterServer, REQUEST_DEADLINE};
use crate::master_state::{MasterState, error_code};
use crate::namespace::{ChunkHandle, FsError, Inode};
use crate::path::FsPath;

/// The most chunks one locate adds to reach the index asked for.
pub const MAX_CHUNKS_ADDED_AT_ONCE: u64 = 1024;
/// How often the master tries to have a replica store a new version.
const SET_VERSION_ATTEMPTS: usize = 3;
/// How many decisions one locate goes through (place, then grant).
const MAX_LOCATE_ROUNDS: usize = 3;

/// A version raised by [`MasterServer::raise_version`].
pub(crate) struct Raised {
    pub version: u64,
    /// The replicas that stored it, with their lengths.
    pub stored: Vec<(String, u64)>,
    /// Why the others did not.
    pub errors: Vec<String>,
}

/// A chunk as the log has it.
pub(crate) struct Found {
    pub handle: ChunkHandle,
    pub version: u64,
    /// The file's chunk count.
    pub count: u64,
    /// The replicas its latest version was granted to.
    pub granted: Vec<String>,
    /// Listed by more than one file (a snapshot's): copy before writing.
    pub shared: bool,
    /// A copy-on-write copy not yet made: the chunk it copies.
    pub copy_of: Option<ChunkHandle>,
}

impl Found {
    /// `handle` as the namespace has it now.
    pub(crate) fn of(state: &MasterState, handle: ChunkHandle, count: u64) -> Self {
        let ns = state.namespace();
        let meta = ns.chunk(handle).ok();
        Found {
            handle,
            version: meta.map_or(0, |m| m.version),
            count,
            granted: state.granted_to(handle).to_vec(),
            shared: ns.is_shared(handle),
            copy_of: meta.and_then(|m| m.copy_of),
        }
    }
}

fn refused(code: FsErrorCode, message: impl ToString) -> LocateReply {
    LocateReply {
        error: code as i32,
        message: message.to_string(),
        ..LocateReply::default()
    }
}

pub(crate) fn stopped(error: crate::owner::Stopped) -> Status {
    Status::unavailable(error.to_string())
}

impl MasterServer {
    pub(crate) fn leading(&self) -> Result<u64, Status> {
        let status = self.node().status();
        if status.leader != Some(status.id) {
            return Err(self.node().error_status(SubmitError::NotLeader {
                hint: status.leader,
            }));
        }
        Ok(status.term)
    }

    /// Submits a command of the master's own (no session; see
    /// `master_state::internal`).
    pub(crate) async fn submit_internal(&self, op: Op) -> Result<MasterReply, Status> {
        let command = MasterCommand {
            op: Some(op),
            ..MasterCommand::default()
        };
        let output = self
            .node()
            .submit(Bytes::from(command.encode_to_vec()), REQUEST_DEADLINE)
            .await
            .map_err(|e| self.node().error_status(e))?;
        MasterReply::decode(output)
            .map_err(|e| Status::internal(format!("bad reply from the master's state: {e}")))
    }

    /// `Locate`: on the leader only.
    pub(crate) async fn handle_locate(
        &self,
        request: LocateRequest,
    ) -> Result<LocateReply, Status> {
        let term = self.leading()?;
        let now = Instant::now();
        self.table
            .with(move |t| t.observe_term(term, now))
            .await
            .map_err(stopped)?;
        let path = match FsPath::from_bytes(&request.path) {
            Ok(path) => path,
            Err(error) => return Ok(refused(FsErrorCode::InvalidPath, error)),
        };
        let found = match self.chunk_of(&path, request.index, request.add).await? {
            Ok(found) => found,
            Err(reply) => return Ok(reply),
        };
        // A shared chunk is copied before a write; a copy not yet made is
        // read from the chunk it copies (the same bytes).
        let found = if request.mutate {
            self.unshare(&path, request.index, found).await?
        } else {
            self.readable(found).await?
        };
        let Found {
            handle,
            version,
            count,
            granted,
            ..
        } = found;
        for _ in 0..MAX_LOCATE_ROUNDS {
            let now = Instant::now();
            if !request.mutate {
                let granted = granted.clone();
                match self
                    .locate_read(handle, version, count, granted, now)
                    .await?
                {
                    Some(reply) => return Ok(reply),
                    None => continue,
                }
            }
            let decision = self
                .table
                .with({
                    let granted = granted.clone();
                    move |t| t.decide(handle, version, &granted, now)
                })
                .await
                .map_err(stopped)?;
            let lease = match decision {
                Decision::Wait(message) => return Err(Status::unavailable(message)),
                Decision::Place => {
                    self.place(handle).await?;
                    continue;
                }
                Decision::Grant(candidates) => self.grant(handle, version, candidates).await?,
                Decision::Lease(lease) => lease,
            };
            let now = Instant::now();
            return Ok(LocateReply {
                handle,
                version: lease.version,
                primary: lease.primary,
                replicas: lease.secondaries,
                valid_ms: lease.expires.saturating_duration_since(now).as_millis() as u64,
                chunk_count: count,
                ..LocateReply::default()
            });
        }
        Err(Status::unavailable(format!(
            "chunk {handle} could not be placed and leased in one request; retry"
        )))
    }

    /// Where a read of `handle` may go; `None` once the chunk was placed
    /// (decide again).
    async fn locate_read(
        &self,
        handle: ChunkHandle,
        version: u64,
        count: u64,
        granted: Vec<String>,
        now: Instant,
    ) -> Result<Option<LocateReply>, Status> {
        let found = self
            .table
            .with(
                move |t| match t.read_decision(handle, version, &granted, now) {
                    Err(Decision::Place) if !t.begin(handle, now) => Err(Decision::Wait(format!(
                        "chunk {handle} is being placed; retry"
                    ))),
                    other => other,
                },
            )
            .await
            .map_err(stopped)?;
        match found {
            Ok((replicas, read_version)) => Ok(Some(LocateReply {
                handle,
                version: read_version,
                replicas,
                valid_ms: self.settings.lease.as_millis() as u64,
                chunk_count: count,
                ..LocateReply::default()
            })),
            Err(Decision::Place) => self.place(handle).await.map(|()| None),
            Err(Decision::Wait(message)) => Err(Status::unavailable(message)),
            Err(other) => Err(Status::internal(format!(
                "a read of chunk {handle} decided {other:?}; retry"
            ))),
        }
    }

    /// The handle and version of chunk `index` of `path` and the file's
    /// chunk count, adding chunks up to `index` if `add`; or the refusal.
    async fn chunk_of(
        &self,
        path: &FsPath,
        index: u64,
        add: bool,
    ) -> Result<Result<Found, LocateReply>, Status> {
        let at = path.clone();
        let found = self
            .node()
            .read(
                move |s| -> Result<(u64, Option<Found>), FsError> {
                    let ns = s.namespace();
                    let Inode::File { chunks, .. } = ns.get(&at)? else {
                        return Err(FsError::IsADirectory(at.clone()));
                    };
                    let count = chunks.len() as u64;
                    let chunk = usize::try_from(index)
                        .ok()
                        .and_then(|i| chunks.get(i))
                        .map(|&handle| Found::of(s, handle, count));
                    Ok((count, chunk))
                },
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        let (count, chunk) = match found {
            Ok(found) => found,
            Err(error) => return Ok(Err(refused(error_code(&error), error))),
        };
        if let Some(found) = chunk {
            return Ok(Ok(found));
        }
        if !add {
            return Ok(Err(refused(
                FsErrorCode::NoSuchChunk,
                format!("{path} has {count} chunks; chunk {index} does not exist"),
            )));
        }
        if index - count >= MAX_CHUNKS_ADDED_AT_ONCE {
            return Ok(Err(refused(
                FsErrorCode::FileTooLarge,
                format!(
                    "{path} has {count} chunks; adding up to chunk {index} would add more than {MAX_CHUNKS_ADDED_AT_ONCE} at once: write the file in order"
                ),
            )));
        }
        let mut handle = 0;
        for i in count..=index {
            let reply = self
                .submit_internal(Op::AddChunk(AddChunk {
                    path: path.as_str().as_bytes().to_vec(),
                    index: i,
                }))
                .await?;
            if reply.error != FsErrorCode::Ok as i32 {
                return Ok(Err(refused(
                    FsErrorCode::try_from(reply.error).unwrap_or(FsErrorCode::UnknownCommand),
                    reply.message,
                )));
            }
            handle = reply.handle;
        }
        Ok(Ok(Found {
            handle,
            version: 0,
            count: index + 1,
            granted: Vec::new(),
            shared: false,
            copy_of: None,
        }))
    }

    /// Creates a new chunk's empty replicas on up to `replication` live
    /// chunkservers.
    async fn place(&self, handle: ChunkHandle) -> Result<(), Status> {
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
    async fn grant(
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
                "replicas did not store version {new_version} of chunk {handle} ({}); retry (the next grant leaves them out once they stop reporting)",
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
        let stored = replies
            .iter()
            .map(|(url, reply)| (url.clone(), reply.length))
            .collect();
        self.table
            .with(move |t| {
                for (url, reply) in &replies {
                    t.record_replica(url, handle, new_version, reply, now);
                }
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
    async fn store_version(
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

    /// While safemode waits for its threshold: counts the namespace's
    /// chunks that have a reported replica (a read index, then one pass over
    /// the reports); afterwards only logs safemode's end.
    async fn count_reports(&self, now: Instant) -> Result<(), Status> {
        let counting = self
            .table
            .with(move |t| {
                t.announce_safemode(now);
                t.safemode_counting(now)
            })
            .await
            .map_err(stopped)?;
        if !counting {
            return Ok(());
        }
        let chunks: Vec<(ChunkHandle, u64)> = self
            .node()
            .read(
                |s| {
                    // A chunk still at version 0 was never granted a lease,
                    // so it holds no acknowledged byte: waiting for its
                    // report (it may have no replica at all, if placing it
                    // failed) would only hold safemode to its timeout.
                    s.namespace()
                        .chunks()
                        .filter(|(_, m)| m.version > 0)
                        .map(|(h, m)| (h, m.version))
                        .collect()
                },
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        let now = Instant::now();
        self.table
            .with(move |t| t.count_reports(&chunks, now))
            .await
            .map_err(stopped)
    }

    /// `Safemode`: on the leader only; an operator's enter or leave, then
    /// the state.
    pub(crate) async fn handle_safemode(
        &self,
        request: SafemodeRequest,
    ) -> Result<SafemodeReply, Status> {
        if request.enter && request.leave {
            return Err(Status::invalid_argument(
                "asked to enter and to leave safemode at once; ask for one",
            ));
        }
        let term = self.leading()?;
        let now = Instant::now();
        let status = self
            .table
            .with(move |t| {
                t.observe_term(term, now);
                if request.enter || request.leave {
                    t.set_safemode(request.enter);
                }
                t.safemode_status(now)
            })
            .await
            .map_err(stopped)?;
        Ok(SafemodeReply {
            on: status.on,
            manual: status.manual,
            reason: status.reason,
            reported_chunks: status.count.reported,
            total_chunks: status.count.total,
        })
    }

    /// `Heartbeat`: every node records the report; the leader also adopts
    /// higher versions and extends the leases claimed.
    pub(crate) async fn handle_heartbeat(
        &self,
        report: HeartbeatRequest,
    ) -> Result<HeartbeatReply, Status> {
        let now = Instant::now();
        let recorded = report.clone();
        self.table
            .with(move |t| t.record_heartbeat(&recorded, now))
            .await
            .map_err(stopped)?;
        let Ok(term) = self.leading() else {
            return Ok(HeartbeatReply::default());
        };
        self.table
            .with(move |t| t.observe_term(term, now))
            .await
            .map_err(stopped)?;
        self.count_reports(now).await?;
        let handles: Vec<ChunkHandle> = report.replicas.iter().map(|r| r.handle).collect();
        // A read index begun now confirms this node still leads after the
        // report arrived (and reads the versions the extensions need, and
        // which replicas no file references).
        let goal = self.settings.replication;
        let reported = self
            .node()
            .read(
                move |s| crate::master_heal::reported_chunks(s, &handles, goal),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        let versions: BTreeMap<ChunkHandle, u64> = reported
            .referenced
            .iter()
            .map(|(&handle, &(version, _))| (handle, version))
            .collect();
        for replica in &report.replicas {
            if versions
                .get(&replica.handle)
                .is_some_and(|&v| replica.version > v)
            {
                tracing::info!(
                    handle = replica.handle,
                    version = replica.version,
                    "adopting a higher version a chunkserver reported"
                );
                self.submit_internal(Op::AdoptVersion(AdoptVersion {
                    handle: replica.handle,
                    version: replica.version,
                }))
                .await?;
            }
        }
        let now = Instant::now();
        let (url, claims) = (report.url, report.claims);
        let (extended, lease, delete_replicas) = self
            .table
            .with(move |t| {
                let extended = t.extend(&url, &claims, &versions, now);
                (extended, t.lease(), t.deletions(&url, &reported, now))
            })
            .await
            .map_err(stopped)?;
        Ok(HeartbeatReply {
            leader: true,
            extended,
            lease_ms: lease.as_millis() as u64,
            delete_replicas,
        })
    }
}
