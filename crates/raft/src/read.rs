//! Linearizable reads without a log write (read index, thesis §6.4) and
//! leadership transfer (thesis §3.10).

use crate::message::MessageBody;
use crate::node::{PendingRead, ProposeError, Raft};
use crate::ready::ReadState;
use crate::types::NodeId;

impl Raft {
    /// Asks for a read index, answered through [`Ready::read_states`] with
    /// `ctx` once this node has confirmed, by a heartbeat round to a quorum
    /// that started after the request, that it is still the leader. Until
    /// the leader has committed an entry of its own term (its no-op), the
    /// request waits.
    ///
    /// [`Ready::read_states`]: crate::Ready::read_states
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.assert_no_ready();
        self.check_leader()?;
        let committed_in_term = self.log.term(self.log.commit) == Some(self.term);
        if self.is_sole_voter() && committed_in_term {
            self.read_states.push(ReadState {
                ctx,
                index: self.log.commit,
            });
            return Ok(());
        }
        self.read_round += 1;
        let index = committed_in_term.then_some(self.log.commit);
        self.pending_reads.push_back(PendingRead {
            ctx,
            index,
            round: self.read_round,
        });
        if index.is_some() {
            self.broadcast_heartbeat();
        }
        Ok(())
    }

    /// The leader committed its first entry of the term: reads that waited
    /// for it get the commit index and a fresh heartbeat round (leadership
    /// must be confirmed after the index is chosen).
    pub(crate) fn release_reads_after_commit(&mut self) {
        if !self.pending_reads.iter().any(|read| read.index.is_none()) {
            return;
        }
        self.read_round += 1;
        let (commit, round) = (self.log.commit, self.read_round);
        for read in self
            .pending_reads
            .iter_mut()
            .filter(|read| read.index.is_none())
        {
            read.index = Some(commit);
            read.round = round;
        }
        if self.is_sole_voter() {
            self.advance_reads();
        } else {
            self.broadcast_heartbeat();
        }
    }

    /// Whether this node alone is a quorum (a group of one voter: itself).
    fn is_sole_voter(&self) -> bool {
        self.cluster().has_quorum(|id| id == self.config.id)
    }

    /// Hands over the reads whose round a quorum has acknowledged.
    pub(crate) fn advance_reads(&mut self) {
        let confirmed = self.cluster().quorum_value(|id| {
            if id == self.config.id {
                u64::MAX
            } else {
                self.progress.get(&id).map_or(0, |p| p.read_round())
            }
        });
        while let Some(read) = self.pending_reads.front() {
            let Some(index) = read.index else { break };
            if read.round > confirmed {
                break;
            }
            self.read_states.push(ReadState {
                ctx: read.ctx,
                index,
            });
            self.pending_reads.pop_front();
        }
    }

    /// Hands leadership to `to` once its log is caught up: the leader stops
    /// accepting proposals, brings `to` up to date and tells it to campaign
    /// at once. Gives up after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.assert_no_ready();
        if self.transfer_target == Some(to) {
            return Ok(());
        }
        self.check_leader()?;
        if to == self.config.id {
            return Ok(());
        }
        if !self.cluster().is_voter(to) || !self.progress.contains_key(&to) {
            return Err(ProposeError::NotVoter { id: to });
        }
        self.transfer_target = Some(to);
        self.transfer_elapsed = 0;
        self.transfer_sent = false;
        self.maybe_finish_transfer(to);
        if !self.transfer_sent {
            self.send_append(to, false);
        }
        Ok(())
    }

    /// Sends `TimeoutNow` once the successor's log matches ours.
    pub(crate) fn maybe_finish_transfer(&mut self, from: NodeId) {
        if self.transfer_target != Some(from) || self.transfer_sent {
            return;
        }
        let caught_up = self
            .progress
            .get(&from)
            .is_some_and(|p| p.match_index() == self.log.last_index());
        if caught_up {
            self.transfer_sent = true;
            self.send(from, MessageBody::TimeoutNow);
        }
    }
}
