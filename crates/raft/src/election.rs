//! Leader election (Raft §5.2) with pre-vote (thesis §9.6) and leadership
//! transfer (thesis §3.10).

use std::collections::BTreeMap;

use crate::message::{Message, MessageBody, RequestVote, RequestVoteResponse};
use crate::node::{Raft, Role};
use crate::types::{NodeId, Term};

impl Raft {
    /// The election timeout fired (or a leader asked us to take over).
    /// Only a voter campaigns: a learner, a removed node or a joining node
    /// that knows no configuration yet waits for a leader.
    pub(crate) fn start_election(&mut self, transfer: bool) {
        if !self.may_campaign() {
            // It has lost its leader all the same: its lease is over, and
            // it answers a candidate that asks for its vote.
            self.leader = None;
            self.reset_election_timer();
            return;
        }
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    /// Whether this node may stand for election: it is a voter of its
    /// latest configuration, or of the one before while the latest is not
    /// known to be committed. A voter whose removal is pending may still be
    /// needed to commit it (thesis §4.2.2, Figure 4.6): were the leader that
    /// removed it to crash, it may hold the only copy a new leader could
    /// carry to the new configuration's voters. Its votes are counted in
    /// the latest configuration, which need not include itself.
    pub(crate) fn may_campaign(&self) -> bool {
        let id = self.config.id;
        self.cluster().is_voter(id)
            || (self.pending_conf_change().is_some() && self.membership.previous().is_voter(id))
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_election_timer();
        self.votes = BTreeMap::from([(self.config.id, true)]);
        if self.tally() == Some(true) {
            self.become_candidate(false);
            return;
        }
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.term += 1;
        self.unreachable_leader = None;
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_election_timer();
        self.votes = BTreeMap::from([(self.config.id, true)]);
        if self.tally() == Some(true) {
            self.become_leader();
            return;
        }
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let term = if pre_vote { self.term + 1 } else { self.term };
        let request = RequestVote {
            pre_vote,
            transfer,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        let voters: Vec<NodeId> = self
            .cluster()
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.config.id)
            .collect();
        for to in voters {
            self.messages.push(Message {
                from: self.config.id,
                to,
                term,
                body: MessageBody::RequestVote(request),
            });
        }
    }

    /// `Some(true)` once a quorum of voters granted, `Some(false)` once a
    /// quorum refused, else `None`. The answers of learners and of nodes
    /// outside the configuration do not count.
    fn tally(&self) -> Option<bool> {
        let cluster = self.cluster();
        if cluster.has_quorum(|id| self.votes.get(&id) == Some(&true)) {
            Some(true)
        } else if cluster.has_quorum(|id| self.votes.get(&id) == Some(&false)) {
            Some(false)
        } else {
            None
        }
    }

    pub(crate) fn handle_request_vote(&mut self, from: NodeId, term: Term, request: RequestVote) {
        let up_to_date = self
            .log
            .is_up_to_date(request.last_index, request.last_term);
        let granted = if request.pre_vote {
            // Would we vote for a campaign in `term`? Only if we are not
            // following a live leader and the candidate's log is as good.
            term > self.term && !self.in_leader_lease() && up_to_date
        } else {
            debug_assert_eq!(term, self.term, "newer terms were adopted in step()");
            let free = self.vote.is_none() || self.vote == Some(from);
            free && up_to_date
        };
        if granted && !request.pre_vote {
            self.vote = Some(from);
            self.reset_election_timer();
        }
        let response_term = if granted && request.pre_vote {
            term
        } else {
            self.term
        };
        self.messages.push(Message {
            from: self.config.id,
            to: from,
            term: response_term,
            body: MessageBody::RequestVoteResponse(RequestVoteResponse {
                pre_vote: request.pre_vote,
                granted,
            }),
        });
    }

    pub(crate) fn handle_request_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        response: RequestVoteResponse,
    ) {
        let expected = match (response.pre_vote, self.role) {
            // A grant carries the term of the pre-campaign it answers (our
            // term + 1); one from an older pre-campaign must not count. A
            // refusal carries the voter's term, ours or (handled in `step`)
            // a newer one.
            (true, Role::PreCandidate) if response.granted => term == self.term + 1,
            (true, Role::PreCandidate) => term == self.term,
            (false, Role::Candidate) => term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        self.votes.insert(from, response.granted);
        match self.tally() {
            Some(true) if response.pre_vote => self.become_candidate(false),
            Some(true) => self.become_leader(),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    pub(crate) fn handle_timeout_now(&mut self, _from: NodeId) {
        if self.role != Role::Leader {
            self.start_election(true);
        }
    }
}
