//! The file store on the simulator, scenarios F2, F9 and M7 of
//! `reference/gfs.md` §5.2: a primary crashing between its own apply and
//! its secondaries', chunkservers losing what their disks had not synced
//! right after acknowledging, and a MapReduce-style commit by rename across
//! a master leader crash.
#![cfg(madsim)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_fs::{ChunkLocation, Client};
use cairn_rpc::fs::FsErrorCode;
use common::*;
use tokio::time::{Instant, sleep};

const DEADLINE: Duration = Duration::from_secs(60);

/// Where readers of chunk 0 of `file` are sent, once `expect` replicas
/// are named (chunkservers report within a few heartbeats of a restart).
async fn readable(client: &Client, file: &str, expect: usize) -> ChunkLocation {
    let mut located = client.locate(&path(file), 0, false).await.unwrap();
    for _ in 0..50 {
        if located.replicas.len() >= expect {
            break;
        }
        sleep(Duration::from_millis(100)).await;
        located = client.locate(&path(file), 0, false).await.unwrap();
    }
    located
}

/// The acknowledged records (seq, offset) missing from a replica's bytes.
fn missing(bytes: &[u8], acked: &[(u32, u64)]) -> Vec<(u32, u64)> {
    acked
        .iter()
        .filter(|&&(seq, offset)| {
            bytes
                .get(offset as usize..)
                .and_then(parse_record)
                .map(|(_, found, _)| found)
                != Some(seq)
        })
        .copied()
        .collect()
}

/// F2: the primary crashes after making an append locally and before any
/// secondary hears of it. The client sees the error and retries; the
/// master grants the next lease, with a new version, only to replicas at
/// the latest version (the crashed primary, back at the old version with
/// the extra record, is stale and never named); every acknowledged record
/// is on every replica readers are sent to.
#[madsim::test]
async fn a_primary_crashing_before_forwarding_loses_no_acknowledged_append() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let (client, mut acked, before) = cluster
        .run("client", async move {
            client.create(&path("/log")).await.unwrap();
            let mut acked = Vec::new();
            for seq in 0..5 {
                let at = client.append(&path("/log"), &record(0, seq, 1000)).await;
                acked.push((seq, at.unwrap()));
            }
            let located = client.locate(&path("/log"), 0, true).await.unwrap();
            (client, acked, located)
        })
        .await;
    let primary = before.primary.clone().unwrap();
    let mut signal = cluster.acceptances.clone();
    let seen = *signal.borrow_and_update();
    let first_new = cluster.accepted.lock().unwrap().len();
    let task = cluster.world.lock().unwrap().spawn("client", async move {
        let mut client = client;
        let at = client.append(&path("/log"), &record(0, 5, 1000)).await;
        (client, at)
    });
    // The primary made the append locally; no time passes before the kill,
    // so no secondary has received the apply.
    signal.wait_for(|&n| n > seen).await.unwrap();
    cluster.kill(&host(&primary));
    let (client, at) = task.await.unwrap();
    match at {
        Ok(offset) => acked.push((5, offset)),
        Err(error) => cluster.fail(format!("the retried append failed: {error}")),
    }
    cluster.restart(&host(&primary));
    let (client, after) = cluster
        .run("client", async move {
            let mut client = client;
            for seq in 6..10 {
                let at = client.append(&path("/log"), &record(0, seq, 1000)).await;
                acked.push((seq, at.unwrap()));
            }
            // Long enough for the restarted server to report its replica.
            sleep(Duration::from_secs(1)).await;
            let after = readable(&client, "/log", 2).await;
            (client, (after, acked))
        })
        .await;
    let (after, acked) = after;
    let tenures: Vec<Acceptance> = cluster.accepted.lock().unwrap()[first_new..].to_vec();
    if !tenures
        .iter()
        .any(|(_, _, version, url)| *url == primary && *version == before.version)
    {
        cluster.fail("the crashed primary never made the append locally".into());
    }
    for (_, _, version, url) in &tenures {
        if *version > before.version && *url == primary {
            cluster.fail(format!(
                "the crashed primary, stale at version {}, was made primary again at {version}",
                before.version
            ));
        }
    }
    if after.version <= before.version {
        cluster.fail(format!(
            "the append succeeded without a new lease: version {} then {}",
            before.version, after.version
        ));
    }
    if after.replicas.contains(&primary) {
        cluster.fail(format!(
            "readers are sent to the stale old primary {primary}: {after:?}"
        ));
    }
    let copies = cluster
        .run("client", async move {
            let mut copies = Vec::new();
            for url in &after.replicas {
                let read = client
                    .read_replica(url, after.handle, after.version, 0, CHUNK_BYTES)
                    .await;
                copies.push((url.clone(), read.map(|(bytes, _)| bytes.to_vec())));
            }
            copies
        })
        .await;
    for (url, copy) in copies {
        match copy {
            Ok(bytes) if missing(&bytes, &acked).is_empty() => {}
            Ok(bytes) => cluster.fail(format!(
                "{url} lacks acknowledged records {:?}",
                missing(&bytes, &acked)
            )),
            Err(error) => cluster.fail(format!("{url} cannot be read: {error}")),
        }
    }
    cluster.check_no_split_brain();
}

/// F9: a chunkserver is killed right after an append is acknowledged, its
/// disk losing every write it had not synced; each of the three in turn,
/// then all three at once. An acknowledgement means every replica synced
/// the record, so every replica at the chunk's latest version holds every
/// acknowledged record (one that missed mutations is at an older version
/// and never named), and appending goes on.
#[madsim::test]
async fn acknowledged_appends_survive_chunkservers_losing_unsynced_writes() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let mut client = cluster
        .run("client", async move {
            client.create(&path("/log")).await.unwrap();
            client
        })
        .await;
    let acked: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    for round in 0..4u32 {
        let written = acked.clone();
        client = cluster
            .run("client", async move {
                for seq in round * 3..round * 3 + 3 {
                    let at = client.append(&path("/log"), &record(0, seq, 2000)).await;
                    written.lock().unwrap().push((seq, at.unwrap()));
                }
                client
            })
            .await;
        let victims: Vec<usize> = if round < 3 {
            vec![round as usize]
        } else {
            vec![0, 1, 2]
        };
        for &i in &victims {
            cluster.kill(&cs_name(i));
        }
        for &i in &victims {
            cluster.restart(&cs_name(i));
        }
    }
    let acked = acked.lock().unwrap().clone();
    let (located, copies, appended) = cluster
        .run("client", async move {
            let appended = client.append(&path("/log"), &record(0, 999, 100)).await;
            sleep(Duration::from_secs(1)).await;
            let located = readable(&client, "/log", 1).await;
            let mut copies = Vec::new();
            for i in 0..3 {
                let read = client
                    .read_replica(&cs_url(i), located.handle, 0, 0, CHUNK_BYTES)
                    .await;
                copies.push(read.map(|(bytes, version)| (version, bytes.to_vec())));
            }
            (located, copies, appended)
        })
        .await;
    if let Err(error) = appended {
        cluster.fail(format!("appending after the crashes failed: {error}"));
    }
    if located.replicas.is_empty() {
        cluster.fail("no replica is named after the crashes".into());
    }
    for (i, copy) in copies.into_iter().enumerate() {
        match copy {
            Ok((version, bytes)) if version == located.version => {
                let gone = missing(&bytes, &acked);
                if !gone.is_empty() {
                    cluster.fail(format!(
                        "{} at the latest version {version} lost acknowledged records {gone:?}",
                        cs_name(i)
                    ));
                }
            }
            Ok((version, _)) => {
                if located.replicas.contains(&cs_url(i)) {
                    cluster.fail(format!(
                        "{} at version {version} < {} is named to readers",
                        cs_name(i),
                        located.version
                    ));
                }
            }
            Err(error) => {
                if located.replicas.contains(&cs_url(i)) {
                    cluster.fail(format!("{} is named but unreadable: {error}", cs_name(i)));
                }
            }
        }
    }
    cluster.check_no_split_brain();
}

/// M7: two attempts of one task each write a temporary file and commit it
/// by renaming it to the final name (no replacing), the master leader
/// killed before the renames and its successor as they reach it, the
/// clerks retrying across both changes.
/// A reader polling the final name sees nothing, then one whole attempt,
/// never a part of one, never two, never the name disappearing again; one
/// rename wins, the other is told the name exists.
#[madsim::test]
async fn a_rename_commit_across_a_master_crash_publishes_one_whole_attempt() {
    const SIZE: usize = 300_000; // over a chunk: the file has two
    let cluster = Cluster::start(3);
    let mut setup = cluster.client("setup", DEADLINE);
    cluster
        .run("setup", async move {
            setup.mkdir(&path("/out/_tmp"), true).await.unwrap();
        })
        .await;
    let attempts: Vec<Vec<u8>> = (0..2).map(|k| pattern(SIZE, 70 + k)).collect();
    let go = Arc::new(tokio::sync::Notify::new());
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(2);
    let mut tasks = Vec::new();
    for (k, data) in attempts.iter().cloned().enumerate() {
        let node = format!("attempt{k}");
        let mut client = cluster.client(&node, DEADLINE);
        let (go, ready_tx) = (go.clone(), ready_tx.clone());
        let work = async move {
            let tmp = path(&format!("/out/_tmp/part-0.attempt-{k}"));
            client.create(&tmp).await.unwrap();
            for (i, piece) in data.chunks(50_000).enumerate() {
                client
                    .write(&tmp, (i * 50_000) as u64, piece)
                    .await
                    .unwrap();
            }
            let notified = go.notified();
            ready_tx.send(()).await.unwrap();
            notified.await;
            let renamed = client.rename(&tmp, &path("/out/part-0"), false).await;
            let left = client.stat(&tmp).await;
            (k, renamed, left.is_ok())
        };
        tasks.push(cluster.world.lock().unwrap().spawn(&node, work));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Option<usize>>>> = Arc::default();
    let mut reader = cluster.client("reader", DEADLINE);
    let reading = {
        let (stop, seen, attempts) = (stop.clone(), seen.clone(), attempts.clone());
        cluster.world.lock().unwrap().spawn("reader", async move {
            while !stop.load(SeqCst) {
                match reader.read(&path("/out/part-0"), 0, SIZE as u64 + 1).await {
                    Ok(bytes) => match attempts.iter().position(|a| *a == bytes) {
                        Some(k) => seen.lock().unwrap().push(Some(k)),
                        None => {
                            return Err(format!(
                                "the final name shows {} bytes that are no whole attempt",
                                bytes.len()
                            ));
                        }
                    },
                    Err(error) if code(&error) == Some(FsErrorCode::NotFound) => {
                        seen.lock().unwrap().push(None);
                    }
                    Err(error) => return Err(format!("reading the final name: {error}")),
                }
                sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
    };
    for _ in 0..2 {
        ready.recv().await.unwrap();
    }
    // The leader dies between the writes and the renames, which the
    // clerks retry until a new leader is elected; that one is killed too,
    // a moment (0-3 ms) after it appears, as the renames reach it.
    let Some(leader) = cluster.leader() else {
        cluster.fail("no master leader to kill".into());
    };
    cluster.restart_master(leader);
    go.notify_waiters();
    let elected = Instant::now();
    let next = loop {
        match cluster.leader() {
            // The restarted node may win again: it is a new incarnation.
            Some(next) => break next,
            _ if elected.elapsed() > Duration::from_secs(10) => {
                cluster.fail("no new master leader within 10 s".into())
            }
            _ => sleep(Duration::from_millis(1)).await,
        }
    };
    sleep(Duration::from_micros(madsim::rand::random::<u64>() % 3000)).await;
    cluster.restart_master(next);
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => cluster.fail(format!("an attempt did not finish: {error}")),
        }
    }
    let mut check = cluster.client("check", DEADLINE);
    let published = cluster
        .run("check", async move {
            sleep(Duration::from_millis(200)).await;
            check.read(&path("/out/part-0"), 0, SIZE as u64 + 1).await
        })
        .await;
    stop.store(true, SeqCst);
    match reading.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => cluster.fail(error),
        Err(error) => cluster.fail(format!("the reader did not finish: {error}")),
    }
    let winners: Vec<usize> = outcomes
        .iter()
        .filter(|(_, renamed, _)| renamed.is_ok())
        .map(|(k, _, _)| *k)
        .collect();
    let [winner] = winners[..] else {
        cluster.fail(format!(
            "{} renames succeeded, not one: {outcomes:?}",
            winners.len()
        ));
    };
    for (k, renamed, tmp_left) in &outcomes {
        if *k == winner && *tmp_left {
            cluster.fail(format!("the winner's temporary file {k} is still there"));
        }
        if *k != winner {
            match renamed {
                Err(error) if code(error) == Some(FsErrorCode::AlreadyExists) => {}
                other => cluster.fail(format!("the losing rename answered {other:?}")),
            }
            if !tmp_left {
                cluster.fail("the loser's temporary file is gone".into());
            }
        }
    }
    match published {
        Ok(bytes) if bytes == attempts[winner] => {}
        Ok(bytes) => cluster.fail(format!(
            "the final name holds {} bytes, not attempt {winner}",
            bytes.len()
        )),
        Err(error) => cluster.fail(format!("the final name cannot be read: {error}")),
    }
    let seen = seen.lock().unwrap().clone();
    let first = seen.iter().position(Option::is_some);
    if let Some(first) = first
        && let Some(bad) = seen[first..].iter().find(|s| **s != Some(winner))
    {
        cluster.fail(format!(
            "after showing attempt {winner} the final name showed {bad:?}"
        ));
    }
}
