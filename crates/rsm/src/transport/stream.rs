//! One long-lived outbound stream to one peer: [`PeerStream`].
//!
//! A node sends everything it has for peer P, requests and responses
//! alike, on its own stream to P (`Raft.Stream`); P answers on its stream
//! back. So each direction of a pair of nodes is one stream with one
//! writer, opened by the side that has something to say, and the reverse
//! half of a stream carries nothing but its end. We chose this over
//! answering on the reverse half (etcd's peer streams do the same) because
//! it keeps one rule for every message, whatever its kind (the driver
//! sends all of them the same way, and nothing pairs responses with
//! requests), and because each node then owns the stream its messages to
//! a peer travel on, so that it alone sees that stream break.
//!
//! The stream is opened lazily, when the first batch for P is queued, and
//! reopened the same way after it ends; a failed open waits
//! [`REOPEN_FIRST`], doubling up to [`REOPEN_MAX`], before the next. While
//! no stream is open batches wait in a queue of
//! [`MAX_QUEUED_BATCHES_PER_PEER`](super::MAX_QUEUED_BATCHES_PER_PEER): a
//! batch that finds it full is dropped, and a batch that waited longer than
//! the node's RPC timeout is dropped when its turn comes (Raft resends
//! what matters, and a stale heartbeat or append only costs bandwidth).
//!
//! When an open stream breaks (the connection closed or reset, the peer's
//! process died) the node is told ([`Command::PeerUnreachable`]): a
//! follower that loses its stream to its leader asks for pre-votes at once
//! instead of waiting out its election timeout. A refusal (the peer is of
//! another cluster, or shares this node's id) is not a loss: it is logged
//! and remembered for the driver's warning.
//!
//! In a simulation build every batch first meets the simulated network's
//! rules (`cairn_rpc::sim_net`: loss, delays, partitions, long reordering),
//! each in its own task, so that faults stay per message as they were per
//! call; a killed peer breaks the stream itself.

use std::sync::Arc;
use std::time::Duration;

use cairn_raft::NodeId;
use cairn_rpc::RpcClient;
use cairn_rpc::raft::MessageBatch;
use cairn_rpc::raft::raft_client::RaftClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

use super::{Heard, MAX_BATCH_BYTES, MAX_QUEUED_BATCHES_PER_PEER, NODE_ID_KEY, PeerHealth};
use crate::node::Command;
use crate::state_machine::StateMachine;

/// Batches handed to an open stream that HTTP/2 has not taken yet. When
/// full (the peer reads slowly), the queue in front of it fills and then
/// drops.
const MAX_WIRE_BATCHES: usize = 4;

/// The wait after a failed open before the next attempt.
pub(crate) const REOPEN_FIRST: Duration = Duration::from_millis(20);

/// The longest wait between attempts to open a stream.
pub(crate) const REOPEN_MAX: Duration = Duration::from_secs(1);

/// A batch waiting for the stream, and since when.
struct Queued {
    batch: MessageBatch,
    /// Whether it carries a request (the simulator counts it as a call).
    #[cfg_attr(not(madsim), allow(dead_code))]
    call: bool,
    since: Instant,
}

/// The sending end of the stream to one peer; the task that writes it
/// ends when this is dropped (the peer was removed, the node stopped).
pub(crate) struct PeerStream {
    queue: mpsc::Sender<Queued>,
    client: Arc<RpcClient>,
}

impl PeerStream {
    /// Starts the writer of the stream from node `from` to node `to`.
    pub(crate) fn start<S: StateMachine>(
        client: Arc<RpcClient>,
        health: Arc<PeerHealth>,
        (from, to): (NodeId, NodeId),
        node: mpsc::Sender<Command<S>>,
    ) -> Self {
        let (queue, queued) = mpsc::channel(MAX_QUEUED_BATCHES_PER_PEER);
        let writer = Writer {
            client: client.clone(),
            queued,
            health,
            from,
            to,
            node,
        };
        tokio::spawn(writer.run());
        Self { queue, client }
    }

    /// Queues a batch; false (and the batch dropped) when the queue is full.
    pub(crate) fn send(&self, batch: MessageBatch, call: bool) -> bool {
        let queued = Queued {
            batch,
            call,
            since: Instant::now(),
        };
        self.queue.try_send(queued).is_ok()
    }

    /// The peer's address.
    pub(crate) fn addr(&self) -> &str {
        self.client.addr()
    }
}

/// How an open stream ended.
enum Ended {
    /// The queue closed: this node no longer talks to the peer.
    Closed,
    /// The connection broke or the peer ended the stream.
    Broken(String),
    /// The peer refused a batch.
    Refused(Status),
}

/// The task that owns the stream to one peer.
struct Writer<S: StateMachine> {
    client: Arc<RpcClient>,
    queued: mpsc::Receiver<Queued>,
    health: Arc<PeerHealth>,
    from: NodeId,
    to: NodeId,
    node: mpsc::Sender<Command<S>>,
}

impl<S: StateMachine> Writer<S> {
    async fn run(mut self) {
        let mut wait = REOPEN_FIRST;
        while let Some(first) = self.next_fresh().await {
            let (wire, answers) = match self.open().await {
                Ok(opened) => opened,
                Err(why) => {
                    self.health.record(Heard::Failed(why));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(REOPEN_MAX);
                    continue;
                }
            };
            wait = REOPEN_FIRST;
            if self.health.heard() != Heard::Answered {
                // Reached again after a break or failed opens.
                let reached = Command::PeerReachable { peer: self.to };
                if self.node.send(reached).await.is_err() {
                    return;
                }
            }
            self.health.record(Heard::Answered);
            match self.carry(first, wire, answers).await {
                Ended::Closed => return,
                Ended::Broken(why) => {
                    tracing::debug!(to = self.to, %why, "the stream to this peer broke");
                    self.health.record(Heard::Failed(why));
                    self.client.forget_connection();
                    let lost = Command::PeerUnreachable { peer: self.to };
                    if self.node.send(lost).await.is_err() {
                        return;
                    }
                }
                Ended::Refused(status) => {
                    let why = format!("refuses: {}", status.message());
                    self.health.record(Heard::Failed(why));
                    if self.health.refusal_log.ready() {
                        super::log_refusal(self.client.addr(), self.from, self.to, &status);
                    }
                    tokio::time::sleep(REOPEN_MAX).await;
                }
            }
        }
    }

    /// The next queued batch that has not waited past the deadline; `None`
    /// once the queue is closed.
    async fn next_fresh(&mut self) -> Option<Queued> {
        let deadline = self.client.options().call_timeout;
        loop {
            let queued = self.queued.recv().await?;
            if queued.since.elapsed() <= deadline {
                return Some(queued);
            }
            tracing::trace!(
                to = self.to,
                "dropped a batch that waited past its deadline"
            );
        }
    }

    /// Opens the stream: the sender of its batches and its reverse half.
    async fn open(
        &self,
    ) -> Result<(mpsc::Sender<MessageBatch>, tonic::Streaming<MessageBatch>), String> {
        let (wire, outgoing) = mpsc::channel(MAX_WIRE_BATCHES);
        let outgoing = futures::stream::unfold(outgoing, |mut outgoing| async move {
            outgoing.recv().await.map(|batch| (batch, outgoing))
        });
        let answers = self
            .client
            .open_stream(|channel| async move {
                RaftClient::new(channel)
                    .max_encoding_message_size(MAX_BATCH_BYTES)
                    .stream(outgoing)
                    .await
            })
            .await
            .map_err(|error| error.to_string())?;
        Ok((wire, answers))
    }

    /// Writes batches to an open stream until it ends.
    async fn carry(
        &mut self,
        first: Queued,
        wire: mpsc::Sender<MessageBatch>,
        mut answers: tonic::Streaming<MessageBatch>,
    ) -> Ended {
        let mut next = Some(first);
        loop {
            if let Some(queued) = next.take()
                && self.put(queued, &wire).await.is_err()
            {
                return Ended::Broken("the stream closed while sending".into());
            }
            tokio::select! {
                queued = self.next_fresh() => match queued {
                    Some(queued) => next = Some(queued),
                    None => return Ended::Closed,
                },
                answer = answers.message() => match answer {
                    // The peer never sends batches back; one would be ignored.
                    Ok(Some(_)) => {}
                    Ok(None) => return Ended::Broken("the peer ended the stream".into()),
                    Err(status) if status.metadata().contains_key(NODE_ID_KEY) => {
                        return Ended::Refused(status);
                    }
                    Err(status) => return Ended::Broken(status.message().to_string()),
                },
            }
        }
    }

    /// Hands one batch to the stream.
    #[cfg(not(madsim))]
    async fn put(&self, queued: Queued, wire: &mpsc::Sender<MessageBatch>) -> Result<(), ()> {
        wire.send(queued.batch).await.map_err(|_| ())
    }

    /// Hands one batch to the stream once the simulated network delivers
    /// it, in its own task (delays reorder batches, as they did calls).
    #[cfg(madsim)]
    async fn put(&self, queued: Queued, wire: &mpsc::Sender<MessageBatch>) -> Result<(), ()> {
        use prost::Message as _;
        if wire.is_closed() {
            return Err(());
        }
        let client = self.client.clone();
        let wire = wire.clone();
        tokio::spawn(async move {
            let bytes = queued.batch.encoded_len();
            if client
                .simulate_stream_message(bytes, queued.call)
                .await
                .is_ok()
            {
                let _ = wire.send(queued.batch).await;
            }
        });
        Ok(())
    }
}
