//! [`Raft::step`]: the term rules every message passes through, then the
//! dispatch to the handlers.

use crate::message::{
    AppendEntriesResponse, HeartbeatResponse, InstallSnapshotResponse, Message, MessageBody,
    Reject, RequestVoteResponse,
};
use crate::node::{Raft, Role};

impl Raft {
    /// Handles a message from another node.
    ///
    /// Messages from an older term are answered with a rejection carrying
    /// this node's term (so that a stale leader or candidate steps down);
    /// a newer term makes this node a follower of it (Raft §5.1), except
    /// for pre-votes and for vote requests that arrive while this node
    /// still hears from a leader (its lease, thesis §4.2.3), which are
    /// refused without a term change.
    pub fn step(&mut self, message: Message) {
        self.assert_no_ready();
        assert_eq!(
            message.to, self.config.id,
            "a message for node {} reached node {}: the transport routes by `to`",
            message.to, self.config.id
        );
        assert_ne!(
            message.from, self.config.id,
            "node {} received a message from itself: the transport refuses those",
            self.config.id
        );
        if message.term < self.term {
            self.reject_stale(&message);
        } else if message.term == self.term
            && self.role == Role::Leader
            && message.is_leader_traffic()
            && message.body != MessageBody::TimeoutNow
        {
            // Another leader in this node's own term: impossible in a
            // correct cluster (election safety), so either a peer is broken
            // or the message is forged. Refuse it, keep leading, and count
            // it for the operator; never follow it.
            self.protocol_violations += 1;
            self.reject_stale(&message);
        } else {
            if message.term > self.term && !self.admit_newer_term(&message) {
                return;
            }
            self.dispatch(message);
        }
        self.assert_invariants();
    }

    /// Handles a message of a newer term. Returns whether to go on to the
    /// handler.
    fn admit_newer_term(&mut self, message: &Message) -> bool {
        match &message.body {
            MessageBody::RequestVote(request) => {
                if request.pre_vote {
                    return true; // no term change for a pre-vote
                }
                if !request.transfer && self.in_leader_lease() {
                    let body = MessageBody::RequestVoteResponse(RequestVoteResponse {
                        pre_vote: false,
                        granted: false,
                    });
                    self.send(message.from, body);
                    return false;
                }
                self.become_follower(message.term, None);
                true
            }
            MessageBody::RequestVoteResponse(response) if response.pre_vote && response.granted => {
                true
            }
            MessageBody::AppendEntries(_)
            | MessageBody::Heartbeat(_)
            | MessageBody::InstallSnapshot(_) => {
                self.become_follower(message.term, Some(message.from));
                true
            }
            _ => {
                self.become_follower(message.term, None);
                true
            }
        }
    }

    /// Whether this node has heard from a leader within the election timeout
    /// (and so refuses to help depose it).
    pub(crate) fn in_leader_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self.leader != self.unreachable_leader
                    && self.election_elapsed < self.config.election_timeout_ticks
            }
        }
    }

    fn reject_stale(&mut self, message: &Message) {
        let body = match &message.body {
            MessageBody::AppendEntries(request) => {
                MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                    match_index: self.log.last_index(),
                    reject: Some(Reject {
                        rejected_index: request.prev_index,
                        conflict_term: None,
                        conflict_index: 0,
                    }),
                })
            }
            MessageBody::Heartbeat(_) => MessageBody::HeartbeatResponse(HeartbeatResponse {
                read_round: 0,
                lacking: None,
            }),
            MessageBody::RequestVote(request) => {
                MessageBody::RequestVoteResponse(RequestVoteResponse {
                    pre_vote: request.pre_vote,
                    granted: false,
                })
            }
            MessageBody::InstallSnapshot(request) => {
                MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                    snapshot_index: request.meta.index,
                    next_offset: 0,
                    done: false,
                })
            }
            // Stale responses and TimeoutNow are dropped.
            _ => return,
        };
        self.send(message.from, body);
    }

    fn dispatch(&mut self, message: Message) {
        let from = message.from;
        let term = message.term;
        match message.body {
            MessageBody::RequestVote(request) => self.handle_request_vote(from, term, request),
            MessageBody::RequestVoteResponse(response) => {
                self.handle_request_vote_response(from, term, response)
            }
            MessageBody::AppendEntries(request) => self.handle_append_entries(from, request),
            MessageBody::AppendEntriesResponse(response) => {
                self.handle_append_entries_response(from, response)
            }
            MessageBody::Heartbeat(request) => self.handle_heartbeat(from, request),
            MessageBody::HeartbeatResponse(response) => {
                self.handle_heartbeat_response(from, response)
            }
            MessageBody::InstallSnapshot(request) => self.handle_install_snapshot(from, request),
            MessageBody::InstallSnapshotResponse(response) => {
                self.handle_install_snapshot_response(from, response)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
        }
    }
}
