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
    /// unreadable: the node stops with it.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}
