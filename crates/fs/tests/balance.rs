//! Balance and decommission on the simulator. A loaded store gets a new,
//! empty chunkserver and `Balance` moves replicas onto it until every live
//! server's used share is within the threshold of the mean, with every
//! file reading back as written and fsck clean, and no chunk ever below
//! its goal meanwhile (most files have goal 1: a move that deleted its
//! source before the clone counted would lose them). A chunkserver is decommissioned while a client keeps
//! appending and the master leader is killed midway: once the server is
//! drained it is killed, and every acknowledged record is readable and
//! every chunk has its goal on the other servers. Refusals: an unknown
//! server, and one whose loss would leave too few for a file's goal.
#![cfg(madsim)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_fs::{Client, FsSettings, fsck};
use cairn_rpc::fs::FsErrorCode;
use common::*;
use tokio::time::{Instant, sleep};

const DEADLINE: Duration = Duration::from_secs(60);
/// How long (virtual) a balance or a drain may take.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const FILE_BYTES: usize = CHUNK_BYTES as usize + 50_000;
const THRESHOLD: u32 = 10;

type Written = (String, Vec<u8>);

/// Small disks, so that a few files fill a good share of them.
fn small_disks() -> FsSettings {
    FsSettings {
        capacity_bytes: 16 * CHUNK_BYTES,
        ..settings()
    }
}

async fn write_files(client: &mut Client, prefix: &str, count: usize) -> Vec<Written> {
    let mut written = Vec::new();
    for i in 0..count {
        let name = format!("/{prefix}{i}");
        let bytes = pattern(FILE_BYTES, i as u64 + 1);
        client.create(&path(&name)).await.unwrap();
        client.write(&path(&name), 0, &bytes).await.unwrap();
        written.push((name, bytes));
    }
    written
}

/// Fails unless every file reads back as written and fsck is clean.
async fn check_files(cluster: &Cluster, client: &mut Client, files: &[Written]) {
    for (name, bytes) in files {
        match client.read(&path(name), 0, bytes.len() as u64).await {
            Ok(data) if data == *bytes => {}
            other => cluster.fail(format!("{name} read back {:?}", other.map(|d| d.len()))),
        }
    }
    let report = fsck(client, &path("/"), &mut |_, _| {}).await.unwrap();
    if !report.is_healthy() {
        cluster.fail(format!("fsck is not clean: {report:?}"));
    }
}

/// Waits until every chunk of `name` is named with `goal` replicas.
async fn wait_replicas(cluster: &Cluster, client: &Client, name: &str, goal: usize) {
    let start = Instant::now();
    loop {
        let entry = client.stat(&path(name)).await.unwrap();
        let mut done = true;
        for index in 0..entry.chunks.len() {
            let located = client
                .locate(&path(name), index as u64, false)
                .await
                .unwrap();
            done &= located.replicas.len() == goal;
        }
        if done {
            return;
        }
        if start.elapsed() > RUN_DEADLINE {
            cluster.fail(format!("{name} never reached {goal} replicas"));
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// The goals set on the files of the balance test (the others keep 3):
/// most of the data has one replica, so a move that lost its source would
/// lose data.
const GOALS: [(&str, u32); 4] = [("/f0", 1), ("/f1", 1), ("/f2", 1), ("/f3", 2)];

/// A chunk of a file with fewer replicas at its version (or a newer one)
/// than its goal, if there is one.
async fn below_goal(cluster: &Cluster, client: &Client) -> Option<String> {
    for i in 0..6 {
        let name = format!("/f{i}");
        let goal = GOALS.iter().find(|(n, _)| *n == name).map_or(3, |g| g.1) as usize;
        for chunk in client.stat(&path(&name)).await.ok()?.chunks {
            let replicas = cluster.replicas_of(client, chunk.handle).await;
            let good = replicas.iter().filter(|r| r.1 >= chunk.version).count();
            if good < goal {
                return Some(format!(
                    "chunk {} of {name} had {good} of {goal} replicas",
                    chunk.handle
                ));
            }
        }
    }
    None
}

#[madsim::test]
async fn a_new_empty_chunkserver_is_filled_until_every_server_is_within_the_threshold() {
    let cluster = Arc::new(Cluster::start_with_settings(4, small_disks()));
    // cs3 joins later, empty.
    cluster.kill(&cs_name(3));
    let mut client = cluster.client("client", DEADLINE);
    let checker = cluster.clone();
    let (mut client, files) = cluster
        .run("client", async move {
            let files = write_files(&mut client, "f", 6).await;
            for (name, goal) in GOALS {
                client.set_replication(&path(name), goal).await.unwrap();
                wait_replicas(&checker, &client, name, goal as usize).await;
            }
            (client, files)
        })
        .await;
    cluster.restart(&cs_name(3));
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            // cs3 reports in, then the balancer starts.
            sleep(Duration::from_secs(2)).await;
            let master = client.master();
            let mut reply = master.balance(THRESHOLD, true).await.unwrap();
            let start = Instant::now();
            while !reply.balanced && !reply.stuck {
                if let Some(short) = below_goal(&checker, &client).await {
                    checker.fail(format!("during the balance, {short}"));
                }
                if start.elapsed() > RUN_DEADLINE {
                    checker.fail(format!("not balanced after {RUN_DEADLINE:?}: {reply:?}"));
                }
                sleep(Duration::from_millis(500)).await;
                reply = client.master().balance(THRESHOLD, false).await.unwrap();
            }
            if !reply.balanced || reply.moves_done == 0 {
                checker.fail(format!("the balancer ended without balancing: {reply:?}"));
            }
            let limit = f64::from(THRESHOLD);
            for server in &reply.servers {
                if (server.used_percent - reply.mean_percent).abs() > limit {
                    checker.fail(format!(
                        "{} is outside the threshold: {reply:?}",
                        server.url
                    ));
                }
            }
            if !reply
                .servers
                .iter()
                .any(|s| s.url == cs_url(3) && s.used_percent > 0.0)
            {
                checker.fail(format!("cs3 got nothing: {reply:?}"));
            }
            check_files(&checker, &mut client, &files).await;
        })
        .await;
    cluster.check_no_split_brain();
}

/// The usage row of `url`, as the leader reports it.
async fn usage_of(client: &mut Client, url: &str) -> cairn_rpc::fs::ServerUsage {
    let usage = client.master().usage().await.unwrap();
    usage.servers.into_iter().find(|s| s.url == url).unwrap()
}

#[madsim::test]
async fn a_decommissioned_chunkserver_is_drained_under_appends_and_a_leader_change() {
    let cluster = Arc::new(Cluster::start(4));
    let mut client = cluster.client("client", DEADLINE);
    let (client, files) = cluster
        .run("client", async move {
            let files = write_files(&mut client, "f", 4).await;
            client.create(&path("/log")).await.unwrap();
            (client, files)
        })
        .await;
    // An appender keeps adding records; it keeps what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut appender = cluster.client("appender", DEADLINE);
    let halt = stop.clone();
    let appended = cluster.world.lock().unwrap().spawn("appender", async move {
        let mut acknowledged = Vec::new();
        let mut seq = 0;
        while !halt.load(Ordering::Relaxed) {
            seq += 1;
            if appender
                .append(&path("/log"), &record(1, seq, 3000))
                .await
                .is_ok()
            {
                acknowledged.push(seq);
            }
            sleep(Duration::from_millis(20)).await;
        }
        acknowledged
    });
    let victim = cs_url(0);
    let url = victim.clone();
    let client = cluster
        .run("client", async move {
            let mut client = client;
            sleep(Duration::from_secs(1)).await;
            client.master().decommission(&url, false).await.unwrap();
            client
        })
        .await;
    // The leader that recorded it dies; the mark is in the log.
    sleep(Duration::from_secs(1)).await;
    if let Some(leader) = cluster.leader() {
        cluster.restart_master(leader);
    }
    let checker = cluster.clone();
    let url = victim.clone();
    let client = cluster
        .run("client", async move {
            let mut client = client;
            let start = Instant::now();
            loop {
                if let Ok(usage) = client.master().usage().await
                    && let Some(row) = usage.servers.iter().find(|s| s.url == url)
                    && row.decommissioned
                {
                    break;
                }
                if start.elapsed() > RUN_DEADLINE {
                    let row = usage_of(&mut client, &url).await;
                    checker.fail(format!("{url} not drained after {RUN_DEADLINE:?}: {row:?}"));
                }
                sleep(Duration::from_millis(250)).await;
            }
            client
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = appended.await.unwrap();
    cluster.kill(&cs_name(0));
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let mut client = client;
            // Right after the kill, before any healing: every chunk has its
            // goal on the other servers.
            let mut all = files.clone();
            all.push(("/log".to_string(), Vec::new()));
            for (name, _) in &all {
                for chunk in client.stat(&path(name)).await.unwrap().chunks {
                    let good = checker
                        .replicas_of(&client, chunk.handle)
                        .await
                        .into_iter()
                        .filter(|(_, version, _)| *version == chunk.version)
                        .count();
                    if good < 3 {
                        checker.fail(format!(
                            "chunk {} of {name} has {good} replicas left after the drained server died",
                            chunk.handle
                        ));
                    }
                }
            }
            let length = client.stat(&path("/log")).await.unwrap().length;
            let log = client.read(&path("/log"), 0, length).await.unwrap();
            let found: std::collections::BTreeSet<u32> =
                scan_records(&log).into_iter().map(|(_, seq, _)| seq).collect();
            if let Some(lost) = acknowledged.iter().find(|seq| !found.contains(seq)) {
                checker.fail(format!("acknowledged record {lost} is not in /log"));
            }
            if acknowledged.is_empty() {
                checker.fail("no append was acknowledged".into());
            }
            check_files(&checker, &mut client, &files).await;
        })
        .await;
    cluster.check_no_split_brain();
}

#[madsim::test]
async fn decommissioning_an_unknown_server_or_one_too_many_is_refused() {
    let cluster = Arc::new(Cluster::start(3));
    let mut client = cluster.client("client", DEADLINE);
    cluster
        .run("client", async move {
            write_files(&mut client, "f", 1).await;
            let refusal =
                |result: Result<String, cairn_fs::MasterError>| result.expect_err("refused").code();
            let unknown = client.master().decommission("http://nobody:1", false).await;
            assert_eq!(refusal(unknown), Some(FsErrorCode::UnknownNode));
            // Three servers, goal 3: none may go.
            let too_few = client.master().decommission(&cs_url(0), false).await;
            let error = too_few.clone().expect_err("refused");
            assert_eq!(error.code(), Some(FsErrorCode::TooFewNodes), "{error}");
            assert!(error.to_string().contains("goal 3"), "{error}");
            // Nothing changed: cs0 still takes chunks.
            let row = usage_of(&mut client, &cs_url(0)).await;
            assert!(!row.decommissioning, "{row:?}");
            // With goal 2 everywhere, one may go, and come back.
            client.set_replication(&path("/f0"), 2).await.unwrap();
            client
                .master()
                .decommission(&cs_url(0), false)
                .await
                .unwrap();
            assert!(usage_of(&mut client, &cs_url(0)).await.decommissioning);
            client
                .master()
                .decommission(&cs_url(0), true)
                .await
                .unwrap();
            assert!(!usage_of(&mut client, &cs_url(0)).await.decommissioning);
        })
        .await;
}
