//! [`Config`]: the tunables of one Raft node, validated.

use crate::types::NodeId;

/// A node's settings. Times are in ticks; the runtime decides how long a
/// tick is (`cairn-rsm` uses 10 ms, so the defaults give 100 ms heartbeats
/// and 300-600 ms election timeouts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// A follower that hears nothing from a leader for a random number of
    /// ticks in `[election_timeout_ticks, 2 * election_timeout_ticks)`
    /// starts an election. Also the check-quorum period and the leader lease
    /// that makes voters ignore a disruptive candidate.
    pub election_timeout_ticks: u32,
    /// A leader sends a heartbeat to each follower this often.
    pub heartbeat_ticks: u32,
    /// Ask for a pre-vote before a real election (thesis §9.6), so that a
    /// node that rejoins after a partition does not depose a healthy leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down (thesis §6.2).
    pub check_quorum: bool,
    /// The most entry bytes in one AppendEntries (at least one entry is
    /// always sent).
    pub max_append_bytes: u64,
    /// The most AppendEntries in flight to one follower; when full, the
    /// leader waits for an answer (or a heartbeat response) before sending
    /// more.
    pub max_inflight_appends: usize,
    /// The size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// The most committed-entry bytes handed to the state machine in one
    /// `Ready` (at least one entry is always handed over).
    pub max_apply_bytes: u64,
    /// A learner is promoted to voter only once it lacks at most this many
    /// of the leader's entries (etcd refuses below 90% of the leader's
    /// log; a fixed count reads more plainly in an error message).
    pub promote_max_lag_entries: u64,
}

impl Config {
    /// The defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_timeout_ticks: 30,
            heartbeat_ticks: 10,
            pre_vote: true,
            check_quorum: true,
            max_append_bytes: 1 << 20,
            max_inflight_appends: 64,
            snapshot_chunk_bytes: 1 << 20,
            max_apply_bytes: 4 << 20,
            promote_max_lag_entries: 1000,
        }
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError("the node id must not be 0".into()));
        }
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError("heartbeat_ticks must be at least 1".into()));
        }
        if self.election_timeout_ticks <= self.heartbeat_ticks {
            return Err(ConfigError(format!(
                "election_timeout_ticks ({}) must be greater than heartbeat_ticks ({}); \
                 a few heartbeats per election timeout is usual",
                self.election_timeout_ticks, self.heartbeat_ticks
            )));
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError(
                "max_inflight_appends must be at least 1".into(),
            ));
        }
        if self.snapshot_chunk_bytes == 0 || self.max_append_bytes == 0 || self.max_apply_bytes == 0
        {
            return Err(ConfigError("byte limits must be at least 1".into()));
        }
        Ok(())
    }
}

/// An invalid [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Raft configuration: {0}")]
pub struct ConfigError(pub String);
