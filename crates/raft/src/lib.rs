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
//! - [`Raft::propose_conf_change`]: an operator adds, promotes or removes a
//!   member;
//! - [`Raft::compact`]: the service took a snapshot;
//! - [`Raft::report_unreachable`]: the caller's connection to a peer broke.
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
//!   hear from a leader (the leader lease, thesis §4.2.3). A follower whose
//!   caller reports its connection to the leader broken
//!   ([`Raft::report_unreachable`]: the leader's process died) forgets the
//!   leader and asks for pre-votes at once instead of waiting out the
//!   timeout; voters that still hear the leader refuse, so a live leader
//!   is safe (`testdata/unreachable_leader.txt`).
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
//! - **Membership change** (thesis §4, with Ongaro's 2015 fix): the members
//!   are a [`ClusterConfig`] (voters, learners, and the ids removed for
//!   good) that lives in the log and in snapshots. A change is one server
//!   at a time, a [`ConfChange`]: add a learner, promote a learner, remove a
//!   member. Learners receive the log and snapshots but never count in a
//!   quorum and never campaign; a new machine joins as one, catches up,
//!   and is promoted (refused while it lacks more than
//!   `promote_max_lag_entries`, or was never heard from). Each change is an
//!   [`EntryKind::Config`] entry carrying the whole new configuration
//!   ([`ConfigEntry`]), in effect as soon as a node appends it, committed
//!   or not (so the entry commits under the configuration it creates); a
//!   truncated one is rolled back, and a restarted node rebuilds its
//!   configuration from its snapshot and log. A leader proposes a change
//!   only after it has committed an entry of its own term, and only when
//!   no other change is pending ([`ConfChangeError`] says which, and what
//!   to do). Quorums (commitment, elections, check quorum, read index)
//!   count the voters of the latest configuration only: never a learner,
//!   never a removed node, and not the leader itself once it has removed
//!   itself; such a leader keeps leading until its removal commits, then
//!   steps down and hands over to the voter with the longest matching log
//!   (`TimeoutNow`), so the group does not wait an election timeout. Any
//!   node answers a vote request (the candidate may know a newer
//!   configuration in which it is a voter).
//!
//!   Why not joint consensus: any two majorities of configurations one
//!   server apart overlap, so single-server changes need no joint phase,
//!   no second entry and no "leave" step, and the thesis recommends them.
//!   Replacing a member is two changes (add, then remove), which is also
//!   how an operator thinks of it; the learner step keeps a slow newcomer
//!   from costing the group its availability meanwhile.
//!
//! ## Implementation caveats
//!
//! - No joint consensus: a change that moves several voters at once is
//!   several changes, each committed before the next.
//! - Ids are never reused: `ClusterConfig::removed` records every id ever
//!   removed, and re-adding one is refused; the layer above must give a
//!   wiped machine a new id. The record grows by one id per removal.
//! - A joining node starts knowing no configuration
//!   ([`ClusterConfig::joining`]) and learns it from the leader's snapshot,
//!   or from the first configuration entry of the log (each carries the
//!   configuration before it too). A snapshot it takes before either
//!   reaches it records no configuration; the core sends it to others with
//!   the configuration it knows by then, and a restart learns it again
//!   from the log.
//! - No lease reads (read index only).
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
