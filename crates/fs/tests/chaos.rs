//! A long random run on the simulator (issue 14): five chunkservers are
//! killed, restarted and wiped at random and bytes rot in their replica
//! files, while three clients create, rewrite, append to and delete files.
//!
//! Faults come in rounds. Within a round at most two chunkservers are
//! impaired (down, wiped, or holding a flipped byte), so every chunk,
//! written with three replicas, keeps one intact replica: the assumption
//! GFS makes of its master's reaction time. At the end of a round the dead
//! servers return and the store must heal on its own, with no operator:
//! `fsck` clean and every acknowledged byte of every live file read back
//! through the client, every acknowledged record present in the shared
//! log. Only then may the next round impair two more servers.
#![cfg(madsim)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_fs::{Client, fsck};
use cairn_storage::{Disk, OpenMode};
use common::*;
use tokio::time::{Instant, sleep};

const SERVERS: usize = 5;
const WRITERS: u32 = 3;
const ROUNDS: usize = 3;
/// How long clients work, and faults strike, in each round (virtual).
const ROUND: Duration = Duration::from_secs(8);
/// At most this many chunkservers impaired between two checks.
const MAX_IMPAIRED: usize = 2;
const DEADLINE: Duration = Duration::from_secs(30);
const HEAL_DEADLINE: Duration = Duration::from_secs(60);
const LOG: &str = "/log";

/// What the store acknowledged: each live file's bytes, and the records
/// appended to the log. A file whose last mutation failed is left out (its
/// bytes are whatever the failed write left: GFS's "inconsistent").
#[derive(Default)]
struct Acknowledged {
    files: BTreeMap<String, Vec<u8>>,
    records: BTreeSet<(u32, u32)>,
}

type Shared = Arc<Mutex<Acknowledged>>;

/// A number below `n`, from the simulation's seeded generator.
fn roll(n: u64) -> u64 {
    madsim::rand::random::<u64>() % n
}

/// One client's work until `until`: new files (up to one and a half
/// chunks), whole rewrites, appended records, reads of its own files
/// (which must never return other bytes than it wrote, rot or not) and
/// deletions, at random.
async fn work(judge: &Cluster, client: &mut Client, writer: u32, until: Instant, acked: Shared) {
    let mut created = 0u32;
    let mut seq = 0u32;
    while Instant::now() < until {
        let prefix = format!("/w{writer}/");
        let mine: Vec<(String, usize)> = acked
            .lock()
            .unwrap()
            .files
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(name, bytes)| (name.clone(), bytes.len()))
            .collect();
        let roll_op = if mine.is_empty() { 0 } else { roll(10) };
        match roll_op {
            0..=2 => {
                let name = format!("{prefix}f{created}");
                created += 1;
                let length = 1 + roll(CHUNK_BYTES * 3 / 2) as usize;
                let bytes = pattern(length, madsim::rand::random());
                let made = match client.create(&path(&name)).await {
                    Ok(()) => client.write(&path(&name), 0, &bytes).await,
                    Err(error) => Err(error),
                };
                if made.is_ok() {
                    acked.lock().unwrap().files.insert(name, bytes);
                }
            }
            3..=4 => {
                let (name, length) = &mine[roll(mine.len() as u64) as usize];
                acked.lock().unwrap().files.remove(name);
                let bytes = pattern(*length, madsim::rand::random());
                if client.write(&path(name), 0, &bytes).await.is_ok() {
                    acked.lock().unwrap().files.insert(name.clone(), bytes);
                }
            }
            5..=6 => {
                let length = 500 + roll(4000) as usize;
                if client
                    .append(&path(LOG), &record(writer, seq, length))
                    .await
                    .is_ok()
                {
                    acked.lock().unwrap().records.insert((writer, seq));
                }
                seq += 1;
            }
            7..=8 => {
                let (name, length) = &mine[roll(mine.len() as u64) as usize];
                let expected = acked.lock().unwrap().files[name].clone();
                if let Ok(data) = client.read(&path(name), 0, *length as u64).await
                    && data != expected
                {
                    judge.fail(format!(
                        "{name} read back {} bytes other than the {length} acknowledged",
                        data.len()
                    ));
                }
            }
            _ => {
                let (name, _) = &mine[roll(mine.len() as u64) as usize];
                acked.lock().unwrap().files.remove(name);
                let _ = client.delete(&path(name), false).await;
            }
        }
        sleep(Duration::from_millis(roll(200))).await;
    }
}

/// Why the store is not healed and whole yet, if it is not. A read may
/// fail while the store heals, but bytes other than the acknowledged ones
/// fail the test at once: a reader never gets bad bytes. The reads come
/// before fsck, which would set a rotten replica aside.
async fn not_yet_whole(judge: &Cluster, client: &mut Client, acked: &Shared) -> Option<String> {
    let (files, records) = {
        let acked = acked.lock().unwrap();
        (acked.files.clone(), acked.records.clone())
    };
    for (name, bytes) in files {
        match client.read(&path(&name), 0, bytes.len() as u64).await {
            Ok(data) if data == bytes => {}
            Ok(data) => judge.fail(format!(
                "{name} read back {} bytes other than the {} acknowledged",
                data.len(),
                bytes.len()
            )),
            Err(error) => return Some(format!("{name} cannot be read: {error}")),
        }
    }
    let length = match client.stat(&path(LOG)).await {
        Ok(entry) => entry.length,
        Err(error) => return Some(format!("{LOG}: {error}")),
    };
    let log = match client.read(&path(LOG), 0, length).await {
        Ok(log) => log,
        Err(error) => return Some(format!("{LOG} cannot be read: {error}")),
    };
    let found: BTreeSet<(u32, u32)> = scan_records(&log)
        .into_iter()
        .map(|(writer, seq, _)| (writer, seq))
        .collect();
    let lost: Vec<_> = records.difference(&found).collect();
    if !lost.is_empty() {
        return Some(format!("acknowledged records missing from {LOG}: {lost:?}"));
    }
    let report = match fsck(client, &path("/"), &mut |_, _| {}).await {
        Ok(report) => report,
        Err(error) => return Some(format!("fsck failed: {error}")),
    };
    if !report.is_healthy() {
        let sick: Vec<_> = report
            .files
            .iter()
            .flat_map(|f| f.chunks.iter().map(move |c| (&f.path, c)))
            .filter(|(_, c)| c.problems.iter().any(|p| p.fails()))
            .map(|(name, c)| {
                let replicas: Vec<_> = c
                    .replicas
                    .iter()
                    .map(|r| (&r.url, &r.state, r.version, r.length, r.crc32c))
                    .collect();
                format!("{name} chunk {}: {:?} {replicas:?}", c.index, c.problems)
            })
            .collect();
        return Some(format!("fsck: {sick:?}"));
    }
    None
}

/// Impairs one more chunkserver, or brings a dead one back: at random.
fn strike(cluster: &Cluster, impaired: &mut BTreeSet<usize>, dead: &mut BTreeSet<usize>) {
    let healthy: Vec<usize> = (0..SERVERS).filter(|i| !impaired.contains(i)).collect();
    let can_impair = impaired.len() < MAX_IMPAIRED;
    let pick = |from: &[usize]| from[roll(from.len() as u64) as usize];
    match roll(4) {
        0 if can_impair => {
            let victim = pick(&healthy);
            cluster.kill(&cs_name(victim));
            impaired.insert(victim);
            dead.insert(victim);
        }
        1 if !dead.is_empty() => {
            let back = pick(&dead.iter().copied().collect::<Vec<_>>());
            cluster.restart(&cs_name(back));
            dead.remove(&back);
        }
        2 if can_impair => {
            let victim = pick(&healthy);
            cluster.kill(&cs_name(victim));
            wipe(&cluster.world.lock().unwrap().disk(&cs_name(victim)));
            cluster.restart(&cs_name(victim));
            impaired.insert(victim);
        }
        3 if can_impair => {
            let victim = pick(&healthy);
            let disk = cluster.world.lock().unwrap().disk(&cs_name(victim));
            let mut replicas = Vec::new();
            for name in disk.list(std::path::Path::new("chunks")).unwrap() {
                let Some(hex) = name.strip_suffix(".chunk") else {
                    continue;
                };
                let handle = u64::from_str_radix(hex, 16).unwrap();
                let length = disk
                    .open(&chunk_file(handle), OpenMode::Read)
                    .and_then(|file| file.len())
                    .unwrap_or(0);
                if length > 0 {
                    replicas.push((handle, length));
                }
            }
            // A rotting disk: a byte flipped in up to four of its replicas.
            for _ in 0..4.min(replicas.len()) {
                let (handle, length) = replicas.swap_remove(roll(replicas.len() as u64) as usize);
                flip(&disk, handle, roll(length));
                impaired.insert(victim);
            }
        }
        _ => {}
    }
}

#[madsim::test]
async fn the_store_heals_through_random_crashes_wipes_and_rot() {
    let cluster = Arc::new(Cluster::start(SERVERS));
    let acked: Shared = Arc::default();
    let mut checker = cluster.client("checker", DEADLINE);
    let mut clients: Vec<Client> = (0..WRITERS)
        .map(|w| cluster.client(&format!("w{w}"), DEADLINE))
        .collect();
    checker = cluster
        .run("checker", async move {
            checker.create(&path(LOG)).await.unwrap();
            for w in 0..WRITERS {
                checker.mkdir(&path(&format!("/w{w}")), true).await.unwrap();
            }
            checker
        })
        .await;
    for round in 0..ROUNDS {
        let until = Instant::now() + ROUND;
        let workers: Vec<_> = clients
            .drain(..)
            .enumerate()
            .map(|(w, mut client)| {
                let (acked, judge) = (acked.clone(), cluster.clone());
                cluster
                    .world
                    .lock()
                    .unwrap()
                    .spawn(&format!("w{w}"), async move {
                        work(&judge, &mut client, w as u32, until, acked).await;
                        client
                    })
            })
            .collect();
        let (mut impaired, mut dead) = (BTreeSet::new(), BTreeSet::new());
        while Instant::now() < until {
            sleep(Duration::from_millis(500 + roll(1500))).await;
            strike(&cluster, &mut impaired, &mut dead);
        }
        for worker in workers {
            match worker.await {
                Ok(client) => clients.push(client),
                Err(error) => cluster.fail(format!("a writer did not finish: {error}")),
            }
        }
        for &i in &dead {
            cluster.restart(&cs_name(i));
        }
        let (acked, judge) = (acked.clone(), cluster.clone());
        checker = cluster
            .run("checker", async move {
                let start = Instant::now();
                while let Some(missing) = not_yet_whole(&judge, &mut checker, &acked).await {
                    if start.elapsed() > HEAL_DEADLINE {
                        judge.fail(format!(
                            "round {round} (impaired {impaired:?}): not whole {HEAL_DEADLINE:?} after it: {missing}"
                        ));
                    }
                    sleep(Duration::from_millis(500)).await;
                }
                checker
            })
            .await;
    }
    let acked = acked.lock().unwrap();
    if acked.files.is_empty() || acked.records.is_empty() {
        cluster.fail(format!(
            "the writers got too little done to check: {} files, {} records",
            acked.files.len(),
            acked.records.len()
        ));
    }
    cluster.check_no_split_brain();
}
