//! Messages between nodes: [`Outbox`] sends a node's messages to its peers
//! in one gRPC call per peer per `Ready`; [`RaftService`] receives them and
//! answers each call with the responses to the requests it carried.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft::{Message, NodeId};
use cairn_rpc::raft::raft_client::RaftClient;
use cairn_rpc::raft::{self as proto, MessageBatch};
use cairn_rpc::{ClientOptions, RpcClient};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::codec;
use crate::node::{Command, NodeConfig};
use crate::state_machine::StateMachine;

/// The most message batches in flight to one peer. When full, a new batch
/// to that peer is dropped: Raft resends what matters (the leader's
/// heartbeat round trip resets its flow control).
pub const MAX_INFLIGHT_BATCHES_PER_PEER: usize = 32;

/// The largest message batch a node accepts (the core's appends and
/// snapshot chunks are about 1 MiB each; several may share a batch).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

struct Peer<S: StateMachine> {
    link: Link<S>,
    slots: Arc<Semaphore>,
}

enum Link<S: StateMachine> {
    Grpc(Arc<RpcClient>),
    Local(LocalNet<S>, NodeId),
}

/// An in-process network: nodes started with [`Node::start_local`] on the
/// same `LocalNet` pass messages to each other through channels instead of
/// gRPC (no encoding, no sockets). For benchmarks of the protocol and
/// runtime alone, and for embedding a whole group in one process.
///
/// [`Node::start_local`]: crate::Node::start_local
pub struct LocalNet<S: StateMachine> {
    nodes: Arc<Mutex<BTreeMap<NodeId, mpsc::Sender<Command<S>>>>>,
}

impl<S: StateMachine> Clone for LocalNet<S> {
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
        }
    }
}

impl<S: StateMachine> Default for LocalNet<S> {
    fn default() -> Self {
        Self {
            nodes: Arc::default(),
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for LocalNet<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<NodeId> = self
            .nodes
            .lock()
            .map(|n| n.keys().copied().collect())
            .unwrap_or_default();
        f.debug_struct("LocalNet").field("nodes", &nodes).finish()
    }
}

impl<S: StateMachine> LocalNet<S> {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(&self, id: NodeId, node: mpsc::Sender<Command<S>>) {
        self.nodes.lock().expect("local net lock").insert(id, node);
    }

    fn sender(&self, id: NodeId) -> Option<mpsc::Sender<Command<S>>> {
        self.nodes.lock().expect("local net lock").get(&id).cloned()
    }
}

/// Sends message batches to peers, each call in its own task; the responses
/// come back to the node as inbound messages.
pub(crate) struct Outbox<S: StateMachine> {
    cluster: String,
    peers: BTreeMap<NodeId, Peer<S>>,
    node: mpsc::Sender<Command<S>>,
}

impl<S: StateMachine> Outbox<S> {
    /// Sends over gRPC to the peers' URLs.
    pub(crate) fn new(config: &NodeConfig, node: mpsc::Sender<Command<S>>) -> Self {
        let options = ClientOptions {
            connect_timeout: config.rpc_timeout,
            call_timeout: config.rpc_timeout,
        };
        let mut peers = BTreeMap::new();
        for (&id, url) in config.peers.iter().filter(|&(&id, _)| id != config.raft.id) {
            match RpcClient::new(url.clone(), options.clone()) {
                Ok(client) => {
                    let slots = Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES_PER_PEER));
                    peers.insert(
                        id,
                        Peer {
                            link: Link::Grpc(Arc::new(client)),
                            slots,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(peer = id, %error, "cannot reach this peer: its address is invalid")
                }
            }
        }
        Self {
            cluster: config.cluster.clone(),
            peers,
            node,
        }
    }

    /// Sends through `net` instead of gRPC.
    pub(crate) fn local(
        config: &NodeConfig,
        node: mpsc::Sender<Command<S>>,
        net: &LocalNet<S>,
    ) -> Self {
        let peers = config
            .peers
            .keys()
            .filter(|&&id| id != config.raft.id)
            .map(|&id| {
                let slots = Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES_PER_PEER));
                (
                    id,
                    Peer {
                        link: Link::Local(net.clone(), id),
                        slots,
                    },
                )
            })
            .collect();
        Self {
            cluster: config.cluster.clone(),
            peers,
            node,
        }
    }

    /// Sends one batch to `to` in its own task.
    pub(crate) fn send(&self, to: NodeId, messages: Vec<Message>) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        let Ok(permit) = peer.slots.clone().try_acquire_owned() else {
            tracing::debug!(to, "too many batches in flight to this peer; dropped one");
            return;
        };
        let node = self.node.clone();
        match &peer.link {
            Link::Local(net, id) => {
                let Some(peer) = net.sender(*id) else { return };
                tokio::spawn(async move {
                    let _permit = permit;
                    let (reply, answer) = oneshot::channel();
                    if peer
                        .send(Command::Inbound {
                            messages,
                            reply: Some(reply),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if let Ok(responses) = answer.await
                        && !responses.is_empty()
                    {
                        let _ = node
                            .send(Command::Inbound {
                                messages: responses,
                                reply: None,
                            })
                            .await;
                    }
                });
            }
            Link::Grpc(client) => {
                let messages = messages.iter().map(codec::encode).collect();
                let batch = MessageBatch {
                    cluster: self.cluster.clone(),
                    messages,
                };
                let client = client.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    send_grpc(&client, to, batch, node).await;
                });
            }
        }
    }
}

/// One gRPC call; its responses go back to the node.
async fn send_grpc<S: StateMachine>(
    client: &RpcClient,
    to: NodeId,
    batch: MessageBatch,
    node: mpsc::Sender<Command<S>>,
) {
    let result = client
        .call(batch, |channel, request| async move {
            RaftClient::new(channel)
                .max_encoding_message_size(MAX_BATCH_BYTES)
                .step(request)
                .await
        })
        .await;
    let reply = match result {
        Ok(reply) => reply,
        Err(error) => {
            tracing::trace!(to, %error, "message batch lost");
            return;
        }
    };
    let mut responses = Vec::with_capacity(reply.messages.len());
    for message in reply.messages {
        match codec::decode(message) {
            Ok(message) => responses.push(message),
            Err(error) => tracing::warn!(from = to, %error, "dropped a malformed response"),
        }
    }
    if !responses.is_empty() {
        let _ = node
            .send(Command::Inbound {
                messages: responses,
                reply: None,
            })
            .await;
    }
}

/// The gRPC service that hands incoming batches to the node.
pub struct RaftService<S: StateMachine> {
    id: NodeId,
    cluster: String,
    node: mpsc::Sender<Command<S>>,
}

impl<S: StateMachine> Clone for RaftService<S> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            cluster: self.cluster.clone(),
            node: self.node.clone(),
        }
    }
}

impl<S: StateMachine> RaftService<S> {
    pub(crate) fn new(id: NodeId, cluster: String, node: mpsc::Sender<Command<S>>) -> Self {
        Self { id, cluster, node }
    }
}

/// How long a call waits for the node to answer before giving up.
const STEP_DEADLINE: Duration = Duration::from_secs(5);

#[tonic::async_trait]
impl<S: StateMachine> proto::raft_server::Raft for RaftService<S> {
    async fn step(&self, request: Request<MessageBatch>) -> Result<Response<MessageBatch>, Status> {
        let batch = request.into_inner();
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
            if message.to != self.id {
                return Err(Status::failed_precondition(format!(
                    "a message for node {} reached node {}; check the peer addresses",
                    message.to, self.id
                )));
            }
            messages.push(message);
        }
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
