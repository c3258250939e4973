//! An in-memory cluster for driving `Raft` cores by hand or at random:
//! a message pool the test delivers from (in any order, with drops and
//! duplicates), per-link cuts, a durable store per node that keeps only what
//! a `Ready` asked to persist, crashes that may land in the middle of a
//! `Ready`, and an oracle that checks the Raft safety properties after every
//! step.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use cairn_raft::{
    ClusterConfig, Config, ConfigEntry, Entry, EntryKind, HardState, InitialState, LogIndex,
    Message, NodeId, Raft, Ready, Role, Snapshot, Term,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// More messages than this, each answering the one before, with no tick in
/// between, is a storm (two nodes ping-ponging for ever): the harness fails
/// instead of hanging.
const MAX_DELIVERIES_WITHOUT_A_TICK: usize = 100_000;

/// What survives a crash: exactly what `Ready` step 1 persisted and
/// synced. A hard state written without a sync (the core said it need not,
/// `Ready::must_sync`: only the commit index moved) is lost by a crash
/// before the next sync, the worst a disk may do.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    /// Written, not yet synced.
    pub unsynced_hard_state: Option<HardState>,
}

impl Durable {
    /// `Ready` step 1.
    fn persist(&mut self, ready: &Ready) {
        if !ready.must_sync {
            if ready.hard_state.is_some() {
                self.unsynced_hard_state = ready.hard_state;
            }
            assert!(
                ready.entries.is_empty() && ready.snapshot.is_none(),
                "a Ready with entries or a snapshot must sync"
            );
            return;
        }
        // The sync makes every earlier write durable too.
        let hard_state = ready.hard_state.or(self.unsynced_hard_state.take());
        self.write(hard_state, ready.snapshot.as_ref(), &ready.entries);
    }

    fn write(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) {
        if let Some(snapshot) = snapshot {
            // A snapshot from the leader replaces the whole stored log.
            self.entries.clear();
            self.snapshot = Some(snapshot.clone());
        }
        if let Some(first) = entries.first() {
            self.entries.retain(|e| e.index < first.index);
            let floor = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
            let expected = self.entries.last().map_or(floor + 1, |e| e.index + 1);
            assert_eq!(first.index, expected, "persisted entries leave a gap");
            self.entries.extend_from_slice(entries);
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state;
        }
    }

    /// Whether the entry at `index` of `term` is on disk (or covered by
    /// the snapshot, which holds only committed entries).
    fn holds(&self, index: LogIndex, term: Option<Term>) -> bool {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index >= index)
        {
            return true;
        }
        // Stored entries are consecutive.
        let first = self.entries.first().map_or(0, |e| e.index);
        index
            .checked_sub(first)
            .and_then(|position| self.entries.get(position as usize))
            .is_some_and(|e| e.index == index && Some(e.term) == term)
    }

    fn compact(&mut self, snapshot: Snapshot) {
        self.entries.retain(|e| e.index > snapshot.meta.index);
        self.snapshot = Some(snapshot);
    }
}

/// The test state machine: the applied index and a running hash of the
/// applied commands. Its snapshot is those 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Machine {
    pub applied: LogIndex,
    pub digest: u64,
}

impl Machine {
    fn apply(&mut self, entry: &Entry) {
        assert_eq!(entry.index, self.applied + 1, "applied out of order");
        self.applied = entry.index;
        if entry.kind == EntryKind::Normal {
            for &byte in entry.data.iter() {
                self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
            }
            self.digest = self.digest.rotate_left(7) ^ entry.index;
        }
    }

    fn encode(&self) -> Bytes {
        let mut data = self.applied.to_le_bytes().to_vec();
        data.extend_from_slice(&self.digest.to_le_bytes());
        data.into()
    }

    fn decode(data: &[u8]) -> Self {
        Self {
            applied: u64::from_le_bytes(data[..8].try_into().unwrap()),
            digest: u64::from_le_bytes(data[8..16].try_into().unwrap()),
        }
    }
}

pub struct Node {
    pub raft: Option<Raft>,
    pub durable: Durable,
    pub machine: Machine,
    pub incarnation: u64,
    last_commit: LogIndex,
    /// Reads confirmed to this node: (ctx, index).
    pub reads: Vec<(u64, LogIndex)>,
}

/// Decides whether a message is lost at delivery.
pub type DropFilter = Box<dyn Fn(&Message) -> bool>;
/// Rewrites a message at delivery.
pub type Mutator = Box<dyn Fn(&mut Message)>;

/// What a run exercised, so a sweep can prove it is not toothless.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub crashes_in_ready: u64,
    pub snapshots_installed: u64,
    pub reads_confirmed: u64,
    pub entries_applied: u64,
    /// Distinct configuration changes committed (counted by the sweep).
    pub conf_changes_committed: u64,
}

/// The cluster and its oracle.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    /// The members the cluster was created with; nodes added later start
    /// as joining nodes that know no configuration.
    pub bootstrap: BTreeSet<NodeId>,
    pub pool: Vec<Message>,
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub rng: StdRng,
    pub config: Config,
    /// Every entry applied anywhere, by index: must never disagree.
    pub applied: BTreeMap<LogIndex, (Term, EntryKind, Bytes)>,
    /// For each applied index, the highest leader term seen when it was first
    /// applied: leaders of later terms must hold it (leader completeness).
    pub committed_by: BTreeMap<LogIndex, Term>,
    /// The configuration of each configuration entry applied anywhere.
    pub configs: BTreeMap<LogIndex, ClusterConfig>,
    /// The state machine after each applied index.
    pub digests: BTreeMap<LogIndex, u64>,
    /// The leader of each term ever seen.
    pub leaders: BTreeMap<Term, NodeId>,
    /// Probability of a crash in the middle of processing a `Ready`.
    pub crash_in_ready: f64,
    /// Messages for which this returns true are dropped at delivery.
    pub drop_filter: Option<DropFilter>,
    /// Applied to every message at delivery.
    pub mutate: Option<Mutator>,
    pub stats: Stats,
    /// When set, every `Ready` processed is recorded here (the golden
    /// scripts print them).
    pub trace: Option<Vec<(NodeId, Ready)>>,
}

impl Cluster {
    pub fn new(size: u64, seed: u64) -> Self {
        Self::with_config(size, seed, |_| {})
    }

    pub fn with_config(size: u64, seed: u64, tune: impl Fn(&mut Config)) -> Self {
        let mut config = Config::new(1);
        tune(&mut config);
        let mut cluster = Self {
            nodes: BTreeMap::new(),
            bootstrap: (1..=size).collect(),
            pool: Vec::new(),
            cut: BTreeSet::new(),
            rng: StdRng::seed_from_u64(seed),
            config,
            applied: BTreeMap::new(),
            committed_by: BTreeMap::new(),
            configs: BTreeMap::new(),
            digests: BTreeMap::new(),
            leaders: BTreeMap::new(),
            crash_in_ready: 0.0,
            drop_filter: None,
            mutate: None,
            stats: Stats::default(),
            trace: None,
        };
        for id in 1..=size {
            cluster.add_node(id);
        }
        cluster
    }

    /// Starts a new node with an empty disk (a member of the bootstrap
    /// configuration, or a machine about to be added as a learner).
    pub fn add_node(&mut self, id: NodeId) {
        let node = Node {
            raft: None,
            durable: Durable::default(),
            machine: Machine::default(),
            incarnation: 0,
            last_commit: 0,
            reads: Vec::new(),
        };
        assert!(self.nodes.insert(id, node).is_none(), "node {id} exists");
        self.start(id);
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.nodes[&id].raft.as_ref().expect("node is up")
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes
            .get_mut(&id)
            .unwrap()
            .raft
            .as_mut()
            .expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raft.is_some())
    }

    /// Starts (or restarts) a node from its durable state.
    pub fn start(&mut self, id: NodeId) {
        let cluster_config = if self.bootstrap.contains(&id) {
            ClusterConfig::new(self.bootstrap.iter().copied())
        } else {
            ClusterConfig::joining()
        };
        let seed = self.rng.r#gen();
        let mut config = self.config.clone();
        config.id = id;
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.raft.is_none(), "node {id} is already up");
        let initial = InitialState {
            cluster: cluster_config,
            hard_state: node.durable.hard_state,
            snapshot: node.durable.snapshot.clone(),
            entries: node.durable.entries.clone(),
        };
        node.machine = node
            .durable
            .snapshot
            .as_ref()
            .map_or_else(Machine::default, |s| Machine::decode(&s.data));
        node.raft = Some(Raft::new(config, initial, seed).expect("valid config"));
        node.incarnation += 1;
        node.last_commit = 0;
    }

    /// Crashes a node: everything not persisted is gone.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.raft = None;
        node.durable.unsynced_hard_state = None;
        // Messages already sent stay on the wire; those to it are lost.
        self.pool.retain(|m| m.to != id);
    }

    pub fn tick(&mut self, id: NodeId) {
        if let Some(raft) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
            raft.tick();
        }
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// Whether `from` can reach `to`.
    pub fn linked(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Cuts both directions between the two sides.
    pub fn partition(&mut self, side: &[NodeId]) {
        self.cut.clear();
        for a in self.ids() {
            for b in self.ids() {
                if side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        self.partition(&[id]);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Delivers the message at `position` of the pool.
    pub fn deliver(&mut self, position: usize) {
        let mut message = self.pool.remove(position);
        if let Some(mutate) = &self.mutate {
            mutate(&mut message);
        }
        if !self.linked(message.from, message.to)
            || self.drop_filter.as_ref().is_some_and(|drop| drop(&message))
        {
            return;
        }
        // A message to a machine that was never started is lost.
        if let Some(raft) = self
            .nodes
            .get_mut(&message.to)
            .and_then(|n| n.raft.as_mut())
        {
            raft.step(message);
        }
    }

    /// Processes every node's `Ready` until none has work, delivering
    /// messages in order, until the pool is empty too (bounded).
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            self.process_readies();
            if self.pool.is_empty() {
                return;
            }
            let mut deliveries = 0;
            while !self.pool.is_empty() {
                deliveries += 1;
                assert!(
                    deliveries <= MAX_DELIVERIES_WITHOUT_A_TICK,
                    "a message storm: {deliveries} messages without a tick, the latest {:?}",
                    self.pool.first()
                );
                self.deliver(0);
                self.process_readies();
            }
        }
        panic!("the cluster did not stabilize");
    }

    /// Ticks every node `ticks` times, stabilizing after each.
    pub fn run_ticks(&mut self, ticks: u32) {
        for _ in 0..ticks {
            self.tick_all();
            self.stabilize();
        }
    }

    /// Ticks until some node is leader (bounded); returns it.
    pub fn elect(&mut self) -> NodeId {
        for _ in 0..1_000 {
            self.tick_all();
            self.stabilize();
            if let Some(leader) = self.leader() {
                return leader;
            }
        }
        panic!("no leader elected");
    }

    /// The live node that is leader in the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, node)| node.raft.as_ref().map(|r| (r.term(), r.role(), id)))
            .filter(|&(_, role, _)| role == Role::Leader)
            .map(|(term, _, id)| (term, id))
            .max()
            .map(|(_, id)| id)
    }

    pub fn process_readies(&mut self) {
        for id in self.ids() {
            self.process_ready(id);
        }
    }

    /// Runs one node's `Ready` through the six steps, possibly crashing
    /// part way (losing what was not yet persisted or sent).
    pub fn process_ready(&mut self, id: NodeId) {
        loop {
            let crash_point = if self.crash_in_ready > 0.0 && self.rng.gen_bool(self.crash_in_ready)
            {
                Some(self.rng.gen_range(0..3))
            } else {
                None
            };
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(raft) = node.raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                return;
            }
            let ready = raft.ready();
            if let Some(trace) = &mut self.trace {
                trace.push((id, ready.clone()));
            }
            if crash_point.is_some() {
                self.stats.crashes_in_ready += 1;
            }
            self.stats.snapshots_installed += u64::from(ready.snapshot.is_some());
            self.stats.reads_confirmed += ready.read_states.len() as u64;
            self.stats.entries_applied += ready.committed_entries.len() as u64;
            // Step 0: a leader's appends and heartbeats leave before its
            // disk write.
            for message in &ready.early_messages {
                if !self.cut.contains(&(message.from, message.to)) {
                    self.pool.push(message.clone());
                }
            }
            if crash_point == Some(0) {
                return self.crash(id); // before persisting: nothing of it survives
            }
            node.durable.persist(&ready);
            if crash_point == Some(1) {
                return self.crash(id); // persisted, nothing sent
            }
            for message in &ready.messages {
                if self.cut.contains(&(message.from, message.to)) {
                    continue;
                }
                self.pool.push(message.clone());
            }
            if crash_point == Some(2) {
                return self.crash(id); // sent, not applied
            }
            let node = self.nodes.get_mut(&id).unwrap();
            if let Some(snapshot) = &ready.snapshot {
                node.machine = Machine::decode(&snapshot.data);
                check_digest(&mut self.digests, node.machine, id);
            }
            let newest_leader_term = self.leaders.keys().next_back().copied().unwrap_or(0);
            for entry in &ready.committed_entries {
                self.committed_by
                    .entry(entry.index)
                    .or_insert(newest_leader_term.max(entry.term));
                let known = self.applied.entry(entry.index).or_insert((
                    entry.term,
                    entry.kind,
                    entry.data.clone(),
                ));
                assert_eq!(
                    *known,
                    (entry.term, entry.kind, entry.data.clone()),
                    "state machine safety: node {id} applied a different entry at {}",
                    entry.index
                );
                if entry.kind == EntryKind::Config {
                    let decoded = ConfigEntry::decode(entry.data.clone()).expect("valid");
                    self.configs.insert(entry.index, decoded.config);
                }
                node.machine.apply(entry);
                check_digest(&mut self.digests, node.machine, id);
            }
            for read in &ready.read_states {
                node.reads.push((read.ctx, read.index));
            }
            let raft = node.raft.as_mut().unwrap();
            raft.advance(&ready);
            self.check(id);
        }
    }

    /// The node snapshots its state machine at its applied index.
    pub fn compact(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let index = node.machine.applied;
        if index == 0 || index <= node.durable.snapshot.as_ref().map_or(0, |s| s.meta.index) {
            return;
        }
        let data = node.machine.encode();
        let meta = raft.compact(index, data.clone());
        node.durable.compact(Snapshot { meta, data });
    }

    /// Checks the per-node properties after a step of node `id`.
    pub fn check(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_ref() else {
            return;
        };
        let status = raft.status();
        assert!(
            status.commit >= node.last_commit,
            "node {id}: commit went back"
        );
        let committed_now = status.commit > node.last_commit;
        node.last_commit = status.commit;
        self.check_configuration(id);
        if status.role == Role::Leader && committed_now {
            self.check_commit_quorum(id);
        }
        if status.role == Role::Leader {
            let previous = *self.leaders.entry(status.term).or_insert(id);
            assert_eq!(
                previous, id,
                "election safety: two leaders in term {}",
                status.term
            );
            let raft = self.raft(id);
            // Leader completeness: every applied entry is in the leader's log.
            for (&index, (term, kind, data)) in self.applied.range(status.snapshot_index + 1..) {
                if self.committed_by[&index] >= status.term {
                    continue;
                }
                let entry = raft.entry(index).unwrap_or_else(|| {
                    panic!(
                        "leader completeness: leader {id} of term {} lacks committed index {index}",
                        status.term
                    )
                });
                assert_eq!(
                    (entry.term, entry.kind, &entry.data),
                    (*term, *kind, data),
                    "leader completeness at {index}"
                );
            }
        }
    }

    /// A leader just moved its commit index: a quorum of the voters of its
    /// configuration (never a learner, never a removed node) holds that
    /// entry on disk.
    fn check_commit_quorum(&self, leader: NodeId) {
        let raft = self.raft(leader);
        let commit = raft.status().commit;
        let term = raft.entry(commit).map(|e| e.term);
        let cluster = raft.cluster();
        let holders: Vec<NodeId> = cluster
            .voters
            .iter()
            .copied()
            .filter(|id| {
                self.nodes
                    .get(id)
                    .is_some_and(|n| n.durable.holds(commit, term))
            })
            .collect();
        assert!(
            holders.len() >= cluster.quorum(),
            "quorum: leader {leader} committed {commit} held only by {holders:?} of voters {:?}",
            cluster.voters
        );
    }

    /// The configuration a node applies with is the one the committed log
    /// implies: that of the last configuration entry applied anywhere at or
    /// below its applied index, or the bootstrap one (a joining node that
    /// has not applied its own addition yet knows none).
    fn check_configuration(&self, id: NodeId) {
        let raft = self.raft(id);
        let applied = raft.status().applied;
        let config = raft.cluster_at(applied);
        if config.voters.is_empty() {
            return;
        }
        let expected = self.configs.range(..=applied).next_back().map_or_else(
            || ClusterConfig::new(self.bootstrap.iter().copied()),
            |(_, config)| config.clone(),
        );
        assert_eq!(
            *config, expected,
            "configurations disagree: node {id} at applied {applied}"
        );
    }

    /// Log matching across every pair of live nodes.
    pub fn check_log_matching(&self) {
        let live: Vec<&Raft> = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .collect();
        for (i, a) in live.iter().enumerate() {
            for b in &live[i + 1..] {
                let (sa, sb) = (a.status(), b.status());
                let low = sa.snapshot_index.max(sb.snapshot_index) + 1;
                let high = sa.last_index.min(sb.last_index);
                let mut index = high;
                while index >= low {
                    let (ea, eb) = (a.entry(index).unwrap(), b.entry(index).unwrap());
                    if ea.term == eb.term {
                        for j in low..=index {
                            assert_eq!(
                                a.entry(j),
                                b.entry(j),
                                "log matching: nodes {} and {} differ at {j}",
                                sa.id,
                                sb.id
                            );
                        }
                        break;
                    }
                    index -= 1;
                }
            }
        }
    }

    /// Whether every member (voter or learner) of the latest leader's
    /// configuration is up and applied at least `index`.
    pub fn all_applied(&self, index: LogIndex) -> bool {
        self.members().iter().all(|id| {
            let node = &self.nodes[id];
            node.raft.is_some() && node.machine.applied >= index
        })
    }

    /// The members of the latest leader's configuration (every node while
    /// there is no leader). Removed nodes and machines whose addition was
    /// rolled back hear nothing more and are left out.
    pub fn members(&self) -> Vec<NodeId> {
        match self.leader() {
            Some(leader) => self
                .raft(leader)
                .cluster()
                .members()
                .filter(|id| self.nodes.contains_key(id))
                .collect(),
            None => self.ids(),
        }
    }

    /// Proposes at the leader and stabilizes; returns the index.
    pub fn propose(&mut self, data: &str) -> LogIndex {
        let leader = self.leader().expect("a leader");
        let (index, _) = self
            .raft_mut(leader)
            .propose(Bytes::copy_from_slice(data.as_bytes()))
            .expect("leader accepts");
        self.stabilize();
        // Followers hear of the new commit index at the leader's next tick.
        self.run_ticks(1);
        index
    }
}

fn check_digest(digests: &mut BTreeMap<LogIndex, u64>, machine: Machine, id: NodeId) {
    let known = *digests.entry(machine.applied).or_insert(machine.digest);
    assert_eq!(
        known, machine.digest,
        "state machine safety: node {id} diverged at {}",
        machine.applied
    );
}
