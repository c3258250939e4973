//! The file-store master on the simulator: three masters, clerks changing
//! the namespace while the network drops and reorders messages and the
//! leader is killed (scenario M1 of `reference/gfs.md` §5.2), and a whole
//! restart from snapshots.
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_fs::{FsPath, MasterClient, MasterServer};
use cairn_rsm::NodeConfig;
use cairn_testkit::{NodeContext, World};

const PORT: u16 = 7600;
const MASTERS: usize = 3;

fn name(i: usize) -> String {
    format!("master{i}")
}

fn url(i: usize) -> String {
    format!("http://{}:{PORT}", name(i))
}

fn path(text: &str) -> FsPath {
    FsPath::parse(text).unwrap()
}

struct Masters {
    world: Arc<Mutex<World>>,
    servers: Arc<Mutex<Vec<Option<MasterServer>>>>,
    seed: u64,
}

impl Masters {
    fn start(max_raft_state: i64) -> Self {
        cairn_testkit::init_logging();
        let mut world = World::new();
        let servers: Arc<Mutex<Vec<Option<MasterServer>>>> =
            Arc::new(Mutex::new(vec![None, None, None]));
        let peers: BTreeMap<u64, String> = (0..MASTERS).map(|i| (i as u64 + 1, url(i))).collect();
        for i in 0..MASTERS {
            let (servers, peers) = (servers.clone(), peers.clone());
            world.add_node(&name(i), move |context: NodeContext| {
                let (servers, peers) = (servers.clone(), peers.clone());
                async move {
                    let mut config = NodeConfig::new(i as u64 + 1, peers, "raft");
                    config.max_raft_state = max_raft_state;
                    let server = MasterServer::start(config, Arc::new(context.disk.clone()))
                        .unwrap_or_else(|e| panic!("master {i} cannot start: {e}"));
                    servers.lock().unwrap()[i] = Some(server.clone());
                    if let Err(error) = server.router().serve(context.bind(PORT)).await {
                        panic!("master {i} cannot serve: {error}");
                    }
                }
            });
        }
        let seed = world.seed();
        Self {
            world: Arc::new(Mutex::new(world)),
            servers,
            seed,
        }
    }

    fn fail(&self, message: String) -> ! {
        panic!(
            "{message} (seed {}; replay with MADSIM_TEST_SEED={})",
            self.seed, self.seed
        )
    }

    fn clerk(&self, node: &str) -> MasterClient {
        self.world.lock().unwrap().add_client(node);
        let urls: Vec<String> = (0..MASTERS).map(url).collect();
        MasterClient::new(&urls, Duration::from_millis(500), Duration::from_secs(3600)).unwrap()
    }

    fn leader(&self) -> Option<usize> {
        let servers = self.servers.lock().unwrap();
        (0..MASTERS).find(|&i| {
            servers[i]
                .as_ref()
                .is_some_and(|s| s.node().status().is_leader())
        })
    }

    fn restart(&self, i: usize) {
        let mut world = self.world.lock().unwrap();
        world.kill(&name(i));
        self.servers.lock().unwrap()[i] = None;
        world.restart(&name(i));
    }
}

/// What a clerk leaves behind: for each of `rounds`, create a file, then
/// rename it; only the renamed names remain. Applying any change twice
/// would make it fail (the file already exists, or is gone), and the clerk
/// would report that.
async fn churn(mut clerk: MasterClient, dir: String, rounds: usize) -> Result<(), String> {
    clerk
        .mkdir(&path(&dir), true)
        .await
        .map_err(|e| format!("mkdir {dir}: {e}"))?;
    for round in 0..rounds {
        let (from, to) = (format!("{dir}/tmp-{round}"), format!("{dir}/part-{round}"));
        clerk
            .create(&path(&from))
            .await
            .map_err(|e| format!("create {from}: {e}"))?;
        clerk
            .add_chunk(&path(&from), 0)
            .await
            .map_err(|e| format!("add a chunk to {from}: {e}"))?;
        clerk
            .rename(&path(&from), &path(&to), false)
            .await
            .map_err(|e| format!("rename {from} to {to}: {e}"))?;
    }
    Ok(())
}

async fn names_in(clerk: &MasterClient, dir: &str) -> BTreeSet<String> {
    clerk
        .list(&path(dir))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.path)
        .collect()
}

/// M1: clerks create and rename files while the network is unreliable and
/// the leader is killed again and again; every acknowledged change is
/// there, exactly once.
#[madsim::test]
async fn namespace_changes_survive_leader_crashes_exactly_once() {
    let masters = Masters::start(-1);
    masters.world.lock().unwrap().set_reliable(false);
    const CLERKS: usize = 3;
    const ROUNDS: usize = 12;
    let mut handles = Vec::new();
    for c in 0..CLERKS {
        let node = format!("client{c}");
        let clerk = masters.clerk(&node);
        let future = churn(clerk, format!("/jobs/clerk{c}"), ROUNDS);
        handles.push(masters.world.lock().unwrap().spawn(&node, future));
    }
    // Kill the leader a few times while the clerks work.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(leader) = masters.leader() {
            masters.restart(leader);
        }
    }
    for (c, handle) in handles.into_iter().enumerate() {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => masters.fail(format!("clerk {c}: {error}")),
            Err(error) => masters.fail(format!("clerk {c} did not finish: {error}")),
        }
    }
    masters.world.lock().unwrap().set_reliable(true);
    let reader = masters.clerk("reader");
    let reading = async move {
        let mut found = Vec::new();
        for c in 0..CLERKS {
            found.push(names_in(&reader, &format!("/jobs/clerk{c}")).await);
        }
        found
    };
    let handle = masters.world.lock().unwrap().spawn("reader", reading);
    let found = handle.await.unwrap();
    for (c, names) in found.into_iter().enumerate() {
        let expected: BTreeSet<String> = (0..ROUNDS)
            .map(|r| format!("/jobs/clerk{c}/part-{r}"))
            .collect();
        if names != expected {
            masters.fail(format!(
                "clerk {c}'s directory holds {names:?}, expected {expected:?}"
            ));
        }
    }
}

/// The namespace survives every master restarting, through snapshots (a
/// tiny log limit forces them) and the log after them.
#[madsim::test]
async fn the_namespace_survives_a_full_restart_from_snapshots() {
    let masters = Masters::start(500);
    let clerk = masters.clerk("client");
    let work = async move {
        let mut clerk = clerk;
        for i in 0..40 {
            clerk
                .mkdir(&path(&format!("/d{}/e{i}", i % 4)), true)
                .await
                .unwrap();
        }
        clerk
    };
    let handle = masters.world.lock().unwrap().spawn("client", work);
    let clerk = handle.await.unwrap();
    for i in 0..MASTERS {
        masters.restart(i);
    }
    let check = async move {
        let mut total = 0;
        for d in 0..4 {
            total += clerk.list(&path(&format!("/d{d}"))).await.unwrap().len();
        }
        let refused = clerk.stat(&path("/nope")).await.unwrap_err();
        (total, refused.code())
    };
    let handle = masters.world.lock().unwrap().spawn("client", check);
    let (total, refused) = handle.await.unwrap();
    if total != 40 {
        masters.fail(format!("{total} directories after the restart, not 40"));
    }
    assert_eq!(refused, Some(cairn_rpc::fs::FsErrorCode::NotFound));
    let snapshots: u64 = masters
        .servers
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|s| s.node().status().snapshot_index)
        .max()
        .unwrap_or(0);
    if snapshots == 0 {
        masters.fail("no master took a snapshot; the test did not test them".into());
    }
}
