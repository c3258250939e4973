//! The receiving side of the transport: [`RaftService`], the gRPC service
//! that takes a peer's stream (`Raft.Stream`), checks each batch on it
//! (every message to this node, all from the one peer that opened the
//! stream, of this node's cluster) and hands it to the node. What the node
//! says back goes on its own stream to that peer; the reverse half of the
//! peer's stream stays silent until it ends. A batch it refuses ends the
//! stream with the refusal, which names this node, and is logged at most
//! once per interval.

use std::sync::Arc;
use std::time::Duration;

use cairn_raft::{Message, NodeId};
use cairn_rpc::raft::{self as proto, MessageBatch};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use super::{LogThrottle, NODE_ID_KEY};
use crate::codec;
use crate::node::Command;
use crate::state_machine::StateMachine;

/// Checks an incoming batch before any of it reaches the node: every
/// message is to this node, from `sender` (the peer whose stream it came
/// on: the first message's sender fixes it). A message "from" this node
/// itself means two nodes share an id.
fn check_batch(
    self_id: NodeId,
    sender: &mut Option<NodeId>,
    messages: &[Message],
) -> Result<(), Status> {
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
        if *sender.get_or_insert(message.from) != message.from {
            return Err(Status::invalid_argument(
                "one stream carries messages from several nodes; a stream carries its opener's only",
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
    pub(super) fn admit(
        &self,
        batch: MessageBatch,
        sender: &mut Option<NodeId>,
    ) -> Result<Vec<Message>, Status> {
        let result = self.check(batch, sender);
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

    fn check(
        &self,
        batch: MessageBatch,
        sender: &mut Option<NodeId>,
    ) -> Result<Vec<Message>, Status> {
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
        check_batch(self.id, sender, &messages)?;
        Ok(messages)
    }

    /// Hands the batches of one peer's stream to the node until the stream
    /// ends; returns the refusal that ends it early, if any.
    async fn receive(&self, mut inbound: Streaming<MessageBatch>) -> Option<Status> {
        let mut sender = None;
        // A broken or finished stream just ends: the peer opens another.
        while let Ok(Some(batch)) = inbound.message().await {
            let messages = match self.admit(batch, &mut sender) {
                Ok(messages) => messages,
                Err(status) => return Some(status),
            };
            if messages.is_empty() {
                continue;
            }
            let delivered = self.node.send(Command::Inbound { messages }).await;
            if delivered.is_err() {
                return Some(Status::unavailable(
                    "the node is shutting down; its peers will retry",
                ));
            }
        }
        None
    }
}

/// The reverse half of a peer's stream: nothing, then the end (with the
/// refusal, if a batch was refused).
type Ending = std::pin::Pin<Box<dyn Stream<Item = Result<MessageBatch, Status>> + Send>>;

#[tonic::async_trait]
impl<S: StateMachine> proto::raft_server::Raft for RaftService<S> {
    type StreamStream = Ending;

    async fn stream(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<Ending>, Status> {
        let inbound = request.into_inner();
        let (refused, refusal) = oneshot::channel();
        let service = self.clone();
        tokio::spawn(async move {
            if let Some(status) = service.receive(inbound).await {
                let _ = refused.send(status);
            }
        });
        let ending = futures::stream::once(refusal)
            .filter_map(|refusal| std::future::ready(refusal.ok().map(Err)));
        Ok(Response::new(Box::pin(ending)))
    }
}
