//! [`Node`]: the handle services use, and the task that owns a Raft core,
//! its storage and its state machine.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_raft::{
    ClusterConfig, EntryKind, LogIndex, Message, NodeId, ProposeError, Raft, Ready, Role,
    SnapshotMeta, Term,
};
use cairn_storage::Disk;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{StartError, SubmitError};
use crate::identity::Identity;
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::transport::{LocalNet, Outbox, RaftService};

/// How many commands may wait for the node task; senders wait when full.
pub const MAX_QUEUED_COMMANDS: usize = 8192;
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
    pub peers: BTreeMap<NodeId, String>,
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
}

impl NodeConfig {
    /// Defaults for node `id` of `peers`, storing under `data_dir`.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            cluster: "cairn".into(),
            peers,
            data_dir: data_dir.into(),
            raft: cairn_raft::Config::new(id),
            tick: Duration::from_millis(10),
            max_raft_state: 8 << 20,
            rpc_timeout: Duration::from_millis(500),
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
    pub stopped: Option<String>,
}

impl NodeStatus {
    /// The wire form every Cairn service answers `Status` with.
    pub fn to_reply(&self) -> cairn_rpc::kv::StatusReply {
        let role = match (self.running, self.role) {
            (false, _) => "stopped",
            (true, Role::Leader) => "leader",
            (true, Role::Follower) => "follower",
            (true, Role::Candidate) => "candidate",
            (true, Role::PreCandidate) => "pre-candidate",
        };
        cairn_rpc::kv::StatusReply {
            id: self.id,
            term: self.term,
            role: role.into(),
            leader: self.leader.unwrap_or(0),
            commit: self.commit,
            applied: self.applied,
            last_index: self.last_index,
            snapshot_index: self.snapshot_index,
            raft_state_bytes: self.raft_state_bytes,
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

type ReadFn<S> = Box<dyn FnOnce(Result<&S, SubmitError>) + Send>;

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
    Transfer {
        to: NodeId,
        reply: oneshot::Sender<Result<(), SubmitError>>,
    },
    Inbound {
        messages: Vec<Message>,
        reply: Option<oneshot::Sender<Vec<Message>>>,
    },
    Shutdown,
}

/// A handle on a running node. Cheap to clone.
pub struct Node<S: StateMachine> {
    commands: mpsc::Sender<Command<S>>,
    status: watch::Receiver<NodeStatus>,
    service: RaftService<S>,
    /// Every node's URL, to name the leader in a not-leader answer.
    peers: Arc<BTreeMap<NodeId, String>>,
}

impl<S: StateMachine> Clone for Node<S> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            status: self.status.clone(),
            service: self.service.clone(),
            peers: self.peers.clone(),
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
        let flags = Identity::from_flags(&config.cluster, config.raft.id, &config.peers);
        let identity = crate::identity::check_or_store(&*disk, &config.data_dir, flags)?;
        config.cluster = identity.cluster_id;
        let cluster = ClusterConfig::new(config.peers.keys().copied());
        let (storage, recovered) = RaftStorage::open(disk, &config.data_dir, cluster)?;
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
        let outbox = match net {
            Some(net) => {
                net.register(config.raft.id, commands.clone());
                Outbox::local(&config, commands.clone(), net)
            }
            None => Outbox::new(&config, commands.clone()),
        };
        let service = RaftService::new(config.raft.id, config.cluster.clone(), commands.clone());
        let peers = Arc::new(config.peers.clone());
        let driver = Driver {
            raft,
            storage,
            machine,
            outbox,
            status: status_tx,
            max_raft_state: config.max_raft_state,
            proposals: BTreeMap::new(),
            reply_slots: BTreeMap::new(),
            batches: BTreeMap::new(),
            next_batch: 0,
            read_batches: BTreeMap::new(),
            queued_reads: Vec::new(),
            confirmed_reads: VecDeque::new(),
            next_read: 0,
            stop_error: None,
            applied: recovered_applied,
            violations: 0,
            snapshot_retry: None,
        };
        tokio::spawn(driver.run(inbox, config.tick));
        Ok(Self {
            commands,
            status: status_rx,
            service,
            peers,
        })
    }

    /// Replicates `command` and answers with the state machine's output once
    /// it is applied on this node, or fails: [`SubmitError::NotLeader`] (at
    /// once on a follower, or when leadership is lost before the command is
    /// applied), [`SubmitError::Timeout`] after `deadline`.
    pub async fn submit(&self, command: Bytes, deadline: Duration) -> Result<Bytes, SubmitError> {
        check_size(&command)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Submit { command, reply }).await?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SubmitError::Shutdown),
            Err(_) => Err(SubmitError::Timeout),
        }
    }

    /// Appends `command` to the log if this node is the leader and answers
    /// at once with its (index, term), without waiting for commitment (the
    /// 6.824 `Start`).
    pub async fn start_command(&self, command: Bytes) -> Result<(LogIndex, Term), SubmitError> {
        check_size(&command)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Start { command, reply }).await?;
        answer.await.unwrap_or(Err(SubmitError::Shutdown))
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
        self.send(Command::Read { read }).await?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SubmitError::Shutdown),
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
        answer.await.unwrap_or(Err(SubmitError::Shutdown))
    }

    /// The gRPC status a service answers a failed submit or read with:
    /// `FAILED_PRECONDITION` naming the leader (id and URL in metadata,
    /// [`cairn_rpc::not_leader`]), `DEADLINE_EXCEEDED`, `UNAVAILABLE` or
    /// `INVALID_ARGUMENT`.
    pub fn error_status(&self, error: SubmitError) -> tonic::Status {
        match error {
            SubmitError::NotLeader { hint } => {
                cairn_rpc::not_leader(hint.and_then(|id| Some((id, self.peers.get(&id)?.as_str()))))
            }
            SubmitError::Timeout => tonic::Status::deadline_exceeded(
                "the request was not applied in time (the outcome is unknown); retry with the same sequence number",
            ),
            SubmitError::Shutdown => {
                tonic::Status::unavailable("this node is shutting down; use another")
            }
            error @ SubmitError::TooLarge { .. } => {
                tonic::Status::invalid_argument(error.to_string())
            }
        }
    }

    /// Asks the leader to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Transfer { to, reply }).await?;
        answer.await.unwrap_or(Err(SubmitError::Shutdown))
    }

    /// The node's latest status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Waits until the node task stops on its own and returns why (an I/O
    /// error it cannot go on after, for instance). A node stopped by
    /// [`shutdown`](Self::shutdown) never resolves this.
    pub async fn stopped(&self) -> String {
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

    /// The gRPC service peers send Raft messages to.
    pub fn raft_service(&self) -> RaftServer<S> {
        cairn_rpc::raft::raft_server::RaftServer::new(self.service.clone())
            .max_decoding_message_size(crate::transport::MAX_BATCH_BYTES)
    }

    /// Stops the node task (its storage stays as it is).
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    async fn send(&self, command: Command<S>) -> Result<(), SubmitError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| SubmitError::Shutdown)
    }
}

fn status_of(
    raft: &Raft,
    storage: &RaftStorage,
    running: bool,
    stopped: Option<String>,
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

/// A proposal waiting for its entry to be applied.
enum Waiter {
    Output(oneshot::Sender<Result<Bytes, SubmitError>>),
}

/// The responses owed for one inbound batch.
struct BatchReply {
    remaining: usize,
    responses: Vec<Message>,
    reply: oneshot::Sender<Vec<Message>>,
}

/// The node task's state. Owned by one task; changed only by its loop.
struct Driver<S: StateMachine> {
    raft: Raft,
    storage: RaftStorage,
    machine: S,
    outbox: Outbox<S>,
    status: watch::Sender<NodeStatus>,
    max_raft_state: i64,
    /// Proposals by index: the term they were proposed in, and who waits.
    proposals: BTreeMap<LogIndex, (Term, Waiter)>,
    /// Per peer, the inbound batches owed a response, one slot per request,
    /// in the order the requests were stepped.
    reply_slots: BTreeMap<NodeId, VecDeque<u64>>,
    batches: BTreeMap<u64, BatchReply>,
    next_batch: u64,
    /// Reads waiting for their read-index round, by round token. At most
    /// one round is in flight: reads that arrive meanwhile wait in
    /// `queued_reads` and share the next round, so a burst of reads costs
    /// one heartbeat round, not one per batch (as etcd's read loop does).
    read_batches: BTreeMap<u64, Vec<ReadFn<S>>>,
    queued_reads: Vec<ReadFn<S>>,
    /// Reads confirmed at an index, waiting for it to be applied.
    confirmed_reads: VecDeque<(LogIndex, Vec<ReadFn<S>>)>,
    next_read: u64,
    stop_error: Option<String>,
    /// The last index applied to `machine` (asserted contiguous).
    applied: LogIndex,
    /// Protocol violations the core reported so far (logged as they grow).
    violations: u64,
    /// After a failed snapshot save: when to try again, and the wait that
    /// follows another failure.
    snapshot_retry: Option<(tokio::time::Instant, Duration)>,
}

impl<S: StateMachine> Driver<S> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command<S>>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut reads = Vec::new();
            let mut proposals = Vec::new();
            tokio::select! {
                _ = ticker.tick() => self.raft.tick(),
                command = inbox.recv() => {
                    let Some(command) = command else { break };
                    if !self.take(command, &mut proposals, &mut reads) {
                        break;
                    }
                    let mut taken = 1;
                    while taken < MAX_COMMANDS_PER_ROUND {
                        let Ok(command) = inbox.try_recv() else { break };
                        taken += 1;
                        if !self.take(command, &mut proposals, &mut reads) {
                            return self.stop(inbox);
                        }
                    }
                }
            }
            self.propose(proposals);
            self.start_read(reads);
            if let Err(error) = self.process_ready() {
                self.stop_error = Some(error);
                break;
            }
            if self.read_batches.is_empty() && !self.queued_reads.is_empty() {
                // The round in flight was confirmed: the queued reads go.
                self.start_read(Vec::new());
                if let Err(error) = self.process_ready() {
                    self.stop_error = Some(error);
                    break;
                }
            }
            self.maybe_snapshot();
            self.publish_status(true);
        }
        self.stop(inbox);
    }

    /// Handles one command; proposals and reads are collected for a batch.
    /// Returns false on shutdown.
    fn take(
        &mut self,
        command: Command<S>,
        proposals: &mut Vec<(Bytes, Waiter)>,
        reads: &mut Vec<ReadFn<S>>,
    ) -> bool {
        match command {
            Command::Submit { command, reply } => proposals.push((command, Waiter::Output(reply))),
            Command::Start { command, reply } => {
                let result = self.raft.propose(command).map_err(not_leader);
                let _ = reply.send(result);
            }
            Command::Read { read } => reads.push(read),
            Command::Inspect { read } => read(Ok(&self.machine)),
            Command::Transfer { to, reply } => {
                let _ = reply.send(self.raft.transfer_leader(to).map_err(not_leader));
            }
            Command::Inbound { messages, reply } => self.step_inbound(messages, reply),
            Command::Shutdown => return false,
        }
        true
    }

    fn propose(&mut self, proposals: Vec<(Bytes, Waiter)>) {
        if proposals.is_empty() {
            return;
        }
        let (commands, waiters): (Vec<Bytes>, Vec<Waiter>) = proposals.into_iter().unzip();
        match self.raft.propose_batch(commands) {
            Ok(placed) => {
                for ((index, term), waiter) in placed.into_iter().zip(waiters) {
                    self.proposals.insert(index, (term, waiter));
                }
            }
            Err(error) => {
                for Waiter::Output(reply) in waiters {
                    let _ = reply.send(Err(not_leader(error)));
                }
            }
        }
    }

    /// Queues `reads` and starts a read-index round for everything queued,
    /// unless a round is already in flight.
    fn start_read(&mut self, reads: Vec<ReadFn<S>>) {
        self.queued_reads.extend(reads);
        if self.queued_reads.is_empty() || !self.read_batches.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.queued_reads);
        self.next_read += 1;
        match self.raft.read_index(self.next_read) {
            Ok(()) => {
                self.read_batches.insert(self.next_read, reads);
            }
            Err(error) => {
                for read in reads {
                    read(Err(not_leader(error)));
                }
            }
        }
    }

    fn step_inbound(
        &mut self,
        messages: Vec<Message>,
        reply: Option<oneshot::Sender<Vec<Message>>>,
    ) {
        let requests = messages.iter().filter(|m| m.is_request()).count();
        let batch = self.next_batch;
        self.next_batch += 1;
        for message in messages {
            if message.is_request() {
                self.reply_slots
                    .entry(message.from)
                    .or_default()
                    .push_back(batch);
            }
            self.raft.step(message);
        }
        if let Some(reply) = reply {
            if requests == 0 {
                let _ = reply.send(Vec::new());
            } else {
                self.batches.insert(
                    batch,
                    BatchReply {
                        remaining: requests,
                        responses: Vec::new(),
                        reply,
                    },
                );
            }
        }
    }

    /// Runs every `Ready` through the steps its documentation numbers.
    fn process_ready(&mut self) -> Result<(), String> {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            // 0. A leader's appends and heartbeats go out while it writes.
            self.dispatch(&ready.early_messages);
            // 1. Persist.
            self.storage
                .persist(&ready)
                .map_err(|e| format!("cannot persist the Raft log: {e}"))?;
            // 2. Send (responses go back as replies to the requests' calls).
            self.dispatch(&ready.messages);
            // 3. Restore.
            if let Some(snapshot) = &ready.snapshot {
                self.applied = snapshot.meta.index;
                self.machine
                    .restore(&snapshot.data)
                    .map_err(|e| format!("cannot restore a snapshot from the leader: {e}"))?;
                let covered: Vec<LogIndex> = self
                    .proposals
                    .range(..=snapshot.meta.index)
                    .map(|(&i, _)| i)
                    .collect();
                for index in covered {
                    self.fail_proposal(index);
                }
            }
            // 4. Apply.
            self.apply(&ready);
            // 5. Serve reads.
            for read in &ready.read_states {
                if let Some(reads) = self.read_batches.remove(&read.ctx) {
                    self.confirmed_reads.push_back((read.index, reads));
                }
            }
            // 6. Advance.
            self.raft.advance(&ready);
            self.serve_reads();
        }
        if self.raft.role() != Role::Leader {
            self.fail_all_waiters();
        }
        Ok(())
    }

    fn dispatch(&mut self, messages: &[Message]) {
        if messages.is_empty() {
            return;
        }
        let mut outgoing: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
        for message in messages {
            if message.is_response() {
                self.route_response(message.clone());
            } else {
                outgoing
                    .entry(message.to)
                    .or_default()
                    .push(message.clone());
            }
        }
        for (to, messages) in outgoing {
            self.outbox.send(to, messages);
        }
    }

    fn route_response(&mut self, message: Message) {
        let Some(batch) = self
            .reply_slots
            .get_mut(&message.to)
            .and_then(VecDeque::pop_front)
        else {
            tracing::debug!(
                to = message.to,
                "a response with no request waiting for it; dropped"
            );
            return;
        };
        let Some(pending) = self.batches.get_mut(&batch) else {
            return;
        };
        pending.responses.push(message);
        pending.remaining -= 1;
        if pending.remaining == 0
            && let Some(done) = self.batches.remove(&batch)
        {
            let _ = done.reply.send(done.responses);
        }
    }

    fn apply(&mut self, ready: &Ready) {
        for entry in &ready.committed_entries {
            assert_eq!(
                entry.index,
                self.applied + 1,
                "committed entries are applied in order, each once"
            );
            self.applied = entry.index;
            let output = match entry.kind {
                EntryKind::Normal => Some(self.machine.apply(entry.index, &entry.data)),
                EntryKind::Noop => None,
            };
            // Anything proposed at or below this index that is not this
            // entry was overwritten.
            let older: Vec<LogIndex> = self
                .proposals
                .range(..entry.index)
                .map(|(&i, _)| i)
                .collect();
            for index in older {
                self.fail_proposal(index);
            }
            if let Some((term, Waiter::Output(reply))) = self.proposals.remove(&entry.index) {
                let result = match output {
                    Some(output) if term == entry.term => Ok(output),
                    _ => Err(SubmitError::NotLeader {
                        hint: self.raft.leader(),
                    }),
                };
                let _ = reply.send(result);
            }
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.raft.status().applied;
        while self
            .confirmed_reads
            .front()
            .is_some_and(|(index, _)| *index <= applied)
        {
            let (_, reads) = self.confirmed_reads.pop_front().expect("checked");
            for read in reads {
                read(Ok(&self.machine));
            }
        }
    }

    fn fail_proposal(&mut self, index: LogIndex) {
        if let Some((_, Waiter::Output(reply))) = self.proposals.remove(&index) {
            let _ = reply.send(Err(SubmitError::NotLeader {
                hint: self.raft.leader(),
            }));
        }
    }

    /// Leadership is gone: nobody here will answer the waiting clients.
    fn fail_all_waiters(&mut self) {
        let hint = self.raft.leader();
        for (_, (_, Waiter::Output(reply))) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(SubmitError::NotLeader { hint }));
        }
        for (_, reads) in std::mem::take(&mut self.read_batches) {
            for read in reads {
                read(Err(SubmitError::NotLeader { hint }));
            }
        }
        for read in std::mem::take(&mut self.queued_reads) {
            read(Err(SubmitError::NotLeader { hint }));
        }
        for (_, reads) in std::mem::take(&mut self.confirmed_reads) {
            for read in reads {
                read(Err(SubmitError::NotLeader { hint }));
            }
        }
    }

    /// Snapshots the state machine when the Raft state passed
    /// `max_raft_state`.
    fn maybe_snapshot(&mut self) {
        if self.max_raft_state < 0 || self.storage.raft_state_bytes() <= self.max_raft_state as u64
        {
            return;
        }
        let status = self.raft.status();
        if status.applied <= status.snapshot_index {
            return;
        }
        let now = tokio::time::Instant::now();
        if self.snapshot_retry.is_some_and(|(at, _)| now < at) {
            return;
        }
        // Saved first, then the core compacts: a failed save leaves the
        // core and the log as they were.
        let data = self.machine.snapshot();
        let meta = SnapshotMeta {
            index: status.applied,
            term: self
                .raft
                .entry(status.applied)
                .expect("an applied entry above the snapshot is in the log")
                .term,
            config: self.raft.cluster().clone(),
        };
        if let Err(error) = self.storage.save_snapshot(&meta, &data) {
            let wait = self
                .snapshot_retry
                .map_or(SNAPSHOT_RETRY_FIRST, |(_, wait)| {
                    (wait * 2).min(SNAPSHOT_RETRY_MAX)
                });
            self.snapshot_retry = Some((now + wait, wait));
            tracing::error!(%error, retry_in = ?wait, "cannot save a snapshot; the log keeps growing until a save succeeds");
            return;
        }
        self.snapshot_retry = None;
        let compacted = self.raft.compact(meta.index, data);
        debug_assert_eq!(compacted, meta, "the core's snapshot is the saved one");
        if let Err(error) = self.storage.compact(meta.index) {
            tracing::error!(%error, "cannot drop the log a snapshot covers; it takes disk space until the next snapshot");
        }
    }

    fn publish_status(&mut self, running: bool) {
        let violations = self.raft.status().protocol_violations;
        if violations > self.violations {
            self.violations = violations;
            tracing::error!(
                id = self.raft.id(),
                violations,
                "a peer claims to lead this node's own term: a broken or hostile member; its messages are refused"
            );
        }
        let stopped = if running {
            None
        } else {
            self.stop_error.clone()
        };
        let status = status_of(&self.raft, &self.storage, running, stopped);
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    fn stop(mut self, mut inbox: mpsc::Receiver<Command<S>>) {
        if let Some(error) = &self.stop_error {
            tracing::error!(id = self.raft.id(), %error, "the node stopped");
        }
        inbox.close();
        self.fail_all_waiters();
        self.publish_status(false);
    }
}

fn not_leader(error: ProposeError) -> SubmitError {
    match error {
        ProposeError::NotLeader { hint } => SubmitError::NotLeader { hint },
        ProposeError::Transferring { to } => SubmitError::NotLeader { hint: Some(to) },
    }
}
