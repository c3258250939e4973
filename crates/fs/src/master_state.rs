//! [`MasterState`]: the master's replicated state machine — the
//! [`Namespace`] and the clients' sessions — applying [`MasterCommand`]s
//! from the Raft log.
//!
//! Each command but a registration carries a session id and a sequence
//! number; the sessions table (from `cairn-rsm`) answers a retried command
//! as the first time without applying it again, so a `create` or `rename`
//! retried after a lost reply or a leader change is applied once (scenario
//! M1 of the design notes). A refused command is remembered like any other:
//! its retry gets the same refusal.

use bytes::Bytes;
use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{FsErrorCode, MasterCommand, MasterReply, Snapshot};
use cairn_rsm::{Seen, Sessions, StateMachine};
use prost::Message as _;

use std::collections::{BTreeMap, BTreeSet};

use crate::namespace::{ChunkHandle, FsError, Namespace};
use crate::path::FsPath;
use crate::snapshot;

/// The most client sessions the master remembers; beyond it the least
/// recently active one is forgotten (its next command is answered
/// `SESSION_EXPIRED`).
pub const MAX_SESSIONS: usize = 100_000;

/// The most replicas one grant names (more are refused).
pub const MAX_GRANT_REPLICAS: usize = 16;

/// The master's state: namespace, the replicas of each chunk's latest
/// grant, and sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterState {
    namespace: Namespace,
    /// Per chunk, the replicas its latest version was granted to.
    grants: BTreeMap<ChunkHandle, Vec<String>>,
    /// Chunkservers being decommissioned (by URL).
    decommissioning: BTreeSet<String>,
    /// Each session's last answer, encoded.
    sessions: Sessions<Bytes>,
}

impl Default for MasterState {
    fn default() -> Self {
        Self::new()
    }
}

impl MasterState {
    pub fn new() -> Self {
        Self {
            namespace: Namespace::new(),
            grants: BTreeMap::new(),
            decommissioning: BTreeSet::new(),
            sessions: Sessions::new(MAX_SESSIONS),
        }
    }

    /// The namespace, for reads (at a read index).
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The replicas the latest version of `handle` was granted to (empty
    /// before its first grant).
    pub fn granted_to(&self, handle: ChunkHandle) -> &[String] {
        self.grants.get(&handle).map_or(&[], Vec::as_slice)
    }

    /// The chunkservers being decommissioned.
    pub fn decommissioning(&self) -> &BTreeSet<String> {
        &self.decommissioning
    }

    /// A snapshot whose source has a chunk the leader did not revoke the
    /// lease of (added while it revoked the others): the refusal. Only
    /// for commands the leader marked (`revoked_known`): an older log's
    /// snapshots apply as they always did.
    fn source_changed(&self, snapshot: &Snapshot) -> Option<MasterReply> {
        if !snapshot.revoked_known {
            return None;
        }
        let src = FsPath::from_bytes(&snapshot.src).ok()?;
        let chunks = self.namespace.chunks_under(&src).ok()?;
        // A set: a large tree has many chunks, and every replica applies this.
        let revoked: BTreeSet<ChunkHandle> = snapshot.revoked.iter().copied().collect();
        let added = chunks
            .into_iter()
            .find(|handle| !revoked.contains(handle))?;
        Some(refusal(
            FsErrorCode::SourceChanged,
            format!(
                "{src} gained chunk {added} while the leases on its chunks were revoked; nothing was done: retry the snapshot"
            ),
        ))
    }

    /// Carries out one command on the namespace.
    fn execute(&mut self, op: &Op) -> MasterReply {
        if let Op::Decommission(d) = op {
            if d.undo {
                self.decommissioning.remove(&d.url);
            } else {
                self.decommissioning.insert(d.url.clone());
            }
            return MasterReply::default();
        }
        // An adoption raises the version only past the one the log has.
        let raises = matches!(op, Op::AdoptVersion(a)
            if self.namespace.chunk(a.handle).is_ok_and(|m| a.version > m.version));
        let reply = self.execute_op(op);
        if reply.error == FsErrorCode::Ok as i32 {
            match op {
                Op::GrantVersion(g) => {
                    self.grants.insert(g.handle, g.replicas.clone());
                }
                // The replicas granted an older version say nothing of the
                // adopted one: the grant fallback (`ChunkTable::fallback`)
                // must not name them.
                Op::AdoptVersion(a) if raises => {
                    self.grants.remove(&a.handle);
                }
                Op::Delete(_) | Op::Rename(_) | Op::Purge(_) | Op::CopyDone(_) => {
                    for handle in &reply.freed {
                        self.grants.remove(handle);
                    }
                }
                _ => {}
            }
        }
        reply
    }

    /// Carries out one command on the namespace (no side tables).
    fn execute_op(&mut self, op: &Op) -> MasterReply {
        let path = |bytes: &[u8]| {
            FsPath::from_bytes(bytes).map_err(|e| refusal(FsErrorCode::InvalidPath, e))
        };
        let result: Result<MasterReply, MasterReply> = (|| {
            let ns = &mut self.namespace;
            Ok(match op {
                Op::Register(_) => unreachable!("registrations are applied before"),
                Op::Decommission(_) => unreachable!("decommissions are applied before"),
                Op::Mkdir(m) => {
                    ns.mkdir(&path(&m.path)?, m.parents).map_err(from_fs)?;
                    MasterReply::default()
                }
                Op::Create(c) => {
                    ns.create(&path(&c.path)?).map_err(from_fs)?;
                    MasterReply::default()
                }
                Op::Delete(d) if d.skip_trash => MasterReply {
                    freed: ns.delete(&path(&d.path)?, d.recursive).map_err(from_fs)?,
                    ..MasterReply::default()
                },
                Op::Delete(d) => {
                    ns.trash(&path(&d.path)?, d.recursive, d.deleted_at_ms)
                        .map_err(from_fs)?;
                    MasterReply::default()
                }
                Op::Undelete(u) => {
                    ns.undelete(&path(&u.path)?, u.now_ms, u.retention_ms)
                        .map_err(from_fs)?;
                    MasterReply::default()
                }
                Op::Purge(p) => MasterReply {
                    freed: ns
                        .purge(p.trash_id, p.now_ms, p.retention_ms)
                        .map_err(from_fs)?,
                    ..MasterReply::default()
                },
                Op::Rename(r) => MasterReply {
                    freed: ns
                        .rename(&path(&r.from)?, &path(&r.to)?, r.replace)
                        .map_err(from_fs)?,
                    ..MasterReply::default()
                },
                Op::AddChunk(a) => {
                    let index = usize::try_from(a.index).unwrap_or(usize::MAX);
                    MasterReply {
                        handle: ns.add_chunk(&path(&a.path)?, index).map_err(from_fs)?,
                        ..MasterReply::default()
                    }
                }
                Op::GrantVersion(g) if g.replicas.len() > MAX_GRANT_REPLICAS => {
                    return Err(refusal(
                        FsErrorCode::UnknownCommand,
                        format!(
                            "a grant to {} replicas; at most {MAX_GRANT_REPLICAS}",
                            g.replicas.len()
                        ),
                    ));
                }
                Op::GrantVersion(g) => MasterReply {
                    version: ns.bump_version(g.handle, g.expected).map_err(from_fs)?,
                    ..MasterReply::default()
                },
                Op::AdoptVersion(a) => {
                    ns.adopt_version(a.handle, a.version).map_err(from_fs)?;
                    MasterReply::default()
                }
                Op::SetReplication(r) => {
                    ns.set_replication(&path(&r.path)?, r.goal)
                        .map_err(from_fs)?;
                    MasterReply::default()
                }
                Op::Snapshot(s) => {
                    ns.snapshot(&path(&s.src)?, &path(&s.dst)?)
                        .map_err(from_fs)?;
                    MasterReply::default()
                }
                Op::CopyOnWrite(c) => {
                    let index = usize::try_from(c.index).unwrap_or(usize::MAX);
                    MasterReply {
                        handle: ns.copy_on_write(&path(&c.path)?, index).map_err(from_fs)?,
                        ..MasterReply::default()
                    }
                }
                Op::CopyDone(c) => MasterReply {
                    freed: ns.copy_done(c.handle),
                    ..MasterReply::default()
                },
            })
        })();
        result.unwrap_or_else(|refused| refused)
    }
}

/// Commands the master submits itself, without a session (client id 0):
/// each is safe to apply twice (adding chunk `index` answers the chunk
/// already there, a grant is conditional on the version it raises, an
/// adoption only raises, a purge of a deletion already gone does nothing,
/// a copy-on-write of a chunk no longer shared answers the file's chunk, a
/// copy done twice does nothing, a decommission only sets or clears a
/// mark).
/// Clients' commands always carry a session
/// ([`MasterServer`](crate::MasterServer) refuses id 0 from them).
fn internal(op: &Op) -> bool {
    matches!(
        op,
        Op::AddChunk(_)
            | Op::GrantVersion(_)
            | Op::AdoptVersion(_)
            | Op::Purge(_)
            | Op::CopyOnWrite(_)
            | Op::CopyDone(_)
            | Op::Decommission(_)
    )
}

fn refusal(code: FsErrorCode, message: impl ToString) -> MasterReply {
    MasterReply {
        error: code as i32,
        message: message.to_string(),
        ..MasterReply::default()
    }
}

/// The wire code of a namespace error.
pub fn error_code(error: &FsError) -> FsErrorCode {
    match error {
        FsError::NotFound(_) => FsErrorCode::NotFound,
        FsError::AlreadyExists(_) => FsErrorCode::AlreadyExists,
        FsError::NotADirectory(_) => FsErrorCode::NotADirectory,
        FsError::IsADirectory(_) => FsErrorCode::IsADirectory,
        FsError::DirectoryNotEmpty(_) => FsErrorCode::DirectoryNotEmpty,
        FsError::ParentMissing(_) => FsErrorCode::ParentMissing,
        FsError::MoveIntoItself { .. } => FsErrorCode::MoveIntoItself,
        FsError::Root => FsErrorCode::Root,
        FsError::ChunkCountChanged { .. } => FsErrorCode::ChunkCountChanged,
        FsError::FileTooLarge(_) => FsErrorCode::FileTooLarge,
        FsError::NoSuchChunk(_) => FsErrorCode::NoSuchChunk,
        FsError::VersionChanged { .. } => FsErrorCode::VersionChanged,
        FsError::NamespaceFull | FsError::TrashFull => FsErrorCode::NamespaceFull,
        FsError::NotInTrash(_) => FsErrorCode::NotInTrash,
        FsError::TrashExpired { .. } => FsErrorCode::TrashExpired,
        FsError::TrashNotExpired(_) => FsErrorCode::TrashNotExpired,
        FsError::BadReplication(_) => FsErrorCode::BadReplication,
    }
}

fn from_fs(error: FsError) -> MasterReply {
    refusal(error_code(&error), error)
}

impl StateMachine for MasterState {
    fn apply(&mut self, index: u64, command: &[u8]) -> Bytes {
        let encode = |reply: MasterReply| Bytes::from(reply.encode_to_vec());
        let Ok(command) = MasterCommand::decode(command) else {
            tracing::error!(
                index,
                "an undecodable command in the master's log; applied as nothing"
            );
            return encode(refusal(FsErrorCode::UnknownCommand, "undecodable command"));
        };
        let Some(op) = command.op else {
            return encode(refusal(
                FsErrorCode::UnknownCommand,
                "a command with no operation",
            ));
        };
        if let Op::Register(_) = op {
            // The session id is this entry's index: unique and increasing.
            self.sessions.register(index, Bytes::new(), index);
            return encode(MasterReply {
                client_id: index,
                ..MasterReply::default()
            });
        }
        if command.client_id == 0 && internal(&op) {
            return encode(self.execute(&op));
        }
        match self.sessions.check(command.client_id, command.seq) {
            Seen::Duplicate(reply) => return reply,
            Seen::Expired => {
                return encode(refusal(
                    FsErrorCode::SessionExpired,
                    "the session is unknown (never registered, or forgotten); nothing was done: register again",
                ));
            }
            Seen::New => {}
        }
        if let Op::Snapshot(snapshot) = &op
            && let Some(refused) = self.source_changed(snapshot)
        {
            // Not remembered: the leader retries under the same sequence
            // number once it has revoked the new chunks' leases too.
            return encode(refused);
        }
        let reply = encode(self.execute(&op));
        self.sessions
            .remember(command.client_id, command.seq, reply.clone(), index);
        reply
    }

    fn snapshot(&self) -> Bytes {
        let namespace = snapshot::encode(&self.namespace);
        let mut out = Vec::with_capacity(namespace.len() + 64 * self.sessions.len());
        out.extend_from_slice(&(namespace.len() as u64).to_le_bytes());
        out.extend_from_slice(&namespace);
        out.extend_from_slice(&self.sessions.floor().to_le_bytes());
        out.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (client, session) in self.sessions.iter() {
            out.extend_from_slice(&client.to_le_bytes());
            out.extend_from_slice(&session.seq.to_le_bytes());
            out.extend_from_slice(&session.last_index.to_le_bytes());
            out.extend_from_slice(&(session.reply.len() as u32).to_le_bytes());
            out.extend_from_slice(&session.reply);
        }
        // The grants, after the sessions (a snapshot without them is one
        // from before grants were recorded).
        out.extend_from_slice(&(self.grants.len() as u64).to_le_bytes());
        for (handle, replicas) in &self.grants {
            out.extend_from_slice(&handle.to_le_bytes());
            out.extend_from_slice(&(replicas.len() as u32).to_le_bytes());
            for url in replicas {
                out.extend_from_slice(&(url.len() as u32).to_le_bytes());
                out.extend_from_slice(url.as_bytes());
            }
        }
        // The decommissioning servers, last (absent from older snapshots).
        out.extend_from_slice(&(self.decommissioning.len() as u64).to_le_bytes());
        for url in &self.decommissioning {
            out.extend_from_slice(&(url.len() as u32).to_le_bytes());
            out.extend_from_slice(url.as_bytes());
        }
        out.into()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        *self = decode_state(snapshot)
            .map_err(|e| format!("the file-store master snapshot is damaged: {e}"))?;
        Ok(())
    }
}

fn decode_state(mut data: &[u8]) -> Result<MasterState, String> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if data.len() < n {
            return Err("it ends early".to_string());
        }
        let (head, tail) = data.split_at(n);
        *data = tail;
        Ok(head)
    }
    fn u64_of(data: &mut &[u8]) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            take(data, 8)?.try_into().expect("8 bytes"),
        ))
    }
    let mut state = MasterState::new();
    if data.is_empty() {
        return Ok(state);
    }
    let length = usize::try_from(u64_of(&mut data)?).map_err(|e| e.to_string())?;
    state.namespace = snapshot::decode(take(&mut data, length)?)?;
    let floor = u64_of(&mut data)?;
    state.sessions.raise_floor(floor);
    let count = u64_of(&mut data)?;
    if count > (data.len() / 28) as u64 {
        return Err(format!("{count} sessions claimed, more than it holds"));
    }
    for _ in 0..count {
        let client = u64_of(&mut data)?;
        let seq = u64_of(&mut data)?;
        let last_index = u64_of(&mut data)?;
        let length = u32::from_le_bytes(take(&mut data, 4)?.try_into().expect("4 bytes")) as usize;
        let reply = Bytes::copy_from_slice(take(&mut data, length)?);
        state.sessions.restore(
            client,
            cairn_rsm::sessions::Session {
                seq,
                reply,
                last_index,
            },
        );
    }
    if !data.is_empty() {
        decode_grants(&mut state, &mut data)?;
    }
    if !data.is_empty() {
        decode_decommissioning(&mut state, &mut data)?;
    }
    if !data.is_empty() {
        return Err(format!(
            "{} bytes follow the decommissioned servers",
            data.len()
        ));
    }
    Ok(state)
}

/// The first `n` bytes of `data`, which moves past them.
fn take_tail<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if data.len() < n {
        return Err("the grants or the decommissioned servers end early".to_string());
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Ok(head)
}

fn u32_of(data: &mut &[u8]) -> Result<usize, String> {
    Ok(u32::from_le_bytes(take_tail(data, 4)?.try_into().expect("4 bytes")) as usize)
}

/// A URL: its length (u32) and its UTF-8 bytes.
fn url_of(data: &mut &[u8]) -> Result<String, String> {
    let length = u32_of(data)?;
    let url = std::str::from_utf8(take_tail(data, length)?)
        .map_err(|_| "a chunkserver's URL is not UTF-8".to_string())?;
    Ok(url.to_string())
}

fn decode_decommissioning(state: &mut MasterState, data: &mut &[u8]) -> Result<(), String> {
    let count = u64::from_le_bytes(take_tail(data, 8)?.try_into().expect("8 bytes"));
    if count > (data.len() / 4) as u64 {
        return Err(format!(
            "{count} decommissioned servers claimed, more than it holds"
        ));
    }
    for _ in 0..count {
        state.decommissioning.insert(url_of(data)?);
    }
    Ok(())
}

fn decode_grants(state: &mut MasterState, data: &mut &[u8]) -> Result<(), String> {
    let take = take_tail;
    let count = u64::from_le_bytes(take(data, 8)?.try_into().expect("8 bytes"));
    if count > (data.len() / 12) as u64 {
        return Err(format!("{count} grants claimed, more than it holds"));
    }
    for _ in 0..count {
        let handle = u64::from_le_bytes(take(data, 8)?.try_into().expect("8 bytes"));
        let replicas = u32_of(data)?;
        if replicas > MAX_GRANT_REPLICAS {
            return Err(format!("a grant to {replicas} replicas"));
        }
        let mut urls = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            urls.push(url_of(data)?);
        }
        state.grants.insert(handle, urls);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod trash_tests;
