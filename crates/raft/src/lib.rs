//! # cairn-raft: the Raft consensus protocol as a pure state machine
//!
//! This crate is the protocol and nothing else: no threads, no clock, no
//! sockets, no files, no global randomness. A [`Raft`] changes only when its
//! caller feeds it an input:
//!
//! - [`Raft::tick`]: one unit of logical time passed;
//! - [`Raft::step`]: a [`Message`] arrived from another node;
//! - [`Raft::propose`]: a client wants a command in the log;
//! - [`Raft::read_index`]: a client wants a linearizable read;
//! - [`Raft::compact`]: the service took a snapshot.
//!
//! and it answers with a [`Ready`]: state to persist, messages to send,
//! committed entries to apply, reads to serve. `Ready`'s documentation
//! numbers the steps its caller must take, in order; `cairn-rsm` is that
//! caller, with real disks and gRPC, and the tests here are another, with a
//! scripted network.
//!
//! To see the protocol at work message by message, read the golden scripts
//! in `crates/raft/testdata/` (start with `election.txt`): each scenario,
//! with every `Ready` the core produced, checked by `cargo test`.
//!
//! ## The protocol, as implemented
//!
//! - **Election** (Raft §5.2): a follower that hears nothing from a leader
//!   for a randomized election timeout (drawn from a seeded generator)
//!   first asks for *pre-votes* (thesis §9.6): a pre-vote is granted only by
//!   nodes that also lost their leader and whose log is no newer. Only
//!   with a quorum of pre-votes does it raise its term and ask for real
//!   votes, so a node that rejoins after a partition cannot depose a healthy
//!   leader by its inflated term. Voters also ignore vote requests while they
//!   hear from a leader (the leader lease, thesis §4.2.3).
//! - **Check quorum** (thesis §6.2): a leader that has not heard from a
//!   quorum during an election timeout steps down, so a leader cut off from
//!   the majority stops claiming leadership.
//! - **Replication** (Raft §5.3): a proposal is sent at once, not at the
//!   next heartbeat. Each follower has a [`Progress`]: *probe* (one append at
//!   a time until the logs are known to match), *replicate* (appends are
//!   pipelined, up to `max_inflight_appends` in flight) or *snapshot*. A
//!   rejection carries the conflicting term and its first index, so the
//!   leader skips a whole term per round trip.
//! - **Commitment** (Raft §5.4.2, Figure 8): the leader commits the highest
//!   index stored by a quorum, counting its own *persisted* log, and only if
//!   that entry is of its own term. A new leader appends a no-op to commit
//!   what came before. Heartbeats go out every `heartbeat_ticks` and carry
//!   the commit index; when the commit index moves, followers are told at
//!   once.
//! - **Snapshots** (Raft §7): the service hands over a snapshot at an applied
//!   index and the log before it is dropped. A follower that needs dropped
//!   entries gets the snapshot in chunks of `snapshot_chunk_bytes`, one at a
//!   time; a restarted node resumes applying after its snapshot.
//! - **Read index** (thesis §6.4): a read is served at the commit index once
//!   a heartbeat round, started after the request, confirms leadership.
//! - **Leadership transfer** (thesis §3.10): the leader brings the successor
//!   up to date and sends it `TimeoutNow`; it campaigns at once.
//! - The members are a [`ClusterConfig`] value carried in snapshots, not a
//!   fixed peer list.
//!
//! ## Implementation caveats
//!
//! - Membership changes (joint consensus or single-server changes) are not
//!   implemented yet; the configuration is fixed when the group is created.
//! - No learners, no lease reads (read index only).
//! - The whole log after the last snapshot is kept in memory; the service is
//!   expected to snapshot often enough to bound it.
//! - A follower installing a snapshot receives it whole in memory before
//!   handing it to the state machine.

mod config;
mod config_history;
mod election;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod read;
mod ready;
mod reconfigure;
mod replication;
mod start;
mod step;
mod types;

pub use config::{Config, ConfigError};
pub use membership::{ClusterConfig, ConfChange, ConfChangeError, ConfigEntry};
pub use message::{
    AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse, InstallSnapshot,
    InstallSnapshotResponse, Message, MessageBody, Reject, RequestVote, RequestVoteResponse,
};
pub use node::{ProposeError, Raft, Role, Status};
pub use progress::{Progress, ProgressState};
pub use ready::{ReadState, Ready};
pub use replication::MAX_SNAPSHOT_BYTES;
pub use start::InitialState;
pub use types::{Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
