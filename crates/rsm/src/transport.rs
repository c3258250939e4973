//! Messages between nodes: [`Outbox`] (this file) sends a node's messages
//! to its peers, each peer's on one long-lived stream
//! ([`PeerStream`](stream::PeerStream), `stream.rs`, which says why
//! responses travel on the responder's own stream); [`RaftService`]
//! (`service.rs`) receives the streams and hands each batch to the node.
//! Nothing pairs a response with its request: the core matches them by
//! term and index, and the round-trip metric by what the response carries
//! (`round_trip.rs`).
//!
//! A misconfigured group (two processes with one id, a peer address that
//! reaches another node, a peer that does not exist) would otherwise only
//! show as a group without a leader, so both sides say loudly what they
//! see, at most once per [`NodeConfig::problem_log_interval`] each: the
//! receiver logs every batch it refuses and names itself in the refusal
//! ([`NODE_ID_KEY`]), the sender logs the refusal and what it means (the
//! address of node 3 answered as this node's own id: two processes share
//! it), and the [`Outbox`] remembers what each peer last answered, for the
//! driver's warning when there is no leader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_raft::{ClusterConfig, Message, NodeId};
use cairn_rpc::raft::MessageBatch;
use cairn_rpc::{ClientOptions, RpcClient};
use tokio::sync::mpsc;
use tonic::Status;

mod round_trip;
mod service;
mod stream;

pub use service::RaftService;

use crate::codec;
use crate::metrics::Metrics;
use crate::node::{Command, NodeConfig};
use crate::state_machine::StateMachine;
use round_trip::RoundTrips;
use stream::PeerStream;

/// The most message batches queued for one peer's stream (while it is
/// being opened, or while the peer reads slowly). When full, a new batch
/// to that peer is dropped: Raft resends what matters (the leader's
/// heartbeat round trip resets its flow control).
pub const MAX_QUEUED_BATCHES_PER_PEER: usize = 32;

/// The largest message batch a node accepts (the core's appends and
/// snapshot chunks are about 1 MiB each; several may share a batch).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Metadata key of a refused batch's status: the id of the node that
/// refused it, so that the sender can tell which node its peer's address
/// really reaches.
pub const NODE_ID_KEY: &str = "cairn-node-id";

struct Peer<S: StateMachine> {
    url: String,
    link: Link<S>,
    health: Arc<PeerHealth>,
    /// The appends and heartbeats waiting for an answer (gRPC peers only).
    round_trips: Option<RoundTrips>,
}

/// How this node's stream to a peer last fared, and when its refusals
/// were last logged.
struct PeerHealth {
    heard: Mutex<Heard>,
    refusal_log: LogThrottle,
}

/// The outcome of the last attempt to reach a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    NotCalled,
    Answered,
    Failed(String),
}

impl PeerHealth {
    fn new(interval: Duration) -> Self {
        Self {
            heard: Mutex::new(Heard::NotCalled),
            refusal_log: LogThrottle::new(interval),
        }
    }

    fn record(&self, heard: Heard) {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner()) = heard;
    }

    fn heard(&self) -> Heard {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Lets a recurring problem be logged at most once per interval.
pub(crate) struct LogThrottle {
    interval: Duration,
    last: Mutex<Option<tokio::time::Instant>>,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
        }
    }

    /// Whether to log now: the first time, then once per interval.
    pub(crate) fn ready(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            return false;
        }
        *last = Some(now);
        true
    }
}

enum Link<S: StateMachine> {
    Grpc(PeerStream),
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

/// Sends message batches to peers, each peer's on its own stream; what a
/// peer says back arrives on its stream to this node. Peers can be added
/// and removed while the node runs (membership change).
pub(crate) struct Outbox<S: StateMachine> {
    /// This node.
    id: NodeId,
    /// This node's own URL, as its peers reach it (for the snapshots it
    /// sends and stores).
    own_url: Option<String>,
    cluster: String,
    peers: BTreeMap<NodeId, Peer<S>>,
    node: mpsc::Sender<Command<S>>,
    /// How a new peer is reached.
    network: Network<S>,
    problem_log_interval: Duration,
    /// Where round trips to gRPC peers are timed (none in process).
    metrics: Option<Metrics>,
}

/// The network an [`Outbox`] reaches its peers through.
enum Network<S: StateMachine> {
    Grpc(ClientOptions),
    Local(LocalNet<S>),
}

impl<S: StateMachine> Outbox<S> {
    /// Sends over gRPC to the peers' URLs.
    pub(crate) fn new(
        config: &NodeConfig,
        node: mpsc::Sender<Command<S>>,
        metrics: &Metrics,
    ) -> Self {
        let options = ClientOptions {
            connect_timeout: config.rpc_timeout,
            call_timeout: config.rpc_timeout,
        };
        Self::with_network(config, node, Network::Grpc(options), Some(metrics.clone()))
    }

    /// Sends through `net` instead of gRPC.
    pub(crate) fn local(
        config: &NodeConfig,
        node: mpsc::Sender<Command<S>>,
        net: &LocalNet<S>,
    ) -> Self {
        Self::with_network(config, node, Network::Local(net.clone()), None)
    }

    fn with_network(
        config: &NodeConfig,
        node: mpsc::Sender<Command<S>>,
        network: Network<S>,
        metrics: Option<Metrics>,
    ) -> Self {
        let mut outbox = Self {
            id: config.raft.id,
            own_url: config.peers.get(&config.raft.id).cloned(),
            cluster: config.cluster.clone(),
            peers: BTreeMap::new(),
            node,
            network,
            problem_log_interval: config.problem_log_interval,
            metrics,
        };
        for (&id, url) in &config.peers {
            outbox.add_peer(id, url);
        }
        outbox
    }

    /// Starts talking to node `id` at `url` (a member added while the node
    /// runs). A peer already known keeps its address; this node is not its
    /// own peer.
    pub(crate) fn add_peer(&mut self, id: NodeId, url: &str) {
        if id == self.id || self.peers.contains_key(&id) {
            return;
        }
        let health = Arc::new(PeerHealth::new(self.problem_log_interval));
        let link = match &self.network {
            Network::Local(net) => Link::Local(net.clone(), id),
            Network::Grpc(options) => match RpcClient::new(url.to_string(), options.clone()) {
                Ok(client) => Link::Grpc(PeerStream::start(
                    Arc::new(client),
                    health.clone(),
                    (self.id, id),
                    self.node.clone(),
                )),
                Err(error) => {
                    tracing::error!(peer = id, url, %error, "cannot reach this peer: its address is invalid");
                    return;
                }
            },
        };
        let round_trips = match (&link, &self.metrics) {
            (Link::Grpc(_), Some(metrics)) => Some(RoundTrips::new(metrics.peer_round_trip(id))),
            _ => None,
        };
        let peer = Peer {
            url: url.to_string(),
            link,
            health,
            round_trips,
        };
        self.peers.insert(id, peer);
    }

    /// The URL of every node this one talks to, itself included: the
    /// bootstrap peers and the members added since, less those removed.
    pub(crate) fn urls(&self) -> BTreeMap<NodeId, String> {
        let peers = self.peers.iter().map(|(&id, peer)| (id, peer.url.clone()));
        let own = self.own_url.clone().map(|url| (self.id, url));
        peers.chain(own).collect()
    }

    /// The URL of every member of `config` this node knows (itself
    /// included), for a snapshot to carry.
    pub(crate) fn member_urls(&self, config: &ClusterConfig) -> BTreeMap<NodeId, String> {
        let mut urls = self.urls();
        urls.retain(|&id, _| config.is_member(id));
        urls
    }

    /// Stops talking to node `id` (removed from the group): its stream
    /// ends once the batches handed to it are written.
    pub(crate) fn remove_peer(&mut self, id: NodeId) {
        self.peers.remove(&id);
    }

    /// The peers for which `counted` holds whose last call got no answer
    /// or a refusal (or that were never called), each as "node 2 at URL
    /// (why)", for a report.
    pub(crate) fn unanswering_peers(&self, counted: impl Fn(NodeId) -> bool) -> Vec<String> {
        let mut unanswering = Vec::new();
        for (id, peer) in self.peers.iter().filter(|(id, _)| counted(**id)) {
            let Link::Grpc(stream) = &peer.link else {
                continue; // in-process: always reachable
            };
            let why = match peer.health.heard() {
                Heard::Answered => continue,
                Heard::NotCalled => "not called yet".to_string(),
                Heard::Failed(error) => error,
            };
            unanswering.push(format!("node {id} at {} ({why})", stream.addr()));
        }
        unanswering
    }

    /// Sends one batch to `to`, requests and responses alike; drops it
    /// when the peer's queue is full.
    pub(crate) fn send(&mut self, to: NodeId, messages: Vec<Message>) {
        let Some(peer) = self.peers.get_mut(&to) else {
            return;
        };
        if let Some(round_trips) = &mut peer.round_trips {
            round_trips.sent(&messages);
        }
        let queued = match &peer.link {
            Link::Local(net, id) => net
                .sender(*id)
                .is_none_or(|peer| peer.try_send(Command::Inbound { messages }).is_ok()),
            Link::Grpc(stream) => {
                let call = messages.iter().any(Message::is_request);
                let batch = MessageBatch {
                    cluster: self.cluster.clone(),
                    messages: messages.iter().map(codec::encode).collect(),
                };
                stream.send(batch, call)
            }
        };
        if !queued {
            tracing::debug!(to, "too many batches queued for this peer; dropped one");
        }
    }

    /// Notes a message from a peer: a response stops the round-trip
    /// timers it answers.
    pub(crate) fn heard(&mut self, message: &Message) {
        if let Some(Peer {
            round_trips: Some(round_trips),
            ..
        }) = self.peers.get_mut(&message.from)
            && message.is_response()
        {
            round_trips.answered(message);
        }
    }
}

/// Logs a peer's refusal of this node's batch, saying what it means when
/// the refusing node is not the one called.
fn log_refusal(url: &str, self_id: NodeId, to: NodeId, status: &Status) {
    let answered_as = status
        .metadata()
        .get(NODE_ID_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<NodeId>().ok());
    let reason = status.message();
    match answered_as {
        Some(id) if id == self_id => tracing::error!(
            peer = to,
            "node {to}'s address {url} is answered by a node with this node's own id \
             {self_id}: two processes run as node {self_id} (give each node its own --id), or \
             --peers gives node {to} this node's address; it refused: {reason}"
        ),
        Some(id) if id != to => tracing::error!(
            peer = to,
            "node {to}'s address {url} is answered by node {id}: check --peers (every node \
             must have the same list, each id with its own node's address); it refused: {reason}"
        ),
        _ => tracing::error!(
            peer = to,
            "node {to} at {url} refuses this node's messages: {reason}"
        ),
    }
}

#[cfg(test)]
mod tests;
