//! The 6.824 lab 4B tester (`src/shardkv/config.go`) on the test kit: 3
//! shard controllers, groups 100, 101 and 102 of 3 servers each, clerks on
//! their own simulated nodes, whole groups or single servers shut down and
//! restarted, and (for Unreliable3) every operation recorded for the
//! linearizability checker.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rsm::NodeConfig;
use cairn_shardctrler::{Config, CtrlerServer, Gid};
use cairn_shardkv::{
    Client, ClientConfig, HandoverConfig, Plan, ShardKvError, ShardKvServer, ShardOf, ShardState,
    ShardStore, lab_shard_of,
};
use cairn_testkit::history::{History, KvInput};
use cairn_testkit::linearizability::{CheckOptions, CheckResult, check_kv};
use cairn_testkit::{NodeContext, World};
use rand::Rng;

pub const CTRL_PORT: u16 = 7400;
pub const KV_PORT: u16 = 7500;
pub const NSHARDS: usize = 10;
pub const NCTRLERS: usize = 3;
pub const GIDS: [Gid; 3] = [100, 101, 102];
/// The lab's `checkTimeout` (virtual time here).
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

pub fn ctrler_name(i: usize) -> String {
    format!("ctrler{i}")
}

pub fn ctrler_url(i: usize) -> String {
    format!("http://{}:{CTRL_PORT}", ctrler_name(i))
}

pub fn server_name(group: usize, i: usize) -> String {
    format!("server-{}-{i}", GIDS[group])
}

pub fn server_url(group: usize, i: usize) -> String {
    format!("http://{}:{KV_PORT}", server_name(group, i))
}

fn ctrler_urls() -> Vec<String> {
    (0..NCTRLERS).map(ctrler_url).collect()
}

type Servers = Arc<Mutex<BTreeMap<(usize, usize), ShardKvServer>>>;

pub struct Tester {
    pub world: Arc<Mutex<World>>,
    /// Servers per group.
    pub n: usize,
    pub max_raft_state: i64,
    servers: Servers,
    mck: Clerk,
    pub history: History,
    clients: Mutex<u64>,
    seed: u64,
    shard_of: ShardOf,
    pub started: tokio::time::Instant,
}

/// A clerk on its own simulated node. Its operations retry until they
/// succeed (the lab's clerks never give up); those made through the
/// `*_logged` methods are recorded in the history.
#[derive(Clone)]
pub struct Clerk {
    pub node: String,
    pub id: u64,
    world: Arc<Mutex<World>>,
    kv: Arc<tokio::sync::Mutex<Client>>,
    controller: Arc<tokio::sync::Mutex<cairn_shardctrler::Client>>,
    history: History,
    seed: u64,
}

impl Tester {
    pub fn new(n: usize, unreliable: bool, max_raft_state: i64) -> Arc<Self> {
        Self::with_shards(n, unreliable, max_raft_state, NSHARDS, lab_shard_of)
    }

    /// A tester whose cluster has `shards` shards, keys mapped by
    /// `shard_of` (the lab's is `key[0] % 10`).
    pub fn with_shards(
        n: usize,
        unreliable: bool,
        max_raft_state: i64,
        shards: usize,
        shard_of: ShardOf,
    ) -> Arc<Self> {
        let handover = HandoverConfig::default();
        Self::with_handover(n, unreliable, max_raft_state, shards, shard_of, handover)
    }

    /// [`with_shards`](Self::with_shards), the groups taking shards as
    /// `handover` says (its chunk size).
    pub fn with_handover(
        n: usize,
        unreliable: bool,
        max_raft_state: i64,
        shards: usize,
        shard_of: ShardOf,
        handover: HandoverConfig,
    ) -> Arc<Self> {
        cairn_testkit::init_logging();
        let mut world = World::new();
        world.set_reliable(!unreliable);
        let ctrl_peers: BTreeMap<u64, String> = (0..NCTRLERS)
            .map(|i| (i as u64 + 1, ctrler_url(i)))
            .collect();
        for i in 0..NCTRLERS {
            let peers = ctrl_peers.clone();
            world.add_node(&ctrler_name(i), move |context: NodeContext| {
                let peers = peers.clone();
                async move {
                    let mut config = NodeConfig::new(i as u64 + 1, peers, "raft");
                    config.max_raft_state = -1;
                    let server =
                        CtrlerServer::start(config, Arc::new(context.disk.clone()), shards)
                            .unwrap_or_else(|e| panic!("controller {i} cannot start: {e}"));
                    if let Err(error) = server.router().serve(context.bind(CTRL_PORT)).await {
                        panic!("controller {i} cannot serve: {error}");
                    }
                }
            });
        }
        let servers: Servers = Arc::default();
        for (group, &gid) in GIDS.iter().enumerate() {
            let peers: BTreeMap<u64, String> = (0..n)
                .map(|i| (i as u64 + 1, server_url(group, i)))
                .collect();
            for i in 0..n {
                let (servers, peers, handover) = (servers.clone(), peers.clone(), handover.clone());
                world.add_node(&server_name(group, i), move |context: NodeContext| {
                    let (servers, peers, handover) =
                        (servers.clone(), peers.clone(), handover.clone());
                    async move {
                        let mut config = NodeConfig::new(i as u64 + 1, peers, "raft");
                        config.max_raft_state = max_raft_state;
                        let server = ShardKvServer::start_with(
                            config,
                            Arc::new(context.disk.clone()),
                            gid,
                            shards,
                            shard_of,
                            &ctrler_urls(),
                            handover,
                        )
                        .unwrap_or_else(|e| panic!("server {group}/{i} cannot start: {e}"));
                        servers.lock().unwrap().insert((group, i), server.clone());
                        if let Err(error) = server.router().serve(context.bind(KV_PORT)).await {
                            panic!("server {group}/{i} cannot serve: {error}");
                        }
                    }
                });
            }
        }
        let seed = world.seed();
        let world = Arc::new(Mutex::new(world));
        let history = History::new();
        let mck = Clerk::new(&world, "mck".into(), 0, &history, seed, shard_of);
        Arc::new(Self {
            world,
            n,
            max_raft_state,
            servers,
            mck,
            history,
            clients: Mutex::new(0),
            seed,
            shard_of,
            started: tokio::time::Instant::now(),
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn fail(&self, message: String) -> ! {
        fail(self.seed, message)
    }

    pub fn make_client(&self) -> Clerk {
        let id = {
            let mut count = self.clients.lock().unwrap();
            *count += 1;
            *count
        };
        Clerk::new(
            &self.world,
            format!("c{id}"),
            id,
            &self.history,
            self.seed,
            self.shard_of,
        )
    }

    pub fn set_unreliable(&self, unreliable: bool) {
        self.world.lock().unwrap().set_reliable(!unreliable);
    }

    fn group_servers(&self, group: usize) -> Vec<String> {
        (0..self.n).map(|i| server_url(group, i)).collect()
    }

    pub async fn join(&self, group: usize) {
        self.joinm(&[group]).await;
    }

    pub async fn joinm(&self, groups: &[usize]) {
        let groups: BTreeMap<Gid, Vec<String>> = groups
            .iter()
            .map(|&g| (GIDS[g], self.group_servers(g)))
            .collect();
        self.mck
            .run_ctrl(format!("Join({groups:?})"), move |c| async move {
                c.lock().await.join(&groups).await.map(|_| ())
            })
            .await;
    }

    /// Joins group `gid` at `servers`, whether or not anything runs there
    /// (a typo in `cairn shardctl join --force`).
    pub async fn join_servers(&self, gid: Gid, servers: Vec<String>) {
        let groups = BTreeMap::from([(gid, servers)]);
        self.mck
            .run_ctrl(format!("Join({groups:?})"), move |c| async move {
                c.lock().await.join(&groups).await.map(|_| ())
            })
            .await;
    }

    /// Removes group `gid`, by its id.
    pub async fn leave_gid(&self, gid: Gid) {
        self.mck
            .run_ctrl(format!("Leave([{gid}])"), move |c| async move {
                c.lock().await.leave(&[gid]).await.map(|_| ())
            })
            .await;
    }

    pub async fn leave(&self, group: usize) {
        self.leavem(&[group]).await;
    }

    pub async fn leavem(&self, groups: &[usize]) {
        let gids: Vec<Gid> = groups.iter().map(|&g| GIDS[g]).collect();
        self.mck
            .run_ctrl(format!("Leave({gids:?})"), move |c| async move {
                c.lock().await.leave(&gids).await.map(|_| ())
            })
            .await;
    }

    pub async fn query(&self) -> Config {
        self.mck
            .run_ctrl("Query(-1)".into(), move |c| async move {
                c.lock().await.query(None).await
            })
            .await
    }

    pub fn shutdown_server(&self, group: usize, i: usize) {
        self.world.lock().unwrap().kill(&server_name(group, i));
        self.servers.lock().unwrap().remove(&(group, i));
    }

    pub fn start_server(&self, group: usize, i: usize) {
        self.shutdown_server(group, i);
        self.world.lock().unwrap().restart(&server_name(group, i));
    }

    pub fn shutdown_group(&self, group: usize) {
        for i in 0..self.n {
            self.shutdown_server(group, i);
        }
    }

    pub fn start_group(&self, group: usize) {
        for i in 0..self.n {
            self.start_server(group, i);
        }
    }

    /// The lab's `checklogs`: Raft state within 8 x maxraftstate, and no
    /// snapshot at all when maxraftstate is -1.
    pub fn checklogs(&self) {
        let servers = self.servers.lock().unwrap();
        for ((group, i), server) in servers.iter() {
            let status = server.node().status();
            if self.max_raft_state >= 0 && status.raft_state_bytes > 8 * self.max_raft_state as u64
            {
                self.fail(format!(
                    "server {group}/{i}: raft state size {} exceeds 8 x {}",
                    status.raft_state_bytes, self.max_raft_state
                ));
            }
            if self.max_raft_state < 0 && status.snapshot_bytes > 0 {
                self.fail(format!(
                    "server {group}/{i}: maxraftstate is -1 but the snapshot is {} bytes",
                    status.snapshot_bytes
                ));
            }
        }
    }

    /// Where `shard` stands on each running server of `group`: its state
    /// there (`None`: not held) and, while it is being pulled, how many of
    /// its keys are installed.
    pub async fn shard_on(&self, group: usize, shard: u32) -> Vec<(Option<ShardState>, usize)> {
        let servers: Vec<ShardKvServer> = {
            let servers = self.servers.lock().unwrap();
            (0..self.n)
                .filter_map(|i| servers.get(&(group, i)).cloned())
                .collect()
        };
        let mut states = Vec::new();
        for server in servers {
            let state = server
                .node()
                .inspect(move |store: &ShardStore| {
                    let keys = store.pull_position(store.config().num, shard);
                    (store.shard_state(shard), keys.map_or(0, |p| p.keys))
                })
                .await;
            states.extend(state.ok());
        }
        states
    }

    /// The configuration number and hand-over plan of each running server
    /// of `group`.
    pub async fn plans(&self, group: usize) -> Vec<Plan> {
        let servers: Vec<ShardKvServer> = {
            let servers = self.servers.lock().unwrap();
            (0..self.n)
                .filter_map(|i| servers.get(&(group, i)).cloned())
                .collect()
        };
        let mut plans = Vec::new();
        for server in servers {
            let plan = server
                .node()
                .inspect(|store: &ShardStore| store.plan())
                .await;
            plans.extend(plan.ok());
        }
        plans
    }

    /// Raft state plus snapshot over every running server
    /// (TestChallenge1Delete).
    pub fn total_size(&self) -> u64 {
        let servers = self.servers.lock().unwrap();
        servers
            .values()
            .map(|s| {
                let status = s.node().status();
                status.raft_state_bytes + status.snapshot_bytes
            })
            .sum()
    }

    /// The lab's `cfg.end()`: the time limit.
    pub fn end(&self, title: &str) {
        let elapsed = self.started.elapsed();
        if elapsed > TEST_TIME_LIMIT {
            self.fail(format!(
                "{title} took longer than {TEST_TIME_LIMIT:?} ({elapsed:?}, virtual)"
            ));
        }
        eprintln!(
            "{title} ... Passed -- {:.1}s {} ops",
            elapsed.as_secs_f64(),
            self.history.len()
        );
    }

    /// The recorded history must be linearizable (Unknown passes, as with
    /// porcupine's timeout in the lab).
    pub fn check_linearizable(&self, name: &str) {
        let operations = self.history.operations();
        let check = check_kv(&operations, &CheckOptions::default());
        eprintln!(
            "{name}: linearizability {:?} ({} operations, {} keys)",
            check.result, check.operations, check.keys
        );
        if check.result == CheckResult::Illegal {
            self.fail(format!("{name}: history is not linearizable"));
        }
    }
}

pub fn fail(seed: u64, message: String) -> ! {
    panic!("{message} (seed {seed}; replay with MADSIM_TEST_SEED={seed})")
}

impl Clerk {
    fn new(
        world: &Arc<Mutex<World>>,
        node: String,
        id: u64,
        history: &History,
        seed: u64,
        shard_of: ShardOf,
    ) -> Self {
        world.lock().unwrap().add_client(&node);
        let settings = ClientConfig {
            call_timeout: Duration::from_millis(500),
            group_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(3600),
        };
        let kv = Client::new(&ctrler_urls(), shard_of, settings).expect("valid URLs");
        let controller = cairn_shardctrler::Client::new(
            &ctrler_urls(),
            Duration::from_millis(500),
            Duration::from_secs(3600),
        )
        .expect("valid URLs");
        Self {
            node,
            id,
            world: world.clone(),
            kv: Arc::new(tokio::sync::Mutex::new(kv)),
            controller: Arc::new(tokio::sync::Mutex::new(controller)),
            history: history.clone(),
            seed,
        }
    }

    async fn on_node<T: Send + 'static>(
        &self,
        what: String,
        future: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> T {
        let handle = self.world.lock().unwrap().spawn(&self.node, future);
        match handle.await {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => fail(self.seed, format!("{what} failed: {error}")),
            Err(error) => fail(self.seed, format!("{what} did not finish: {error}")),
        }
    }

    async fn run_ctrl<T, F, Fut>(&self, what: String, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Arc<tokio::sync::Mutex<cairn_shardctrler::Client>>) -> Fut,
        Fut: std::future::Future<Output = Result<T, cairn_shardctrler::CtrlerError>>
            + Send
            + 'static,
    {
        let future = f(self.controller.clone());
        self.on_node(what, async move { future.await.map_err(|e| e.to_string()) })
            .await
    }

    async fn run_kv<T, F, Fut>(&self, what: String, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Arc<tokio::sync::Mutex<Client>>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ShardKvError>> + Send + 'static,
    {
        let future = f(self.kv.clone());
        self.on_node(what, async move { future.await.map_err(|e| e.to_string()) })
            .await
    }

    pub async fn get(&self, key: &str) -> String {
        let k = key.to_string();
        let value = self
            .run_kv(format!("Get({key})"), move |c| async move {
                c.lock().await.get(k.as_bytes()).await
            })
            .await;
        value
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }

    pub async fn put(&self, key: &str, value: &str) {
        let (k, v) = (key.to_string(), value.to_string());
        self.run_kv(format!("Put({key})"), move |c| async move {
            c.lock().await.put(k.as_bytes(), v.as_bytes()).await
        })
        .await;
    }

    pub async fn append(&self, key: &str, value: &str) {
        let (k, v) = (key.to_string(), value.to_string());
        self.run_kv(format!("Append({key})"), move |c| async move {
            c.lock().await.append(k.as_bytes(), v.as_bytes()).await
        })
        .await;
    }

    pub async fn get_logged(&self, key: &str) -> String {
        let pending = self
            .history
            .begin(self.id, KvInput::Get { key: key.into() });
        let value = self.get(key).await;
        pending.finish(Some(value.clone()));
        value
    }

    pub async fn put_logged(&self, key: &str, value: &str) {
        let pending = self.history.begin(
            self.id,
            KvInput::Put {
                key: key.into(),
                value: value.into(),
            },
        );
        self.put(key, value).await;
        pending.finish(None);
    }

    pub async fn append_logged(&self, key: &str, value: &str) {
        let pending = self.history.begin(
            self.id,
            KvInput::Append {
                key: key.into(),
                value: value.into(),
            },
        );
        self.append(key, value).await;
        pending.finish(None);
    }

    /// The lab's `check(ck, key, value)`.
    pub async fn check(&self, t: &Tester, key: &str, value: &str) {
        let got = self.get(key).await;
        if got != value {
            t.fail(format!("Get({key}): expected:\n{value}\nreceived:\n{got}"));
        }
    }
}

pub fn random_string(n: usize) -> String {
    let mut rng = madsim::rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect()
}

pub fn random_below(n: u64) -> u64 {
    madsim::rand::thread_rng().gen_range(0..n)
}
