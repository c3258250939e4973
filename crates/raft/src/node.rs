//! [`Raft`]: one node's protocol state, its clock and its role changes.
//! Beside it: where a node starts (`start.rs`), message handling
//! (`election.rs`, `replication.rs`, `read.rs`), membership changes
//! (`reconfigure.rs`) and the `Ready` hand-over (`ready.rs`).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::config_history::ConfigHistory;
use crate::log::RaftLog;
use crate::membership::ClusterConfig;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::ready::ReadState;
use crate::types::{Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};

/// A node's role (Raft §5.1, plus the pre-candidate of thesis §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks for pre-votes before raising its term.
    PreCandidate,
    /// Asks for votes in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Why a proposal or read was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals and reads; `hint` is the leader this
    /// node knows of, if any.
    #[error("not the leader (leader hint: {hint:?})")]
    NotLeader {
        /// The current leader, if known.
        hint: Option<NodeId>,
    },
    /// The leader is handing leadership over and accepts nothing meanwhile.
    #[error("leadership is being transferred to node {to}")]
    Transferring {
        /// The successor.
        to: NodeId,
    },
    /// Leadership can only be handed to a voter.
    #[error(
        "node {id} is not a voter of this group and cannot lead; \
         promote it first, or choose a voter"
    )]
    NotVoter {
        /// The refused successor.
        id: NodeId,
    },
}

/// A snapshot of a node's state for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// Its current term.
    pub term: Term,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: LogIndex,
    /// The last index handed to the state machine.
    pub applied: LogIndex,
    /// Its last log index.
    pub last_index: LogIndex,
    /// The index its latest snapshot covers.
    pub snapshot_index: LogIndex,
    /// Messages refused because no correct peer could have sent them (a
    /// second leader in this node's term). Non-zero means a broken or
    /// hostile member: the runtime logs it as an error.
    pub protocol_violations: u64,
}

/// One Raft node as a pure state machine: no I/O, no clock, no global
/// randomness. Drive it with [`tick`](Self::tick), [`step`](Self::step),
/// [`propose`](Self::propose) and [`read_index`](Self::read_index); collect
/// work with [`ready`](Self::ready), do it as [`Ready`](crate::Ready) describes, then
/// [`advance`](Self::advance).
///
/// Invariants, asserted after every input: at most one vote per term (the
/// vote is durable before any message that depends on it leaves, through
/// `Ready` step 1); a leader's log only grows while it leads; commit and
/// applied never move back; see also the log's (`log.rs`).
#[derive(Debug)]
pub struct Raft {
    pub(crate) config: Config,
    /// The configurations in the log; the latest is in effect.
    pub(crate) membership: ConfigHistory,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    pub(crate) rng: StdRng,
    /// Ticks since the last election reset (followers and candidates) or the
    /// last check-quorum round (leaders).
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    /// Votes received in the current (pre-)campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Leaders only: one per other voter.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) messages: Vec<Message>,
    /// The latest snapshot, kept to send to followers that need it.
    pub(crate) snapshot: Option<Snapshot>,
    /// A snapshot received from the leader, for the next `Ready`.
    pub(crate) snapshot_to_install: Option<Snapshot>,
    /// A snapshot being received in chunks.
    pub(crate) incoming_snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    pub(crate) read_round: u64,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) transfer_target: Option<NodeId>,
    /// The leader of this term the caller reported unreachable: this node
    /// no longer defends its lease (a late message from a dead leader
    /// would otherwise renew it). Forgotten when the term changes or the
    /// caller reaches it again.
    pub(crate) unreachable_leader: Option<NodeId>,
    pub(crate) transfer_elapsed: u32,
    pub(crate) transfer_sent: bool,
    /// The commit index moved since followers were last told.
    pub(crate) commit_broadcast_due: bool,
    pub(crate) last_hard_state: HardState,
    pub(crate) ready_outstanding: bool,
    /// See [`Status::protocol_violations`].
    pub(crate) protocol_violations: u64,
}

/// A read-index request waiting for its heartbeat round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRead {
    pub(crate) ctx: u64,
    /// The commit index at the request; `None` until this leader has
    /// committed an entry of its own term.
    pub(crate) index: Option<LogIndex>,
    pub(crate) round: u64,
}

impl Raft {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader it knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The group's members: the latest configuration in the log,
    /// committed or not.
    pub fn cluster(&self) -> &ClusterConfig {
        self.membership.current()
    }

    /// The configuration as of `index` (at or above the snapshot's), for a
    /// snapshot taken at `index`.
    pub fn cluster_at(&self, index: LogIndex) -> &ClusterConfig {
        self.membership.at(index)
    }

    /// The index of the configuration entry in effect when it is not
    /// committed yet: no other change may be proposed until it is.
    pub fn pending_conf_change(&self) -> Option<LogIndex> {
        let index = self.membership.current_index();
        (index > self.log.commit).then_some(index)
    }

    /// Monitoring information.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            term: self.term,
            role: self.role,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index,
            protocol_violations: self.protocol_violations,
        }
    }

    /// The size of the latest snapshot's data (0 without one).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64)
    }

    /// The entry at `index`, if the log holds it (tests and diagnostics).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Leaders only: each follower's progress.
    pub fn progress(&self) -> &BTreeMap<NodeId, Progress> {
        &self.progress
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.assert_no_ready();
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.election_elapsed >= self.randomized_election_timeout {
                self.start_election(false);
            }
        }
        self.assert_invariants();
    }

    fn tick_leader(&mut self) {
        self.flush_commit();
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.transfer_target.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_timeout_ticks {
                // The successor did not take over within an election timeout.
                self.transfer_target = None;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum of voters (self included, if a voter) has been
    /// heard from since the last round; resets the marks for the next.
    fn quorum_active(&mut self) -> bool {
        let mut active = std::collections::BTreeSet::from([self.config.id]);
        for (&id, progress) in &mut self.progress {
            if progress.take_recently_active() {
                active.insert(id);
            }
        }
        self.cluster().has_quorum(|id| active.contains(&id))
    }

    /// Proposes a command. Leaders append it at once and send it to followers
    /// without waiting for a heartbeat; the answer is its (index, term), and
    /// the command is committed when an entry at that index with that term
    /// is applied.
    pub fn propose(&mut self, data: Bytes) -> Result<(LogIndex, Term), ProposeError> {
        self.assert_no_ready();
        self.check_leader()?;
        let index = self.append_entry(EntryKind::Normal, data);
        self.broadcast_append();
        self.assert_invariants();
        Ok((index, self.term))
    }

    /// Proposes several commands at once (one broadcast for all).
    pub fn propose_batch(
        &mut self,
        commands: impl IntoIterator<Item = Bytes>,
    ) -> Result<Vec<(LogIndex, Term)>, ProposeError> {
        self.assert_no_ready();
        self.check_leader()?;
        let placed: Vec<(LogIndex, Term)> = commands
            .into_iter()
            .map(|data| (self.append_entry(EntryKind::Normal, data), self.term))
            .collect();
        if !placed.is_empty() {
            self.broadcast_append();
        }
        self.assert_invariants();
        Ok(placed)
    }

    pub(crate) fn check_leader(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { hint: self.leader });
        }
        if let Some(to) = self.transfer_target {
            return Err(ProposeError::Transferring { to });
        }
        Ok(())
    }

    pub(crate) fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> LogIndex {
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            kind,
            data,
        });
        index
    }

    /// The service snapshotted its state through `index` (at most the
    /// applied index): the core drops the log up to it and keeps `data` to
    /// send to followers that fall behind. Returns the snapshot's metadata,
    /// which the caller stores with the data.
    pub fn compact(&mut self, index: LogIndex, data: Bytes) -> SnapshotMeta {
        self.assert_no_ready();
        assert!(
            index <= self.log.applied,
            "snapshot at {index} beyond applied {}",
            self.log.applied
        );
        let current = self
            .snapshot
            .as_ref()
            .map_or(self.log.snapshot_index, |s| s.meta.index);
        if index <= current {
            return self
                .snapshot
                .as_ref()
                .map_or_else(|| self.snapshot_meta_at(index), |s| s.meta.clone());
        }
        let meta = self.snapshot_meta_at(index);
        self.log.compact(index);
        self.membership.compact_to(index);
        self.snapshot = Some(Snapshot {
            meta: meta.clone(),
            data,
        });
        self.assert_invariants();
        meta
    }

    fn snapshot_meta_at(&self, index: LogIndex) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term: self.log.term(index).unwrap_or(self.log.snapshot_term),
            config: self.membership.at(index).clone(),
            urls: Default::default(),
        }
    }

    /// Starts an election now (tests, or an operator's nudge).
    pub fn campaign(&mut self) {
        self.assert_no_ready();
        if self.role != Role::Leader {
            self.start_election(false);
        }
    }

    /// The caller's connection to `peer` broke (closed or reset: its
    /// process likely died). A follower whose leader that is stops waiting
    /// for the election timeout: it forgets the leader, and with it the
    /// lease, and asks for pre-votes after a wait set by its rank among
    /// the other voters (by id, the lost leader left out): the first at
    /// once (and again, if that fails, after every voter's turn), the next
    /// a tenth of the election timeout later, and so on.
    /// Until the term changes, or [`report_reachable`](Self::report_reachable),
    /// it no longer defends that leader's lease (a late message from a
    /// dead leader must not renew it).
    /// The leader's followers all lose it at once; campaigning together
    /// they would split the vote and fall back to the full timeout, and a
    /// random wait of a few ticks still collides often. The pre-vote keeps
    /// a live leader safe: a voter that still hears from it refuses (its
    /// own lease), and the leader's next heartbeat makes this node its
    /// follower again. Without pre-vote the node only forgets the leader (a
    /// real campaign would raise the term and depose a live leader). Any
    /// other peer, or any other role, changes nothing.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.assert_no_ready();
        if self.role != Role::Follower || self.leader != Some(peer) {
            return;
        }
        self.leader = None;
        self.unreachable_leader = Some(peer);
        if self.config.pre_vote {
            let id = self.config.id;
            let rank = self
                .cluster()
                .voters
                .iter()
                .filter(|&&voter| voter != peer && voter < id)
                .count() as u32;
            let spacing = (self.config.election_timeout_ticks / 10).max(1);
            let wait = rank * spacing;
            if wait == 0 {
                self.start_election(false);
                // The others may not have lost the leader yet when they
                // hear this pre-vote, and refuse it for their lease: ask
                // again once they all had their turn, not a whole
                // randomized timeout later.
                if self.role == Role::PreCandidate {
                    let voters = self.cluster().voters.len() as u32;
                    self.randomized_election_timeout = self.election_elapsed + voters * spacing;
                }
            } else {
                self.randomized_election_timeout = self.election_elapsed + wait;
            }
        }
        self.assert_invariants();
    }

    /// The caller's connection to `peer` works again (it reopened after
    /// breaking): a leader reported unreachable is defended again.
    pub fn report_reachable(&mut self, peer: NodeId) {
        if self.unreachable_leader == Some(peer) {
            self.unreachable_leader = None;
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.gen_range(base..2 * base);
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "node {} would go back from term {} to term {term}",
            self.config.id,
            self.term
        );
        // `step` refuses a second leader's traffic in a leader's own term
        // (a protocol violation), so following one here is a bug.
        assert!(
            !(self.role == Role::Leader && term == self.term && leader.is_some()),
            "two leaders in term {term}: node {} and node {:?}",
            self.config.id,
            leader
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.unreachable_leader = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.pending_reads.clear();
        self.transfer_target = None;
        self.commit_broadcast_due = false;
        self.reset_election_timer();
    }

    pub(crate) fn become_leader(&mut self) {
        assert!(
            matches!(self.role, Role::Candidate),
            "only a candidate becomes leader (was {:?})",
            self.role
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.progress.clear();
        self.sync_progress(self.log.last_index() + 1);
        // A no-op of the new term: it commits everything before it (Raft
        // §5.4.2) and lets read index work (thesis §6.4).
        self.append_entry(EntryKind::Noop, Bytes::new());
        self.broadcast_append();
        self.maybe_commit();
    }

    pub(crate) fn assert_no_ready(&self) {
        assert!(
            !self.ready_outstanding,
            "a Ready is outstanding: call advance() first"
        );
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }

    pub(crate) fn assert_invariants(&self) {
        self.log.assert_invariants();
        self.membership.assert_invariants();
        if self.role == Role::Leader {
            assert!(
                self.membership
                    .uncommitted_of_term(self.log.commit, self.term)
                    <= 1,
                "leader {} has two uncommitted configuration changes of term {}",
                self.config.id,
                self.term
            );
            assert_eq!(
                self.leader,
                Some(self.config.id),
                "a leader knows itself as leader"
            );
            assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
        } else {
            assert!(self.progress.is_empty(), "only leaders track progress");
        }
        for (id, progress) in &self.progress {
            assert!(
                progress.match_index() < progress.next_index(),
                "progress of {id}: match {} not below next {}",
                progress.match_index(),
                progress.next_index()
            );
        }
    }
}
