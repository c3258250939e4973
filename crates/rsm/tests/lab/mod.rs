//! The 6.824 lab 2 tester (`src/raft/config.go`), rebuilt on the test kit:
//! `n` simulated nodes each running an `rsm::Node` with a state machine that
//! records what it applied, and the helpers the lab's tests call
//! (`check_one_leader`, `one`, `n_committed`, `wait`, `crash1`, `start1`,
//! `disconnect`, `connect`, RPC and byte counts, `log_size`).
//!
//! Differences from the Go tester, all forced by Cairn's design and none
//! weakening a check:
//! - Commands are bytes (an `u64` is 8 little-endian bytes).
//! - A new leader appends a no-op, so log indices of commands are not
//!   consecutive; tests that assert exact indices compare them relative to
//!   the previous command's index plus the no-ops a new leader adds.
//! - The state machine is not called for no-ops, so "apply out of order"
//!   checks that each server applies strictly increasing indices.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_raft::{LogIndex, NodeId, Role, Term};
use cairn_rsm::{Node, NodeConfig, StateMachine};
use cairn_testkit::{NodeContext, World};
use rand::Rng;

pub const RAFT_PORT: u16 = 7100;
/// "The tester generously allows solutions to complete elections in one
/// second."
pub const RAFT_ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// What every server applied, shared with the tester.
#[derive(Default)]
pub struct Shared {
    pub nodes: Vec<Option<Node<LabMachine>>>,
    pub logs: Vec<BTreeMap<LogIndex, Bytes>>,
    pub apply_error: Option<String>,
    pub max_index: LogIndex,
    /// How many times a state machine was restored from a snapshot.
    pub restores: usize,
}

/// The lab's applier: records each applied command and checks that no two
/// servers applied different commands at one index.
pub struct LabMachine {
    server: usize,
    shared: Arc<Mutex<Shared>>,
    last_applied: LogIndex,
    /// The commands applied, for snapshots (the lab's `xlog`).
    log: BTreeMap<LogIndex, Bytes>,
}

impl StateMachine for LabMachine {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let command = Bytes::copy_from_slice(command);
        let mut shared = self.shared.lock().unwrap();
        if index <= self.last_applied {
            shared.apply_error.get_or_insert(format!(
                "server {} apply out of order: index {index} after {}",
                self.server, self.last_applied
            ));
        }
        let conflict = shared.logs.iter().enumerate().find_map(|(other, log)| {
            log.get(&index)
                .filter(|existing| **existing != command)
                .map(|existing| (other, existing.clone()))
        });
        if let Some((other, existing)) = conflict {
            let message = format!(
                "commit index={index} server={} {command:?} != server={other} {existing:?}",
                self.server
            );
            shared.apply_error.get_or_insert(message);
        }
        shared.logs[self.server].insert(index, command.clone());
        shared.max_index = shared.max_index.max(index);
        self.last_applied = index;
        self.log.insert(index, command);
        Bytes::new()
    }

    fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&self.last_applied.to_le_bytes());
        for (index, command) in &self.log {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(command.len() as u64).to_le_bytes());
            out.extend_from_slice(command);
        }
        out.into()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        let read_u64 = |data: &[u8], at: usize| -> Result<u64, String> {
            let bytes = data.get(at..at + 8).ok_or("snapshot too short")?;
            Ok(u64::from_le_bytes(bytes.try_into().unwrap()))
        };
        let last_applied = read_u64(data, 0)?;
        let mut log = BTreeMap::new();
        let mut at = 8;
        while at < data.len() {
            let index = read_u64(data, at)?;
            let len = read_u64(data, at + 8)? as usize;
            let command = data
                .get(at + 16..at + 16 + len)
                .ok_or("snapshot entry too short")?;
            log.insert(index, Bytes::copy_from_slice(command));
            at += 16 + len;
        }
        let mut shared = self.shared.lock().unwrap();
        shared.restores += 1;
        // The tester's log of this server becomes the snapshot's.
        shared.logs[self.server] = log.clone();
        self.log = log;
        self.last_applied = last_applied;
        Ok(())
    }
}

pub fn command(value: u64) -> Bytes {
    Bytes::copy_from_slice(&value.to_le_bytes())
}

/// The tester. Every method takes `&self` (state that changes is behind
/// short-lived locks, never held across an `.await`), so that the lab's
/// concurrent clients can share it through an `Arc`.
pub struct Tester {
    pub world: Mutex<World>,
    pub n: usize,
    pub shared: Arc<Mutex<Shared>>,
    connected: Mutex<Vec<bool>>,
    alive: Mutex<Vec<bool>>,
    names: Vec<String>,
    seed: u64,
    max_raft_state: i64,
}

pub fn name(server: usize) -> String {
    format!("s{server}")
}

pub fn node_id(server: usize) -> NodeId {
    server as NodeId + 1
}

/// The URL server `server` serves Raft at.
pub fn url(server: usize) -> String {
    format!("http://{}:{RAFT_PORT}", name(server))
}

/// Adds `server` to the world, running a node with `config` (again at
/// every restart, from what its disk kept).
fn add_server(world: &mut World, server: usize, config: NodeConfig, shared: &Arc<Mutex<Shared>>) {
    let shared = shared.clone();
    world.add_node(&name(server), move |context: NodeContext| {
        let (shared, config) = (shared.clone(), config.clone());
        async move {
            let machine = LabMachine {
                server,
                shared: shared.clone(),
                last_applied: 0,
                log: BTreeMap::new(),
            };
            let node = Node::start(config, Arc::new(context.disk.clone()), machine)
                .unwrap_or_else(|e| panic!("server {server} cannot start: {e}"));
            shared.lock().unwrap().nodes[server] = Some(node.clone());
            let served = tonic::transport::Server::builder()
                .add_service(node.raft_service())
                .serve(context.bind(RAFT_PORT))
                .await;
            if let Err(error) = served {
                panic!("server {server} cannot serve: {error}");
            }
        }
    });
}

impl Tester {
    /// `n` servers; `max_raft_state` as the service would set it (-1: the
    /// service never snapshots).
    pub fn new(n: usize, reliable: bool, max_raft_state: i64) -> Self {
        Self::growable(n, n, reliable, max_raft_state)
    }

    /// `total` servers of which the first `bootstrap` form the group and
    /// run; the others are spare machines, started later with
    /// [`join`](Self::join) to be added by membership change.
    pub fn growable(bootstrap: usize, total: usize, reliable: bool, max_raft_state: i64) -> Self {
        cairn_testkit::init_logging();
        let mut world = World::new();
        world.set_reliable(reliable);
        let shared = Arc::new(Mutex::new(Shared {
            nodes: (0..total).map(|_| None).collect(),
            logs: vec![BTreeMap::new(); total],
            ..Shared::default()
        }));
        let peers: BTreeMap<NodeId, String> =
            (0..bootstrap).map(|i| (node_id(i), url(i))).collect();
        for server in 0..bootstrap {
            let mut config = NodeConfig::new(node_id(server), peers.clone(), "raft");
            config.max_raft_state = max_raft_state;
            add_server(&mut world, server, config, &shared);
        }
        let names = (0..total).map(name).collect();
        let seed = world.seed();
        Self {
            world: Mutex::new(world),
            n: total,
            shared,
            connected: Mutex::new(vec![true; total]),
            alive: Mutex::new((0..total).map(|i| i < bootstrap).collect()),
            names,
            seed,
            max_raft_state,
        }
    }

    /// Starts spare `server` empty, as a machine that joins the running
    /// group (of the cluster `via` belongs to) and waits to be added.
    pub fn join(&self, server: usize, via: usize) {
        let cluster_id = self
            .node(via)
            .unwrap_or_else(|| self.fail(format!("server {via} does not run")))
            .cluster_id()
            .to_string();
        let peers: BTreeMap<NodeId, String> = (0..self.n).map(|i| (node_id(i), url(i))).collect();
        let mut config = NodeConfig::new(node_id(server), peers, "raft");
        config.max_raft_state = self.max_raft_state;
        config.join = Some(cluster_id);
        add_server(
            &mut self.world.lock().unwrap(),
            server,
            config,
            &self.shared,
        );
        self.alive.lock().unwrap()[server] = true;
    }

    /// A state machine of `server` that records into the tester, for
    /// work done outside a node (reading a stopped node's data directory).
    pub fn machine(&self, server: usize) -> LabMachine {
        LabMachine {
            server,
            shared: self.shared.clone(),
            last_applied: 0,
            log: BTreeMap::new(),
        }
    }

    /// Starts spare `server` as the one voter of its own new group, after
    /// `prepare` has written its empty disk (a restored backup). The node
    /// runs once the caller awaits next: `prepare` runs first.
    pub fn start_alone(&self, server: usize, prepare: impl FnOnce(cairn_storage::MemDisk)) {
        let peers = BTreeMap::from([(node_id(server), url(server))]);
        let mut config = NodeConfig::new(node_id(server), peers, "raft");
        config.max_raft_state = self.max_raft_state;
        let mut world = self.world.lock().unwrap();
        add_server(&mut world, server, config, &self.shared);
        prepare(world.disk(&name(server)));
        self.alive.lock().unwrap()[server] = true;
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn is_connected(&self, server: usize) -> bool {
        self.connected.lock().unwrap()[server]
    }

    pub fn is_alive(&self, server: usize) -> bool {
        self.alive.lock().unwrap()[server]
    }

    pub fn fail(&self, message: String) -> ! {
        panic!(
            "{message} (seed {}; replay with MADSIM_TEST_SEED={})",
            self.seed(),
            self.seed()
        )
    }

    pub fn node(&self, server: usize) -> Option<Node<LabMachine>> {
        if !self.is_alive(server) {
            return None;
        }
        self.shared.lock().unwrap().nodes[server].clone()
    }

    /// (term, is leader) of a server, as `GetState`.
    pub fn state(&self, server: usize) -> Option<(Term, bool)> {
        let status = self.node(server)?.status();
        status
            .running
            .then_some((status.term, status.role == Role::Leader))
    }

    pub fn disconnect(&self, server: usize) {
        self.connected.lock().unwrap()[server] = false;
        self.world.lock().unwrap().disconnect(&self.names[server]);
    }

    pub fn connect(&self, server: usize) {
        self.connected.lock().unwrap()[server] = true;
        self.world.lock().unwrap().connect(&self.names[server]);
    }

    /// Kills a server; its disk keeps what it synced.
    pub fn crash1(&self, server: usize) {
        self.world.lock().unwrap().kill(&self.names[server]);
        self.alive.lock().unwrap()[server] = false;
        self.shared.lock().unwrap().nodes[server] = None;
    }

    /// Starts a server again from what its disk kept.
    pub fn start1(&self, server: usize) {
        self.crash1(server);
        self.world.lock().unwrap().restart(&self.names[server]);
        self.alive.lock().unwrap()[server] = true;
    }

    /// Kills a server, replaces its disk with an empty one and starts it:
    /// a machine whose damaged data directory was removed.
    pub fn wipe1(&self, server: usize) {
        self.crash1(server);
        let mut world = self.world.lock().unwrap();
        world.disk(&self.names[server]).wipe();
        world.restart(&self.names[server]);
        self.alive.lock().unwrap()[server] = true;
    }

    /// How many calls reached a server.
    pub fn rpc_count(&self, server: usize) -> u64 {
        self.world.lock().unwrap().rpc_count(&self.names[server])
    }

    /// The last index applied by a running server.
    pub fn applied(&self, server: usize) -> Option<LogIndex> {
        Some(self.node(server)?.status().applied)
    }

    pub fn set_reliable(&self, reliable: bool) {
        self.world.lock().unwrap().set_reliable(reliable);
    }

    pub fn set_long_reordering(&self, on: bool) {
        self.world.lock().unwrap().set_long_reordering(on);
    }

    pub fn rpc_total(&self) -> u64 {
        self.world.lock().unwrap().total_rpcs()
    }

    pub fn bytes_total(&self) -> u64 {
        self.world.lock().unwrap().total_bytes()
    }

    /// The commands every server applied, by index, up to `last`; fails if
    /// a running server has not applied through `last` or two servers
    /// differ (the lab's final `wait(index, servers)` over every index).
    pub fn check_all_applied(&self, last: LogIndex) -> BTreeMap<LogIndex, Bytes> {
        for server in 0..self.n {
            if let Some(node) = self.node(server) {
                let applied = node.status().applied;
                if applied < last {
                    self.fail(format!(
                        "server {server} applied only through {applied}, not {last}"
                    ));
                }
            }
        }
        let shared = self.shared.lock().unwrap();
        let reference: BTreeMap<LogIndex, Bytes> = shared.logs[0]
            .range(..=last)
            .map(|(i, c)| (*i, c.clone()))
            .collect();
        for (server, log) in shared.logs.iter().enumerate() {
            let mine: BTreeMap<LogIndex, Bytes> =
                log.range(..=last).map(|(i, c)| (*i, c.clone())).collect();
            // A server restored from a snapshot keeps the snapshot's log, so
            // compare what both have.
            for (index, command) in &mine {
                if let Some(other) = reference.get(index)
                    && other != command
                {
                    let message = format!("servers 0 and {server} differ at index {index}");
                    drop(shared);
                    self.fail(message);
                }
            }
        }
        reference
    }

    /// The highest snapshot index of any running server.
    pub fn max_snapshot_index(&self) -> LogIndex {
        (0..self.n)
            .filter_map(|i| self.node(i))
            .map(|node| node.status().snapshot_index)
            .max()
            .unwrap_or(0)
    }

    /// How many times a server restored its state machine from a snapshot.
    pub fn restores(&self) -> usize {
        self.shared.lock().unwrap().restores
    }

    /// The largest Raft state of any running server (`LogSize`).
    pub fn log_size(&self) -> u64 {
        (0..self.n)
            .filter_map(|i| self.node(i))
            .map(|node| node.status().raft_state_bytes)
            .max()
            .unwrap_or(0)
    }

    pub async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Up to 10 rounds of 450-550 ms: the leader of the highest term among
    /// connected servers; never two leaders in one term.
    pub async fn check_one_leader(&self) -> usize {
        for _ in 0..10 {
            let ms = 450 + madsim::rand::thread_rng().gen_range(0..100);
            self.sleep(Duration::from_millis(ms)).await;
            let mut leaders: BTreeMap<Term, Vec<usize>> = BTreeMap::new();
            for server in (0..self.n).filter(|&i| self.is_connected(i)) {
                if let Some((term, true)) = self.state(server) {
                    leaders.entry(term).or_default().push(server);
                }
            }
            for (term, servers) in &leaders {
                if servers.len() > 1 {
                    self.fail(format!("term {term} has {} (>1) leaders", servers.len()));
                }
            }
            if let Some((_, servers)) = leaders.last_key_value() {
                return servers[0];
            }
        }
        self.fail("expected one leader, got none".into())
    }

    /// All connected servers agree on the term.
    pub fn check_terms(&self) -> Term {
        let mut term = None;
        for server in (0..self.n).filter(|&i| self.is_connected(i)) {
            if let Some((t, _)) = self.state(server) {
                match term {
                    None => term = Some(t),
                    Some(existing) if existing != t => self.fail("servers disagree on term".into()),
                    _ => {}
                }
            }
        }
        term.unwrap_or(0)
    }

    /// No connected server thinks it is leader.
    pub fn check_no_leader(&self) {
        for server in (0..self.n).filter(|&i| self.is_connected(i)) {
            if let Some((_, true)) = self.state(server) {
                self.fail(format!(
                    "expected no leader among connected servers, but {server} claims to be leader"
                ));
            }
        }
    }

    /// How many servers applied `index`, and the command; fails if two
    /// differ or any apply check failed.
    pub fn n_committed(&self, index: LogIndex) -> (usize, Option<Bytes>) {
        let shared = self.shared.lock().unwrap();
        if let Some(error) = &shared.apply_error {
            let error = error.clone();
            drop(shared);
            self.fail(error);
        }
        let mut count = 0;
        let mut command: Option<Bytes> = None;
        for log in &shared.logs {
            if let Some(applied) = log.get(&index) {
                if let Some(existing) = &command
                    && existing != applied
                {
                    let message = format!(
                        "committed values do not match: index {index}, {existing:?}, {applied:?}"
                    );
                    drop(shared);
                    self.fail(message);
                }
                count += 1;
                command = Some(applied.clone());
            }
        }
        (count, command)
    }

    /// Waits for at least `n` servers to apply `index`; gives up early
    /// (returning None) if a term passes `start_term`.
    pub async fn wait(&self, index: LogIndex, n: usize, start_term: Option<Term>) -> Option<Bytes> {
        let mut pause = Duration::from_millis(10);
        for _ in 0..30 {
            let (count, _) = self.n_committed(index);
            if count >= n {
                break;
            }
            self.sleep(pause).await;
            if pause < Duration::from_secs(1) {
                pause *= 2;
            }
            if let Some(start_term) = start_term
                && (0..self.n)
                    .filter_map(|i| self.state(i))
                    .any(|(term, _)| term > start_term)
            {
                return None;
            }
        }
        let (count, command) = self.n_committed(index);
        if count < n {
            self.fail(format!(
                "only {count} decided for index {index}; wanted {n}"
            ));
        }
        command
    }

    /// `Start` on a server: (index, term) if it is the leader.
    pub async fn start(&self, server: usize, cmd: Bytes) -> Option<(LogIndex, Term)> {
        self.node(server)?.start_command(cmd).await.ok()
    }

    /// The lab's `one`: submit `cmd` to a connected leader (trying each in
    /// turn for up to 10 s) and wait up to 2 s for `expected` servers to
    /// apply it. Returns its index.
    pub async fn one(&self, cmd: Bytes, expected: usize, retry: bool) -> LogIndex {
        let begin = tokio::time::Instant::now();
        let mut starts = 0;
        while begin.elapsed() < Duration::from_secs(10) {
            let mut index = None;
            for _ in 0..self.n {
                starts = (starts + 1) % self.n;
                if self.is_connected(starts)
                    && let Some((i, _)) = self.start(starts, cmd.clone()).await
                {
                    index = Some(i);
                    break;
                }
            }
            if let Some(index) = index {
                let placed = tokio::time::Instant::now();
                while placed.elapsed() < Duration::from_secs(2) {
                    let (count, applied) = self.n_committed(index);
                    if count > 0 && count >= expected && applied.as_ref() == Some(&cmd) {
                        return index;
                    }
                    self.sleep(Duration::from_millis(20)).await;
                }
                if !retry {
                    self.fail(format!("one({cmd:?}) failed to reach agreement"));
                }
            } else {
                self.sleep(Duration::from_millis(50)).await;
            }
        }
        self.fail(format!("one({cmd:?}) failed to reach agreement"))
    }

    pub fn random_command(&self) -> Bytes {
        command(madsim::rand::thread_rng().r#gen())
    }
}
