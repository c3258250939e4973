//! The runtime's errors, with their retry semantics.

use cairn_raft::{ConfChangeError, NodeId};

use crate::state_machine::RestoreError;

/// Why a submitted command or a read did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// This node is not the leader (or stopped being it before the command
    /// was applied). Retry at `hint` if given, else at another node. A
    /// command that failed this way may still have been applied: services
    /// make retries safe with a client id and sequence number.
    #[error("not the leader{}", hint.map(|h| format!(" (try node {h})")).unwrap_or_default())]
    NotLeader {
        /// The leader this node knows of.
        hint: Option<NodeId>,
    },
    /// No answer within the deadline; the outcome is unknown. Retry.
    #[error("no answer within the deadline; the command may or may not have been applied")]
    Timeout,
    /// The node is shutting down. Retry at another node.
    #[error("the node is shutting down")]
    Shutdown,
    /// The node stopped on its own and serves nothing more; nothing was
    /// done. Retry at another node; this one needs its operator.
    #[error("the node stopped: {0}")]
    Stopped(FatalError),
    /// The node has as much work waiting as its bounds allow (its command
    /// queue, its proposals or its reads in flight); nothing was done.
    /// Retry after a pause (with back-off), here or at another node.
    #[error(
        "the node is overloaded (too many requests waiting); nothing was done: retry after a pause"
    )]
    Overloaded,
    /// The command is larger than a log entry may be; nothing was done.
    /// Do not retry it unchanged.
    #[error("the command is {bytes} bytes; log entries are limited to {limit} bytes")]
    TooLarge {
        /// The command's size.
        bytes: usize,
        /// [`MAX_COMMAND_BYTES`](crate::MAX_COMMAND_BYTES).
        limit: usize,
    },
}

/// Why a membership change or a leadership transfer was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// It failed like a submitted command: [`SubmitError::NotLeader`]
    /// names the leader to ask; on a timeout the change may or may not
    /// have been made (list the members to see).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The leader refused the change and nothing changed; the error says
    /// what to do (wait for a pending change, let a learner catch up, use a
    /// new id, ...).
    #[error(transparent)]
    Refused(ConfChangeError),
    /// Leadership can only go to a voter.
    #[error(
        "node {id} is not a voter of this group and cannot lead; promote it first, or choose a voter"
    )]
    NotVoter {
        /// The refused successor.
        id: NodeId,
    },
    /// Another member already has the address a new learner was given:
    /// two ids at one address would each receive the other's messages.
    /// There is no address update: remove the member first.
    #[error(
        "node {id} already has the address {url}; remove it first (member remove {id}), or give the new node its own address"
    )]
    AddressInUse {
        /// The member at that address.
        id: NodeId,
        /// The address.
        url: String,
    },
    /// A learner is added with the URL its peers reach it at.
    #[error("node {id} needs a URL (http://host:port) to be added; give its address")]
    NoUrl {
        /// The node to add.
        id: NodeId,
    },
}

/// Why a node stopped on its own: it cannot go on without breaking a
/// promise (an acknowledged write kept, a state machine that matches the
/// log). It says so in its status, through [`Node::stopped`](crate::Node::stopped)
/// and to every client ([`SubmitError::Stopped`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatalError {
    /// `Ready` step 1 failed: the log or hard state could not be made
    /// durable (a full or failing disk).
    #[error("cannot persist the Raft log: {0}; free or repair the disk, then restart the node")]
    Persist(String),
    /// The state machine refused a snapshot the leader sent.
    #[error(
        "cannot restore a snapshot from the leader: {0}; the leader's state does not decode here (a version mismatch?)"
    )]
    Restore(RestoreError),
}

/// Why a node could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The settings are inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be read or is damaged.
    #[error(
        "storage: {0} (check the data directory; move it aside to start this node empty and let it catch up)"
    )]
    Storage(String),
    /// The state machine refused its snapshot.
    #[error("the state machine could not restore its snapshot: {0}")]
    Restore(RestoreError),
}
