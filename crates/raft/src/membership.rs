//! Who is in the group: [`ClusterConfig`] (voters, learners, and the ids
//! removed for good), the [`ConfChange`] that moves it one server at a
//! time, and the bytes of a configuration entry in the log.
//!
//! The idea (thesis §4.2, with Ongaro's 2015 fix): a configuration is a value
//! in the log. A change adds one learner, promotes one learner to voter, or
//! removes one member; any two majorities of configurations one such step
//! apart overlap, so no joint phase is needed. A configuration entry
//! carries the whole configuration it changes and the step (so the one it
//! creates), so a node knows its configuration from its latest
//! configuration entry alone, rolling back a truncated entry is taking the
//! one before it, and a new machine that receives the log from index 1
//! learns from the first entry the configuration that came before.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::types::NodeId;

/// The members of the group.
///
/// Invariants: `voters`, `learners` and `removed` are disjoint and never
/// hold 0; `voters` is empty only in the configuration of a node that joins
/// an existing group and has not yet heard of it ([`ClusterConfig::joining`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClusterConfig {
    /// The members whose votes and acknowledgements make quorums.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log and snapshots but never count in a
    /// quorum and never campaign (thesis §4.2.1's non-voting members).
    pub learners: BTreeSet<NodeId>,
    /// Ids removed from the group. They never come back: a wiped machine
    /// rejoins under a new id, so an old log of the removed node can never
    /// count again.
    pub removed: BTreeSet<NodeId>,
}

impl ClusterConfig {
    /// A configuration of the given voters.
    ///
    /// # Panics
    /// If `voters` is empty or contains 0.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        assert!(!voters.is_empty(), "a cluster needs at least one voter");
        assert!(!voters.contains(&0), "node id 0 is reserved");
        Self {
            voters,
            ..Self::default()
        }
    }

    /// The configuration of a node joining an existing group: it knows no
    /// member yet, so it never campaigns, and it learns the configuration
    /// from the leader's log or snapshot.
    pub fn joining() -> Self {
        Self::default()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Voters and learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(&self.learners).copied()
    }

    /// Whether the voters for which `granted` holds make a majority.
    pub(crate) fn has_quorum(&self, granted: impl Fn(NodeId) -> bool) -> bool {
        self.voters.iter().filter(|&&id| granted(id)).count() >= self.quorum()
    }

    /// The highest value a majority of voters reached, given each voter's
    /// value (etcd's `CommittedIndex`). 0 without voters.
    pub(crate) fn quorum_value(&self, value: impl Fn(NodeId) -> u64) -> u64 {
        let mut values: Vec<u64> = self.voters.iter().map(|&id| value(id)).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied().unwrap_or(0)
    }

    /// The configuration after `change`, or why the change does not apply.
    pub fn apply(&self, change: ConfChange) -> Result<Self, ConfChangeError> {
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner(id) => {
                if id == 0 {
                    return Err(ConfChangeError::InvalidId);
                }
                if self.removed.contains(&id) {
                    return Err(ConfChangeError::IdRemoved { id });
                }
                if self.is_member(id) {
                    return Err(ConfChangeError::AlreadyMember { id });
                }
                next.learners.insert(id);
            }
            ConfChange::Promote(id) => {
                if !next.learners.remove(&id) {
                    return Err(ConfChangeError::NotLearner { id });
                }
                next.voters.insert(id);
            }
            ConfChange::Remove(id) => {
                if self.is_voter(id) && self.voters.len() == 1 {
                    return Err(ConfChangeError::LastVoter { id });
                }
                if !next.voters.remove(&id) && !next.learners.remove(&id) {
                    return Err(ConfChangeError::NotMember { id });
                }
                next.removed.insert(id);
            }
        }
        Ok(next)
    }

    /// Whether the invariants hold (a configuration from the wire is
    /// checked with this before it is believed).
    pub fn is_valid(&self) -> bool {
        let all = [&self.voters, &self.learners, &self.removed];
        let total: usize = all.iter().map(|set| set.len()).sum();
        let union: BTreeSet<&NodeId> = all.iter().flat_map(|set| set.iter()).collect();
        union.len() == total && !union.contains(&0)
    }
}

/// One single-server step of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Adds a new node as a learner. Its id must never have been used in
    /// this group.
    AddLearner(NodeId),
    /// Makes a learner a voter (the leader first checks it is caught up).
    Promote(NodeId),
    /// Removes a voter or a learner for good. Removing the leader makes it
    /// step down once the change is committed.
    Remove(NodeId),
}

/// Why a configuration change was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// Not the leader (or it is handing leadership over): ask the leader.
    #[error(transparent)]
    Leader(#[from] crate::ProposeError),
    /// A new leader has not yet committed an entry of its own term, so it
    /// cannot know the latest committed configuration (Ongaro, raft-dev,
    /// 2015-07-10).
    #[error(
        "the leader of term {term} has not committed an entry of its term yet; \
         retry in a moment (its first heartbeat round commits one)"
    )]
    LeaderNotReady {
        /// The leader's term.
        term: u64,
    },
    /// Another change is in the log and not committed yet.
    #[error(
        "a configuration change at index {index} is not committed yet; \
         retry once it is (one change at a time)"
    )]
    ChangePending {
        /// The index of the pending change.
        index: u64,
    },
    /// 0 is not a node id.
    #[error("node id 0 is reserved; choose another id")]
    InvalidId,
    /// The id is already a voter or a learner.
    #[error("node {id} is already a member; add a new node under a new id")]
    AlreadyMember {
        /// The id.
        id: NodeId,
    },
    /// The id was removed from this group and cannot come back.
    #[error(
        "node id {id} was removed from this group and cannot be reused; \
         add the machine under a new id"
    )]
    IdRemoved {
        /// The id.
        id: NodeId,
    },
    /// Only a learner can be promoted.
    #[error(
        "node {id} is not a learner; add it as a learner first, let it catch up, then promote it"
    )]
    NotLearner {
        /// The id.
        id: NodeId,
    },
    /// The learner lags too far behind to vote yet, or has never
    /// answered the leader.
    #[error("{}", learner_behind(*id, *behind, *threshold, *answered))]
    LearnerBehind {
        /// The learner.
        id: NodeId,
        /// How many entries it lacks.
        behind: u64,
        /// `Config::promote_max_lag_entries`.
        threshold: u64,
        /// Whether it has ever acknowledged an entry (a learner never
        /// heard from may be a machine that is not running).
        answered: bool,
    },
    /// The id is neither a voter nor a learner.
    #[error("node {id} is not a member of this group; list the members and check the id")]
    NotMember {
        /// The id.
        id: NodeId,
    },
    /// A group keeps at least one voter.
    #[error("node {id} is the last voter; add and promote another node before removing it")]
    LastVoter {
        /// The id.
        id: NodeId,
    },
}

/// What [`ConfChangeError::LearnerBehind`] says: how far behind, or that
/// the learner was never heard from.
fn learner_behind(id: NodeId, behind: u64, threshold: u64, answered: bool) -> String {
    if answered {
        format!(
            "learner {id} is {behind} entries behind the leader (at most {threshold} allowed); \
             retry once it has caught up"
        )
    } else {
        format!(
            "learner {id} has not answered the leader yet (is it running and reachable at its \
             URL?); retry once it has caught up"
        )
    }
}

/// What a configuration entry holds: the configuration before, the step
/// taken, the configuration after, and bytes the layer above attached (for
/// example the new member's address); the core never reads them.
///
/// Invariant: `previous.apply(change) == Ok(config)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The configuration the step applies to.
    pub previous: ClusterConfig,
    /// The step.
    pub change: ConfChange,
    /// The configuration after it.
    pub config: ClusterConfig,
    /// The layer above's bytes.
    pub context: Bytes,
}

/// Encoding version of a configuration entry.
const CONFIG_ENTRY_VERSION: u8 = 1;

impl ConfigEntry {
    /// The entry for `change` applied to `previous`, or why it does not
    /// apply.
    pub fn new(
        previous: ClusterConfig,
        change: ConfChange,
        context: Bytes,
    ) -> Result<Self, ConfChangeError> {
        let config = previous.apply(change)?;
        Ok(Self {
            previous,
            change,
            config,
            context,
        })
    }

    /// The entry's bytes: version, step, the previous configuration's three
    /// id sets, context (the new configuration follows from the step).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(CONFIG_ENTRY_VERSION);
        let (tag, id) = match self.change {
            ConfChange::AddLearner(id) => (0, id),
            ConfChange::Promote(id) => (1, id),
            ConfChange::Remove(id) => (2, id),
        };
        out.put_u8(tag);
        out.put_u64_le(id);
        for set in [
            &self.previous.voters,
            &self.previous.learners,
            &self.previous.removed,
        ] {
            out.put_u32_le(set.len() as u32);
            set.iter().for_each(|&id| out.put_u64_le(id));
        }
        out.put_slice(&self.context);
        out.freeze()
    }

    /// Decodes an entry's bytes; `None` if they are not a valid
    /// configuration entry (a broken or hostile sender).
    pub fn decode(mut data: Bytes) -> Option<Self> {
        if data.remaining() < 1 + 1 + 8 || data.get_u8() != CONFIG_ENTRY_VERSION {
            return None;
        }
        let tag = data.get_u8();
        let id = data.get_u64_le();
        let change = match tag {
            0 => ConfChange::AddLearner(id),
            1 => ConfChange::Promote(id),
            2 => ConfChange::Remove(id),
            _ => return None,
        };
        let previous = ClusterConfig {
            voters: decode_ids(&mut data)?,
            learners: decode_ids(&mut data)?,
            removed: decode_ids(&mut data)?,
        };
        if previous.voters.is_empty() || !previous.is_valid() {
            return None;
        }
        Self::new(previous, change, data).ok()
    }
}

fn decode_ids(data: &mut Bytes) -> Option<BTreeSet<NodeId>> {
    if data.remaining() < 4 {
        return None;
    }
    let count = data.get_u32_le() as usize;
    // The count is checked against what is there before anything is read.
    if data.remaining() / 8 < count {
        return None;
    }
    let ids: BTreeSet<NodeId> = (0..count).map(|_| data.get_u64_le()).collect();
    (ids.len() == count).then_some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_entry_round_trips_and_garbage_is_refused() {
        let previous = ClusterConfig {
            voters: [1, 2, 3].into(),
            learners: [4].into(),
            removed: [5].into(),
        };
        let context = Bytes::from_static(b"http://n4");
        let entry = ConfigEntry::new(previous.clone(), ConfChange::Remove(3), context).unwrap();
        assert_eq!(entry.config.removed, [3, 5].into());
        let bytes = entry.encode();
        assert_eq!(ConfigEntry::decode(bytes.clone()), Some(entry));
        // A step that does not apply to the configuration it names.
        let promote_a_voter = ConfigEntry {
            change: ConfChange::Promote(1),
            ..ConfigEntry::decode(bytes.clone()).unwrap()
        };
        assert_eq!(ConfigEntry::decode(promote_a_voter.encode()), None);
        for cut in 0..bytes.len() - 9 {
            assert_eq!(
                ConfigEntry::decode(bytes.slice(..cut)),
                None,
                "cut at {cut}"
            );
        }
        let mut huge = bytes.to_vec();
        huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(ConfigEntry::decode(huge.into()), None);
    }

    #[test]
    fn changes_go_one_server_at_a_time_and_ids_never_return() {
        let config = ClusterConfig::new([1]);
        let config = config.apply(ConfChange::AddLearner(2)).unwrap();
        assert_eq!(
            config.apply(ConfChange::AddLearner(2)),
            Err(ConfChangeError::AlreadyMember { id: 2 })
        );
        let config = config.apply(ConfChange::Promote(2)).unwrap();
        assert_eq!(config.quorum(), 2);
        let config = config.apply(ConfChange::Remove(1)).unwrap();
        assert_eq!(
            config.apply(ConfChange::AddLearner(1)),
            Err(ConfChangeError::IdRemoved { id: 1 })
        );
        assert_eq!(
            config.apply(ConfChange::Remove(2)),
            Err(ConfChangeError::LastVoter { id: 2 })
        );
        assert_eq!(
            config.apply(ConfChange::Promote(5)),
            Err(ConfChangeError::NotLearner { id: 5 })
        );
    }
}
