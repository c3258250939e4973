//! The nouns of the protocol: terms, indices, entries, hard state and
//! snapshots (the cluster configuration is in `membership.rs`).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::membership::ClusterConfig;

/// A node's identity in its Raft group. Never 0 (0 means "nobody" on the
/// wire).
pub type NodeId = u64;
/// A Raft term (Raft §5.1). Starts at 0; the first election makes it 1.
pub type Term = u64;
/// A position in the log. The first entry has index 1; index 0 is the empty
/// log's "previous entry", with term 0.
pub type LogIndex = u64;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A command for the state machine.
    Normal,
    /// The empty entry a new leader appends to commit entries of earlier terms
    /// (Raft §5.4.2, §8) and to make read index work. Not applied to the
    /// state machine.
    Noop,
    /// A configuration change: its data is a
    /// [`ConfigEntry`](crate::ConfigEntry). The configuration takes effect
    /// when the entry is appended; the state machine need not apply it.
    Config,
}

/// One log entry.
///
/// Invariant: within a log, indices are consecutive and terms never
/// decrease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// Command, no-op or configuration change.
    pub kind: EntryKind,
    /// The command's bytes (empty for a no-op, an encoded
    /// [`ConfigEntry`](crate::ConfigEntry) for a configuration change).
    pub data: Bytes,
}

impl Entry {
    /// The entry's approximate size in memory and on the wire.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state that must be durable before a node answers or sends anything
/// that depends on it (Raft Figure 2, "persistent state on all servers"),
/// plus the commit index, saved so a restarted node re-applies quickly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The highest index it knows to be committed.
    pub commit: LogIndex,
}

/// What a snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last index the snapshot includes.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The configuration as of `index`.
    pub config: ClusterConfig,
    /// The service's address of each member, for the service: the core
    /// carries it from a leader's InstallSnapshot into the snapshot it
    /// hands over (`Ready::snapshot`) and never reads it. Empty where the
    /// core makes the metadata itself (`Raft::compact`).
    pub urls: BTreeMap<NodeId, String>,
}

/// A snapshot of the state machine at `meta.index`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The state machine's bytes.
    pub data: Bytes,
}
