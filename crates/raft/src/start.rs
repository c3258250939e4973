//! Where a node starts: [`InitialState`], what its storage recovered, and
//! [`Raft::new`], which rebuilds the log, the hard state and the
//! configuration from it. The configuration is the one the snapshot and
//! the log imply (the latest configuration entry, committed or not), so a
//! node restarted at any point of a membership change comes back with the
//! configuration it had.

use std::collections::{BTreeMap, VecDeque};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::{Config, ConfigError};
use crate::config_history::ConfigHistory;
use crate::log::RaftLog;
use crate::membership::{ClusterConfig, ConfigEntry};
use crate::node::{Raft, Role};
use crate::types::{Entry, EntryKind, HardState, LogIndex, Snapshot};

/// What a node starts from: what its storage recovered.
#[derive(Debug, Clone)]
pub struct InitialState {
    /// The group's members at bootstrap (used when there is no snapshot
    /// yet; configuration entries in `entries` take precedence).
    /// [`ClusterConfig::joining`] for a node that joins an existing group.
    pub cluster: ClusterConfig,
    /// The durable term, vote and commit.
    pub hard_state: HardState,
    /// The latest durable snapshot, if any. The caller restores its state
    /// machine from it; the core resumes applying at its index + 1.
    pub snapshot: Option<Snapshot>,
    /// The durable entries after the snapshot, consecutive.
    pub entries: Vec<Entry>,
}

impl InitialState {
    /// A brand-new node of `cluster` (or [`ClusterConfig::joining`]).
    pub fn new(cluster: ClusterConfig) -> Self {
        Self {
            cluster,
            hard_state: HardState::default(),
            snapshot: None,
            entries: Vec::new(),
        }
    }
}

impl Raft {
    /// A node starting from `initial`, drawing its election timeouts from a
    /// generator seeded with `seed`.
    pub fn new(config: Config, initial: InitialState, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let (snapshot_index, snapshot_term, cluster) = match &initial.snapshot {
            Some(snapshot) => (
                snapshot.meta.index,
                snapshot.meta.term,
                snapshot.meta.config.clone(),
            ),
            None => (0, 0, initial.cluster.clone()),
        };
        let entries: Vec<Entry> = initial
            .entries
            .into_iter()
            .filter(|e| e.index > snapshot_index)
            .collect();
        if let Some(first) = entries.first()
            && first.index != snapshot_index + 1
        {
            return Err(ConfigError(format!(
                "the stored log starts at {} but the snapshot ends at {snapshot_index}",
                first.index
            )));
        }
        let membership = restore_membership(cluster, snapshot_index, &entries)?;
        let current = membership.current();
        if membership.current_index() == 0
            && !current.voters.is_empty()
            && !current.is_member(config.id)
        {
            return Err(ConfigError(format!(
                "node {} is not a member of the cluster {:?}",
                config.id, current.voters
            )));
        }
        let log = RaftLog::restore(
            snapshot_index,
            snapshot_term,
            entries,
            initial.hard_state.commit,
        );
        let mut raft = Self {
            config,
            membership,
            term: initial.hard_state.term,
            vote: initial.hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            rng: StdRng::seed_from_u64(seed),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            messages: Vec::new(),
            snapshot: initial.snapshot,
            snapshot_to_install: None,
            incoming_snapshot: None,
            read_round: 0,
            pending_reads: VecDeque::new(),
            read_states: Vec::new(),
            transfer_target: None,
            unreachable_leader: None,
            transfer_elapsed: 0,
            transfer_sent: false,
            commit_broadcast_due: false,
            last_hard_state: initial.hard_state,
            ready_outstanding: false,
            protocol_violations: 0,
        };
        raft.last_hard_state.commit = raft.log.commit;
        raft.reset_election_timer();
        Ok(raft)
    }
}

/// The configurations the stored snapshot and log imply, the latest one
/// (committed or not) in effect.
fn restore_membership(
    base: ClusterConfig,
    snapshot_index: LogIndex,
    entries: &[Entry],
) -> Result<ConfigHistory, ConfigError> {
    let mut membership = ConfigHistory::new(base, snapshot_index);
    for entry in entries.iter().filter(|e| e.kind == EntryKind::Config) {
        let decoded = ConfigEntry::decode(entry.data.clone()).ok_or_else(|| {
            ConfigError(format!(
                "the stored configuration entry at index {} cannot be decoded; \
                 the log is damaged: restore this node from a healthy member",
                entry.index
            ))
        })?;
        membership.push(entry.index, entry.term, decoded);
    }
    Ok(membership)
}
