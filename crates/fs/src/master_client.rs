//! [`MasterClient`]: the clerk for the master's namespace. It finds the
//! leader, retries across masters, opens a session and numbers its changes
//! so that a retried change is applied once (as `cairn-kv`'s clerk). A
//! change answered "session expired" on its only attempt was certainly not
//! applied and is sent once more under a new session; otherwise its
//! outcome is unknown and the clerk reports
//! [`MasterError::SessionExpired`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use cairn_rpc::fs::master_client::MasterClient as MasterGrpcClient;
use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{
    AddChunk, BalanceReply, BalanceRequest, Create, DecommissionRequest, Delete, EntryInfo,
    FsErrorCode, FsckReply, FsckRequest, LocateReply, LocateRequest, LookupRequest, MasterCommand,
    MasterReply, Mkdir, Rename, SafemodeReply, SafemodeRequest, SetReplication, Snapshot,
    TrashEntry, TrashListRequest, Undelete, UsageReply, UsageRequest,
};
use cairn_rpc::kv::RegisterRequest;
use cairn_rpc::{ReplicaError, Replicas};

use crate::namespace::ChunkHandle;
use crate::path::FsPath;

/// Why a master request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    /// The namespace refused the operation (not found, exists, ...);
    /// nothing changed. `code` says which refusal.
    #[error("{message}")]
    Refused { code: FsErrorCode, message: String },
    /// The masters did not complete the request, or it is malformed: see
    /// [`ReplicaError`]. After a timeout a change may or may not have been
    /// applied; retrying it through the same clerk is safe.
    #[error("{}", .0.with_hint(UNREACHABLE_HINT))]
    Replica(#[from] ReplicaError),
    /// The master forgot this clerk's session while a change's outcome was
    /// unknown: it was applied once or not at all.
    #[error(
        "the master forgot this client's session while the change's outcome was unknown (it was applied once or not at all); look the path up before changing it again"
    )]
    SessionExpired,
    /// A server answered, but not as a master should (no entry, no
    /// session).
    #[error("the master refused the request: {0}")]
    Rejected(String),
    /// The addresses given are unusable.
    #[error("bad endpoint: {0}")]
    BadEndpoint(String),
}

/// What to do when nothing listens at the addresses given.
const UNREACHABLE_HINT: &str = "are the masters running? Start a store with `cairn cluster --fs`, or pass --masters with the masters' addresses";

impl MasterError {
    /// The namespace's refusal code, if this is one.
    pub fn code(&self) -> Option<FsErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `value`, or the refusal a reply's error code and message name.
fn answered<T>(error: i32, message: String, value: T) -> Result<T, MasterError> {
    match FsErrorCode::try_from(error) {
        Ok(FsErrorCode::Ok) => Ok(value),
        code => Err(MasterError::Refused {
            code: code.unwrap_or(FsErrorCode::UnknownCommand),
            message,
        }),
    }
}

/// A master clerk. Lookups take `&self`; changes take `&mut self` (one
/// outstanding change per clerk: its sequence number).
#[derive(Debug)]
pub struct MasterClient {
    masters: Replicas,
    /// The session's id; `None` before the first change and after the
    /// session expired.
    client_id: Option<u64>,
    seq: u64,
}

impl MasterClient {
    /// A clerk for the masters at `endpoints`, each call allowed
    /// `call_timeout` and each request `deadline` in all.
    pub fn new(
        endpoints: &[String],
        call_timeout: Duration,
        deadline: Duration,
    ) -> Result<Self, MasterError> {
        let masters = Replicas::new(endpoints, call_timeout, deadline)
            .map_err(|e| MasterError::BadEndpoint(e.to_string()))?;
        Ok(Self {
            masters,
            client_id: None,
            seq: 0,
        })
    }

    /// The entry at `path` (a file with its chunks and their versions, or a
    /// directory). Linearizable.
    pub async fn stat(&self, path: &FsPath) -> Result<EntryInfo, MasterError> {
        let mut entries = self.lookup(path, false).await?;
        entries
            .pop()
            .ok_or_else(|| MasterError::Rejected("the master answered no entry".into()))
    }

    /// The entries of the directory `path` (or the file itself). Linearizable.
    pub async fn list(&self, path: &FsPath) -> Result<Vec<EntryInfo>, MasterError> {
        self.lookup(path, true).await
    }

    async fn lookup(&self, path: &FsPath, list: bool) -> Result<Vec<EntryInfo>, MasterError> {
        let request = LookupRequest {
            path: path.as_str().as_bytes().to_vec(),
            list,
        };
        let reply = self
            .masters
            .request(request, |c, r| async move {
                MasterGrpcClient::new(c).lookup(r).await
            })
            .await?;
        answered(reply.error, reply.message, reply.entries)
    }

    /// Where chunk `index` of the file is (`add`: adding chunks up to it;
    /// `mutate`: with its primary, granting a lease if none is live). The
    /// leader answers; while it cannot yet (a lease to wait out, a replica
    /// to hear from), this retries until the deadline.
    pub async fn locate(
        &self,
        path: &FsPath,
        index: u64,
        add: bool,
        mutate: bool,
    ) -> Result<LocateReply, MasterError> {
        let request = LocateRequest {
            path: path.as_str().as_bytes().to_vec(),
            index,
            add,
            mutate,
        };
        let reply = self
            .masters
            .request(request, |c, r| async move {
                MasterGrpcClient::new(c).locate(r).await
            })
            .await?;
        let (error, message) = (reply.error, reply.message.clone());
        answered(error, message, reply)
    }

    /// What the leader knows of each chunk in `handles` (at most
    /// [`MAX_FSCK_HANDLES`](crate::MAX_FSCK_HANDLES)): its versions, goal
    /// and reported replicas.
    pub async fn fsck(&self, handles: Vec<ChunkHandle>) -> Result<FsckReply, MasterError> {
        Ok(self
            .masters
            .request(FsckRequest { handles }, |c, r| async move {
                MasterGrpcClient::new(c).fsck(r).await
            })
            .await?)
    }

    /// The leader's safemode, after an operator's `enter` or `leave` if
    /// one is asked (not both).
    pub async fn safemode(&self, enter: bool, leave: bool) -> Result<SafemodeReply, MasterError> {
        let request = SafemodeRequest { enter, leave };
        Ok(self
            .masters
            .request(request, |c, r| async move {
                MasterGrpcClient::new(c).safemode(r).await
            })
            .await?)
    }

    /// Decommissions the chunkserver at `url` (`undo`: takes it back into
    /// service). Refused (nothing changed) if the master knows no such
    /// server, or if too few would stay in service for some file's goal.
    pub async fn decommission(&self, url: &str, undo: bool) -> Result<String, MasterError> {
        let request = DecommissionRequest {
            url: url.to_string(),
            undo,
        };
        let reply = self
            .masters
            .request(request, |c, r| async move {
                MasterGrpcClient::new(c).decommission(r).await
            })
            .await?;
        let message = reply.message.clone();
        answered(reply.error, reply.message, message)
    }

    /// Every chunkserver as the leader last heard of it (space, chunks,
    /// liveness, decommissioning).
    pub async fn usage(&self) -> Result<UsageReply, MasterError> {
        Ok(self
            .masters
            .request(UsageRequest {}, |c, r| async move {
                MasterGrpcClient::new(c).usage(r).await
            })
            .await?)
    }

    /// Starts (`start`) or keeps going the leader's balancer for
    /// `threshold_percent`, and how far it is. Refused in safemode.
    pub async fn balance(
        &self,
        threshold_percent: u32,
        start: bool,
    ) -> Result<BalanceReply, MasterError> {
        let request = BalanceRequest {
            threshold_percent,
            start,
        };
        let reply = self
            .masters
            .request(request, |c, r| async move {
                MasterGrpcClient::new(c).balance(r).await
            })
            .await?;
        answered(reply.error, reply.message.clone(), reply)
    }

    /// Creates a directory (`parents`: and the missing ones above it; an
    /// existing directory is then not an error).
    pub async fn mkdir(&mut self, path: &FsPath, parents: bool) -> Result<(), MasterError> {
        self.change(Op::Mkdir(Mkdir {
            path: path.as_str().as_bytes().to_vec(),
            parents,
        }))
        .await
        .map(drop)
    }

    /// Creates an empty file.
    pub async fn create(&mut self, path: &FsPath) -> Result<(), MasterError> {
        self.change(Op::Create(Create {
            path: path.as_str().as_bytes().to_vec(),
        }))
        .await
        .map(drop)
    }

    /// Deletes a file or a directory (`recursive`: with everything in it)
    /// into the trash: it can be restored ([`undelete`](Self::undelete))
    /// until the retention ends. Returns the chunks freed (none: they stay
    /// referenced until the deletion is purged).
    pub async fn delete(
        &mut self,
        path: &FsPath,
        recursive: bool,
    ) -> Result<Vec<ChunkHandle>, MasterError> {
        self.remove(path, recursive, false).await
    }

    /// Deletes a file or a directory at once, without keeping it in the
    /// trash; returns the chunks no file references any more.
    pub async fn delete_skipping_trash(
        &mut self,
        path: &FsPath,
        recursive: bool,
    ) -> Result<Vec<ChunkHandle>, MasterError> {
        self.remove(path, recursive, true).await
    }

    async fn remove(
        &mut self,
        path: &FsPath,
        recursive: bool,
        skip_trash: bool,
    ) -> Result<Vec<ChunkHandle>, MasterError> {
        Ok(self
            .change(Op::Delete(Delete {
                path: path.as_str().as_bytes().to_vec(),
                recursive,
                skip_trash,
                deleted_at_ms: 0,
            }))
            .await?
            .freed)
    }

    /// Restores the latest deletion of `path` still within the retention.
    pub async fn undelete(&mut self, path: &FsPath) -> Result<(), MasterError> {
        self.change(Op::Undelete(Undelete {
            path: path.as_str().as_bytes().to_vec(),
            ..Undelete::default()
        }))
        .await
        .map(drop)
    }

    /// Sets how many replicas the file `path` should have (1 to 16).
    pub async fn set_replication(&mut self, path: &FsPath, goal: u32) -> Result<(), MasterError> {
        self.change(Op::SetReplication(SetReplication {
            path: path.as_str().as_bytes().to_vec(),
            goal,
        }))
        .await
        .map(drop)
    }

    /// The deletions of `path` or below it that can be restored, oldest
    /// first, with when each is purged. Linearizable.
    pub async fn trash(&self, path: &FsPath) -> Result<Vec<TrashEntry>, MasterError> {
        let request = TrashListRequest {
            path: path.as_str().as_bytes().to_vec(),
        };
        let reply = self
            .masters
            .request(request, |c, r| async move {
                MasterGrpcClient::new(c).trash_list(r).await
            })
            .await?;
        answered(reply.error, reply.message, reply.entries)
    }

    /// Moves `from` to `to` atomically (`replace`: over an existing file).
    pub async fn rename(
        &mut self,
        from: &FsPath,
        to: &FsPath,
        replace: bool,
    ) -> Result<(), MasterError> {
        self.change(Op::Rename(Rename {
            from: from.as_str().as_bytes().to_vec(),
            to: to.as_str().as_bytes().to_vec(),
            replace,
        }))
        .await
        .map(drop)
    }

    /// Copies `src` (a file or a tree) to `dst` at once, sharing its
    /// chunks until either side writes them.
    pub async fn snapshot(&mut self, src: &FsPath, dst: &FsPath) -> Result<(), MasterError> {
        self.change(Op::Snapshot(Snapshot {
            src: src.as_str().as_bytes().to_vec(),
            dst: dst.as_str().as_bytes().to_vec(),
            ..Snapshot::default()
        }))
        .await
        .map(drop)
    }

    /// The handle of chunk number `index` of the file, adding it if the
    /// file has exactly `index` chunks.
    pub async fn add_chunk(
        &mut self,
        path: &FsPath,
        index: u64,
    ) -> Result<ChunkHandle, MasterError> {
        Ok(self
            .change(Op::AddChunk(AddChunk {
                path: path.as_str().as_bytes().to_vec(),
                index,
            }))
            .await?
            .handle)
    }

    /// Opens a session through the masters' log; returns its id.
    async fn register(&self) -> Result<u64, MasterError> {
        let reply = self
            .masters
            .request(RegisterRequest {}, |c, r| async move {
                MasterGrpcClient::new(c).register(r).await
            })
            .await?;
        if reply.client_id == 0 {
            return Err(MasterError::Rejected(
                "the master registered no session; is it a file-store master?".into(),
            ));
        }
        Ok(reply.client_id)
    }

    async fn change(&mut self, op: Op) -> Result<MasterReply, MasterError> {
        let mut command = MasterCommand {
            op: Some(op),
            ..MasterCommand::default()
        };
        // At most once more, under a new session, and only when the change
        // was certainly not applied.
        for resent in [false, true] {
            let client_id = match self.client_id {
                Some(id) => id,
                None => {
                    let id = self.register().await?;
                    (self.client_id, self.seq) = (Some(id), 0);
                    id
                }
            };
            self.seq += 1;
            (command.client_id, command.seq) = (client_id, self.seq);
            let attempts = Arc::new(AtomicUsize::new(0));
            let counter = attempts.clone();
            let reply = self
                .masters
                .request(command.clone(), move |c, r| {
                    counter.fetch_add(1, Relaxed);
                    async move { MasterGrpcClient::new(c).mutate(r).await }
                })
                .await?;
            match FsErrorCode::try_from(reply.error) {
                Ok(FsErrorCode::Ok) => return Ok(reply),
                Ok(FsErrorCode::SessionExpired) => {
                    self.client_id = None;
                    if attempts.load(Relaxed) == 1 && !resent {
                        continue;
                    }
                    return Err(MasterError::SessionExpired);
                }
                code => {
                    return Err(MasterError::Refused {
                        code: code.unwrap_or(FsErrorCode::UnknownCommand),
                        message: reply.message,
                    });
                }
            }
        }
        Err(MasterError::SessionExpired)
    }
}
