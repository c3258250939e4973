//! The store heals itself (GFS §4.3-§4.4) on the simulator: scenarios F5
//! (a chunkserver that missed writes returns: its stale replicas are
//! replaced or deleted), F6 (one that missed deletions returns: its
//! orphans are deleted), F7 (chunks left with one or two replicas are
//! cloned, never more clones per chunkserver than the setting) and F8 (a
//! wiped disk and a flipped bit are rebuilt from the intact replica) of
//! `reference/gfs.md` §5.2, and a clone from a corrupt source, which
//! leaves nothing on the target. "Healed" means every chunk of every file
//! has its goal of replicas on live chunkservers, all at the chunk's
//! version with the same bytes (the ones written), no other live replica,
//! and the master names only those to readers.
#![cfg(madsim)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_fs::Client;
use cairn_rpc::fs::CloneRequest;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::{ClientOptions, RpcClient};
use cairn_storage::Disk;
use common::*;
use tokio::time::sleep;

const DEADLINE: Duration = Duration::from_secs(60);
/// How long (virtual) the store may take to heal.
const HEAL_DEADLINE: Duration = Duration::from_secs(40);
/// Each file spans two chunks.
const FILE_BYTES: usize = CHUNK_BYTES as usize + 50_000;

/// A file and what was last written to it.
type Written = (String, Vec<u8>);

/// Creates and writes `prefix0`.. `prefix{count-1}`.
async fn write_files(client: &mut Client, prefix: &str, count: usize, salt: u64) -> Vec<Written> {
    let mut written = Vec::new();
    for i in 0..count {
        let name = format!("/{prefix}{i}");
        let bytes = pattern(FILE_BYTES, salt + i as u64);
        client.create(&path(&name)).await.unwrap();
        client.write(&path(&name), 0, &bytes).await.unwrap();
        written.push((name, bytes));
    }
    written
}

/// Why the store is not healed yet, if it is not.
async fn unhealed(
    cluster: &Cluster,
    client: &Client,
    files: &[Written],
    goal: usize,
) -> Option<String> {
    for (name, bytes) in files {
        let entry = client.stat(&path(name)).await.ok()?;
        for (index, chunk) in entry.chunks.iter().enumerate() {
            let start = index * CHUNK_BYTES as usize;
            let expected = &bytes[start..bytes.len().min(start + CHUNK_BYTES as usize)];
            let replicas = cluster.replicas_of(client, chunk.handle).await;
            let good = replicas
                .iter()
                .filter(|(_, version, data)| *version == chunk.version && data == expected)
                .count();
            if good != goal || replicas.len() != goal {
                let seen: Vec<(String, u64, usize)> = replicas
                    .iter()
                    .map(|(u, v, d)| (u.clone(), *v, d.len()))
                    .collect();
                return Some(format!(
                    "chunk {} of {name} (version {}): {good} good of {goal}, replicas {seen:?}",
                    chunk.handle, chunk.version
                ));
            }
            let located = client.locate(&path(name), index as u64, false).await.ok()?;
            for url in &located.replicas {
                match client
                    .read_replica(url, chunk.handle, chunk.version, 0, CHUNK_BYTES)
                    .await
                {
                    Ok((data, _)) if data == expected => {}
                    other => {
                        return Some(format!(
                            "the master names {url} for chunk {}, which answers {:?}",
                            chunk.handle,
                            other.map(|(d, v)| (d.len(), v))
                        ));
                    }
                }
            }
        }
    }
    None
}

/// Waits until the store is healed; fails with what is missing if it does
/// not heal in time.
async fn wait_healed(cluster: &Cluster, client: &Client, files: &[Written], goal: usize) {
    let start = tokio::time::Instant::now();
    loop {
        let Some(missing) = unhealed(cluster, client, files, goal).await else {
            return;
        };
        if start.elapsed() > HEAL_DEADLINE {
            cluster.fail(format!("not healed after {HEAL_DEADLINE:?}: {missing}"));
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// The bytes of every file read through the client, each as written.
async fn check_reads(cluster: &Cluster, client: &mut Client, files: &[Written]) {
    for (name, bytes) in files {
        match client.read(&path(name), 0, bytes.len() as u64).await {
            Ok(data) if data == *bytes => {}
            Ok(data) => cluster.fail(format!("{name} read back {} other bytes", data.len())),
            Err(error) => cluster.fail(format!("{name} cannot be read: {error}")),
        }
    }
}

/// The live chunkservers that answer with a replica of `handle`.
async fn holders_of(cluster: &Cluster, client: &Client, handle: u64) -> Vec<String> {
    let replicas = cluster.replicas_of(client, handle).await;
    replicas.into_iter().map(|(url, _, _)| url).collect()
}

/// Which chunkservers hold each chunk of `files` (live ones that answer).
async fn holders(cluster: &Cluster, client: &Client, files: &[Written]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (name, _) in files {
        for chunk in client.stat(&path(name)).await.unwrap().chunks {
            found.push(holders_of(cluster, client, chunk.handle).await);
        }
    }
    found
}

/// Flips one byte in block 1 of a replica's data file.
fn flip_a_byte(disk: &dyn Disk, handle: u64) {
    flip(disk, handle, 70_000);
}

/// The healing reports of every master: the most clones ever in flight on
/// one chunkserver, and the clones started (each master's in order).
async fn healing_reports(cluster: &Cluster) -> (usize, Vec<cairn_fs::CloneRecord>) {
    let masters: Vec<_> = cluster
        .masters
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    let (mut peak, mut history) = (0, Vec::new());
    for master in masters {
        if let Some(status) = master.healing_status().await {
            peak = peak.max(status.peak_per_server);
            history.extend(status.history);
        }
    }
    (peak, history)
}

/// A cluster of `servers` chunkservers with `count` two-chunk files
/// `/f0`.. written through a client: the cluster, the client, the files.
async fn cluster_with_files(servers: usize, count: usize) -> (Arc<Cluster>, Client, Vec<Written>) {
    let cluster = Arc::new(Cluster::start(servers));
    let mut client = cluster.client("client", DEADLINE);
    let (client, files) = cluster
        .run("client", async move {
            let files = write_files(&mut client, "f", count, 1).await;
            (client, files)
        })
        .await;
    (cluster, client, files)
}

/// F5: a chunkserver is down while files are written and rewritten; the
/// store re-replicates onto the others, and when it returns its stale
/// replicas are replaced or deleted: every file reads back from every
/// replica the master names, and no live server keeps an old version.
#[madsim::test]
async fn a_returning_chunkserver_s_stale_replicas_are_replaced_or_deleted() {
    let cluster = Arc::new(Cluster::start(4));
    let mut client = cluster.client("client", DEADLINE);
    let files = cluster
        .run("client", async move {
            let files = write_files(&mut client, "a", 3, 1).await;
            (client, files)
        })
        .await;
    cluster.kill(&cs_name(0));
    let checker = cluster.clone();
    let files = cluster
        .run("client", async move {
            let (mut client, mut files) = files;
            files.extend(write_files(&mut client, "b", 3, 10).await);
            // Rewritten while cs0 is down: its replicas of a0 go stale.
            let again = pattern(FILE_BYTES, 99);
            client.write(&path("/a0"), 0, &again).await.unwrap();
            files[0].1 = again;
            wait_healed(&checker, &client, &files, 3).await;
            (client, files)
        })
        .await;
    cluster.restart(&cs_name(0));
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let (mut client, files) = files;
            // cs0 reports its old replicas; they go.
            sleep(Duration::from_secs(1)).await;
            wait_healed(&checker, &client, &files, 3).await;
            check_reads(&checker, &mut client, &files).await;
        })
        .await;
    cluster.check_no_split_brain();
}

/// F6: a chunkserver is down while files are deleted. When it returns,
/// its replicas of the deleted files (orphans) are deleted, as are the
/// other servers'; the kept file is untouched.
#[madsim::test]
async fn replicas_of_files_deleted_while_a_chunkserver_was_down_are_deleted() {
    let cluster = Arc::new(Cluster::start(3));
    let mut client = cluster.client("client", DEADLINE);
    let (client, doomed, kept) = cluster
        .run("client", async move {
            let doomed = write_files(&mut client, "d", 3, 1).await;
            let kept = write_files(&mut client, "keep", 1, 7).await;
            (client, doomed, kept)
        })
        .await;
    cluster.kill(&cs_name(2));
    let checker = cluster.clone();
    let client = cluster
        .run("client", async move {
            let mut client = client;
            let mut handles = Vec::new();
            for (name, _) in &doomed {
                let entry = client.stat(&path(name)).await.unwrap();
                handles.extend(entry.chunks.iter().map(|c| c.handle));
                client.delete(&path(name), false).await.unwrap();
            }
            sleep(Duration::from_secs(1)).await;
            (client, handles, doomed)
        })
        .await;
    cluster.restart(&cs_name(2));
    cluster
        .run("client", async move {
            let (mut client, handles, doomed) = client;
            let start = tokio::time::Instant::now();
            loop {
                let mut left = Vec::new();
                for &handle in &handles {
                    for (url, _, _) in checker.replicas_of(&client, handle).await {
                        left.push((handle, url));
                    }
                }
                if left.is_empty() {
                    break;
                }
                if start.elapsed() > HEAL_DEADLINE {
                    checker.fail(format!("orphans left after {HEAL_DEADLINE:?}: {left:?}"));
                }
                sleep(Duration::from_millis(250)).await;
            }
            for (name, _) in &doomed {
                if client.locate(&path(name), 0, false).await.is_ok() {
                    checker.fail(format!("{name} was deleted, yet located"));
                }
            }
            wait_healed(&checker, &client, &kept, 3).await;
            check_reads(&checker, &mut client, &kept).await;
        })
        .await;
}

/// F7: two of five chunkservers die at once, so some chunks are left with
/// one replica and others with two. No chunkserver is ever in more clones
/// than the setting, only chunks below their goal are cloned, and in the
/// end every chunk has three equal replicas.
#[madsim::test]
async fn chunks_left_with_one_or_two_replicas_are_cloned_within_the_limits() {
    let (cluster, client, files) = cluster_with_files(5, 6).await;
    let (client, files, holders) = cluster
        .run("client", {
            let checker = cluster.clone();
            async move {
                // Chunks placed before every server reported are healed
                // first.
                wait_healed(&checker, &client, &files, 3).await;
                let holders = holders(&checker, &client, &files).await;
                (client, files, holders)
            }
        })
        .await;
    // Two servers that share a chunk, while another chunk has one of them.
    let pair = (0..5)
        .flat_map(|a| (a + 1..5).map(move |b| (cs_url(a), cs_url(b))))
        .find(|(a, b)| {
            let both = |h: &Vec<String>| h.contains(a) && h.contains(b);
            let one = |h: &Vec<String>| h.contains(a) != h.contains(b);
            holders.iter().any(both) && holders.iter().any(one)
        });
    let Some((a, b)) = pair else {
        cluster.fail(format!(
            "no two servers leave chunks at 1 and 2 replicas: {holders:?}"
        ))
    };
    let earlier = healing_reports(&cluster).await.1.len();
    cluster.kill(&host(&a));
    cluster.kill(&host(&b));
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let mut client = client;
            wait_healed(&checker, &client, &files, 3).await;
            check_reads(&checker, &mut client, &files).await;
        })
        .await;
    let (peak, history) = healing_reports(&cluster).await;
    let limit = settings().clones_per_server;
    if peak > limit || peak == 0 {
        cluster.fail(format!(
            "{peak} clones at once on one chunkserver (limit {limit})"
        ));
    }
    // Every clone after the kills started below the goal. (The two
    // deaths are noticed up to a heartbeat apart, and the chunks the first
    // one left at two replicas are often all cloned before the second is
    // noticed, so which comes first is unit-tested in healer/tests.rs.)
    if let Some(record) = history[earlier..].iter().find(|r| r.good_before >= 3) {
        cluster.fail(format!("a chunk at its goal was cloned: {record:?}"));
    }
    if history.iter().any(|r| r.succeeded.is_none()) {
        cluster.fail(format!("clones still in flight once healed: {history:?}"));
    }
}

/// F8: one replica's disk is wiped and another's has a flipped bit in a
/// block; the third is intact. Readers never get bad bytes, and the
/// master rebuilds both from the intact one.
#[madsim::test]
async fn a_wiped_and_a_corrupt_replica_are_rebuilt_from_the_intact_one() {
    let (cluster, client, files) = cluster_with_files(3, 2).await;
    let (client, files, handle) = cluster
        .run("client", async move {
            let entry = client.stat(&path(&files[0].0)).await.unwrap();
            (client, files, entry.chunks[0].handle)
        })
        .await;
    cluster.kill(&cs_name(0));
    wipe(&cluster.world.lock().unwrap().disk(&cs_name(0)));
    cluster.restart(&cs_name(0));
    flip_a_byte(&cluster.world.lock().unwrap().disk(&cs_name(1)), handle);
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let mut client = client;
            // A reader meets the flipped bit: it gets an error, not the bytes.
            let direct = client
                .read_replica(&cs_url(1), handle, 0, 0, CHUNK_BYTES)
                .await;
            if direct.is_ok() {
                checker.fail("the corrupt replica served its bytes".into());
            }
            check_reads(&checker, &mut client, &files).await;
            wait_healed(&checker, &client, &files, 3).await;
            check_reads(&checker, &mut client, &files).await;
        })
        .await;
}

/// A clone whose source fails its checksums leaves nothing on the target
/// (nothing reported, nothing to count), and the target is still free to
/// take a good copy.
#[madsim::test]
async fn a_clone_from_a_corrupt_source_leaves_no_replica() {
    let (cluster, client, files) = cluster_with_files(4, 1).await;
    let checker = cluster.clone();
    let (client, handle, version, holders) = cluster
        .run("client", {
            let files = files.clone();
            async move {
                let chunk = client.stat(&path(&files[0].0)).await.unwrap().chunks[0];
                let holders = holders_of(&checker, &client, chunk.handle).await;
                (client, chunk.handle, chunk.version, holders)
            }
        })
        .await;
    let source = holders[0].clone();
    let Some(target) = (0..4).map(cs_url).find(|url| !holders.contains(url)) else {
        cluster.fail(format!("every server holds chunk {handle}: {holders:?}"))
    };
    flip_a_byte(&cluster.world.lock().unwrap().disk(&host(&source)), handle);
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let peer = RpcClient::new(target.clone(), ClientOptions::default()).unwrap();
            let request = CloneRequest {
                handle,
                version,
                length: CHUNK_BYTES,
                source: source.clone(),
            };
            let cloned = peer
                .call(request, |c, r| async move {
                    ChunkClient::new(c).clone_replica(r).await
                })
                .await;
            if cloned.is_ok() {
                checker.fail(format!("a clone from corrupt {source} succeeded"));
            }
            if client.read_replica(&target, handle, 0, 0, 10).await.is_ok() {
                checker.fail(format!("{target} holds a replica after a failed clone"));
            }
            // Bad requests change nothing either.
            let bad = [(CHUNK_BYTES + 1, source.clone()), (10, target.clone())];
            for (length, from) in bad {
                let request = CloneRequest {
                    handle,
                    version,
                    length,
                    source: from,
                };
                let refused = peer
                    .call(request, |c, r| async move {
                        ChunkClient::new(c).clone_replica(r).await
                    })
                    .await;
                if refused.is_ok() {
                    checker.fail(format!("a clone of {length} bytes was taken"));
                }
            }
            // The corrupt source set its replica aside; the healer copies
            // the chunk from a good one onto it or the target.
            wait_healed(&checker, &client, &files, 3).await;
        })
        .await;
}

/// `setrep`: a file's goal raised to 4 of 5 chunkservers gets a fourth
/// replica of every chunk; lowered to 2, the extra ones are deleted (the
/// fullest servers' first); its other files keep 3; a bad goal is refused
/// and changes nothing.
#[madsim::test]
async fn a_replication_goal_raised_and_lowered_is_met() {
    let cluster = Arc::new(Cluster::start(5));
    let mut client = cluster.client("client", DEADLINE);
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let files = write_files(&mut client, "f", 2, 1).await;
            let (one, other) = (&files[..1], &files[1..]);
            let refused = client.set_replication(&path(&one[0].0), 17).await;
            if code(refused.as_ref().err().unwrap())
                != Some(cairn_rpc::fs::FsErrorCode::BadReplication)
            {
                checker.fail(format!("a goal of 17 was not refused as such: {refused:?}"));
            }
            if client.set_replication(&path("/"), 2).await.is_ok() {
                checker.fail("a directory took a replication goal".into());
            }
            client.set_replication(&path(&one[0].0), 4).await.unwrap();
            if client.stat(&path(&one[0].0)).await.unwrap().replication != 4 {
                checker.fail("stat does not show the new goal".into());
            }
            wait_healed(&checker, &client, one, 4).await;
            client.set_replication(&path(&one[0].0), 2).await.unwrap();
            wait_healed(&checker, &client, one, 2).await;
            wait_healed(&checker, &client, other, 3).await;
            check_reads(&checker, &mut client, &files).await;
        })
        .await;
}

/// A clone reads from its source no faster than `clone_bytes_per_sec`
/// (GFS §4.3: re-replication throttled so clients keep their bandwidth):
/// a chunk of 256 KiB at 128 KiB/s takes two seconds, not much more.
#[madsim::test]
async fn a_clone_reads_no_faster_than_the_clone_rate() {
    const RATE: u64 = 128 << 10;
    let settings = cairn_fs::FsSettings {
        clone_bytes_per_sec: RATE,
        // The healer stays out of the way: only the clone below runs.
        clones_per_server: 0,
        ..settings()
    };
    let cluster = Arc::new(Cluster::start_with_settings(4, settings));
    let mut client = cluster.client("client", DEADLINE);
    let checker = cluster.clone();
    cluster
        .run("client", async move {
            let files = write_files(&mut client, "f", 1, 1).await;
            let chunk = client.stat(&path(&files[0].0)).await.unwrap().chunks[0];
            let holders = holders_of(&checker, &client, chunk.handle).await;
            let Some(target) = (0..4).map(cs_url).find(|url| !holders.contains(url)) else {
                checker.fail(format!("every server holds chunk {}", chunk.handle))
            };
            let peer = RpcClient::new(target.clone(), ClientOptions::default()).unwrap();
            let request = CloneRequest {
                handle: chunk.handle,
                version: chunk.version,
                length: CHUNK_BYTES,
                source: holders[0].clone(),
            };
            let start = tokio::time::Instant::now();
            peer.call(request, |c, r| async move {
                ChunkClient::new(c).clone_replica(r).await
            })
            .await
            .unwrap();
            let took = start.elapsed();
            let least = Duration::from_secs_f64(CHUNK_BYTES as f64 / RATE as f64);
            if took < least || took > least * 2 {
                checker.fail(format!(
                    "a clone of {CHUNK_BYTES} bytes at {RATE} bytes/s took {took:?}"
                ));
            }
            match client
                .read_replica(&target, chunk.handle, chunk.version, 0, CHUNK_BYTES)
                .await
            {
                Ok((data, _)) if data[..] == files[0].1[..CHUNK_BYTES as usize] => {}
                other => checker.fail(format!(
                    "the clone holds other bytes: {:?}",
                    other.map(|(d, v)| (d.len(), v))
                )),
            }
        })
        .await;
}
