//! The receiving side of the transport: [`RaftService`], the gRPC service
//! that checks each incoming batch (every message a request to this node,
//! all from one sender) and hands it to the node, answering the call with
//! the responses to the requests it carried. A batch it refuses is logged,
//! at most once per interval, and the refusal names this node.

use std::sync::Arc;
use std::time::Duration;

use cairn_raft::{Message, NodeId};
use cairn_rpc::raft::{self as proto, MessageBatch};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::{LogThrottle, NODE_ID_KEY};
use crate::codec;
use crate::node::Command;
use crate::state_machine::StateMachine;

/// Checks an incoming batch before any of it reaches the node: every
/// message is a request (or `TimeoutNow`) to this node, all from one other
/// node. The reply slots pair each request with one response from the
/// core, per sender, in order; a message the core would not answer (one
/// "from" this node) or that is not a request would shift that pairing.
fn check_batch(self_id: NodeId, messages: &[Message]) -> Result<(), Status> {
    let Some(first) = messages.first() else {
        return Ok(());
    };
    for message in messages {
        if message.to != self_id {
            return Err(Status::failed_precondition(format!(
                "a message for node {} reached node {self_id}; check the peer addresses",
                message.to
            )));
        }
        if message.from == self_id {
            return Err(Status::invalid_argument(format!(
                "a message claiming to come from node {self_id} reached node {self_id} itself; \
                 two nodes share an id: give each node its own --id"
            )));
        }
        if message.from != first.from {
            return Err(Status::invalid_argument(
                "one batch carries messages from several nodes; a batch comes from its caller only",
            ));
        }
        if message.is_response() {
            return Err(Status::invalid_argument(
                "a response in a request batch; responses travel in replies only",
            ));
        }
    }
    Ok(())
}

/// The gRPC service that hands incoming batches to the node.
pub struct RaftService<S: StateMachine> {
    id: NodeId,
    cluster: String,
    node: mpsc::Sender<Command<S>>,
    /// When a refused batch was last logged.
    refusal_log: Arc<LogThrottle>,
}

impl<S: StateMachine> Clone for RaftService<S> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            refusal_log: self.refusal_log.clone(),
        }
    }
}

impl<S: StateMachine> RaftService<S> {
    pub(crate) fn new(
        id: NodeId,
        cluster: String,
        node: mpsc::Sender<Command<S>>,
        problem_log_interval: Duration,
    ) -> Self {
        Self {
            id,
            cluster,
            node,
            refusal_log: Arc::new(LogThrottle::new(problem_log_interval)),
        }
    }

    /// Checks a batch before any of it reaches the node. A refusal is
    /// logged here too (the sender may not be watched) and names this node
    /// in [`NODE_ID_KEY`].
    fn admit(&self, batch: MessageBatch) -> Result<Vec<Message>, Status> {
        let result = self.check(batch);
        if let Err(status) = &result
            && self.refusal_log.ready()
        {
            tracing::error!(
                id = self.id,
                "node {} refused a message batch from a peer: {}",
                self.id,
                status.message()
            );
        }
        result.map_err(|mut status| {
            if let Ok(value) = self.id.to_string().parse() {
                status.metadata_mut().insert(NODE_ID_KEY, value);
            }
            status
        })
    }

    fn check(&self, batch: MessageBatch) -> Result<Vec<Message>, Status> {
        if batch.cluster != self.cluster {
            return Err(Status::failed_precondition(format!(
                "this node belongs to cluster {:?}, not {:?}; check the peer addresses",
                self.cluster, batch.cluster
            )));
        }
        let mut messages = Vec::with_capacity(batch.messages.len());
        for message in batch.messages {
            let message =
                codec::decode(message).map_err(|e| Status::invalid_argument(e.to_string()))?;
            messages.push(message);
        }
        check_batch(self.id, &messages)?;
        Ok(messages)
    }
}

/// How long a call waits for the node to answer before giving up.
const STEP_DEADLINE: Duration = Duration::from_secs(5);

#[tonic::async_trait]
impl<S: StateMachine> proto::raft_server::Raft for RaftService<S> {
    async fn step(&self, request: Request<MessageBatch>) -> Result<Response<MessageBatch>, Status> {
        let messages = self.admit(request.into_inner())?;
        let (reply, answer) = oneshot::channel();
        self.node
            .send(Command::Inbound {
                messages,
                reply: Some(reply),
            })
            .await
            .map_err(|_| Status::unavailable("the node is shutting down"))?;
        let responses = tokio::time::timeout(STEP_DEADLINE, answer)
            .await
            .map_err(|_| Status::deadline_exceeded("the node did not answer in time"))?
            .map_err(|_| Status::unavailable("the node stopped before answering"))?;
        Ok(Response::new(MessageBatch {
            cluster: self.cluster.clone(),
            messages: responses.iter().map(codec::encode).collect(),
        }))
    }
}
