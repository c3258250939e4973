//! The output commit rule of jobs over the file store, under the simulator:
//! a simulated store (three masters, three chunkservers), a coordinator
//! whose output is `fs:///out`, and the workers' side played by the test.
//! A straggling reduce gets a backup attempt; the original and the backup
//! both write their output and report it at nearly the same moment, while
//! the masters' leader may be killed. Exactly one report is accepted, the
//! partition's output is that attempt's bytes, and no second copy of it is
//! left under a final name. Run with `scripts/sim-sweep mapreduce N`.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_fs::{
    ChunkServer, ChunkServerConfig, Client, FsPath, FsSettings, MasterServer, NodeConfig,
};
use cairn_mapreduce::{AppSpec, CoordinatorCore, JobConfig, SchedulerConfig, TEMP_DIR};
use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
use cairn_rpc::mapreduce::{
    CompleteTaskRequest, GetTaskReply, GetTaskRequest, RegisterRequest, TaskKind,
};
use cairn_rpc::{ClientOptions, RpcClient};
use cairn_testkit::{NodeContext, World, wait_until};
use rand::Rng;

const MASTERS: usize = 3;
const CHUNKSERVERS: usize = 3;
const MASTER_PORT: u16 = 7600;
const CHUNK_PORT: u16 = 7700;
const COORDINATOR_PORT: u16 = 7000;
const REDUCES: u32 = 3;

fn master_url(i: usize) -> String {
    format!("http://master{i}:{MASTER_PORT}")
}

fn masters() -> Vec<String> {
    (0..MASTERS).map(master_url).collect()
}

fn path(text: &str) -> FsPath {
    FsPath::parse(text).unwrap()
}

/// The settings the coordinator's own store client uses, so that the
/// store's nodes agree with it (chunk size above all), with a quick
/// heartbeat.
fn settings() -> FsSettings {
    FsSettings {
        heartbeat_interval: Duration::from_millis(100),
        ..FsSettings::default()
    }
}

/// Adds the store's masters and chunkservers to `world`; returns the
/// masters' servers as they start, to find the leader.
fn add_store(world: &mut World) -> Arc<Mutex<Vec<Option<MasterServer>>>> {
    let servers: Arc<Mutex<Vec<Option<MasterServer>>>> = Arc::new(Mutex::new(vec![None; MASTERS]));
    let peers: BTreeMap<u64, String> = (0..MASTERS)
        .map(|i| (i as u64 + 1, master_url(i)))
        .collect();
    for i in 0..MASTERS {
        let (servers, peers) = (servers.clone(), peers.clone());
        world.add_node(&format!("master{i}"), move |node: NodeContext| {
            let (servers, peers) = (servers.clone(), peers.clone());
            async move {
                let config = NodeConfig::new(i as u64 + 1, peers, "raft");
                let server =
                    MasterServer::start_with(config, Arc::new(node.disk.clone()), settings())
                        .unwrap_or_else(|e| panic!("master {i} cannot start: {e}"));
                servers.lock().unwrap()[i] = Some(server.clone());
                if let Err(error) = server.router().serve(node.bind(MASTER_PORT)).await {
                    panic!("master {i} cannot serve: {error}");
                }
            }
        });
    }
    for i in 0..CHUNKSERVERS {
        world.add_node(&format!("cs{i}"), move |node: NodeContext| async move {
            let config = ChunkServerConfig {
                url: node.url(CHUNK_PORT),
                masters: masters(),
                dir: "chunks".into(),
                settings: settings(),
                observer: None,
                clock: Default::default(),
                space: None,
                scrub_bytes_per_sec: 0,
            };
            let server = ChunkServer::start(config, Arc::new(node.disk.clone()))
                .unwrap_or_else(|e| panic!("chunkserver {i} cannot start: {e}"));
            if let Err(error) = server.router().serve(node.bind(CHUNK_PORT)).await {
                panic!("chunkserver {i} cannot serve: {error}");
            }
        });
    }
    servers
}

/// The masters' leader, if one is known.
fn leader(servers: &Mutex<Vec<Option<MasterServer>>>) -> Option<usize> {
    let servers = servers.lock().unwrap();
    (0..MASTERS).find(|&i| {
        servers[i].as_ref().is_some_and(|server| {
            let status = server.node().status();
            status.leader == Some(status.id)
        })
    })
}

/// The job: word count of `/in.txt` into `/out`, three reduces, backup
/// tasks on, and timeouts long enough that only backups make a second
/// attempt.
fn job_config() -> JobConfig {
    JobConfig {
        app: AppSpec::BuiltIn {
            name: "wc".into(),
            pattern: String::new(),
        },
        inputs: vec!["fs:///in.txt".into()],
        reduces: REDUCES,
        split_bytes: 1 << 20,
        output_dir: "fs:///out".into(),
        hadoop_names: false,
        scheduler: SchedulerConfig {
            task_timeout: Duration::from_secs(600),
            worker_timeout: Duration::from_secs(600),
            max_attempts: 4,
            backup_tasks: true,
        },
        heartbeat_interval: Duration::from_millis(500),
    }
}

/// The test's side of the worker protocol.
struct Driver {
    client: RpcClient,
}

impl Driver {
    fn new() -> Self {
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(60),
        };
        let url = format!("http://coordinator:{COORDINATOR_PORT}");
        Self {
            client: RpcClient::new(url, options).unwrap(),
        }
    }

    async fn register(&self, name: &str) -> u64 {
        let request = RegisterRequest {
            shuffle_addr: format!("http://{name}:1"),
            host: name.into(),
            pid: 0,
        };
        loop {
            let reply = self
                .client
                .call(request.clone(), |channel, request| async move {
                    CoordinatorClient::new(channel).register(request).await
                })
                .await;
            match reply {
                Ok(reply) => return reply.worker_id,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Asks for tasks as `worker` until one of `kind` comes.
    async fn task_of(&self, worker_id: u64, kind: TaskKind) -> GetTaskReply {
        loop {
            let reply = self
                .client
                .call(
                    GetTaskRequest { worker_id },
                    |channel, request| async move {
                        CoordinatorClient::new(channel).get_task(request).await
                    },
                )
                .await;
            match reply {
                Ok(reply) if reply.kind == kind as i32 => return reply,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Reports a successful attempt; whether the coordinator accepted it.
    async fn complete(&self, worker_id: u64, kind: TaskKind, task: &GetTaskReply) -> bool {
        let request = CompleteTaskRequest {
            worker_id,
            kind: kind as i32,
            task: task.task,
            attempt: task.attempt,
            ..CompleteTaskRequest::default()
        };
        let reply = self
            .client
            .call(request, |channel, request| async move {
                CoordinatorClient::new(channel).complete_task(request).await
            })
            .await;
        reply.expect("the coordinator answers").accepted
    }
}

/// Writes `text` as the output of `worker`'s attempt of reduce `task`,
/// where the coordinator's commit looks for it.
async fn write_attempt(client: &mut Client, worker: u64, task: &GetTaskReply, text: &str) {
    let temp = path(&format!(
        "/out/{TEMP_DIR}/mr-out-{}.attempt-{worker}-{}",
        task.task, task.attempt
    ));
    client.create(&temp).await.unwrap();
    client.write(&temp, 0, text.as_bytes()).await.unwrap();
}

/// A small file's bytes (reading to its end, whatever the master last
/// heard of its length).
async fn read_file(client: &mut Client, name: &str) -> Vec<u8> {
    client.read(&path(name), 0, 1 << 20).await.unwrap()
}

#[madsim::test]
async fn of_a_reduce_finished_by_original_and_backup_one_output_survives() {
    cairn_testkit::init_logging();
    let mut world = World::new();
    let seed = world.seed();
    let servers = add_store(&mut world);
    world.add_client("tester");
    let world = Arc::new(Mutex::new(world));
    let tester = world
        .lock()
        .unwrap()
        .spawn("tester", commit_race(world.clone(), servers, seed));
    tester.await.expect("the tester finishes");
}

/// The test's body, on a node of its own.
async fn commit_race(
    world: Arc<Mutex<World>>,
    servers: Arc<Mutex<Vec<Option<MasterServer>>>>,
    seed: u64,
) {
    let mut client = Client::new(&masters(), settings(), Duration::from_secs(60)).unwrap();
    client.create(&path("/in.txt")).await.unwrap();
    client
        .write(&path("/in.txt"), 0, b"one two\nthree\n")
        .await
        .unwrap();

    let core: Arc<Mutex<Option<CoordinatorCore>>> = Arc::default();
    {
        let core = core.clone();
        world
            .lock()
            .unwrap()
            .add_node("coordinator", move |node: NodeContext| {
                let core = core.clone();
                async move {
                    let opened = CoordinatorCore::open_with_store(
                        &job_config(),
                        &masters(),
                        &node.disk,
                        &node.disk,
                        "coordinator".into(),
                    )
                    .await
                    .expect("the coordinator plans the job");
                    *core.lock().unwrap() = Some(opened.clone());
                    let _server =
                        cairn_mapreduce::serve(opened.router(), node.bind(COORDINATOR_PORT))
                            .await
                            .unwrap();
                    opened
                        .run_until_released(Duration::from_secs(5))
                        .await
                        .expect("the coordinator writes its journal");
                }
            });
    }

    // Worker w1 maps, then takes a reduce and holds it; w3 finishes a
    // second reduce quickly (the phase's median); w4 takes the third and
    // holds it until the end, so that the job is not done when the race
    // below is decided (a done job deletes every temporary file).
    let driver = Driver::new();
    let first = driver.register("w1").await;
    let map = driver.task_of(first, TaskKind::Map).await;
    assert!(driver.complete(first, TaskKind::Map, &map).await);
    let mut held = vec![(first, driver.task_of(first, TaskKind::Reduce).await)];
    let quick_worker = driver.register("w3").await;
    let quick = driver.task_of(quick_worker, TaskKind::Reduce).await;
    write_attempt(&mut client, quick_worker, &quick, "quick\n").await;
    assert!(
        driver
            .complete(quick_worker, TaskKind::Reduce, &quick)
            .await
    );
    let last = driver.register("w4").await;
    held.push((last, driver.task_of(last, TaskKind::Reduce).await));

    // A fourth worker is given a backup of a straggler once it has run
    // long enough; its original is whoever holds that task.
    let backup_worker = driver.register("w2").await;
    let backup = driver.task_of(backup_worker, TaskKind::Reduce).await;
    let at = held
        .iter()
        .position(|(_, task)| task.task == backup.task)
        .expect("the backup is of a straggler");
    let (original, slow) = held.remove(at);
    assert_ne!(backup.attempt, slow.attempt);
    write_attempt(&mut client, original, &slow, "original\n").await;
    write_attempt(&mut client, backup_worker, &backup, "backup\n").await;

    // Both report at nearly the same moment, in either order, while the
    // masters' leader may die between them or during the renames.
    let (first_delay, second_delay, kill_after) = {
        let mut rng = madsim::rand::thread_rng();
        (
            Duration::from_millis(rng.gen_range(0..20)),
            Duration::from_millis(rng.gen_range(0..20)),
            rng.gen_bool(0.7)
                .then(|| Duration::from_millis(rng.gen_range(0..30))),
        )
    };
    let killer = {
        let (world, servers) = (world.clone(), servers.clone());
        tokio::spawn(async move {
            let Some(after) = kill_after else { return };
            tokio::time::sleep(after).await;
            if let Some(i) = leader(&servers) {
                let name = format!("master{i}");
                world.lock().unwrap().kill(&name);
                servers.lock().unwrap()[i] = None;
                tokio::time::sleep(Duration::from_secs(3)).await;
                world.lock().unwrap().restart(&name);
            }
        })
    };
    let report = |worker: u64, task: GetTaskReply, delay: Duration| {
        let driver = Driver::new();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            driver.complete(worker, TaskKind::Reduce, &task).await
        })
    };
    let by_original = report(original, slow.clone(), first_delay);
    let by_backup = report(backup_worker, backup.clone(), second_delay);
    let (by_original, by_backup) = (by_original.await.unwrap(), by_backup.await.unwrap());
    killer.await.unwrap();
    assert!(
        by_original ^ by_backup,
        "exactly one attempt is accepted (original {by_original}, backup {by_backup}; seed {seed})"
    );
    let winner: &[u8] = if by_original {
        b"original\n"
    } else {
        b"backup\n"
    };
    let (loser, lost) = if by_original {
        (backup_worker, &backup)
    } else {
        (original, &slow)
    };
    let slow_name = format!("/out/mr-out-{}", slow.task);
    assert_eq!(
        read_file(&mut client, &slow_name).await,
        winner,
        "the partition holds the accepted attempt's output (seed {seed})"
    );
    let lost_temp = format!(
        "/out/{TEMP_DIR}/mr-out-{}.attempt-{loser}-{}",
        lost.task, lost.attempt
    );
    assert!(
        client.stat(&path(&lost_temp)).await.is_err(),
        "the losing attempt's file is deleted (seed {seed})"
    );

    // The last straggler finishes; the job is done.
    let (worker, task) = held.pop().unwrap();
    write_attempt(&mut client, worker, &task, "last\n").await;
    assert!(driver.complete(worker, TaskKind::Reduce, &task).await);
    wait_until("the job finishes", Duration::from_secs(120), || {
        core.lock()
            .unwrap()
            .as_ref()
            .is_some_and(|core| core.status().done)
    })
    .await;
    for (task, bytes) in [
        (&quick, &b"quick\n"[..]),
        (&slow, winner),
        (&task, b"last\n"),
    ] {
        let name = format!("/out/mr-out-{}", task.task);
        assert_eq!(
            read_file(&mut client, &name).await,
            bytes,
            "{name} (seed {seed})"
        );
    }
    let mut finals: Vec<String> = client
        .list(&path("/out"))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.path)
        .filter(|name| !name.ends_with(TEMP_DIR))
        .collect();
    finals.sort();
    assert_eq!(
        finals,
        ["mr-out-0", "mr-out-1", "mr-out-2"].map(|n| format!("/out/{n}")),
        "one output per partition (seed {seed})"
    );
}
