//! [`Node`]: the handle services use, and the task that owns a Raft core,
//! its storage and its state machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_raft::{ClusterConfig, ConfChange, LogIndex, Message, NodeId, Raft, Role, Term};
use cairn_storage::Disk;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};

use crate::driver::Driver;
use crate::error::{FatalError, MembershipError, StartError, SubmitError};
use crate::identity::Identity;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::transport::{LocalNet, Outbox, RaftService};

/// How many commands may wait for the node task. When full, a client's
/// submit or read fails at once with [`SubmitError::Overloaded`]; messages
/// from peers wait for room (up to their call's deadline).
pub const MAX_QUEUED_COMMANDS: usize = 8192;
/// The most proposals waiting to be applied; beyond it a submit fails with
/// [`SubmitError::Overloaded`].
pub const MAX_PENDING_PROPOSALS: usize = 65_536;
/// The most linearizable reads waiting (queued, in a read-index round, or
/// confirmed and waiting to be applied); beyond it a read fails with
/// [`SubmitError::Overloaded`].
pub const MAX_PENDING_READS: usize = 65_536;
/// The most commands the task takes from its queue before it processes a
/// `Ready` (the batch that becomes one fsync).
pub const MAX_COMMANDS_PER_ROUND: usize = 1024;

/// The wait before retrying a snapshot save that failed; it doubles with
/// every further failure, up to [`SNAPSHOT_RETRY_MAX`].
pub const SNAPSHOT_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between snapshot save attempts.
pub const SNAPSHOT_RETRY_MAX: Duration = Duration::from_secs(60);

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The group's name. With the members' ids and URLs at the first start
    /// it makes the cluster id that every message carries; messages with
    /// another cluster id are refused.
    pub cluster: String,
    /// Every member's id and URL (`http://host:port`), this node included.
    /// At the first start they are the group's members (bootstrap); later
    /// the configuration stored in the log and snapshot rules, and members
    /// added since are reached at the URLs their configuration entries
    /// carry.
    pub peers: BTreeMap<NodeId, String>,
    /// The id of the running group's cluster ([`Node::cluster_id`]) if this
    /// node starts empty to join it: it knows no configuration, never
    /// campaigns, and waits for the leader to add it as a learner. `peers`
    /// then gives the addresses of the members it may need to reach.
    pub join: Option<String>,
    /// Where the log and snapshots live, relative to the disk's root.
    pub data_dir: PathBuf,
    /// The protocol's settings (its `id` is this node's id).
    pub raft: cairn_raft::Config,
    /// The length of one tick of the core's clock.
    pub tick: Duration,
    /// Snapshot when the Raft state (log and hard state) passes this many
    /// bytes; -1 never snapshots.
    pub max_raft_state: i64,
    /// The deadline of one message batch to a peer.
    pub rpc_timeout: Duration,
    /// How long a node goes without a leader before it warns (naming the
    /// peers that do not answer), and the least time between two logs of
    /// one recurring problem (that warning, a peer refusing this node's
    /// messages, a refused batch).
    pub problem_log_interval: Duration,
}

impl NodeConfig {
    /// Defaults for node `id` of `peers`, storing under `data_dir`.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            cluster: "cairn".into(),
            peers,
            join: None,
            data_dir: data_dir.into(),
            raft: cairn_raft::Config::new(id),
            tick: Duration::from_millis(10),
            max_raft_state: 8 << 20,
            rpc_timeout: Duration::from_millis(500),
            problem_log_interval: Duration::from_secs(10),
        }
    }

    fn validate(&self) -> Result<(), StartError> {
        self.raft
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        if !self.peers.contains_key(&self.raft.id) {
            return Err(StartError::Config(format!(
                "node {} is not among the peers",
                self.raft.id
            )));
        }
        if self.peers.contains_key(&0) {
            return Err(StartError::Config("node id 0 is reserved".into()));
        }
        if self.tick.is_zero() {
            return Err(StartError::Config(
                "the tick must be longer than zero".into(),
            ));
        }
        Ok(())
    }
}

/// The tonic server type of [`Node::raft_service`].
#[cfg(not(madsim))]
pub type RaftServer<S> = cairn_rpc::raft::raft_server::RaftServer<RaftService<S>>;
/// The tonic server type of [`Node::raft_service`].
#[cfg(madsim)]
pub type RaftServer<S> =
    cairn_rpc::raft::raft_server::RaftServer<RaftService<S>, tonic::codegen::IdentityInterceptor>;

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Its current term.
    pub term: Term,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: LogIndex,
    /// The last index applied to the state machine.
    pub applied: LogIndex,
    /// Its last log index.
    pub last_index: LogIndex,
    /// The index its latest snapshot covers.
    pub snapshot_index: LogIndex,
    /// The size of its Raft state in bytes.
    pub raft_state_bytes: u64,
    /// The size of its latest snapshot of the state machine in bytes.
    pub snapshot_bytes: u64,
    /// Whether the node task is running.
    pub running: bool,
    /// Why the node task stopped on its own (an I/O error, an unreadable
    /// snapshot), if it did.
    pub stopped: Option<FatalError>,
}

impl NodeStatus {
    /// Whether the node is running and its group's leader (what a service
    /// asks before it acts as the leader, and what tests look for).
    pub fn is_leader(&self) -> bool {
        self.running && self.role == Role::Leader
    }

    /// The wire form every Cairn service answers `Status` with, without the
    /// members (see [`Node::status_reply`]).
    pub fn to_reply(&self) -> cairn_rpc::node::StatusReply {
        let role = match (self.running, self.role) {
            (false, _) => "stopped",
            (true, Role::Leader) => "leader",
            (true, Role::Follower) => "follower",
            (true, Role::Candidate) => "candidate",
            (true, Role::PreCandidate) => "pre-candidate",
        };
        cairn_rpc::node::StatusReply {
            id: self.id,
            term: self.term,
            role: role.into(),
            leader: self.leader.unwrap_or(0),
            commit: self.commit,
            applied: self.applied,
            last_index: self.last_index,
            snapshot_index: self.snapshot_index,
            raft_state_bytes: self.raft_state_bytes,
            members: Vec::new(),
        }
    }
}

/// The largest command [`Node::submit`] accepts: well under the
/// write-ahead log's record limit, so that an entry always fits (a command
/// that did not would stop every node that tried to persist it).
pub const MAX_COMMAND_BYTES: usize = 8 << 20;

fn check_size(command: &Bytes) -> Result<(), SubmitError> {
    if command.len() > MAX_COMMAND_BYTES {
        return Err(SubmitError::TooLarge {
            bytes: command.len(),
            limit: MAX_COMMAND_BYTES,
        });
    }
    Ok(())
}

pub(crate) type ReadFn<S> = Box<dyn FnOnce(Result<&S, SubmitError>) + Send>;

pub(crate) enum Command<S> {
    Submit {
        command: Bytes,
        reply: oneshot::Sender<Result<Bytes, SubmitError>>,
    },
    Start {
        command: Bytes,
        reply: oneshot::Sender<Result<(LogIndex, Term), SubmitError>>,
    },
    Read {
        read: ReadFn<S>,
    },
    Inspect {
        read: ReadFn<S>,
    },
    /// The state machine's snapshot as applied now (a backup, after its
    /// read barrier).
    Snapshot {
        reply: oneshot::Sender<crate::backup::StateSnapshot>,
    },
    Transfer {
        to: NodeId,
        reply: oneshot::Sender<Result<(), MembershipError>>,
    },
    ConfChange {
        change: ConfChange,
        context: Bytes,
        reply: oneshot::Sender<Result<ClusterConfig, MembershipError>>,
    },
    Membership {
        reply: oneshot::Sender<Membership>,
    },
    /// Messages from a peer's stream.
    Inbound {
        messages: Vec<Message>,
    },
    /// This node's stream to `peer` broke (the peer's process may have died).
    PeerUnreachable {
        peer: NodeId,
    },
    /// This node's stream to `peer` opened again after it broke.
    PeerReachable {
        peer: NodeId,
    },
    Shutdown,
}

/// A handle on a running node. Cheap to clone.
pub struct Node<S: StateMachine> {
    commands: mpsc::Sender<Command<S>>,
    status: watch::Receiver<NodeStatus>,
    service: RaftService<S>,
    /// The URLs given at start (this node's own among them).
    pub(crate) peers: Arc<BTreeMap<NodeId, String>>,
    /// The URL of every node this one talks to now (bootstrap peers plus
    /// members added, less those removed), to name the leader in a
    /// not-leader answer and the members in the status.
    urls: watch::Receiver<BTreeMap<NodeId, String>>,
    metrics: Metrics,
    /// The id every message batch of this node's group carries.
    pub(crate) cluster_id: Arc<str>,
}

impl<S: StateMachine> Clone for Node<S> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            status: self.status.clone(),
            service: self.service.clone(),
            peers: self.peers.clone(),
            urls: self.urls.clone(),
            metrics: self.metrics.clone(),
            cluster_id: self.cluster_id.clone(),
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl<S: StateMachine> Node<S> {
    /// Recovers the node from `disk` (restoring `machine` from the latest
    /// snapshot) and starts its task. Serve [`Node::raft_service`] on the
    /// node's URL so that peers can reach it.
    pub fn start(config: NodeConfig, disk: Arc<dyn Disk>, machine: S) -> Result<Self, StartError> {
        Self::start_with(config, disk, machine, None)
    }

    /// Like [`start`](Self::start), but the node talks to its peers through
    /// `net`, in this process, instead of gRPC.
    pub fn start_local(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        machine: S,
        net: &LocalNet<S>,
    ) -> Result<Self, StartError> {
        Self::start_with(config, disk, machine, Some(net))
    }

    fn start_with(
        mut config: NodeConfig,
        disk: Arc<dyn Disk>,
        mut machine: S,
        net: Option<&LocalNet<S>>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        // The flags' member list counts once, at bootstrap; later starts
        // must agree with what the data says. Messages carry the id.
        let mut flags = Identity::from_flags(&config.cluster, config.raft.id, &config.peers);
        if let Some(cluster_id) = &config.join {
            flags.cluster_id = cluster_id.clone();
        }
        let identity = crate::identity::check_or_store(&*disk, &config.data_dir, flags)?;
        config.cluster = identity.cluster_id;
        let cluster = match config.join {
            Some(_) => ClusterConfig::joining(),
            None => ClusterConfig::new(config.peers.keys().copied()),
        };
        let (storage, recovered) = RaftStorage::open(disk, &config.data_dir, cluster)?;
        let addresses = crate::membership::AddressChanges::recovered(&recovered.initial);
        if let Some(snapshot) = &recovered.machine_snapshot {
            machine.restore(snapshot).map_err(StartError::Restore)?;
        }
        let recovered_applied = recovered
            .initial
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.index);
        let seed: u64 = cairn_rpc::seeded_rng().r#gen();
        let raft = Raft::new(config.raft.clone(), recovered.initial, seed)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let (commands, inbox) = mpsc::channel(MAX_QUEUED_COMMANDS);
        let status = status_of(&raft, &storage, true, None);
        let (status_tx, status_rx) = watch::channel(status);
        let metrics = Metrics::new(config.raft.id);
        let mut outbox = match net {
            Some(net) => {
                net.register(config.raft.id, commands.clone());
                Outbox::local(&config, commands.clone(), net)
            }
            None => Outbox::new(&config, commands.clone(), &metrics),
        };
        addresses.apply_to(&mut outbox);
        let service = RaftService::new(
            config.raft.id,
            config.cluster.clone(),
            commands.clone(),
            config.problem_log_interval,
        );
        let peers = Arc::new(config.peers.clone());
        let (urls_tx, urls) = watch::channel(BTreeMap::new());
        let driver = Driver::new(
            raft,
            storage,
            machine,
            outbox,
            status_tx,
            config.max_raft_state,
            recovered_applied,
        )
        .with_metrics(metrics.clone())
        .with_problem_log_interval(config.problem_log_interval)
        .publishing_urls(urls_tx);
        tokio::spawn(driver.run(inbox, config.tick));
        Ok(Self {
            commands,
            status: status_rx,
            service,
            peers,
            urls,
            metrics,
            cluster_id: config.cluster.as_str().into(),
        })
    }

    /// Replicates `command` and answers with the state machine's output once
    /// it is applied on this node, or fails: [`SubmitError::NotLeader`] (at
    /// once on a follower, or when leadership is lost before the command is
    /// applied), [`SubmitError::Timeout`] after `deadline`.
    pub async fn submit(&self, command: Bytes, deadline: Duration) -> Result<Bytes, SubmitError> {
        check_size(&command)?;
        let (reply, answer) = oneshot::channel();
        self.offer(Command::Submit { command, reply })?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(SubmitError::Timeout),
        }
    }

    /// Appends `command` to the log if this node is the leader and answers
    /// at once with its (index, term), without waiting for commitment (the
    /// 6.824 `Start`).
    pub async fn start_command(&self, command: Bytes) -> Result<(LogIndex, Term), SubmitError> {
        check_size(&command)?;
        let (reply, answer) = oneshot::channel();
        self.offer(Command::Start { command, reply })?;
        answer.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Runs `f` on the state machine, linearizably: through read index,
    /// without a log write. Fails like [`submit`](Self::submit).
    pub async fn read<R, F>(&self, f: F, deadline: Duration) -> Result<R, SubmitError>
    where
        F: FnOnce(&S) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let read: ReadFn<S> = Box::new(move |machine| {
            let _ = reply.send(machine.map(f));
        });
        self.offer(Command::Read { read })?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(SubmitError::Timeout),
        }
    }

    /// Runs `f` on this node's state machine as it is now, on any node:
    /// not linearizable (a follower may lag), for status displays.
    pub async fn inspect<R, F>(&self, f: F) -> Result<R, SubmitError>
    where
        F: FnOnce(&S) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let read: ReadFn<S> = Box::new(move |machine| {
            let _ = reply.send(machine.map(f));
        });
        self.send(Command::Inspect { read }).await?;
        answer.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// The gRPC status a service answers a failed submit or read with:
    /// `FAILED_PRECONDITION` naming the leader (id and URL in metadata,
    /// [`cairn_rpc::not_leader`]; the id alone when its URL is not known
    /// here), `DEADLINE_EXCEEDED`, `UNAVAILABLE` or
    /// `INVALID_ARGUMENT`.
    pub fn error_status(&self, error: SubmitError) -> tonic::Status {
        match error {
            SubmitError::NotLeader { hint } => {
                let urls = self.urls.borrow();
                let url = hint.and_then(|id| urls.get(&id)).map(String::as_str);
                cairn_rpc::not_leader(hint, url)
            }
            SubmitError::Timeout => tonic::Status::deadline_exceeded(
                "the request was not applied in time (the outcome is unknown); retry with the same sequence number",
            ),
            SubmitError::Shutdown => {
                tonic::Status::unavailable("this node is shutting down; use another")
            }
            SubmitError::Stopped(reason) => tonic::Status::unavailable(format!(
                "this node stopped ({reason}) and serves nothing more; use another node"
            )),
            SubmitError::Overloaded => tonic::Status::resource_exhausted(
                "overloaded: this node has too many requests waiting and did nothing; retry after a pause, with back-off",
            ),
            error @ SubmitError::TooLarge { .. } => {
                tonic::Status::invalid_argument(error.to_string())
            }
        }
    }

    /// The node's latest status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// This node's status as the `Status` RPCs answer it, with every member
    /// of its group (id and URL) as the current configuration has them.
    pub fn status_reply(&self) -> cairn_rpc::node::StatusReply {
        let mut reply = self.status().to_reply();
        reply.members = self
            .urls
            .borrow()
            .iter()
            .map(|(&id, url)| cairn_rpc::node::Member {
                id,
                url: url.clone(),
            })
            .collect();
        reply
    }

    /// Waits until the node task stops on its own and returns why (an I/O
    /// error it cannot go on after, for instance). A node stopped by
    /// [`shutdown`](Self::shutdown) never resolves this.
    pub async fn stopped(&self) -> FatalError {
        let mut status = self.status.clone();
        loop {
            if let Some(reason) = status.borrow_and_update().stopped.clone() {
                return reason;
            }
            if status.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// The node's metrics, for a service to add its own series to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every series of this node in the Prometheus text format: the Raft
    /// state as it is now, the counters and histograms, the service's own
    /// series and, if the state machine keeps sessions, their number.
    pub async fn scrape(&self) -> String {
        let sessions = self.inspect(|machine| machine.session_count()).await;
        self.metrics.render(&self.status(), sessions.ok().flatten())
    }

    /// The gRPC service peers send Raft messages to.
    pub fn raft_service(&self) -> RaftServer<S> {
        cairn_rpc::raft::raft_server::RaftServer::new(self.service.clone())
            .max_decoding_message_size(crate::transport::MAX_BATCH_BYTES)
    }

    /// Stops the node task (its storage stays as it is).
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    /// Queues a client's command, or fails at once if the queue is full.
    pub(crate) fn offer(&self, command: Command<S>) -> Result<(), SubmitError> {
        self.commands
            .try_send(command)
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => self.gone(),
            })
    }

    /// Why the node task no longer takes commands: it stopped on its own
    /// (and says why), or it was shut down.
    pub(crate) fn gone(&self) -> SubmitError {
        match &self.status.borrow().stopped {
            Some(reason) => SubmitError::Stopped(reason.clone()),
            None => SubmitError::Shutdown,
        }
    }

    pub(crate) async fn send(&self, command: Command<S>) -> Result<(), SubmitError> {
        self.commands.send(command).await.map_err(|_| self.gone())
    }
}

pub(crate) fn status_of(
    raft: &Raft,
    storage: &RaftStorage,
    running: bool,
    stopped: Option<FatalError>,
) -> NodeStatus {
    let status = raft.status();
    NodeStatus {
        id: status.id,
        term: status.term,
        role: status.role,
        leader: status.leader,
        commit: status.commit,
        applied: status.applied,
        last_index: status.last_index,
        snapshot_index: status.snapshot_index,
        raft_state_bytes: storage.raft_state_bytes(),
        snapshot_bytes: raft.snapshot_bytes(),
        running,
        stopped,
    }
}
