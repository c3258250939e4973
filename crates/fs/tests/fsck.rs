//! Scenario R1 of `gfs.md` §5.2 on the simulator: `fsck` compares version,
//! length and checksum across replicas, verified now, and reports exactly
//! the damage done — a flipped byte, a replica's files deleted, a
//! chunkserver down, a stale replica after missed writes — and nothing on
//! an undamaged store; `file_checksum` equals the CRC32C of the bytes; and
//! the background scrub finds a flipped block on an idle replica with no
//! reader, and sets the replica aside.
#![cfg(madsim)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use cairn_fs::{Client, FsckReport, Problem, ReplicaState, file_checksum, fsck};
use cairn_rpc::fs::UsageRequest;
use cairn_storage::{Disk, OpenMode};
use common::*;
use tokio::time::sleep;

const DEADLINE: Duration = Duration::from_secs(20);
/// Three chunks: two full, one partly filled.
const SIZE: usize = 2 * CHUNK_BYTES as usize + 100_000;

fn chunk_file(handle: u64) -> PathBuf {
    PathBuf::from(format!("chunks/{handle:016x}.chunk"))
}

/// Flips one byte of a replica's data on `disk`, at `offset`.
fn flip(disk: &dyn Disk, handle: u64, offset: u64) {
    let mut file = disk.open(&chunk_file(handle), OpenMode::Write).unwrap();
    let mut byte = [0u8; 1];
    file.read_at(offset, &mut byte).unwrap();
    file.write_at(offset, &[byte[0] ^ 0x5a]).unwrap();
    file.sync().unwrap();
}

/// The problems of every chunk of `file`, in order.
fn problems(report: &FsckReport, file: &str) -> Vec<Vec<Problem>> {
    let found = report.files.iter().find(|f| f.path == file);
    let found = found.unwrap_or_else(|| panic!("fsck did not report {file}: {report:?}"));
    found.chunks.iter().map(|c| c.problems.clone()).collect()
}

/// The state fsck gave `url`'s replica of chunk `index` of `file`.
fn replica_state(report: &FsckReport, file: &str, index: usize, url: &str) -> Option<ReplicaState> {
    let file = report.files.iter().find(|f| f.path == file)?;
    let replica = file.chunks[index].replicas.iter().find(|r| r.url == url)?;
    Some(replica.state.clone())
}

async fn check(client: &mut Client) -> FsckReport {
    fsck(client, &path("/"), &mut |_, _| {}).await.unwrap()
}

/// Writes `/a`, `/b` and `/c` (three chunks each); their contents.
async fn three_files(client: &mut Client) -> Vec<Vec<u8>> {
    let mut contents = Vec::new();
    for (i, name) in ["/a", "/b", "/c"].iter().enumerate() {
        let data = pattern(SIZE, i as u64 + 1);
        client.create(&path(name)).await.unwrap();
        client.write(&path(name), 0, &data).await.unwrap();
        contents.push(data);
    }
    // Every replica's length and version reach the master.
    sleep(Duration::from_millis(500)).await;
    contents
}

#[madsim::test]
async fn fsck_is_clean_on_an_undamaged_store_and_checksums_match_the_bytes() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let (report, sums, contents) = cluster
        .run("client", async move {
            let contents = three_files(&mut client).await;
            let report = check(&mut client).await;
            let mut sums = Vec::new();
            for name in ["/a", "/b", "/c"] {
                sums.push(file_checksum(&client, &path(name)).await.unwrap());
            }
            (report, sums, contents)
        })
        .await;
    if !report.is_healthy() || report.healthy_chunks() != 9 || report.files.len() != 3 {
        cluster.fail(format!("fsck on an undamaged store: {report:?}"));
    }
    if report.chunks().any(|c| c.good() != 3) {
        cluster.fail(format!(
            "a chunk without its 3 verified replicas: {report:?}"
        ));
    }
    for (sum, data) in sums.iter().zip(&contents) {
        if (sum.crc32c, sum.length) != (crc32c::crc32c(data), data.len() as u64) {
            cluster.fail(format!(
                "the file checksum {:08x} of {} bytes is not the CRC32C of its bytes",
                sum.crc32c, sum.length
            ));
        }
    }
}

#[madsim::test]
async fn fsck_reports_exactly_the_damage_and_fails() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let (mut client, handles) = cluster
        .run("client", async move {
            three_files(&mut client).await;
            let mut handles = Vec::new();
            for name in ["/a", "/b", "/c"] {
                handles.push(client.stat(&path(name)).await.unwrap().chunks[0].handle);
            }
            (client, handles)
        })
        .await;
    // A byte flipped in cs0's replica of /a's first chunk; cs1's replica
    // of /b's first chunk deleted from its disk.
    flip(
        &cluster.world.lock().unwrap().disk(&cs_name(0)),
        handles[0],
        1000,
    );
    let cs1 = cluster.world.lock().unwrap().disk(&cs_name(1));
    cs1.remove_file(&chunk_file(handles[1])).unwrap();
    cs1.remove_file(&PathBuf::from(format!("chunks/{:016x}.meta", handles[1])))
        .unwrap();
    let (report, client_back) = cluster
        .run("client", async move { (check(&mut client).await, client) })
        .await;
    client = client_back;
    let damaged = vec![Problem::UnderReplicated, Problem::Corrupt];
    let expected = [
        ("/a", vec![damaged.clone(), vec![], vec![]]),
        ("/b", vec![damaged, vec![], vec![]]),
        ("/c", vec![vec![], vec![], vec![]]),
    ];
    for (file, wanted) in &expected {
        if problems(&report, file) != *wanted {
            cluster.fail(format!(
                "after the damage, {file}: {:?}",
                problems(&report, file)
            ));
        }
    }
    if replica_state(&report, "/a", 0, &cs_url(0)) != Some(ReplicaState::Corrupt(vec![0])) {
        cluster.fail(format!("cs0's flipped replica of /a: {report:?}"));
    }
    if !matches!(
        replica_state(&report, "/b", 0, &cs_url(1)),
        Some(ReplicaState::Unreadable(_))
    ) {
        cluster.fail(format!("cs1's deleted replica of /b: {report:?}"));
    }
    if report.is_healthy() {
        cluster.fail("fsck called a damaged store healthy".into());
    }

    // cs2 stops: every chunk is below its goal; the two damaged ones have
    // one good replica left, and none is called corrupt any more (set
    // aside, no longer reported).
    cluster.kill(&cs_name(2));
    let (report, client_back) = cluster
        .run("client", async move {
            sleep(Duration::from_secs(1)).await;
            (check(&mut client).await, client)
        })
        .await;
    client = client_back;
    let below = vec![Problem::UnderReplicated];
    for file in ["/a", "/b", "/c"] {
        if problems(&report, file) != vec![below.clone(); 3] {
            cluster.fail(format!(
                "with cs2 down, {file}: {:?}",
                problems(&report, file)
            ));
        }
    }
    if !matches!(
        replica_state(&report, "/c", 0, &cs_url(2)),
        Some(ReplicaState::Unreachable(_))
    ) {
        cluster.fail(format!("cs2's replica while it is down: {report:?}"));
    }

    // /c's first chunk is written while cs2 is down: its replica there is
    // stale once it is back.
    let mut client = cluster
        .run("client", async move {
            client
                .write(&path("/c"), 0, &pattern(1000, 99))
                .await
                .unwrap();
            client
        })
        .await;
    cluster.restart(&cs_name(2));
    let report = cluster
        .run("client", async move {
            sleep(Duration::from_secs(1)).await;
            check(&mut client).await
        })
        .await;
    let wanted = vec![
        vec![Problem::UnderReplicated, Problem::Stale],
        vec![],
        vec![],
    ];
    if problems(&report, "/c") != wanted {
        cluster.fail(format!(
            "after missed writes, /c: {:?}",
            problems(&report, "/c")
        ));
    }
    if replica_state(&report, "/c", 0, &cs_url(2)) != Some(ReplicaState::Stale) {
        cluster.fail(format!("cs2's replica after missed writes: {report:?}"));
    }
    if report.is_healthy() {
        cluster.fail("fsck called a store with a chunk below its goal healthy".into());
    }
}

#[madsim::test]
async fn the_scrub_sets_aside_a_flipped_block_without_any_reader() {
    let cluster = Cluster::start_with_scrub(3, 4 << 20);
    let mut client = cluster.client("client", DEADLINE);
    let (client, handle) = cluster
        .run("client", async move {
            let data = pattern(SIZE, 7);
            client.create(&path("/idle")).await.unwrap();
            client.write(&path("/idle"), 0, &data).await.unwrap();
            let handle = client.stat(&path("/idle")).await.unwrap().chunks[1].handle;
            (client, handle)
        })
        .await;
    flip(
        &cluster.world.lock().unwrap().disk(&cs_name(0)),
        handle,
        70_000,
    );
    let (named, usage) = cluster
        .run("client", async move {
            // Idle after a lease period; a pass over 9 replicas of at most
            // 256 KiB at 4 MiB/s takes well under a second.
            sleep(Duration::from_secs(5)).await;
            let named = client
                .locate(&path("/idle"), 1, false)
                .await
                .unwrap()
                .replicas;
            let master = cairn_rpc::RpcClient::new(master_url(0), Default::default()).unwrap();
            let usage = master
                .call(UsageRequest {}, |c, r| async move {
                    cairn_rpc::fs::master_client::MasterClient::new(c)
                        .usage(r)
                        .await
                })
                .await
                .unwrap();
            (named, usage)
        })
        .await;
    if named.contains(&cs_url(0)) || named.len() != 2 {
        cluster.fail(format!(
            "the master still names cs0's flipped replica: {named:?}"
        ));
    }
    for server in &usage.servers {
        let corruptions = u64::from(server.url == cs_url(0));
        if server.scrub_corruptions != corruptions || server.scrubbed_bytes == 0 {
            cluster.fail(format!("scrub figures of {}: {server:?}", server.url));
        }
    }
}
