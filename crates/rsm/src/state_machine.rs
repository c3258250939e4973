//! [`StateMachine`]: what a service implements to be replicated.

use bytes::Bytes;
use cairn_raft::LogIndex;

/// A deterministic state machine, replicated by applying the same commands
/// in the same order on every node.
///
/// The runtime calls these from one task, in log order. `apply` must be
/// deterministic (no clocks, no randomness, no iteration over unordered
/// maps whose order can differ between nodes) and must not fail: a command
/// the service considers invalid is applied as a no-op with an error in its
/// output.
pub trait StateMachine: Send + 'static {
    /// Applies the command committed at `index`; the output goes to the
    /// client that submitted it (if it is waiting on this node).
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes;

    /// The state as bytes, including everything that must survive a restart
    /// (a service's duplicate table, for instance).
    fn snapshot(&self) -> Bytes;

    /// Replaces the state with a snapshot's. An error means the snapshot is
    /// unreadable: the node does not start with it, or stops with it
    /// ([`FatalError::Restore`](crate::FatalError::Restore)).
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;

    /// How many client sessions the state holds, for the node's metrics
    /// (`cairn_sessions`); `None` for a service without sessions.
    fn session_count(&self) -> Option<usize> {
        None
    }
}

/// Why a state machine could not restore a snapshot: its bytes do not
/// decode as this service's state (damaged, or written by another
/// version). `?` turns a `String` or `&str` reason into one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RestoreError {
    /// What is wrong with the snapshot, in the service's words.
    pub reason: String,
}

impl From<String> for RestoreError {
    fn from(reason: String) -> Self {
        Self { reason }
    }
}

impl From<&str> for RestoreError {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}
