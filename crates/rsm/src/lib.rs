//! # cairn-rsm: a replicated state machine on Raft
//!
//! A service (the key/value store, the shard controller) implements
//! [`StateMachine`] and gets a [`Node`]: a task that owns one
//! `cairn_raft::Raft` core, its durable storage and the state machine, and
//! talks to its peers over gRPC. Services never touch Raft itself; they
//! [`Node::submit`] commands and [`Node::read`] the state.
//!
//! ## The node's loop
//!
//! One task owns everything and changes it in response to messages (no
//! locks). Each turn it takes a tick of its clock (10 ms by default) or up
//! to [`MAX_COMMANDS_PER_ROUND`] queued commands (proposals, reads, Raft
//! messages from peers), proposes all the turn's commands at once and asks
//! for one read index for all the turn's reads, then works off the core's
//! `Ready` exactly as its documentation orders:
//!
//! 0. send a leader's appends and heartbeats at once, so that followers
//!    write while the leader writes (thesis §10.2.1; the leader counts its
//!    own log toward commitment only once it is durable);
//! 1. persist entries, hard state and any snapshot in the write-ahead log
//!    (`cairn_storage::Wal`) with **one fsync for the batch** (group commit);
//! 2. send the other messages, requests and responses alike: each peer's
//!    as one batch on this node's long-lived gRPC stream to that peer
//!    (`Raft.Stream`, opened lazily, reopened when it breaks). A peer
//!    answers on its own stream back, so nothing pairs responses with
//!    requests. When the stream to the leader breaks (its process died),
//!    the node tells the core, which asks for pre-votes at once instead of
//!    waiting out the election timeout;
//! 3. restore the state machine from a snapshot the leader sent;
//! 4. apply committed commands and answer their submitters, matched by
//!    index *and* term (an entry at the index from another term means the
//!    command was lost with a deposed leader: `NotLeader`);
//! 5. serve reads whose read index is applied;
//! 6. advance the core.
//!
//! When the persisted Raft state passes `max_raft_state` bytes, the node
//! asks the state machine for a snapshot, stores it (temporary file, fsync,
//! rename) and only then compacts the core and the log; a failed save leaves
//! both as they were and is retried after [`SNAPSHOT_RETRY_FIRST`], doubling
//! to [`SNAPSHOT_RETRY_MAX`]. A node that stops being leader fails every
//! waiting submitter and reader at once with [`SubmitError::NotLeader`].
//!
//! ## Membership
//!
//! [`Node::propose_conf_change`] changes the group one server at a time as
//! the Raft core rules (add a learner with its URL, promote it once caught
//! up, remove a member), answered when the change is applied or refused
//! with a [`MembershipError`] that says what to do; [`Node::membership`]
//! shows the configuration and each learner's lag. A learner's URL rides in
//! its configuration entry, so every node learns to reach it (see
//! `membership.rs`); snapshots carry the whole configuration and every
//! member's URL. A node's status and its not-leader answers name the
//! members and the leader with the URLs of the current configuration.
//! Operators
//! and joining nodes reach all this through the `Members` gRPC service
//! ([`Node::members_service`], mounted by every service beside
//! [`Node::raft_service`]): list, add a learner (the leader picks an id
//! never used), promote, remove, transfer leadership, join.
//!
//! ## Backups
//!
//! [`Node::backup`] is a consistent snapshot: a read barrier (read index,
//! as [`Node::read`]), then the state machine's snapshot as applied, taken
//! on the node's task; [`Node::backup_service`] streams it as
//! `Backup.Save` (header, 1 MiB chunks, CRC-32C) and [`BackupFile`] is its
//! file format. [`snapshot_of_data_dir`] reads a stopped node's data
//! directory (disaster recovery), and [`restore_data_dir`] writes a new
//! one-node cluster, with a new cluster id, from either (see `backup.rs`).
//!
//! ## Identity, bounds, stops
//!
//! - The member list given at the first start is stored with the data (a
//!   cluster id, the node's id, the members); a later start with other
//!   members or another id is refused, and every message batch carries the
//!   cluster id (a node refuses another cluster's).
//! - Every queue has a named bound: [`MAX_QUEUED_COMMANDS`] (a client's
//!   command fails at once with [`SubmitError::Overloaded`] when it is
//!   full), [`MAX_PENDING_PROPOSALS`], [`MAX_PENDING_READS`],
//!   [`MAX_QUEUED_BATCHES_PER_PEER`].
//! - A node that cannot go on (an I/O error, a snapshot it cannot
//!   restore) stops and says why, a [`FatalError`]: in its status, through
//!   [`Node::stopped`], and to every client it fails
//!   ([`SubmitError::Stopped`], `UNAVAILABLE` with the reason on the wire).
//! - A misconfigured group says so in its logs, at most once per
//!   [`NodeConfig::problem_log_interval`] per problem: a node without a
//!   leader warns, naming the peers that do not answer (a node listed in
//!   `--peers` that does not run); a node logs every batch it refuses
//!   (another cluster, a message for another node, one "from" itself) and
//!   names itself in the refusal ([`NODE_ID_KEY`]), so that the sender can
//!   say "node 3's address is answered by a node with this node's own id"
//!   (two processes share an id) or "by node 2" (wrong `--peers`).
//!
//! ## Metrics
//!
//! Every node keeps [`Metrics`] (Prometheus series in a registry of its
//! own): the Raft state sampled from the status at scrape time, and
//! counters and histograms fed where things happen (proposals, entries
//! per fsync and its latency, read-index rounds, snapshots, each peer's
//! batch round trip). [`Node::scrape`] renders them in the text format;
//! services add their request latencies through [`RequestMetrics`].
//!
//! ## Implementation caveats
//!
//! - A member's URL never changes: it is fixed by the entry that adds it
//!   (a moved machine is removed and joins again under a new id).
//! - fsync runs on the node's task: while it runs, the node queues commands
//!   (which is what batches them).
//! - A snapshot is taken synchronously on the node's task.
//! - A backup is held whole in memory while it streams (on the leader, and
//!   in `cairn kv snapshot save` until its checksum is verified), as the
//!   state machine's snapshot already is.
//! - Messages to a peer whose queue holds [`MAX_QUEUED_BATCHES_PER_PEER`]
//!   batches (its stream is being opened, or it reads slowly) are dropped,
//!   and so is a batch that waited past the RPC timeout; Raft retransmits.
//! - Only the stream's breaking tells of a dead leader: a leader that
//!   hangs with its connections open is found by the election timeout.

mod backup;
mod backup_file;
mod codec;
#[cfg(test)]
mod crash_tests;
mod driver;
mod error;
mod identity;
mod members_service;
mod membership;
mod metrics;
mod node;
mod reads;
pub mod sessions;
mod state_machine;
mod storage;
mod transport;

pub use backup::{
    BACKUP_CHUNK_BYTES, BACKUP_DEADLINE, BackupError, BackupServer, BackupService, DataDirSnapshot,
    StateSnapshot, restore_data_dir, snapshot_of_data_dir,
};
pub use backup_file::{
    BACKUP_FORMAT_VERSION, BackupChecksum, BackupFile, BackupFileError, BackupHeader,
};
/// The Raft vocabulary a service needs, re-exported so that services never
/// import `cairn-raft` (DESIGN.md, "Layers and who may import whom";
/// `scripts/check-layers` enforces it).
pub use cairn_raft::{ClusterConfig, ConfChange, ConfChangeError, LogIndex, NodeId, Role, Term};
pub use codec::{CodecError, MAX_TERM_OR_INDEX, decode, encode};
pub use error::{FatalError, MembershipError, StartError, SubmitError};
pub use members_service::{MEMBER_CHANGE_DEADLINE, MembersServer, MembersService, TRANSFER_WAIT};
pub use membership::Membership;
pub use metrics::{Metrics, RequestMetrics, RequestTimer};
pub use node::{
    MAX_COMMAND_BYTES, MAX_COMMANDS_PER_ROUND, MAX_PENDING_PROPOSALS, MAX_PENDING_READS,
    MAX_QUEUED_COMMANDS, Node, NodeConfig, NodeStatus, RaftServer, SNAPSHOT_RETRY_FIRST,
    SNAPSHOT_RETRY_MAX,
};
/// The Prometheus client library, for a service's own series in
/// [`Metrics::registry`].
pub use prometheus;
pub use sessions::{Seen, Sessions};
pub use state_machine::{RestoreError, StateMachine};
pub use transport::{
    LocalNet, MAX_BATCH_BYTES, MAX_QUEUED_BATCHES_PER_PEER, NODE_ID_KEY, RaftService,
};
