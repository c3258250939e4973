//! [`MembersService`]: the gRPC `Members` service every node of every Raft
//! group serves, so that an operator (the `member` and `transfer-leader`
//! commands) and a new node (`serve --join`) can change the group.
//!
//! The idea: one implementation, generic over the state machine, on top of
//! the node's membership API ([`Node::membership`],
//! [`Node::propose_conf_change`], [`Node::transfer_leader`]). Any node
//! answers `List` with the configuration it knows; the other calls are
//! the leader's, and a follower refuses them naming the leader (id and
//! URL, as every not-leader answer does) so the client follows it. A new
//! member is given the next id never used in the group (one above every
//! voter, learner and removed id): ids are never reused. A `Join` from the
//! address of a current learner answers that learner's id: the joining
//! node retried after its first answer was lost.
//!
//! How refusals travel: a refusal that waiting cures (a new leader not
//! ready, another change pending) is `UNAVAILABLE`, which clients retry;
//! one that only the operator can cure (a learner behind, an address in
//! use, an unknown id) is `INVALID_ARGUMENT` with the core's message,
//! which says what to do.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_raft::{ConfChange, ConfChangeError, NodeId};
use cairn_rpc::node::{
    ChangeMembersRequest, JoinRequest, ListMembersRequest, MemberState, MembersReply,
    TransferLeaderRequest, change_members_request::Change, members_server,
};
use tonic::{Request, Response, Status};

use crate::error::{MembershipError, SubmitError};
use crate::membership::{MAX_URL_BYTES, Membership};
use crate::node::Node;
use crate::state_machine::StateMachine;

/// How long a change may take to be applied on the leader before the call
/// fails with `DEADLINE_EXCEEDED` (the change may still be made).
pub const MEMBER_CHANGE_DEADLINE: Duration = Duration::from_secs(5);
/// How long `TransferLeader` waits for the new leader to take over.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(5);

/// The tonic server type of [`Node::members_service`].
#[cfg(not(madsim))]
pub type MembersServer<S> = members_server::MembersServer<MembersService<S>>;
/// The tonic server type of [`Node::members_service`].
#[cfg(madsim)]
pub type MembersServer<S> =
    members_server::MembersServer<MembersService<S>, tonic::codegen::IdentityInterceptor>;

/// The `Members` service of one node.
pub struct MembersService<S: StateMachine> {
    node: Node<S>,
}

impl<S: StateMachine> Clone for MembersService<S> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
        }
    }
}

impl<S: StateMachine> Node<S> {
    /// The gRPC service that lists and changes this node's group; mount it
    /// beside [`raft_service`](Self::raft_service).
    pub fn members_service(&self) -> MembersServer<S> {
        members_server::MembersServer::new(MembersService { node: self.clone() })
    }
}

impl<S: StateMachine> MembersService<S> {
    /// The configuration as this node knows it, or the status to answer.
    async fn membership(&self) -> Result<Membership, Status> {
        let membership = self.node.membership().await;
        membership.map_err(|e| self.refusal(e, &BTreeMap::new()))
    }

    /// The membership, if this node leads; otherwise the not-leader status.
    async fn leader_membership(&self) -> Result<Membership, Status> {
        let membership = self.membership().await?;
        if membership.leader == Some(self.node.status().id) && self.node.status().is_leader() {
            return Ok(membership);
        }
        let hint = SubmitError::NotLeader {
            hint: membership.leader,
        };
        Err(self.refusal(hint.into(), &membership.urls))
    }

    fn reply(&self, membership: &Membership, added: NodeId) -> MembersReply {
        let state = |&id: &NodeId| MemberState {
            id,
            url: membership.urls.get(&id).cloned().unwrap_or_default(),
            lag: membership.learner_lag.get(&id).copied(),
        };
        let config = &membership.config;
        MembersReply {
            cluster_id: self.node.cluster_id().to_string(),
            answered_by: self.node.status().id,
            leader: membership.leader.unwrap_or(0),
            voters: config.voters.iter().map(state).collect(),
            learners: config.learners.iter().map(state).collect(),
            removed: config.removed.iter().copied().collect(),
            added,
        }
    }

    /// The status a failed change answers with; `urls` name the leader.
    fn refusal(&self, error: MembershipError, urls: &BTreeMap<NodeId, String>) -> Status {
        match error {
            MembershipError::Submit(SubmitError::NotLeader { hint: Some(id) })
                if urls.contains_key(&id) =>
            {
                cairn_rpc::not_leader(Some(id), Some(urls[&id].as_str()))
            }
            MembershipError::Submit(error) => self.node.error_status(error),
            MembershipError::Refused(
                error @ (ConfChangeError::LeaderNotReady { .. }
                | ConfChangeError::ChangePending { .. }),
            ) => Status::unavailable(error.to_string()),
            error => Status::invalid_argument(error.to_string()),
        }
    }

    /// Adds a learner at `url` under a fresh id, on the leader.
    async fn add_learner(&self, url: &str) -> Result<Response<MembersReply>, Status> {
        check_url(url)?;
        let membership = self.leader_membership().await?;
        let id = membership.fresh_id();
        self.propose(ConfChange::AddLearner(id), Some(url), id, &membership.urls)
            .await
    }

    async fn propose(
        &self,
        change: ConfChange,
        url: Option<&str>,
        added: NodeId,
        urls: &BTreeMap<NodeId, String>,
    ) -> Result<Response<MembersReply>, Status> {
        let done = self
            .node
            .propose_conf_change(change, url, MEMBER_CHANGE_DEADLINE);
        done.await.map_err(|e| self.refusal(e, urls))?;
        let membership = self.membership().await?;
        Ok(Response::new(self.reply(&membership, added)))
    }

    /// Waits until node `to` leads, as this node sees it, for at most
    /// [`TRANSFER_WAIT`].
    async fn wait_for_leader(&self, to: NodeId) -> Result<(), Status> {
        let mut status = self.node.watch_status();
        let led = status.wait_for(|s| s.leader == Some(to));
        match tokio::time::timeout(TRANSFER_WAIT, led).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::unavailable(format!(
                "node {to} did not take over within {TRANSFER_WAIT:?}; list the members to see \
                 who leads, and retry"
            ))),
        }
    }
}

/// A new member's URL must be `http://HOST:PORT` (or https).
fn check_url(url: &str) -> Result<(), Status> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let has_port = rest.and_then(|r| r.trim_end_matches('/').rsplit_once(':'));
    match has_port {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            if url.len() > MAX_URL_BYTES {
                return Err(Status::invalid_argument(format!(
                    "the URL is {} bytes; at most {MAX_URL_BYTES} are allowed",
                    url.len()
                )));
            }
            Ok(())
        }
        _ => Err(Status::invalid_argument(format!(
            "{url:?} is not a node's URL; give it as http://HOST:PORT"
        ))),
    }
}

#[tonic::async_trait]
impl<S: StateMachine> members_server::Members for MembersService<S> {
    async fn list(
        &self,
        _request: Request<ListMembersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        let membership = self.membership().await?;
        Ok(Response::new(self.reply(&membership, 0)))
    }

    async fn change(
        &self,
        request: Request<ChangeMembersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        let (change, id) = match request.into_inner().change {
            Some(Change::AddLearner(url)) => return self.add_learner(&url).await,
            Some(Change::Promote(id)) => (ConfChange::Promote(id), id),
            Some(Change::Remove(id)) => (ConfChange::Remove(id), id),
            None => {
                return Err(Status::invalid_argument(
                    "no change given; send add_learner, promote or remove",
                ));
            }
        };
        if id == 0 {
            return Err(Status::invalid_argument(
                ConfChangeError::InvalidId.to_string(),
            ));
        }
        let membership = self.leader_membership().await?;
        self.propose(change, None, 0, &membership.urls).await
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        let to = request.into_inner().to;
        let membership = self.membership().await?;
        if membership.leader != Some(to) {
            let moved = self.node.transfer_leader(to).await;
            moved.map_err(|e| self.refusal(e, &membership.urls))?;
            self.wait_for_leader(to).await?;
        }
        let membership = self.membership().await?;
        Ok(Response::new(self.reply(&membership, 0)))
    }

    /// Adds the node at the request's URL as a learner; a learner already
    /// there is answered with its id (a retry after a lost reply), while
    /// a voter's address is refused like any address in use.
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<MembersReply>, Status> {
        let url = request.into_inner().url;
        check_url(&url)?;
        let membership = self.leader_membership().await?;
        match membership.member_at(&url) {
            Some(id) if membership.config.is_learner(id) => {
                Ok(Response::new(self.reply(&membership, id)))
            }
            _ => self.add_learner(&url).await,
        }
    }
}
