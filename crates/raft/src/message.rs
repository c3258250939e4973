//! The messages Raft nodes exchange.
//!
//! Every request expects exactly one response from the node it went to, and
//! the core always produces it (rejections included): a transport may pair
//! the responses to a peer with that peer's requests in order (`cairn-rsm`
//! does not: it streams responses like any other message, and matches
//! them by term and index). [`MessageBody::TimeoutNow`] is
//! the only message with no response.

use bytes::Bytes;

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// A message from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign
    /// in).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

impl Message {
    /// Whether this message is a request that gets a response.
    pub fn is_request(&self) -> bool {
        matches!(
            self.body,
            MessageBody::AppendEntries(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::RequestVote(_)
                | MessageBody::InstallSnapshot(_)
        )
    }

    /// Whether this message is a response to a request.
    pub fn is_response(&self) -> bool {
        matches!(
            self.body,
            MessageBody::AppendEntriesResponse(_)
                | MessageBody::HeartbeatResponse(_)
                | MessageBody::RequestVoteResponse(_)
                | MessageBody::InstallSnapshotResponse(_)
        )
    }

    /// Whether this is a leader's replication traffic (appends, heartbeats,
    /// snapshot chunks, TimeoutNow), which a leader may send before its own
    /// disk write completes.
    pub fn is_leader_traffic(&self) -> bool {
        matches!(
            self.body,
            MessageBody::AppendEntries(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_)
                | MessageBody::TimeoutNow
        )
    }

    /// The approximate encoded size of the message.
    pub fn size_bytes(&self) -> u64 {
        let body = match &self.body {
            MessageBody::AppendEntries(request) => {
                request.entries.iter().map(Entry::size_bytes).sum::<u64>() + 32
            }
            MessageBody::InstallSnapshot(request) => request.data.len() as u64 + 64,
            _ => 16,
        };
        body + 24
    }
}

/// The kinds of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// Leader to follower: append entries after `prev_index` (Raft §5.3).
    AppendEntries(AppendEntries),
    /// The answer to [`MessageBody::AppendEntries`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// Leader to follower: "I am still leader; this much is committed".
    /// Also confirms leadership for read index (Raft §6.4 of the thesis).
    Heartbeat(Heartbeat),
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse(HeartbeatResponse),
    /// Candidate to voter, for a pre-vote or a real vote (Raft §5.2, thesis
    /// §9.6).
    RequestVote(RequestVote),
    /// The answer to [`MessageBody::RequestVote`].
    RequestVoteResponse(RequestVoteResponse),
    /// Leader to follower: one chunk of a snapshot (Raft §7).
    InstallSnapshot(InstallSnapshot),
    /// The answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// Leader to its chosen successor: campaign now (thesis §3.10).
    TimeoutNow,
}

/// See [`MessageBody::AppendEntries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendEntries {
    /// The index of the entry just before `entries`.
    pub prev_index: LogIndex,
    /// Its term.
    pub prev_term: Term,
    /// The entries, consecutive from `prev_index + 1`.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub commit: LogIndex,
}

/// See [`MessageBody::AppendEntriesResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// On success: the index up to which the follower's log now matches the
    /// leader's. On rejection: the follower's last index.
    pub match_index: LogIndex,
    /// Set when the entries were rejected.
    pub reject: Option<Reject>,
}

/// Why an append was rejected, with the hint that lets the leader skip a
/// whole conflicting term at once (the "fast back-up" of Raft §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// The `prev_index` of the rejected request.
    pub rejected_index: LogIndex,
    /// The term of the follower's entry at `rejected_index`, if it has one.
    pub conflict_term: Option<Term>,
    /// The first index of `conflict_term` in the follower's log, or its last
    /// index + 1 if it has no entry at `rejected_index`.
    pub conflict_index: LogIndex,
}

/// See [`MessageBody::Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The leader's commit index, capped at what this follower matches.
    pub commit: LogIndex,
    /// The leader's read round; echoed back to confirm leadership.
    pub read_round: u64,
}

/// See [`MessageBody::HeartbeatResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The echoed read round (0 when the heartbeat was rejected).
    pub read_round: u64,
    /// Set, to the follower's last index, when its log ends before the
    /// heartbeat's commit index: it lost entries the leader counts as
    /// matched (a node restarted on an empty or replaced disk), and the
    /// leader must start over from there.
    pub lacking: Option<LogIndex>,
}

/// See [`MessageBody::RequestVote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestVote {
    /// A pre-vote: asks "would you vote for me?" without anyone changing
    /// term (thesis §9.6).
    pub pre_vote: bool,
    /// Sent on a leader's request (`TimeoutNow`): voters ignore their leader
    /// lease.
    pub transfer: bool,
    /// The candidate's last log index.
    pub last_index: LogIndex,
    /// The candidate's last log term.
    pub last_term: Term,
}

/// See [`MessageBody::RequestVoteResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestVoteResponse {
    /// Answers a pre-vote.
    pub pre_vote: bool,
    /// Whether the vote is granted.
    pub granted: bool,
}

/// See [`MessageBody::InstallSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// What the whole snapshot covers.
    pub meta: SnapshotMeta,
    /// The total size of the snapshot's data.
    pub total_bytes: u64,
    /// Where this chunk starts in the data.
    pub offset: u64,
    /// The chunk.
    pub data: Bytes,
}

/// See [`MessageBody::InstallSnapshotResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallSnapshotResponse {
    /// The snapshot index this answers.
    pub snapshot_index: LogIndex,
    /// The offset the follower expects next (the total size once complete).
    pub next_offset: u64,
    /// Whether the follower now has the whole snapshot (or a log that
    /// already covers it).
    pub done: bool,
}
