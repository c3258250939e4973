//! [`World`]: the simulated cluster a test builds and breaks.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cairn_rpc::sim_net;
use cairn_storage::MemDisk;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};

/// What a node's init closure receives each time the node starts.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The node's name, which is also its host name on the network.
    pub name: String,
    /// The node's IP address.
    pub ip: IpAddr,
    /// The node's disk. It survives kills and restarts; writes that were not
    /// synced when the node was killed are gone (the last may be torn).
    pub disk: MemDisk,
    /// 0 at the first start, then one more at each restart.
    pub incarnation: u64,
}

impl NodeContext {
    /// `http://<name>:<port>`, the address other nodes use.
    pub fn url(&self, port: u16) -> String {
        format!("http://{}:{port}", self.name)
    }

    /// The socket address to bind a server to.
    pub fn bind(&self, port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip, port)
    }
}

struct NodeEntry {
    handle: NodeHandle,
    ip: IpAddr,
    disk: MemDisk,
    alive: bool,
    incarnation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A simulated cluster: nodes, their disks and the network between them.
///
/// Create one at the start of a `#[madsim::test]`; it resets the simulated
/// network. Node names double as host names (`http://<name>:<port>`).
/// Network rules follow labrpc: see [`cairn_rpc::sim_net`].
pub struct World {
    handle: Handle,
    nodes: BTreeMap<String, NodeEntry>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for (name, node) in &self.nodes {
            list.entry(name, &(node.ip, node.alive));
        }
        list.finish()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// An empty world: reliable network, no nodes. The simulator's own
    /// per-message latency is set to at most 100 µs, so that the labrpc
    /// delays are the ones that matter.
    pub fn new() -> Self {
        sim_net::reset();
        NetSim::current().update_config(|config| {
            config.packet_loss_rate = 0.0;
            config.send_latency = Duration::from_micros(10)..Duration::from_micros(100);
        });
        Self {
            handle: Handle::current(),
            nodes: BTreeMap::new(),
        }
    }

    /// The seed of this run (`MADSIM_TEST_SEED` replays it).
    pub fn seed(&self) -> u64 {
        self.handle.seed()
    }

    /// Adds a node that runs `init` now and again at every restart.
    pub fn add_node<F, Fut>(&mut self, name: &str, init: F) -> NodeContext
    where
        F: Fn(NodeContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        assert!(!self.nodes.contains_key(name), "node {name:?} added twice");
        let index = u8::try_from(self.nodes.len() + 1).expect("at most 254 nodes");
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, index));
        let disk = MemDisk::new();
        let incarnation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let context = NodeContext {
            name: name.to_string(),
            ip,
            disk: disk.clone(),
            incarnation: 0,
        };
        let template = context.clone();
        let counter = incarnation.clone();
        let handle = self
            .handle
            .create_node()
            .name(name)
            .ip(ip)
            .init(move || {
                let mut context = template.clone();
                context.incarnation = counter.load(std::sync::atomic::Ordering::SeqCst);
                let started = init(context);
                // The simulator stops a node whose init task returns; keep the
                // node up so that tasks the init spawned (and test tasks) run.
                async move {
                    started.await;
                    std::future::pending::<()>().await
                }
            })
            .build();
        NetSim::current().add_dns_record(name, ip);
        sim_net::register_node(name, handle.id(), &[ip.to_string()]);
        self.nodes.insert(
            name.to_string(),
            NodeEntry {
                handle,
                ip,
                disk,
                alive: true,
                incarnation,
            },
        );
        context
    }

    /// Adds a node with nothing to start, for clients the test drives with
    /// [`spawn`](Self::spawn).
    pub fn add_client(&mut self, name: &str) {
        self.add_node(name, |_| async {});
    }

    /// Runs `future` as a task on the named node; it dies with the node.
    pub fn spawn<F>(&self, node: &str, future: F) -> madsim::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Ask the runtime for the node each time: a restarted node has a new
        // spawner, and the old one only spawns into the dead incarnation.
        let id = self.entry(node).handle.id();
        let handle = self
            .handle
            .get_node(id)
            .expect("the node exists in the runtime");
        handle.spawn(future)
    }

    /// Kills the node: its tasks stop, calls to it fail, and its disk loses
    /// what was not synced.
    pub fn kill(&mut self, node: &str) {
        let entry = self
            .nodes
            .get_mut(node)
            .unwrap_or_else(|| panic!("no node {node:?}"));
        if !entry.alive {
            return;
        }
        self.handle.kill(entry.handle.id());
        entry.alive = false;
        sim_net::set_alive(node, false);
        entry.disk.crash(&mut madsim::rand::thread_rng());
    }

    /// Starts the node again (killing it first if it runs): its init closure
    /// runs with the disk that survived.
    pub fn restart(&mut self, node: &str) {
        self.kill(node);
        let entry = self
            .nodes
            .get_mut(node)
            .unwrap_or_else(|| panic!("no node {node:?}"));
        entry
            .incarnation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.handle.restart(entry.handle.id());
        entry.alive = true;
        sim_net::set_alive(node, true);
    }

    /// Whether the node runs.
    pub fn is_alive(&self, node: &str) -> bool {
        self.entry(node).alive
    }

    /// The node's disk (it outlives the node).
    pub fn disk(&self, node: &str) -> MemDisk {
        self.entry(node).disk.clone()
    }

    /// The node's IP address.
    pub fn ip(&self, node: &str) -> IpAddr {
        self.entry(node).ip
    }

    /// Every node's name, sorted.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Cuts every link of the node (labrpc `disconnect(i)`).
    pub fn disconnect(&self, node: &str) {
        sim_net::set_connected(node, false);
    }

    /// Restores the node's links, except those cut one by one
    /// (labrpc `connect(i)`).
    pub fn connect(&self, node: &str) {
        sim_net::set_connected(node, true);
    }

    /// Cuts the links between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        sim_net::set_link(a, b, false);
        sim_net::set_link(b, a, false);
    }

    /// Heals the links between `a` and `b`, both ways.
    pub fn heal(&self, a: &str, b: &str) {
        sim_net::set_link(a, b, true);
        sim_net::set_link(b, a, true);
    }

    /// Cuts only `from -> to`: calls from `from` to `to` fail, calls the
    /// other way still work.
    pub fn cut_one_way(&self, from: &str, to: &str) {
        sim_net::set_link(from, to, false);
    }

    /// Splits the listed nodes into groups: links inside a group are healed,
    /// links between groups are cut (kvraft `partition(p1, p2)`). Nodes not
    /// listed keep their links. Disconnected nodes stay disconnected.
    pub fn partition(&self, groups: &[&[&str]]) {
        for (i, group) in groups.iter().enumerate() {
            for (j, other) in groups.iter().enumerate() {
                for a in group.iter() {
                    for b in other.iter() {
                        if a != b {
                            sim_net::set_link(a, b, i == j);
                        }
                    }
                }
            }
        }
    }

    /// Heals every link and reconnects every node.
    pub fn heal_all(&self) {
        let names = self.node_names();
        for a in &names {
            sim_net::set_connected(a, true);
            for b in &names {
                sim_net::set_link(a, b, true);
            }
        }
    }

    /// Whether a call from `from` to `to` would be delivered now.
    pub fn link_is_up(&self, from: &str, to: &str) -> bool {
        sim_net::link_is_up(from, to)
    }

    /// labrpc `Reliable`: off drops 10% of requests and 10% of replies and
    /// delays requests 0-26 ms.
    pub fn set_reliable(&self, reliable: bool) {
        sim_net::set_reliable(reliable);
    }

    /// labrpc `LongDelays`: a call over a down link fails after 0-6999 ms
    /// instead of 0-99 ms.
    pub fn set_long_delays(&self, on: bool) {
        sim_net::set_long_delays(on);
    }

    /// labrpc `LongReordering`: 2/3 of replies delayed by 200-2199 ms.
    pub fn set_long_reordering(&self, on: bool) {
        sim_net::set_long_reordering(on);
    }

    /// RPCs that reached the named node's handlers.
    pub fn rpc_count(&self, node: &str) -> u64 {
        sim_net::rpc_count(node)
    }

    /// All RPCs sent, delivered or not.
    pub fn total_rpcs(&self) -> u64 {
        sim_net::total_rpcs()
    }

    /// Request bytes at send plus reply bytes at delivery (protobuf sizes).
    pub fn total_bytes(&self) -> u64 {
        sim_net::total_bytes()
    }

    fn entry(&self, node: &str) -> &NodeEntry {
        self.nodes
            .get(node)
            .unwrap_or_else(|| panic!("no node {node:?}"))
    }
}
