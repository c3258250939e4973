//! The node task: the one owner of a Raft core, its storage and its state
//! machine. It takes commands from its queue in batches, steps the core,
//! and runs every `Ready` through the steps its documentation numbers,
//! asserting the contract it follows (committed entries applied once each,
//! in order, from the last applied index on; the core itself asserts that
//! nothing calls it between `ready` and `advance`). Reads wait in a
//! [`ReadQueue`](crate::reads::ReadQueue); messages, requests and
//! responses alike, go to the [`Outbox`], which streams them to each peer.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cairn_raft::{
    ClusterConfig, ConfChangeError, EntryKind, LogIndex, Message, NodeId, ProposeError, Raft,
    Ready, Role, SnapshotMeta, Term,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{FatalError, MembershipError, SubmitError};
use crate::membership::{AddressChanges, Membership, check_address};
use crate::metrics::{Metrics, observe};
use crate::node::{
    Command, MAX_COMMANDS_PER_ROUND, MAX_PENDING_PROPOSALS, NodeStatus, ReadFn,
    SNAPSHOT_RETRY_FIRST, SNAPSHOT_RETRY_MAX, status_of,
};
use crate::reads::ReadQueue;
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::transport::Outbox;

mod addresses;
mod leaderless;

pub(crate) use addresses::conf_changes;

/// A proposal waiting for its entry to be applied.
enum Waiter {
    /// A command: answered with the state machine's output.
    Output(oneshot::Sender<Result<Bytes, SubmitError>>),
    /// A configuration change: answered with the configuration it made.
    Config(oneshot::Sender<Result<ClusterConfig, MembershipError>>),
}

impl Waiter {
    fn fail(self, error: SubmitError) {
        match self {
            Waiter::Output(reply) => drop(reply.send(Err(error))),
            Waiter::Config(reply) => drop(reply.send(Err(error.into()))),
        }
    }
}

/// The node task's state. Owned by one task; changed only by its loop.
pub(crate) struct Driver<S: StateMachine> {
    raft: Raft,
    storage: RaftStorage,
    machine: S,
    outbox: Outbox<S>,
    status: watch::Sender<NodeStatus>,
    max_raft_state: i64,
    /// Proposals by index: the term they were proposed in, and who waits.
    proposals: BTreeMap<LogIndex, (Term, Waiter)>,
    /// The linearizable reads, from queued to served.
    reads: ReadQueue<S>,
    stop_error: Option<FatalError>,
    /// The last index applied to `machine` (asserted contiguous).
    applied: LogIndex,
    /// Protocol violations the core reported so far (logged as they grow).
    violations: u64,
    /// After a failed snapshot save: when to try again, and the wait that
    /// follows another failure.
    snapshot_retry: Option<(tokio::time::Instant, Duration)>,
    /// Since when no leader is known, and when that was last warned of.
    leaderless: Option<(tokio::time::Instant, Option<tokio::time::Instant>)>,
    /// How long without a leader before a warning, and between warnings.
    problem_log_interval: Duration,
    metrics: Metrics,
    /// Where the URLs of the nodes this one talks to are published (for
    /// the node handle's status and not-leader hints).
    urls: watch::Sender<BTreeMap<NodeId, String>>,
}

impl<S: StateMachine> Driver<S> {
    pub(crate) fn new(
        raft: Raft,
        storage: RaftStorage,
        machine: S,
        outbox: Outbox<S>,
        status: watch::Sender<NodeStatus>,
        max_raft_state: i64,
        applied: LogIndex,
    ) -> Self {
        let metrics = Metrics::new(raft.id());
        Self {
            raft,
            storage,
            machine,
            outbox,
            status,
            max_raft_state,
            proposals: BTreeMap::new(),
            reads: ReadQueue::new(metrics.read_index_rounds.clone()),
            stop_error: None,
            applied,
            violations: 0,
            snapshot_retry: None,
            leaderless: None,
            problem_log_interval: Duration::from_secs(10),
            metrics,
            urls: watch::Sender::new(BTreeMap::new()),
        }
    }

    /// Counts into `metrics` (the node's, which it serves).
    pub(crate) fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.reads = ReadQueue::new(metrics.read_index_rounds.clone());
        self.metrics = metrics;
        self
    }

    /// How long without a leader before a warning, and between warnings.
    pub(crate) fn with_problem_log_interval(mut self, interval: Duration) -> Self {
        self.problem_log_interval = interval;
        self
    }

    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<Command<S>>, tick: Duration) {
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
            self.reads.start(&mut self.raft, reads);
            if let Err(error) = self.process_ready() {
                self.stop_error = Some(error);
                break;
            }
            if self.reads.next_round_due() {
                // The round in flight was confirmed: the queued reads go.
                self.reads.start(&mut self.raft, Vec::new());
                if let Err(error) = self.process_ready() {
                    self.stop_error = Some(error);
                    break;
                }
            }
            self.maybe_snapshot();
            self.publish_status(true);
            self.warn_if_leaderless();
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
                if result.is_ok() {
                    self.metrics.proposals.inc();
                }
                let _ = reply.send(result);
            }
            Command::Read { read } => reads.push(read),
            Command::Inspect { read } => read(Ok(&self.machine)),
            Command::Snapshot { reply } => drop(reply.send(crate::backup::snapshot_now(
                &self.raft,
                &self.storage,
                &self.machine,
                self.applied,
            ))),
            Command::Transfer { to, reply } => {
                let result = self.raft.transfer_leader(to).map_err(|error| match error {
                    ProposeError::NotVoter { id } => MembershipError::NotVoter { id },
                    other => not_leader(other).into(),
                });
                let _ = reply.send(result);
            }
            Command::ConfChange {
                change,
                context,
                reply,
            } => {
                let urls = self.outbox.urls();
                let proposed = check_address(change, &context, self.raft.cluster(), &urls)
                    .and_then(|()| {
                        self.raft
                            .propose_conf_change(change, context)
                            .map_err(refused)
                    });
                match proposed {
                    Ok((index, term)) => {
                        self.proposals.insert(index, (term, Waiter::Config(reply)));
                    }
                    Err(error) => drop(reply.send(Err(error))),
                }
            }
            Command::Membership { reply } => {
                let config = self.raft.cluster().clone();
                let learner_lag = config
                    .learners
                    .iter()
                    .filter_map(|&id| Some((id, self.raft.learner_lag(id)?)))
                    .collect();
                let _ = reply.send(Membership {
                    config,
                    leader: self.raft.leader(),
                    learner_lag,
                    urls: self.outbox.urls(),
                });
            }
            Command::Inbound { messages } => self.step_inbound(messages),
            Command::PeerUnreachable { peer } => {
                if self.raft.leader() == Some(peer) && self.raft.role() == Role::Follower {
                    tracing::info!(
                        id = self.raft.id(),
                        leader = peer,
                        "the stream to the leader broke; asking for pre-votes now"
                    );
                }
                self.raft.report_unreachable(peer);
            }
            Command::PeerReachable { peer } => self.raft.report_reachable(peer),
            Command::Shutdown => return false,
        }
        true
    }

    fn propose(&mut self, mut proposals: Vec<(Bytes, Waiter)>) {
        let room = MAX_PENDING_PROPOSALS.saturating_sub(self.proposals.len());
        if proposals.len() > room {
            for (_, waiter) in proposals.drain(room..) {
                waiter.fail(SubmitError::Overloaded);
            }
        }
        if proposals.is_empty() {
            return;
        }
        let (commands, waiters): (Vec<Bytes>, Vec<Waiter>) = proposals.into_iter().unzip();
        match self.raft.propose_batch(commands) {
            Ok(placed) => {
                self.metrics.proposals.inc_by(placed.len() as u64);
                for ((index, term), waiter) in placed.into_iter().zip(waiters) {
                    self.proposals.insert(index, (term, waiter));
                }
            }
            Err(error) => {
                for waiter in waiters {
                    waiter.fail(not_leader(error));
                }
            }
        }
    }

    fn step_inbound(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.outbox.heard(&message);
            self.raft.step(message);
        }
    }

    /// Runs every `Ready` through the steps its documentation numbers.
    fn process_ready(&mut self) -> Result<(), FatalError> {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            // A member added in these entries is reachable from now on
            // (the leader's first append to it is among the messages).
            self.learn_addresses(&ready.entries);
            // 0. A leader's appends and heartbeats go out while it writes.
            self.dispatch(&ready.early_messages);
            // 1. Persist.
            self.persist(&ready)?;
            // 2. Send (responses too: they depend on what was persisted).
            self.dispatch(&ready.messages);
            // 3. Restore (and reach the members the snapshot names).
            if let Some(snapshot) = &ready.snapshot {
                AddressChanges::of_snapshot(&snapshot.meta).apply_to(&mut self.outbox);
                self.publish_urls();
                self.applied = snapshot.meta.index;
                self.machine
                    .restore(&snapshot.data)
                    .map_err(FatalError::Restore)?;
                let covered: Vec<LogIndex> = self
                    .proposals
                    .range(..=snapshot.meta.index)
                    .map(|(&i, _)| i)
                    .collect();
                for index in covered {
                    self.fail_proposal(index);
                }
            }
            // 4. Apply (a committed removal ends the talk with that node).
            self.apply(&ready);
            self.forget_removed(&ready.committed_entries);
            // 5. Serve reads (those whose index is not applied yet wait).
            self.reads.confirm(&ready.read_states);
            self.reads.serve(self.applied, &self.machine);
            // 6. Advance.
            self.raft.advance(&ready);
        }
        if self.raft.role() != Role::Leader {
            self.fail_all_waiters(SubmitError::NotLeader {
                hint: self.raft.leader(),
            });
        }
        Ok(())
    }

    /// `Ready` step 1, measured: entries per batch, and the write and
    /// fsync's time when the batch must be synced.
    fn persist(&mut self, ready: &Ready) -> Result<(), FatalError> {
        let started = ready.must_sync.then(tokio::time::Instant::now);
        let storage = &mut self.storage;
        let persisted = if ready.must_sync {
            off_the_worker(|| storage.persist(ready))
        } else {
            storage.persist(ready)
        };
        persisted.map_err(|e| FatalError::Persist(e.to_string()))?;
        if let Some(started) = started {
            observe(&self.metrics.fsync_seconds, started.elapsed());
        }
        if !ready.entries.is_empty() {
            self.metrics
                .batch_entries
                .observe(ready.entries.len() as f64);
        }
        Ok(())
    }

    fn dispatch(&mut self, messages: &[Message]) {
        if messages.is_empty() {
            return;
        }
        let mut outgoing: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
        for message in messages {
            let message = self.with_member_urls(message.clone());
            outgoing.entry(message.to).or_default().push(message);
        }
        for (to, messages) in outgoing {
            self.outbox.send(to, messages);
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
                EntryKind::Noop | EntryKind::Config => None,
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
            let Some((term, waiter)) = self.proposals.remove(&entry.index) else {
                continue;
            };
            match (waiter, output) {
                (Waiter::Output(reply), Some(output)) if term == entry.term => {
                    let _ = reply.send(Ok(output));
                }
                (Waiter::Config(reply), None)
                    if term == entry.term && entry.kind == EntryKind::Config =>
                {
                    let config = self.raft.cluster_at(entry.index).clone();
                    let _ = reply.send(Ok(config));
                }
                (waiter, _) => waiter.fail(SubmitError::NotLeader {
                    hint: self.raft.leader(),
                }),
            }
        }
    }

    fn fail_proposal(&mut self, index: LogIndex) {
        if let Some((_, waiter)) = self.proposals.remove(&index) {
            waiter.fail(SubmitError::NotLeader {
                hint: self.raft.leader(),
            });
        }
    }

    /// Leadership is gone: nobody here will answer the waiting clients.
    fn fail_all_waiters(&mut self, error: SubmitError) {
        for (_, (_, waiter)) in std::mem::take(&mut self.proposals) {
            waiter.fail(error.clone());
        }
        self.reads.fail_all(&error);
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
        let started = tokio::time::Instant::now();
        let data = self.machine.snapshot();
        let meta = SnapshotMeta {
            index: status.applied,
            term: self
                .raft
                .entry(status.applied)
                .expect("an applied entry above the snapshot is in the log")
                .term,
            config: self.raft.cluster_at(status.applied).clone(),
            urls: BTreeMap::new(),
        };
        let meta = SnapshotMeta {
            urls: self.outbox.member_urls(&meta.config),
            ..meta
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
        observe(&self.metrics.snapshot_seconds, started.elapsed());
        self.metrics.snapshot_bytes.observe(data.len() as f64);
        let compacted = self.raft.compact(meta.index, data);
        debug_assert_eq!(
            (compacted.index, compacted.term, &compacted.config),
            (meta.index, meta.term, &meta.config),
            "the core's snapshot is the saved one"
        );
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

    /// Ends the task: the status says why first, so that every client
    /// whose command is dropped with the queue hears it too.
    fn stop(mut self, mut inbox: mpsc::Receiver<Command<S>>) {
        let error = match &self.stop_error {
            Some(fatal) => {
                tracing::error!(id = self.raft.id(), error = %fatal, "the node stopped");
                SubmitError::Stopped(fatal.clone())
            }
            None => SubmitError::NotLeader {
                hint: self.raft.leader(),
            },
        };
        self.publish_status(false);
        inbox.close();
        self.fail_all_waiters(error);
    }
}

/// A refused change: a leadership problem fails like a command.
fn refused(error: ConfChangeError) -> MembershipError {
    match error {
        ConfChangeError::Leader(error) => MembershipError::Submit(not_leader(error)),
        other => MembershipError::Refused(other),
    }
}

pub(crate) fn not_leader(error: ProposeError) -> SubmitError {
    match error {
        ProposeError::NotLeader { hint } => SubmitError::NotLeader { hint },
        ProposeError::Transferring { to } => SubmitError::NotLeader { hint: Some(to) },
        // Only a transfer is refused this way (see `Command::Transfer`).
        ProposeError::NotVoter { .. } => SubmitError::NotLeader { hint: None },
    }
}

/// Runs `f`, which waits on the disk (an fsync), without holding up the
/// tasks queued on this worker thread. On a multi-threaded runtime the task
/// a send just woke (the stream task carrying this node's appends, or a
/// peer's driver in one process) waits in this worker's next-task slot,
/// where no other worker may take it: without this, a leader's appends
/// left only after its own fsync, and its fsync and the followers' ran one
/// after the other instead of at once. `block_in_place` hands the worker's
/// queue to another thread for the duration.
fn off_the_worker<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(not(madsim))]
    if tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    {
        return tokio::task::block_in_place(f);
    }
    f()
}
