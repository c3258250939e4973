//! Scenario R1 of `gfs.md` §5.2 on the simulator: `fsck` compares version,
//! length and checksum across replicas, verified now, and reports exactly
//! the damage done — a flipped byte, a replica's files deleted, a
//! chunkserver down, a stale replica after missed writes — and nothing on
//! an undamaged store; `file_checksum` equals the CRC32C of the bytes; and
//! the background scrub finds a flipped block on an idle replica with no
//! reader, and sets the replica aside. Re-replication is off here, so the
//! damage stays as done.
#![cfg(madsim)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use cairn_fs::{Client, FsckReport, Problem, ReplicaState, file_checksum, fsck};
use cairn_rpc::fs::UsageRequest;
use cairn_storage::Disk;
use common::*;
use tokio::time::sleep;

const DEADLINE: Duration = Duration::from_secs(20);
/// Three chunks: two full, one partly filled.
const SIZE: usize = 2 * CHUNK_BYTES as usize + 100_000;

/// The suite's settings with re-replication off, so the damage a test
/// does stays for fsck to find (`healing.rs` tests the healer).
fn without_healing() -> cairn_fs::FsSettings {
    cairn_fs::FsSettings {
        clones_per_server: 0,
        ..settings()
    }
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

async fn check(client: &mut Client, dir: &str) -> FsckReport {
    fsck(client, &path(dir), &mut |_, _| {}).await.unwrap()
}

/// Whether all three chunkservers hold every chunk of `handles` at one
/// version with the same bytes, read from each directly: the oracle fsck
/// is checked against.
async fn fully_replicated(client: &Client, handles: &[u64]) -> bool {
    for &handle in handles {
        let mut seen = Vec::new();
        for i in 0..3 {
            match client
                .read_replica(&cs_url(i), handle, 0, 0, CHUNK_BYTES)
                .await
            {
                Ok((bytes, version)) => seen.push((version, bytes)),
                Err(_) => return false,
            }
        }
        if seen.windows(2).any(|w| w[0] != w[1]) {
            return false;
        }
    }
    true
}

/// Three files of three chunks each, written under a directory of their
/// own, with every chunk on all three chunkservers.
struct Files {
    dir: String,
    contents: Vec<Vec<u8>>,
    /// Each file's first chunk.
    first_chunks: Vec<u64>,
}

impl Files {
    fn path(&self, i: usize) -> String {
        format!("{}/{}", self.dir, ["a", "b", "c"][i])
    }
}

/// Writes [`Files`]. A write can succeed with a replica left out of its
/// lease (it stays stale: nothing re-replicates yet); then fsck must call
/// the set unhealthy, and another set is written. Errs if fsck called
/// such a set healthy.
async fn replicated_files(client: &mut Client) -> Result<Files, String> {
    for attempt in 0..4 {
        let dir = format!("/set{attempt}");
        client.mkdir(&path(&dir), false).await.unwrap();
        let mut files = Files {
            dir,
            contents: Vec::new(),
            first_chunks: Vec::new(),
        };
        let mut handles = Vec::new();
        for i in 0..3 {
            let name = path(&files.path(i));
            let data = pattern(SIZE, attempt * 3 + i as u64 + 1);
            client.create(&name).await.unwrap();
            client.write(&name, 0, &data).await.unwrap();
            let chunks = client.stat(&name).await.unwrap().chunks;
            files.first_chunks.push(chunks[0].handle);
            handles.extend(chunks.iter().map(|c| c.handle));
            files.contents.push(data);
        }
        // Every replica's length and version reach the master.
        sleep(Duration::from_millis(500)).await;
        if fully_replicated(client, &handles).await {
            return Ok(files);
        }
        let report = check(client, &files.dir).await;
        if report.is_healthy() {
            return Err(format!(
                "fsck called a set with a replica left behind healthy: {report:?}"
            ));
        }
    }
    Err("four sets of files in a row left a replica behind".into())
}

#[madsim::test]
async fn fsck_is_clean_on_an_undamaged_store_and_checksums_match_the_bytes() {
    let cluster = Cluster::start_with_settings(3, without_healing());
    let mut client = cluster.client("client", DEADLINE);
    let (files, report, sums) = cluster
        .run("client", async move {
            let files = replicated_files(&mut client).await?;
            let report = check(&mut client, &files.dir).await;
            let mut sums = Vec::new();
            for i in 0..3 {
                let sum = file_checksum(&client, &path(&files.path(i))).await;
                sums.push(sum.unwrap());
            }
            Ok::<_, String>((files, report, sums))
        })
        .await
        .unwrap_or_else(|error| cluster.fail(error));
    if !report.is_healthy() || report.healthy_chunks() != 9 || report.files.len() != 3 {
        cluster.fail(format!("fsck on an undamaged store: {report:?}"));
    }
    if report.chunks().any(|c| c.good() != 3) {
        cluster.fail(format!(
            "a chunk without its 3 verified replicas: {report:?}"
        ));
    }
    for (sum, data) in sums.iter().zip(&files.contents) {
        if (sum.crc32c, sum.length) != (crc32c::crc32c(data), data.len() as u64) {
            cluster.fail(format!(
                "the file checksum {:08x} of {} bytes is not the CRC32C of its bytes",
                sum.crc32c, sum.length
            ));
        }
    }
}

/// Fails unless fsck found exactly `wanted` problems per chunk of each
/// file.
fn expect(
    cluster: &Cluster,
    report: &FsckReport,
    files: &Files,
    wanted: [Vec<Vec<Problem>>; 3],
    when: &str,
) {
    for (i, wanted) in wanted.iter().enumerate() {
        let found = problems(report, &files.path(i));
        if found != *wanted {
            cluster.fail(format!(
                "{when}, {}: {found:?}, not {wanted:?}",
                files.path(i)
            ));
        }
    }
    if report.is_healthy() {
        cluster.fail(format!("{when}, fsck called the store healthy"));
    }
}

#[madsim::test]
async fn fsck_reports_exactly_the_damage_and_fails() {
    let cluster = Cluster::start_with_settings(3, without_healing());
    let mut client = cluster.client("client", DEADLINE);
    let (mut client, files) = cluster
        .run("client", async move {
            let files = replicated_files(&mut client).await;
            (client, files)
        })
        .await;
    let files = files.unwrap_or_else(|error| cluster.fail(error));
    let (a, b) = (files.first_chunks[0], files.first_chunks[1]);
    // A byte flipped in cs0's replica of a's first chunk; cs1's replica of
    // b's first chunk deleted from its disk while it runs.
    flip(&cluster.world.lock().unwrap().disk(&cs_name(0)), a, 1000);
    let cs1 = cluster.world.lock().unwrap().disk(&cs_name(1));
    cs1.remove_file(&chunk_file(b)).unwrap();
    cs1.remove_file(&PathBuf::from(format!("chunks/{b:016x}.meta")))
        .unwrap();
    let dir = files.dir.clone();
    let (report, back) = cluster
        .run(
            "client",
            async move { (check(&mut client, &dir).await, client) },
        )
        .await;
    client = back;
    let damaged = vec![Problem::UnderReplicated, Problem::Corrupt];
    let (fine, clean) = (vec![], vec![vec![], vec![], vec![]]);
    let wanted = [
        vec![damaged.clone(), fine.clone(), fine.clone()],
        vec![damaged, fine.clone(), fine],
        clean,
    ];
    expect(&cluster, &report, &files, wanted, "after the damage");
    if replica_state(&report, &files.path(0), 0, &cs_url(0)) != Some(ReplicaState::Corrupt(vec![0]))
    {
        cluster.fail(format!("cs0's flipped replica: {report:?}"));
    }
    let deleted = replica_state(&report, &files.path(1), 0, &cs_url(1));
    if !matches!(deleted, Some(ReplicaState::Unreadable(_))) {
        cluster.fail(format!("cs1's deleted replica: {deleted:?}"));
    }

    // cs2 stops: every chunk is below its goal, and the damaged replicas,
    // set aside, are no longer reported (nor called corrupt).
    cluster.kill(&cs_name(2));
    let dir = files.dir.clone();
    let (report, back) = cluster
        .run("client", async move {
            sleep(Duration::from_secs(1)).await;
            (check(&mut client, &dir).await, client)
        })
        .await;
    client = back;
    let below = vec![vec![Problem::UnderReplicated]; 3];
    let wanted = [below.clone(), below.clone(), below];
    expect(&cluster, &report, &files, wanted, "with cs2 down");
    let down = replica_state(&report, &files.path(2), 0, &cs_url(2));
    if !matches!(down, Some(ReplicaState::Unreachable(_))) {
        cluster.fail(format!("cs2's replica while it is down: {down:?}"));
    }

    // c's first chunk is written while cs2 is down: its replica there is
    // stale once cs2 is back.
    let (c, dir) = (path(&files.path(2)), files.dir.clone());
    let mut client = cluster
        .run("client", async move {
            client.write(&c, 0, &pattern(1000, 99)).await.unwrap();
            client
        })
        .await;
    cluster.restart(&cs_name(2));
    let report = cluster
        .run("client", async move {
            sleep(Duration::from_secs(1)).await;
            check(&mut client, &dir).await
        })
        .await;
    let below = vec![vec![Problem::UnderReplicated], vec![], vec![]];
    let wanted = [
        below.clone(),
        below,
        vec![
            vec![Problem::UnderReplicated, Problem::Stale],
            vec![],
            vec![],
        ],
    ];
    expect(&cluster, &report, &files, wanted, "after missed writes");
    if replica_state(&report, &files.path(2), 0, &cs_url(2)) != Some(ReplicaState::Stale) {
        cluster.fail(format!("cs2's replica after missed writes: {report:?}"));
    }
}

#[madsim::test]
async fn the_scrub_sets_aside_a_flipped_block_without_any_reader() {
    let cluster = Cluster::start_with_scrub(3, without_healing(), 4 << 20);
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
