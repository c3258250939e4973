//! The master's chunk requests: `Locate` (where a chunk is, its primary
//! under a lease, granting one if needed: GFS §3.1, §4.5), here; placing
//! and granting in `grant.rs`; `Heartbeat` and `Safemode` (chunkservers'
//! reports, lease extensions, higher versions adopted) in `reports.rs`.
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

mod grant;
mod reports;

use bytes::Bytes;
use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{
    AddChunk, FsErrorCode, LocateReply, LocateRequest, MasterCommand, MasterReply,
};
use cairn_rsm::SubmitError;
use prost::Message as _;
use tokio::time::Instant;
use tonic::Status;

use crate::chunk_table::Decision;
use crate::master::{MasterServer, REQUEST_DEADLINE};
use crate::master_state::{MasterState, error_code};
use crate::namespace::{ChunkHandle, FsError, Inode};
use crate::path::FsPath;

/// The most chunks one locate adds to reach the index asked for.
pub const MAX_CHUNKS_ADDED_AT_ONCE: u64 = 1024;
/// How many decisions one locate goes through (place, then grant).
const MAX_LOCATE_ROUNDS: usize = 3;

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
}
