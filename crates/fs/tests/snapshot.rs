//! Scenario G2 of `reference/gfs.md` §5.2 on the simulator: snapshots
//! (GFS §3.4). A snapshot of a tree taken while a writer appends is a
//! point-in-time copy: it holds every record acknowledged before it was
//! asked for and none acknowledged after it returned; the first write to a
//! shared chunk, on either side, copies it on the chunkservers that hold
//! it (the other side keeps its bytes, chunks nobody wrote stay shared);
//! a master leader restarted between the snapshot and the first write
//! changes none of that; and once both trees are deleted every replica of
//! every chunk they used is deleted from the chunkservers.
#![cfg(madsim)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use cairn_fs::Client;
use common::*;
use tokio::time::{Instant, sleep};

const DEADLINE: Duration = Duration::from_secs(60);

/// The handles of `file`'s chunks.
async fn handles(client: &Client, file: &str) -> Vec<u64> {
    let entry = client.stat(&path(file)).await.unwrap();
    entry.chunks.iter().map(|c| c.handle).collect()
}

async fn read_all(client: &mut Client, file: &str) -> Vec<u8> {
    client.read(&path(file), 0, u64::MAX).await.unwrap()
}

/// Appends records to `/d/log` until `stop`; returns each acknowledged
/// record with when it was acknowledged.
/// Appends records until `stop`; answers each acknowledged record's
/// sequence number with when its append was sent and when it was
/// acknowledged.
async fn append_until(mut client: Client, stop: Arc<AtomicBool>) -> Vec<(u32, Instant, Instant)> {
    let mut acked = Vec::new();
    let mut seq = 0;
    while !stop.load(SeqCst) {
        let data = record(0, seq, 3000 + (seq as usize * 977) % 20_000);
        let sent = Instant::now();
        client.append(&path("/d/log"), &data).await.unwrap();
        eprintln!("DBG {:?} acked {seq} sent {:?}", Instant::now(), sent);
        acked.push((seq, sent, Instant::now()));
        seq += 1;
    }
    acked
}

#[madsim::test]
async fn a_snapshot_is_a_point_in_time_copy_and_writes_copy_it_on_write() {
    let cluster = Arc::new(Cluster::start(4));
    let a = pattern(5 * CHUNK_BYTES as usize / 2, 1);
    let b = pattern(CHUNK_BYTES as usize / 3, 2);
    let mut client = cluster.client("client", DEADLINE);
    let (a_written, b_written) = (a.clone(), b.clone());
    let client = cluster
        .run("client", async move {
            client.mkdir(&path("/d/e"), true).await.unwrap();
            client.create(&path("/d/a")).await.unwrap();
            client.write(&path("/d/a"), 0, &a_written).await.unwrap();
            client.create(&path("/d/e/b")).await.unwrap();
            client.write(&path("/d/e/b"), 0, &b_written).await.unwrap();
            client.create(&path("/d/log")).await.unwrap();
            client
        })
        .await;

    // A writer appends while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = cluster.client("writer", DEADLINE);
    let appending = cluster
        .world
        .lock()
        .unwrap()
        .spawn("writer", append_until(writer, stop.clone()));
    let (client, asked, answered) = cluster
        .run("client", async move {
            let mut client = client;
            sleep(Duration::from_millis(700)).await;
            let asked = Instant::now();
            client.snapshot(&path("/d"), &path("/s")).await.unwrap();
            let answered = Instant::now();
            eprintln!("DBG asked {:?} answered {:?}", asked, answered);
            sleep(Duration::from_millis(700)).await;
            (client, asked, answered)
        })
        .await;
    stop.store(true, SeqCst);
    let acked = appending.await.unwrap();
    // Acknowledged before the snapshot was asked for: in it. Sent after it
    // was answered: not in it. An append that overlaps the snapshot (sent
    // before its answer, acknowledged after its request) may land on either
    // side.
    let before: BTreeSet<u32> = acked
        .iter()
        .filter(|(_, _, acked)| *acked < asked)
        .map(|(s, _, _)| *s)
        .collect();
    let after: BTreeSet<u32> = acked
        .iter()
        .filter(|(_, sent, _)| *sent > answered)
        .map(|(s, _, _)| *s)
        .collect();
    if before.is_empty() || after.is_empty() {
        cluster.fail(format!(
            "the writer did not straddle the snapshot: {} records before, {} after",
            before.len(),
            after.len()
        ));
    }

    // Restart the master leader between the snapshot and the first write.
    if let Some(leader) = cluster.leader() {
        cluster.restart_master(leader);
    }
    let (a2, b2) = (pattern(1000, 3), pattern(2000, 4));
    let (a2_written, b2_written) = (a2.clone(), b2.clone());
    let checker = cluster.clone();
    let client = cluster
        .run("client", async move {
            let mut client = client;
            let in_snapshot: BTreeSet<u32> = scan_records(&read_all(&mut client, "/s/log").await)
                .into_iter()
                .map(|(_, seq, _)| seq)
                .collect();
            if let Some(missing) = before.difference(&in_snapshot).next() {
                checker.fail(format!(
                    "record {missing}, acknowledged before the snapshot, is not in it"
                ));
            }
            if let Some(late) = after.intersection(&in_snapshot).next() {
                checker.fail(format!(
                    "record {late}, sent after the snapshot was answered, is in it"
                ));
            }
            let log: BTreeSet<u32> = scan_records(&read_all(&mut client, "/d/log").await)
                .into_iter()
                .map(|(_, seq, _)| seq)
                .collect();
            if let Some(lost) = before.union(&after).find(|s| !log.contains(s)) {
                checker.fail(format!("record {lost} is missing from the original"));
            }

            // Shared until written; the first write on either side copies.
            let (old_a, old_b) = (
                handles(&client, "/d/a").await,
                handles(&client, "/d/e/b").await,
            );
            assert_eq!(
                handles(&client, "/s/a").await,
                old_a,
                "a snapshot shares the chunks"
            );
            client.write(&path("/d/a"), 0, &a2_written).await.unwrap();
            client.write(&path("/s/e/b"), 0, &b2_written).await.unwrap();
            let (new_a, new_b) = (
                handles(&client, "/d/a").await,
                handles(&client, "/s/e/b").await,
            );
            assert_ne!(new_a[0], old_a[0], "the written chunk of /d/a is a copy");
            assert_eq!(new_a[1..], old_a[1..], "chunks not written stay shared");
            assert_ne!(new_b[0], old_b[0], "the written chunk of /s/e/b is a copy");
            assert_eq!(handles(&client, "/s/a").await, old_a);
            assert_eq!(handles(&client, "/d/e/b").await, old_b);
            // The copy is made where the chunk was (no bytes moved).
            let holders = |replicas: Vec<(String, u64, Vec<u8>)>| -> BTreeSet<String> {
                replicas.into_iter().map(|(url, _, _)| url).collect()
            };
            let was = holders(checker.replicas_of(&client, old_a[0]).await);
            let now = holders(checker.replicas_of(&client, new_a[0]).await);
            if !now.is_subset(&was) || now.is_empty() {
                checker.fail(format!(
                    "the copy of chunk {} is on {now:?}, the chunk on {was:?}",
                    old_a[0]
                ));
            }
            client
        })
        .await;

    // Each side reads its own bytes.
    let mut expected_d = a.clone();
    expected_d[..a2.len()].copy_from_slice(&a2);
    let mut expected_s = b.clone();
    expected_s[..b2.len()].copy_from_slice(&b2);
    let checker = cluster.clone();
    let (mut client, all) = cluster
        .run("client", async move {
            let mut client = client;
            for (file, expected) in [
                ("/d/a", &expected_d),
                ("/s/a", &a),
                ("/d/e/b", &b),
                ("/s/e/b", &expected_s),
            ] {
                if read_all(&mut client, file).await != *expected {
                    checker.fail(format!("{file} does not read back as written"));
                }
            }
            let mut all = BTreeSet::new();
            for file in ["/d/a", "/s/a", "/d/e/b", "/s/e/b", "/d/log", "/s/log"] {
                all.extend(handles(&client, file).await);
            }
            (client, all)
        })
        .await;

    // Both trees gone: every replica of every chunk they used is deleted.
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            client
                .delete_skipping_trash(&path("/d"), true)
                .await
                .unwrap();
            client
                .delete_skipping_trash(&path("/s"), true)
                .await
                .unwrap();
            let start = Instant::now();
            loop {
                let mut left = Vec::new();
                for &handle in &all {
                    left.extend(
                        checker
                            .replicas_of(&client, handle)
                            .await
                            .into_iter()
                            .map(|(url, _, _)| (handle, url)),
                    );
                }
                if left.is_empty() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    checker.fail(format!(
                        "replicas left 30 s after both trees were deleted: {left:?}"
                    ));
                }
                sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    cluster.check_no_split_brain();
}

/// A snapshot of a chunk whose lease holder the master does not hear from
/// (here its only replica, cut off from the masters mid-lease) is refused
/// until that lease lapses, and moves no version meanwhile: the replica is
/// not made stale, and once it is back both files read the acknowledged
/// bytes.
#[madsim::test]
async fn a_snapshot_waits_for_a_lease_whose_holder_the_master_cannot_hear() {
    let settings = cairn_fs::FsSettings {
        replication: 1,
        ..settings()
    };
    let cluster = Arc::new(Cluster::start_with_settings(1, settings));
    let client = cluster.client("client", DEADLINE);
    let impatient = cluster.client("impatient", Duration::from_millis(300));
    let (client, _) = cluster.run("client", file_with_a_primary(client)).await;
    cluster.cut_from_masters(&cs_name(0), false);
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let (mut client, mut impatient) = (client, impatient);
            // The master counts cs0 dead (no heartbeat for 400 ms); the
            // lease it granted (2 s) runs on.
            sleep(Duration::from_millis(600)).await;
            if impatient.snapshot(&path("/f"), &path("/s")).await.is_ok() {
                checker
                    .fail("a snapshot went ahead under a lease the master could not revoke".into());
            }
            checker.cut_from_masters(&cs_name(0), true);
            client.snapshot(&path("/f"), &path("/s")).await.unwrap();
            for name in ["/f", "/s"] {
                if read_all(&mut client, name).await != pattern(2048, 1) {
                    checker.fail(format!("{name} lost the acknowledged bytes"));
                }
            }
        })
        .await;
}
