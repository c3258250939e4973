//! Backups and disaster recovery for any state machine on this runtime.
//!
//! - **Save, live** ([`Node::backup`], served as the `Backup.Save` gRPC
//!   stream by [`BackupService`]): the leader makes a read barrier (read
//!   index, as [`Node::read`] does), so every write acknowledged before
//!   the call began is applied; then the node task takes the state
//!   machine's snapshot at the index it has applied, as it would for
//!   compaction — writes wait only for that copy — and the stream sends it
//!   after, in chunks of [`BACKUP_CHUNK_BYTES`], with a CRC-32C.
//! - **Save, offline** ([`snapshot_of_data_dir`]): from the data directory
//!   of a stopped node, when no quorum is left to lead: its snapshot, plus
//!   its log up to the commit index it stored, applied through the state
//!   machine — the recovery a node makes at start, without the group.
//! - **Restore** ([`restore_data_dir`]): writes an empty data directory as
//!   a new one-node cluster holding the snapshot: a new cluster id (so it
//!   never exchanges a message with the old group's nodes), the restoring
//!   node the only voter, the snapshot at its original index and term. A
//!   node started on it elects itself and can be grown by membership
//!   change.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_raft::{HardState, Raft, Ready, Snapshot, SnapshotMeta};
use cairn_rpc::backup::backup_server::Backup;
use cairn_rpc::backup::{SaveChunk, SaveRequest, SnapshotHeader, save_chunk::Part};
use cairn_storage::Disk;
use rand::Rng;
use tokio::sync::oneshot;

use crate::error::SubmitError;
use crate::identity::{IDENTITY_FILE, Identity};
use crate::node::{Command, Node};
use crate::state_machine::{RestoreError, StateMachine};
use crate::storage::RaftStorage;
use crate::{ClusterConfig, LogIndex, NodeId, Term};

/// The size of the data chunks a backup streams in.
pub const BACKUP_CHUNK_BYTES: usize = 1 << 20;
/// How long a live backup may wait for its read barrier and snapshot.
pub const BACKUP_DEADLINE: Duration = Duration::from_secs(30);

/// A state machine's snapshot and the log position it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSnapshot {
    /// The last log index applied to the state.
    pub index: LogIndex,
    /// That entry's term.
    pub term: Term,
    /// The state machine's snapshot.
    pub data: Bytes,
}

/// Why a backup could not be read from, or restored into, a data
/// directory; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// No node's data there.
    #[error(
        "{0} holds no node's data (no {IDENTITY_FILE} file); pass the data directory of a \
         stopped node"
    )]
    NotADataDir(String),
    /// The restore target holds something already.
    #[error(
        "{0} is not empty; restore into a new, empty directory (a restore never overwrites data)"
    )]
    NotEmpty(String),
    /// Reading or writing the data directory failed.
    #[error("{0}")]
    Storage(String),
    /// The state machine cannot read the snapshot.
    #[error("the snapshot does not restore ({0}); it was not taken from this kind of service")]
    Restore(#[from] RestoreError),
}

impl<S: StateMachine> Node<S> {
    /// A consistent snapshot of the state machine, on the leader: a read
    /// barrier, then the state as applied at that moment (every write
    /// acknowledged before the call is in it). Fails like
    /// [`read`](Self::read) (`NotLeader` with a hint on a follower).
    pub async fn backup(&self, deadline: Duration) -> Result<StateSnapshot, SubmitError> {
        let started = tokio::time::Instant::now();
        self.read(|_| (), deadline).await?;
        let (reply, answer) = oneshot::channel();
        self.offer(Command::Snapshot { reply })?;
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(snapshot)) => Ok(snapshot),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(SubmitError::Timeout),
        }
    }

    /// The gRPC service that streams [`backup`](Self::backup)s of this
    /// node's state, marked as a `kind` service's ("kv").
    pub fn backup_service(&self, kind: &str) -> BackupServer<S> {
        cairn_rpc::backup::backup_server::BackupServer::new(BackupService {
            node: self.clone(),
            kind: kind.into(),
        })
    }
}

/// The state as the node task holds it now: called on that task, between
/// two batches, so the snapshot and its index agree.
pub(crate) fn snapshot_now<S: StateMachine>(
    raft: &Raft,
    storage: &RaftStorage,
    machine: &S,
    applied: LogIndex,
) -> StateSnapshot {
    let term = match raft.entry(applied) {
        Some(entry) => entry.term,
        // Compacted: the applied index is the latest snapshot's.
        None => storage
            .latest_snapshot()
            .filter(|&(index, _)| index == applied)
            .map_or(0, |(_, term)| term),
    };
    StateSnapshot {
        index: applied,
        term,
        data: machine.snapshot(),
    }
}

/// The tonic server type of [`Node::backup_service`].
#[cfg(not(madsim))]
pub type BackupServer<S> = cairn_rpc::backup::backup_server::BackupServer<BackupService<S>>;
/// The tonic server type of [`Node::backup_service`].
#[cfg(madsim)]
pub type BackupServer<S> = cairn_rpc::backup::backup_server::BackupServer<
    BackupService<S>,
    tonic::codegen::IdentityInterceptor,
>;

/// Serves `Backup.Save` for one node.
pub struct BackupService<S: StateMachine> {
    node: Node<S>,
    kind: Arc<str>,
}

type SaveStream = Pin<
    Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<SaveChunk, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl<S: StateMachine> Backup for BackupService<S> {
    type SaveStream = SaveStream;

    async fn save(
        &self,
        _request: tonic::Request<SaveRequest>,
    ) -> Result<tonic::Response<SaveStream>, tonic::Status> {
        let snapshot = self
            .node
            .backup(BACKUP_DEADLINE)
            .await
            .map_err(|e| self.node.error_status(e))?;
        let chunks = save_chunks(self.kind.to_string(), snapshot).map(Ok);
        Ok(tonic::Response::new(Box::pin(
            tonic::codegen::tokio_stream::iter(chunks),
        )))
    }
}

/// The messages of one `Save` stream: the header, the data in chunks
/// (slices of one buffer, no copies), the checksum.
fn save_chunks(kind: String, snapshot: StateSnapshot) -> impl Iterator<Item = SaveChunk> + Send {
    let header = Part::Header(SnapshotHeader {
        kind,
        index: snapshot.index,
        term: snapshot.term,
        size: snapshot.data.len() as u64,
    });
    let crc = Part::Crc32c(crc32c::crc32c(&snapshot.data));
    let data = snapshot.data;
    let chunks = (0..data.len())
        .step_by(BACKUP_CHUNK_BYTES)
        .map(move |at| Part::Data(data.slice(at..(at + BACKUP_CHUNK_BYTES).min(data.len()))));
    std::iter::once(header)
        .chain(chunks)
        .chain(std::iter::once(crc))
        .map(|part| SaveChunk { part: Some(part) })
}

/// What [`snapshot_of_data_dir`] found.
#[derive(Debug, Clone)]
pub struct DataDirSnapshot {
    /// The state at the stored commit index.
    pub snapshot: StateSnapshot,
    /// The node's last log index: entries after the commit index that the
    /// group may have committed (and acknowledged) without this node
    /// learning it, left out.
    pub last_index: LogIndex,
}

/// The state of a stopped node's data directory `dir` on `disk`, through
/// `machine`: its snapshot, then its log up to the commit index it
/// stored (or, with `whole_log`, to its end). It holds every write the
/// node knew committed; a node that was behind lacks the last writes the
/// group acknowledged. The whole log may also hold entries that were
/// never committed (a write whose client was told it failed or timed
/// out). Opening the log drops a torn tail, as the node's own start would.
pub fn snapshot_of_data_dir<S: StateMachine>(
    disk: Arc<dyn Disk>,
    dir: &Path,
    mut machine: S,
    whole_log: bool,
) -> Result<DataDirSnapshot, BackupError> {
    if !disk.exists(&dir.join(IDENTITY_FILE)) {
        return Err(BackupError::NotADataDir(dir.display().to_string()));
    }
    let (_storage, recovered) = RaftStorage::open(disk, dir, ClusterConfig::joining())
        .map_err(|e| BackupError::Storage(e.to_string()))?;
    let initial = recovered.initial;
    if let Some(data) = &recovered.machine_snapshot {
        machine.restore(data)?;
    }
    let (mut index, mut term) = initial
        .snapshot
        .as_ref()
        .map_or((0, 0), |s| (s.meta.index, s.meta.term));
    let last_index = initial.entries.last().map_or(index, |e| e.index);
    let through = match whole_log {
        true => last_index,
        false => initial.hard_state.commit,
    };
    for entry in initial.entries.iter().take_while(|e| e.index <= through) {
        if entry.kind == cairn_raft::EntryKind::Normal {
            machine.apply(entry.index, &entry.data);
        }
        (index, term) = (entry.index, entry.term);
    }
    Ok(DataDirSnapshot {
        snapshot: StateSnapshot {
            index,
            term,
            data: machine.snapshot(),
        },
        last_index,
    })
}

/// Writes the empty data directory `dir` on `disk` as a new one-node
/// cluster, named `cluster` and made of node `node`, holding `snapshot`
/// (checked first by restoring it into `machine`). Returns the new
/// cluster's id. Nothing is written when the snapshot does not restore or
/// `dir` holds anything.
pub fn restore_data_dir<S: StateMachine>(
    disk: Arc<dyn Disk>,
    dir: &Path,
    cluster: &str,
    node: NodeId,
    snapshot: &StateSnapshot,
    mut machine: S,
) -> Result<String, BackupError> {
    machine.restore(&snapshot.data)?;
    let storage_error = |e: &dyn std::fmt::Display| BackupError::Storage(e.to_string());
    if disk.exists(dir) && !disk.list(dir).map_err(|e| storage_error(&e))?.is_empty() {
        return Err(BackupError::NotEmpty(dir.display().to_string()));
    }
    // Random, not derived from the flags: a restored cluster is never the
    // one it was copied from, even on the same addresses.
    let salt: u64 = cairn_rpc::seeded_rng().r#gen();
    let identity = Identity {
        cluster_id: format!("{cluster}-restored-{salt:016x}"),
        node,
        members: vec![node],
    };
    let identity =
        crate::identity::check_or_store(&*disk, dir, identity).map_err(|e| storage_error(&e))?;
    let config = ClusterConfig::new([node]);
    let (mut storage, _) =
        RaftStorage::open(disk, dir, config.clone()).map_err(|e| storage_error(&e))?;
    let ready = Ready {
        hard_state: Some(HardState {
            term: snapshot.term,
            vote: None,
            commit: snapshot.index,
        }),
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                index: snapshot.index,
                term: snapshot.term,
                config,
                // The one member's address comes from its --peers when it
                // starts; members added later carry theirs.
                urls: Default::default(),
            },
            data: snapshot.data.clone(),
        }),
        must_sync: true,
        ..Ready::default()
    };
    storage.persist(&ready).map_err(|e| storage_error(&e))?;
    Ok(identity.cluster_id)
}

#[cfg(test)]
mod tests {
    use cairn_storage::MemDisk;

    use super::*;

    /// A state machine that is its bytes: each command is appended.
    #[derive(Default)]
    struct Text(Vec<u8>);

    impl StateMachine for Text {
        fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
            self.0.extend_from_slice(command);
            Bytes::new()
        }
        fn snapshot(&self) -> Bytes {
            Bytes::copy_from_slice(&self.0)
        }
        fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
            if snapshot.starts_with(b"!") {
                return Err("not text".into());
            }
            self.0 = snapshot.to_vec();
            Ok(())
        }
    }

    fn snapshot(data: &'static [u8]) -> StateSnapshot {
        StateSnapshot {
            index: 41,
            term: 5,
            data: Bytes::from_static(data),
        }
    }

    /// Runs `body` where the runtime's seeded randomness is available (a
    /// simulation build takes it from the simulator).
    fn with_runtime(body: impl FnOnce() + Send + 'static) {
        #[cfg(madsim)]
        madsim::runtime::Runtime::new().block_on(async move { body() });
        #[cfg(not(madsim))]
        body();
    }

    #[test]
    fn a_restored_directory_reads_back_as_the_snapshot() {
        with_runtime(restored_directory_reads_back);
    }

    fn restored_directory_reads_back() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let dir = Path::new("raft");
        let cluster = restore_data_dir(
            disk.clone(),
            dir,
            "cairn",
            4,
            &snapshot(b"state"),
            Text::default(),
        )
        .unwrap();
        assert!(cluster.starts_with("cairn-restored-"), "{cluster}");
        let read = snapshot_of_data_dir(disk.clone(), dir, Text::default(), false).unwrap();
        assert_eq!(read.snapshot, snapshot(b"state"));
        assert_eq!(read.last_index, 41);
        let error =
            restore_data_dir(disk, dir, "cairn", 4, &snapshot(b"x"), Text::default()).unwrap_err();
        assert!(matches!(error, BackupError::NotEmpty(_)), "{error}");
    }

    #[test]
    fn a_snapshot_that_does_not_restore_writes_nothing() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let dir = Path::new("raft");
        let error = restore_data_dir(
            disk.clone(),
            dir,
            "cairn",
            1,
            &snapshot(b"!"),
            Text::default(),
        )
        .unwrap_err();
        assert!(matches!(error, BackupError::Restore(_)), "{error}");
        assert!(!disk.exists(dir));
        let error = snapshot_of_data_dir(disk, dir, Text::default(), true).unwrap_err();
        assert!(error.to_string().contains("stopped node"), "{error}");
    }

    #[test]
    fn a_backup_streams_as_header_chunks_and_checksum() {
        let data = Bytes::from(vec![7u8; BACKUP_CHUNK_BYTES * 2 + 10]);
        let parts: Vec<Part> = save_chunks(
            "kv".into(),
            StateSnapshot {
                index: 3,
                term: 2,
                data: data.clone(),
            },
        )
        .map(|chunk| chunk.part.unwrap())
        .collect();
        assert_eq!(parts.len(), 5);
        assert!(
            matches!(&parts[0], Part::Header(h) if h.size == data.len() as u64 && h.kind == "kv")
        );
        assert!(matches!(&parts[3], Part::Data(d) if d.len() == 10));
        assert_eq!(parts[4], Part::Crc32c(crc32c::crc32c(&data)));
    }
}
