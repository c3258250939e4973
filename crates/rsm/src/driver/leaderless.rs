//! The warning a node logs when its group goes without a leader, naming
//! what to check: the peers that do not answer, and what their silence
//! most likely means.

use super::Driver;
use crate::state_machine::StateMachine;

impl<S: StateMachine> Driver<S> {
    /// A group that never elects a leader looks idle: after
    /// `problem_log_interval` without one (and again after each further
    /// interval) say so, naming the peers that do not answer. A peer that
    /// does not exist (an extra node in --peers) or a second process with
    /// this node's id shows up here.
    pub(super) fn warn_if_leaderless(&mut self) {
        if self.raft.leader().is_some() {
            self.leaderless = None;
            return;
        }
        let now = tokio::time::Instant::now();
        let (since, warned) = self.leaderless.get_or_insert((now, None));
        let quiet_since = warned.unwrap_or(*since);
        if now.duration_since(quiet_since) < self.problem_log_interval {
            return;
        }
        *warned = Some(now);
        let for_how_long = now.duration_since(*since).as_secs();
        let id = self.raft.id();
        let voters = &self.raft.cluster().voters;
        if voters.is_empty() {
            tracing::warn!(
                id,
                "node {id} joined its group {for_how_long}s ago and was not added yet: add it \
                 as a learner on the leader, with this node's URL"
            );
            return;
        }
        let members = voters.len();
        // Learners and this node itself never count toward a leader.
        let unanswering = self.outbox.unanswering_peers(|peer| voters.contains(&peer));
        let answering = members - unanswering.len();
        let quorum = members / 2 + 1;
        if unanswering.is_empty() {
            tracing::warn!(
                id,
                "node {id} has had no leader for {for_how_long}s although every peer answers; \
                 check that every node runs with the same --peers and its own --id"
            );
        } else if answering >= quorum {
            tracing::warn!(
                id,
                "node {id} has had no leader for {for_how_long}s although {answering} of the \
                 {members} nodes answer, enough for a leader; {} did not: look for errors \
                 logged by the nodes (two processes with one --id, an address in --peers that \
                 reaches another node)",
                unanswering.join("; "),
            );
        } else {
            tracing::warn!(
                id,
                "node {id} has had no leader for {for_how_long}s: {} did not answer. A leader \
                 needs {quorum} of the {members} nodes in --peers, and {answering} answer (this \
                 one included): start the missing nodes. A node listed in --peers by mistake \
                 counts too (the members are fixed when a node first starts): start it, or \
                 recreate the cluster with the right --peers and empty data directories",
                unanswering.join("; "),
            );
        }
    }
}
