//! The 6.824 lab 3 tester (`src/kvraft/config.go`, `test_test.go`) on the
//! test kit: simulated `cairn kv` servers, clerks on simulated client nodes
//! (so the labrpc rules apply to their calls too), partitions of the
//! servers, crashes and restarts, and every operation recorded for the
//! linearizability checker.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_kv::{Client, ClientConfig, KvError, KvServer};
use cairn_rsm::NodeConfig;
use cairn_testkit::history::{History, KvInput};
use cairn_testkit::linearizability::{CheckOptions, check_kv};
use cairn_testkit::{NodeContext, World};
use rand::Rng;
use rand::seq::SliceRandom;

pub const PORT: u16 = 7300;
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// The lab's `checkTimeout`: a test that runs longer (here: in virtual
/// time) fails.
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

pub fn server_name(i: usize) -> String {
    format!("s{i}")
}

pub fn url(i: usize) -> String {
    format!("http://{}:{PORT}", server_name(i))
}

pub struct Tester {
    pub world: Mutex<World>,
    pub n: usize,
    pub servers: Arc<Mutex<Vec<Option<KvServer>>>>,
    alive: Mutex<Vec<bool>>,
    pub history: History,
    clients: Mutex<usize>,
    pub max_raft_state: i64,
    seed: u64,
    started: tokio::time::Instant,
}

/// A lab clerk: a `cairn_kv::Client` living on its own simulated node, whose
/// operations are recorded in the history.
#[derive(Clone)]
pub struct Clerk {
    pub node: String,
    pub id: u64,
    /// Every server's URL, shuffled (labrpc `random_handles`): which ones it
    /// can reach is the network's business.
    urls: Vec<String>,
    history: History,
    client: Arc<tokio::sync::Mutex<Option<Client>>>,
}

impl Tester {
    pub fn new(n: usize, unreliable: bool, max_raft_state: i64) -> Arc<Self> {
        cairn_testkit::init_logging();
        let mut world = World::new();
        world.set_reliable(!unreliable);
        let servers: Arc<Mutex<Vec<Option<KvServer>>>> =
            Arc::new(Mutex::new((0..n).map(|_| None).collect()));
        let peers: BTreeMap<u64, String> = (0..n).map(|i| (i as u64 + 1, url(i))).collect();
        for i in 0..n {
            let (servers, peers) = (servers.clone(), peers.clone());
            world.add_node(&server_name(i), move |context: NodeContext| {
                let (servers, peers) = (servers.clone(), peers.clone());
                async move {
                    let mut config = NodeConfig::new(i as u64 + 1, peers, "raft");
                    config.max_raft_state = max_raft_state;
                    let server = KvServer::start(config, Arc::new(context.disk.clone()))
                        .unwrap_or_else(|e| panic!("server {i} cannot start: {e}"));
                    servers.lock().unwrap()[i] = Some(server.clone());
                    if let Err(error) = server.router().serve(context.bind(PORT)).await {
                        panic!("server {i} cannot serve: {error}");
                    }
                }
            });
        }
        let seed = world.seed();
        Arc::new(Self {
            world: Mutex::new(world),
            n,
            servers,
            alive: Mutex::new(vec![true; n]),
            history: History::new(),
            clients: Mutex::new(0),
            max_raft_state,
            seed,
            started: tokio::time::Instant::now(),
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn fail(&self, message: String) -> ! {
        panic!(
            "{message} (seed {}; replay with MADSIM_TEST_SEED={})",
            self.seed, self.seed
        )
    }

    /// A clerk on a new client node that knows every server and can reach
    /// `servers` (labrpc `makeClient(to)`).
    pub fn make_client(&self, servers: &[usize]) -> Clerk {
        let node = {
            let mut count = self.clients.lock().unwrap();
            *count += 1;
            format!("c{count}")
        };
        let id = self.clients.lock().map(|c| *c as u64).unwrap();
        self.world.lock().unwrap().add_client(&node);
        let mut urls: Vec<String> = (0..self.n).map(url).collect();
        urls.shuffle(&mut madsim::rand::thread_rng());
        let clerk = Clerk {
            node,
            id,
            urls,
            history: self.history.clone(),
            client: Arc::default(),
        };
        self.connect_client(&clerk, servers);
        clerk
    }

    /// Lets `clerk` reach only `servers` (labrpc `ConnectClient`).
    pub fn connect_client(&self, clerk: &Clerk, servers: &[usize]) {
        let world = self.world.lock().unwrap();
        for i in 0..self.n {
            if servers.contains(&i) {
                world.heal(&clerk.node, &server_name(i));
            } else {
                world.cut(&clerk.node, &server_name(i));
            }
        }
    }

    /// Runs `future` on the clerk's node.
    pub fn spawn<F>(&self, clerk: &Clerk, future: F) -> madsim::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.world.lock().unwrap().spawn(&clerk.node, future)
    }

    /// Splits the servers into two sides that cannot reach each other
    /// (clients keep their links).
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let world = self.world.lock().unwrap();
        for &i in a {
            for &j in b {
                world.cut(&server_name(i), &server_name(j));
            }
        }
        for side in [a, b] {
            for &i in side {
                for &j in side {
                    if i != j {
                        world.heal(&server_name(i), &server_name(j));
                    }
                }
            }
        }
    }

    /// Heals every server-server link.
    pub fn connect_all(&self) {
        let all: Vec<usize> = (0..self.n).collect();
        self.partition(&all, &[]);
    }

    pub fn shutdown_server(&self, i: usize) {
        self.world.lock().unwrap().kill(&server_name(i));
        self.alive.lock().unwrap()[i] = false;
        self.servers.lock().unwrap()[i] = None;
    }

    pub fn start_server(&self, i: usize) {
        self.shutdown_server(i);
        self.world.lock().unwrap().restart(&server_name(i));
        self.alive.lock().unwrap()[i] = true;
    }

    pub fn set_reliable(&self, reliable: bool) {
        self.world.lock().unwrap().set_reliable(reliable);
    }

    /// The largest Raft state of a running server (`LogSize`).
    pub fn log_size(&self) -> u64 {
        let servers = self.servers.lock().unwrap();
        servers
            .iter()
            .flatten()
            .map(|s| s.node().status().raft_state_bytes)
            .max()
            .unwrap_or(0)
    }

    /// The status of server `i`, if it runs.
    pub fn status(&self, i: usize) -> Option<cairn_rsm::NodeStatus> {
        self.servers.lock().unwrap()[i]
            .as_ref()
            .map(|s| s.node().status())
    }

    /// The highest snapshot index of a running server (0: none has taken
    /// or installed a snapshot).
    pub fn max_snapshot_index(&self) -> u64 {
        (0..self.n)
            .filter_map(|i| self.status(i))
            .map(|s| s.snapshot_index)
            .max()
            .unwrap_or(0)
    }

    /// The largest snapshot of a running server (`SnapshotSize`).
    pub fn snapshot_size(&self) -> u64 {
        let servers = self.servers.lock().unwrap();
        servers
            .iter()
            .flatten()
            .map(|s| s.node().status().snapshot_bytes)
            .max()
            .unwrap_or(0)
    }

    /// The lab's `cfg.end()`: fails a test that ran over the time limit
    /// (virtual time) and prints `time servers rpcs ops`.
    pub fn end(&self, title: &str) {
        let elapsed = self.started.elapsed();
        if elapsed > TEST_TIME_LIMIT {
            self.fail(format!(
                "test took longer than {TEST_TIME_LIMIT:?} ({elapsed:?}, virtual)"
            ));
        }
        let rpcs = self.world.lock().unwrap().total_rpcs();
        eprintln!(
            "{title} ... Passed -- {:.1}s {} {rpcs} {}",
            elapsed.as_secs_f64(),
            self.n,
            self.history.len()
        );
    }

    /// The whole history must be linearizable; a checker that runs out of
    /// budget fails the test too.
    pub fn check_linearizable(&self, name: &str) {
        let operations = self.history.operations();
        let options = CheckOptions::default();
        let check = check_kv(&operations, &options);
        eprintln!(
            "{name}: linearizability {:?} after {} of {} search steps ({} operations, {} keys)",
            check.result, check.steps, options.max_steps, check.operations, check.keys
        );
        if check.result != cairn_testkit::linearizability::CheckResult::Ok {
            eprintln!(
                "seed {}: replay with MADSIM_TEST_SEED={}",
                self.seed, self.seed
            );
        }
        check.assert_ok(name);
    }
}

impl Clerk {
    async fn client(&self) -> tokio::sync::MutexGuard<'_, Option<Client>> {
        let mut guard = self.client.lock().await;
        if guard.is_none() {
            let config = ClientConfig {
                call_timeout: Duration::from_millis(500),
                deadline: Duration::from_secs(3600),
            };
            *guard = Some(Client::new(&self.urls, config).expect("valid URLs"));
        }
        guard
    }

    /// A recorded Get: the value ("" when missing).
    pub async fn get(&self, key: &str) -> String {
        let pending = self
            .history
            .begin(self.id, KvInput::Get { key: key.into() });
        let guard = self.client().await;
        let client = guard.as_ref().expect("made above");
        match client.get(key.as_bytes()).await {
            Ok(value) => {
                let value = value
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                pending.finish(Some(value.clone()));
                value
            }
            Err(error) => {
                pending.unknown();
                panic!("Get({key}) failed: {error}");
            }
        }
    }

    pub async fn put(&self, key: &str, value: &str) {
        let pending = self.history.begin(
            self.id,
            KvInput::Put {
                key: key.into(),
                value: value.into(),
            },
        );
        let mut guard = self.client().await;
        let result = guard
            .as_mut()
            .expect("made above")
            .put(key.as_bytes(), value.as_bytes())
            .await;
        finish_write(pending, result.map(|_| ()), "Put", key);
    }

    pub async fn append(&self, key: &str, value: &str) {
        let pending = self.history.begin(
            self.id,
            KvInput::Append {
                key: key.into(),
                value: value.into(),
            },
        );
        let mut guard = self.client().await;
        let result = guard
            .as_mut()
            .expect("made above")
            .append(key.as_bytes(), value.as_bytes())
            .await;
        finish_write(pending, result.map(|_| ()), "Append", key);
    }
}

fn finish_write(
    pending: cairn_testkit::history::Pending,
    result: Result<(), KvError>,
    op: &str,
    key: &str,
) {
    match result {
        Ok(()) => pending.finish(None),
        Err(error) => {
            pending.unknown();
            panic!("{op}({key}) failed: {error}");
        }
    }
}

/// Every `"x <client> <j> y"` for j < count appears exactly once, in order.
pub fn check_client_appends(t: &Tester, client: usize, value: &str, count: usize) {
    let mut last: Option<usize> = None;
    for j in 0..count {
        let wanted = format!("x {client} {j} y");
        let Some(at) = value.find(&wanted) else {
            t.fail(format!(
                "{client} missing element {wanted} in Append result {value}"
            ));
        };
        if value.rfind(&wanted) != Some(at) {
            t.fail(format!("duplicate element {wanted} in Append result"));
        }
        if let Some(previous) = last
            && at <= previous
        {
            t.fail(format!("wrong order for element {wanted} in Append result"));
        }
        last = Some(at);
    }
}

pub fn random_below(n: u64) -> u64 {
    madsim::rand::thread_rng().gen_range(0..n)
}

/// The appends to `key` recorded in the history must appear in its final
/// `value` in an order that respects real time: an append that returned
/// before another was called comes first. With every append present once
/// (checked by [`check_client_appends`]) and one final Get, this is the
/// whole linearizability condition for an append-only key, checked without
/// the search that five concurrent appenders make too large for the
/// general checker.
pub fn check_append_order(t: &Tester, key: &str, value: &str) {
    let mut appends: Vec<(u64, u64, usize, String)> = Vec::new();
    for op in t.history.operations() {
        let (KvInput::Append { key: k, value: v }, Some(ret)) = (&op.input, op.ret) else {
            continue;
        };
        if k != key {
            continue;
        }
        let Some(at) = value.find(v.as_str()) else {
            t.fail(format!("append {v:?} that returned is missing from {key}"));
        };
        appends.push((op.call, ret, at, v.clone()));
    }
    for (call_a, ret_a, at_a, a) in &appends {
        for (call_b, _, at_b, b) in &appends {
            if ret_a < call_b && at_a > at_b {
                t.fail(format!(
                    "append {a:?} returned (t={ret_a}ns) before append {b:?} was called \
                     (t={call_b}ns), but comes after it in the value of {key}; \
                     (call of the first: t={call_a}ns)"
                ));
            }
        }
    }
}
