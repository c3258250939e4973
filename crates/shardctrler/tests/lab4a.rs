//! The 6.824 lab 4A (shard controller) suite on the simulator, test for
//! test (`reference/6824-test-catalog.md` §2.3): 3 servers, a reliable
//! network, no snapshots, 10 shards, the 120 s limit (virtual time). The
//! lab's minimal-transfer checks are vacuous (they look at gids that do not
//! exist); here they check what was meant: no shard moves between groups
//! present before and after, and no more shards move than the minimum.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rsm::NodeConfig;
use cairn_shardctrler::{Client, Config, Controller, CtrlerServer, Gid, minimum_moves};
use cairn_testkit::{NodeContext, World};

const PORT: u16 = 7400;
const NSHARDS: usize = 10;
const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

fn server_name(i: usize) -> String {
    format!("ctrler{i}")
}

fn url(i: usize) -> String {
    format!("http://{}:{PORT}", server_name(i))
}

struct Tester {
    world: Arc<Mutex<World>>,
    n: usize,
    servers: Arc<Mutex<Vec<Option<CtrlerServer>>>>,
    clients: Mutex<usize>,
    seed: u64,
    started: tokio::time::Instant,
}

/// A clerk on its own simulated client node.
#[derive(Clone)]
struct Clerk {
    node: String,
    world: Arc<Mutex<World>>,
    client: Arc<tokio::sync::Mutex<Client>>,
    seed: u64,
}

impl Tester {
    fn new(n: usize) -> Arc<Self> {
        cairn_testkit::init_logging();
        let mut world = World::new();
        world.set_reliable(true);
        let servers: Arc<Mutex<Vec<Option<CtrlerServer>>>> =
            Arc::new(Mutex::new((0..n).map(|_| None).collect()));
        let peers: BTreeMap<u64, String> = (0..n).map(|i| (i as u64 + 1, url(i))).collect();
        for i in 0..n {
            let (servers, peers) = (servers.clone(), peers.clone());
            world.add_node(&server_name(i), move |context: NodeContext| {
                let (servers, peers) = (servers.clone(), peers.clone());
                async move {
                    let mut config = NodeConfig::new(i as u64 + 1, peers, "raft");
                    config.max_raft_state = -1;
                    // The lab leaves every group (TestBasic), so the last
                    // group may leave here.
                    let server = CtrlerServer::start_with(
                        config,
                        Arc::new(context.disk.clone()),
                        Controller::new(NSHARDS),
                    )
                    .unwrap_or_else(|e| panic!("controller {i} cannot start: {e}"));
                    servers.lock().unwrap()[i] = Some(server.clone());
                    if let Err(error) = server.router().serve(context.bind(PORT)).await {
                        panic!("controller {i} cannot serve: {error}");
                    }
                }
            });
        }
        let seed = world.seed();
        Arc::new(Self {
            world: Arc::new(Mutex::new(world)),
            n,
            servers,
            clients: Mutex::new(0),
            seed,
            started: tokio::time::Instant::now(),
        })
    }

    fn fail(&self, message: String) -> ! {
        fail(self.seed, message)
    }

    /// A clerk that can reach every server.
    fn clerk(&self) -> Clerk {
        let node = {
            let mut count = self.clients.lock().unwrap();
            *count += 1;
            format!("c{count}")
        };
        self.world.lock().unwrap().add_client(&node);
        let urls: Vec<String> = (0..self.n).map(url).collect();
        let client = Client::new(&urls, Duration::from_millis(500), Duration::from_secs(3600))
            .expect("valid URLs");
        Clerk {
            node,
            world: self.world.clone(),
            client: Arc::new(tokio::sync::Mutex::new(client)),
            seed: self.seed,
        }
    }

    fn shutdown_server(&self, i: usize) {
        self.world.lock().unwrap().kill(&server_name(i));
        self.servers.lock().unwrap()[i] = None;
    }

    fn start_server(&self, i: usize) {
        self.shutdown_server(i);
        self.world.lock().unwrap().restart(&server_name(i));
    }

    /// Heals every link (the servers here are never partitioned, so this
    /// is the lab's `ConnectAll` after a restart).
    fn connect_all(&self) {
        let world = self.world.lock().unwrap();
        for i in 0..self.n {
            for j in 0..self.n {
                if i != j {
                    world.heal(&server_name(i), &server_name(j));
                }
            }
        }
    }

    fn set_unreliable(&self, unreliable: bool) {
        self.world.lock().unwrap().set_reliable(!unreliable);
    }

    /// The servers that believe they lead.
    fn leaders(&self) -> Vec<usize> {
        let servers = self.servers.lock().unwrap();
        (0..self.n)
            .filter(|&i| {
                servers[i]
                    .as_ref()
                    .is_some_and(|s| s.node().status().is_leader())
            })
            .collect()
    }

    /// The lab's `cfg.end()`: the time limit.
    fn end(&self, title: &str) {
        let elapsed = self.started.elapsed();
        if elapsed > TEST_TIME_LIMIT {
            self.fail(format!(
                "{title} took longer than {TEST_TIME_LIMIT:?} ({elapsed:?}, virtual)"
            ));
        }
        eprintln!("{title} ... Passed -- {:.1}s", elapsed.as_secs_f64());
    }
}

fn fail(seed: u64, message: String) -> ! {
    panic!("{message} (seed {seed}; replay with MADSIM_TEST_SEED={seed})")
}

impl Clerk {
    async fn run<T, F, Fut>(&self, what: String, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Arc<tokio::sync::Mutex<Client>>) -> Fut,
        Fut: std::future::Future<Output = Result<T, cairn_shardctrler::CtrlerError>>
            + Send
            + 'static,
    {
        let future = f(self.client.clone());
        let handle = self.world.lock().unwrap().spawn(&self.node, future);
        match handle.await {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => fail(self.seed, format!("{what} failed: {error}")),
            Err(error) => fail(self.seed, format!("{what} did not finish: {error}")),
        }
    }

    async fn query(&self, num: Option<u64>) -> Config {
        self.run(format!("Query({num:?})"), move |c| async move {
            c.lock().await.query(num).await
        })
        .await
    }

    async fn join(&self, groups: BTreeMap<Gid, Vec<String>>) -> u64 {
        self.run(format!("Join({groups:?})"), move |c| async move {
            c.lock().await.join(&groups).await
        })
        .await
    }

    async fn leave(&self, gids: Vec<Gid>) -> u64 {
        self.run(format!("Leave({gids:?})"), move |c| async move {
            c.lock().await.leave(&gids).await
        })
        .await
    }

    async fn move_shard(&self, shard: usize, gid: Gid) -> u64 {
        self.run(format!("Move({shard}, {gid})"), move |c| async move {
            c.lock().await.move_shard(shard, gid).await
        })
        .await
    }
}

fn group(gid: Gid, servers: &[&str]) -> BTreeMap<Gid, Vec<String>> {
    BTreeMap::from([(gid, servers.iter().map(|s| s.to_string()).collect())])
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The lab's `check`: the latest configuration has exactly `groups`, every
/// shard on one of them, and the counts differ by at most one.
async fn check(t: &Tester, groups: &[Gid], ck: &Clerk) -> Config {
    let c = ck.query(None).await;
    if c.groups.len() != groups.len() {
        t.fail(format!(
            "wanted {} groups, got {} ({:?})",
            groups.len(),
            c.groups.len(),
            c.groups.keys().collect::<Vec<_>>()
        ));
    }
    for gid in groups {
        if !c.groups.contains_key(gid) {
            t.fail(format!("missing group {gid}"));
        }
    }
    if !groups.is_empty() {
        for (shard, gid) in c.shards.iter().enumerate() {
            if !c.groups.contains_key(gid) {
                t.fail(format!("shard {shard} -> invalid group {gid}"));
            }
        }
    }
    let counts: Vec<usize> = c
        .groups
        .keys()
        .map(|g| c.shards.iter().filter(|s| *s == g).count())
        .collect();
    if let (Some(max), Some(min)) = (counts.iter().max(), counts.iter().min())
        && max > &(min + 1)
    {
        t.fail(format!(
            "max {max} too much larger than min {min}: {:?}",
            c.shards
        ));
    }
    c
}

fn check_same_config(t: &Tester, got: &Config, want: &Config) {
    if got != want {
        t.fail(format!(
            "configuration {} differs: got {got:?}, want {want:?}",
            want.num
        ));
    }
}

/// What the lab's minimal-transfer checks meant: from `before` to `after`,
/// no shard moves between two groups that are in both, and no more shards
/// move than the minimum any balanced assignment needs.
fn check_minimal(t: &Tester, what: &str, before: &Config, after: &Config) {
    for (shard, (&b, &a)) in before.shards.iter().zip(&after.shards).enumerate() {
        let staying = |gid| before.groups.contains_key(&gid) && after.groups.contains_key(&gid);
        if b != a && staying(b) && staying(a) {
            t.fail(format!(
                "non-minimal transfer after {what}: shard {shard} moved from group {b} to group {a}, both present before and after"
            ));
        }
    }
    let moved = before
        .shards
        .iter()
        .zip(&after.shards)
        .filter(|(b, a)| b != a)
        .count();
    let gids: Vec<Gid> = after.groups.keys().copied().collect();
    let minimum = minimum_moves(&before.shards, &gids);
    if moved != minimum {
        t.fail(format!(
            "non-minimal transfer after {what}: {moved} shards moved, {minimum} needed"
        ));
    }
}

#[madsim::test]
async fn basic_4a() {
    let t = Tester::new(3);
    let ck = t.clerk();

    // Basic leave/join.
    let mut cfa: Vec<Config> = vec![Config::default(); 6];
    cfa[0] = ck.query(None).await;
    check(&t, &[], &ck).await;
    let (gid1, gid2) = (1, 2);
    ck.join(group(gid1, &["x", "y", "z"])).await;
    check(&t, &[gid1], &ck).await;
    cfa[1] = ck.query(None).await;
    ck.join(group(gid2, &["a", "b", "c"])).await;
    check(&t, &[gid1, gid2], &ck).await;
    cfa[2] = ck.query(None).await;
    let c = ck.query(None).await;
    if c.groups[&gid1] != ["x", "y", "z"] || c.groups[&gid2] != ["a", "b", "c"] {
        t.fail(format!("wrong servers: {:?}", c.groups));
    }
    ck.leave(vec![gid1]).await;
    check(&t, &[gid2], &ck).await;
    cfa[4] = ck.query(None).await;
    ck.leave(vec![gid2]).await;
    cfa[5] = ck.query(None).await;
    // cfa[3] is never set in the lab: it stays the zero configuration,
    // which is configuration 0 (here with its shard count).
    cfa[3] = Config::initial(NSHARDS);

    // Historical queries, each server down in turn.
    for s in 0..t.n {
        t.shutdown_server(s);
        for want in &cfa {
            let got = ck.query(Some(want.num)).await;
            check_same_config(&t, &got, want);
        }
        t.start_server(s);
        t.connect_all();
    }

    // Move.
    let (gid3, gid4) = (503, 504);
    ck.join(group(gid3, &["3a", "3b", "3c"])).await;
    ck.join(group(gid4, &["4a", "4b", "4c"])).await;
    for i in 0..NSHARDS {
        let cf = ck.query(None).await;
        let target = if i < NSHARDS / 2 { gid3 } else { gid4 };
        ck.move_shard(i, target).await;
        if cf.shards[i] != target {
            let cf1 = ck.query(None).await;
            if cf1.num <= cf.num {
                t.fail("Move should increase Config.Num".into());
            }
        }
    }
    let cf2 = ck.query(None).await;
    for i in 0..NSHARDS {
        let want = if i < NSHARDS / 2 { gid3 } else { gid4 };
        if cf2.shards[i] != want {
            t.fail(format!(
                "expected shard {i} on gid {want}, found {}",
                cf2.shards[i]
            ));
        }
    }
    ck.leave(vec![gid3]).await;
    ck.leave(vec![gid4]).await;

    // Concurrent leave/join.
    let npara = 10;
    let mut handles = Vec::new();
    let mut gids = Vec::new();
    for xi in 0..npara {
        let gid = 100 + 10 * xi as Gid;
        gids.push(gid);
        let cka = t.clerk();
        handles.push(madsim::task::spawn(async move {
            cka.join(group(gid + 1000, &[&format!("s{gid}a")])).await;
            cka.join(group(gid, &[&format!("s{gid}b")])).await;
            cka.leave(vec![gid + 1000]).await;
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    check(&t, &gids, &ck).await;

    // Minimal transfers after joins.
    let c1 = ck.query(None).await;
    for i in 0..5 {
        let gid = npara as Gid + 1 + i;
        let servers = names(&format!("{gid}"), 3);
        ck.join(BTreeMap::from([(gid, servers)])).await;
    }
    let c2 = ck.query(None).await;
    check_minimal(&t, "Join()s", &c1, &c2);

    // Minimal transfers after leaves.
    for i in 0..5 {
        ck.leave(vec![npara as Gid + 1 + i]).await;
    }
    let c3 = ck.query(None).await;
    check_minimal(&t, "Leave()s", &c2, &c3);
    check(&t, &gids, &ck).await;
    t.end("basic_4a");
}

#[madsim::test]
async fn multi_4a() {
    let t = Tester::new(3);
    let ck = t.clerk();

    // Multi-group join/leave.
    let mut cfa: Vec<Config> = vec![ck.query(None).await];
    check(&t, &[], &ck).await;
    let (gid1, gid2, gid3) = (1, 2, 3);
    let mut joined = group(gid1, &["x", "y", "z"]);
    joined.extend(group(gid2, &["a", "b", "c"]));
    ck.join(joined).await;
    check(&t, &[gid1, gid2], &ck).await;
    cfa.push(ck.query(None).await);
    ck.join(group(gid3, &["j", "k", "l"])).await;
    check(&t, &[gid1, gid2, gid3], &ck).await;
    cfa.push(ck.query(None).await);
    let c = ck.query(None).await;
    if c.groups[&gid1] != ["x", "y", "z"]
        || c.groups[&gid2] != ["a", "b", "c"]
        || c.groups[&gid3] != ["j", "k", "l"]
    {
        t.fail(format!("wrong servers: {:?}", c.groups));
    }
    ck.leave(vec![gid1, gid3]).await;
    check(&t, &[gid2], &ck).await;
    cfa.push(ck.query(None).await);
    if ck.query(None).await.groups[&gid2] != ["a", "b", "c"] {
        t.fail("group 2's servers changed when others left".into());
    }
    ck.leave(vec![gid2]).await;
    for want in &cfa {
        check_same_config(&t, &ck.query(Some(want.num)).await, want);
    }

    // Concurrent multi leave/join.
    let npara = 10;
    let mut handles = Vec::new();
    let mut gids = Vec::new();
    for xi in 0..npara {
        let gid = 1000 + xi as Gid;
        gids.push(gid);
        let cka = t.clerk();
        handles.push(madsim::task::spawn(async move {
            let mut groups = BTreeMap::new();
            groups.insert(gid, names(&format!("{gid}"), 3));
            groups.insert(gid + 1000, vec![format!("{}a", gid + 1000)]);
            groups.insert(gid + 2000, vec![format!("{}a", gid + 2000)]);
            cka.join(groups).await;
            cka.leave(vec![gid + 1000, gid + 2000]).await;
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    check(&t, &gids, &ck).await;

    // Minimal transfers after multijoins.
    let c1 = ck.query(None).await;
    let joined: BTreeMap<Gid, Vec<String>> = (0..5)
        .map(|i| {
            let gid = npara as Gid + 1 + i;
            (gid, names(&format!("{gid}"), 2))
        })
        .collect();
    ck.join(joined).await;
    let c2 = ck.query(None).await;
    check_minimal(&t, "multijoins", &c1, &c2);

    // Minimal transfers after multileaves.
    ck.leave((0..5).map(|i| npara as Gid + 1 + i).collect())
        .await;
    let c3 = ck.query(None).await;
    check_minimal(&t, "multileaves", &c2, &c3);
    check(&t, &gids, &ck).await;

    // The same configuration on the surviving servers.
    let leader = loop {
        if let [leader] = t.leaders()[..] {
            break leader;
        }
        if t.started.elapsed() > TEST_TIME_LIMIT {
            t.fail("no single leader".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let c = ck.query(None).await;
    t.shutdown_server(leader);
    let after = ck.query(None).await;
    check_same_config(&t, &after, &c);
    t.end("multi_4a");
}

/// Not in the lab: a Move to an absent group, a second Join of a present
/// one and a Leave of an absent one are refused and change nothing; a
/// shard outside the cluster is an invalid argument.
#[madsim::test]
async fn refused_changes_change_nothing() {
    let t = Tester::new(3);
    let ck = t.clerk();
    ck.join(group(1, &["a"])).await;
    let before = ck.query(None).await;
    let outcomes = ck
        .run("refusals".into(), |c| async move {
            let mut c = c.lock().await;
            Ok(vec![
                c.move_shard(0, 9).await,
                c.join(&group(1, &["b"])).await,
                c.leave(&[7]).await,
                c.move_shard(NSHARDS, 1).await,
                c.join(&group(0, &["z"])).await,
            ])
        })
        .await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (0..=2, Err(cairn_shardctrler::CtrlerError::Refused(_)))
            | (
                3..=4,
                Err(cairn_shardctrler::CtrlerError::Replica(
                    cairn_rpc::ReplicaError::InvalidArgument(_),
                )),
            ) => {}
            _ => t.fail(format!("request {i}: unexpected {outcome:?}")),
        }
    }
    check_same_config(&t, &ck.query(None).await, &before);
    t.end("refused_changes_change_nothing");
}

/// Not in the lab (which says only that the sharded store's tests will use
/// the controller on an unreliable network): concurrent joins and leaves
/// over a network that drops requests and replies, each applied exactly
/// once — a duplicate Join or Leave would be refused, and the clerk would
/// report it.
#[madsim::test]
async fn unreliable_concurrent_changes_apply_once() {
    let t = Tester::new(3);
    t.set_unreliable(true);
    let mut handles = Vec::new();
    let mut gids = Vec::new();
    for xi in 0..10 {
        let gid = 1 + xi as Gid;
        gids.push(gid);
        let ck = t.clerk();
        handles.push(madsim::task::spawn(async move {
            for _ in 0..3 {
                ck.join(group(gid, &["a", "b"])).await;
                ck.join(group(gid + 100, &["c"])).await;
                ck.leave(vec![gid + 100]).await;
                ck.leave(vec![gid]).await;
            }
            ck.join(group(gid, &["a", "b"])).await;
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    t.set_unreliable(false);
    let ck = t.clerk();
    let c = check(&t, &gids, &ck).await;
    // 10 clerks x (3 x 4 + 1) changes, each one configuration.
    if c.num != 130 {
        t.fail(format!("expected configuration 130, got {}", c.num));
    }
    t.end("unreliable_concurrent_changes_apply_once");
}
