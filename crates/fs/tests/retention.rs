//! Scenario G1 of the design notes (GFS §4.4), on the simulator: a delete
//! keeps the file or tree in the trash, out of every listing; `undelete`
//! restores it byte for byte within the retention (20 s here); after it the
//! leader purges it, undelete refuses, and its chunks are no longer
//! referenced (`Namespace::references`, the rule orphan deletion follows),
//! also with a chunkserver down across the purge and a master leader
//! restarted between the delete and the purge; then the orphans' replicas
//! are deleted from every chunkserver, the one that was down included.
#![cfg(madsim)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_fs::Client;
use cairn_rpc::fs::FsErrorCode;
use common::*;
use tokio::time::sleep;

const DEADLINE: Duration = Duration::from_secs(60);

/// Long enough after a deletion for its retention to end and the leader's
/// next purge rounds to have run.
fn past_the_retention() -> Duration {
    RETENTION + settings().purge_interval() * 3
}

/// Writes `bytes` to a new file at `at`; returns its chunk handles.
async fn put(client: &mut Client, at: &str, bytes: &[u8]) -> Vec<u64> {
    client.create(&path(at)).await.unwrap();
    client.write(&path(at), 0, bytes).await.unwrap();
    let entry = client.stat(&path(at)).await.unwrap();
    entry.chunks.iter().map(|c| c.handle).collect()
}

/// Whether the leader's namespace still references each handle.
async fn referenced(cluster: &Cluster, handles: Vec<u64>) -> Vec<bool> {
    let leader = cluster
        .leader()
        .unwrap_or_else(|| cluster.fail("no master leads".into()));
    let master = cluster.masters.lock().unwrap()[leader].clone().unwrap();
    master
        .node()
        .inspect(move |state| {
            let namespace = state.namespace();
            handles.iter().map(|&h| namespace.references(h)).collect()
        })
        .await
        .unwrap_or_else(|e| cluster.fail(format!("inspecting the leader: {e}")))
}

/// The refusal code of a failed call.
fn refusal<T: std::fmt::Debug>(result: Result<T, cairn_fs::ClientError>) -> FsErrorCode {
    match result {
        Err(error) => code(&error).unwrap_or_else(|| panic!("not a refusal: {error}")),
        Ok(value) => panic!("expected a refusal, got {value:?}"),
    }
}

/// G1: delete, gone from the listing, undelete within the retention
/// restores the bytes; deleted again, a master leader restarted and a
/// chunkserver down across the purge; after the retention the deletion is
/// purged, undelete refuses it, its chunks are unreferenced, and the file
/// kept beside it still reads back whole.
#[madsim::test]
async fn a_deleted_file_comes_back_within_the_retention_and_is_purged_after_it() {
    let cluster = Arc::new(Cluster::start(4));
    let data = pattern(2 * CHUNK_BYTES as usize + 1000, 7);
    let kept = pattern(CHUNK_BYTES as usize / 2, 8);
    let mut client = cluster.client("client", DEADLINE);
    let kept_written = kept.clone();
    let (client, handles) = cluster
        .run("client", async move {
            client.mkdir(&path("/d"), false).await.unwrap();
            let handles = put(&mut client, "/d/f", &data).await;
            put(&mut client, "/d/keep", &kept_written).await;
            client.delete(&path("/d/f"), false).await.unwrap();
            let listed: Vec<String> = client
                .list(&path("/d"))
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.path)
                .collect();
            assert_eq!(listed, ["/d/keep"], "a deleted file is not listed");
            assert_eq!(
                refusal(client.stat(&path("/d/f")).await),
                FsErrorCode::NotFound
            );
            let trash = client.trash(&path("/")).await.unwrap();
            assert_eq!(trash.len(), 1);
            assert_eq!(trash[0].path, "/d/f");
            assert_eq!(
                trash[0].purge_at_ms - trash[0].deleted_at_ms,
                RETENTION.as_millis() as u64
            );
            client.undelete(&path("/d/f")).await.unwrap();
            let back = client
                .read(&path("/d/f"), 0, 4 * CHUNK_BYTES)
                .await
                .unwrap();
            assert!(back == data, "the undeleted file reads back byte for byte");
            assert!(client.trash(&path("/")).await.unwrap().is_empty());
            client.delete(&path("/d/f"), false).await.unwrap();
            (client, handles)
        })
        .await;
    assert!(
        referenced(&cluster, handles.clone())
            .await
            .iter()
            .all(|&r| r)
    );
    // The deletion survives a leader restart (it is in the log).
    if let Some(leader) = cluster.leader() {
        cluster.restart_master(leader);
    }
    // A chunkserver is down across the purge.
    let client = cluster
        .run("client", async move {
            sleep(RETENTION - Duration::from_secs(2)).await;
            client
        })
        .await;
    cluster.kill(&cs_name(0));
    let mut client = cluster
        .run("client", async move {
            sleep(past_the_retention() - RETENTION + Duration::from_secs(2)).await;
            client
        })
        .await;
    let unreferenced = referenced(&cluster, handles.clone()).await;
    if unreferenced.iter().any(|&r| r) {
        cluster.fail(format!(
            "chunks {handles:?} still referenced after the retention: {unreferenced:?}"
        ));
    }
    // The space comes back: every replica of the purged chunks is deleted
    // as an orphan, also on cs0, which was down across the purge.
    cluster.restart(&cs_name(0));
    let checker = cluster.clone();
    cluster
        .run("client", async move {
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
                if start.elapsed() > Duration::from_secs(30) {
                    checker.fail(format!("purged chunks still on disk 30 s later: {left:?}"));
                }
                sleep(Duration::from_millis(200)).await;
            }
            assert!(client.trash(&path("/")).await.unwrap().is_empty());
            assert_eq!(
                refusal(client.undelete(&path("/d/f")).await),
                FsErrorCode::NotInTrash
            );
            let read = client.read(&path("/d/keep"), 0, CHUNK_BYTES).await.unwrap();
            assert!(read == kept, "the file beside the purged one is intact");
        })
        .await;
    cluster.check_no_split_brain();
}

/// A tree deleted with -r is hidden whole and comes back whole; a path
/// deleted twice keeps both deletions and the latest comes back first;
/// undelete onto an existing path is refused; `--skip-trash` unreferences
/// the chunks at once.
#[madsim::test]
async fn trees_repeated_deletions_and_deleting_at_once() {
    let cluster = Cluster::start(3);
    let (one, two) = (pattern(3000, 1), pattern(5000, 2));
    let mut client = cluster.client("client", DEADLINE);
    let at_once = cluster
        .run("client", async move {
            client.mkdir(&path("/t/sub"), true).await.unwrap();
            put(&mut client, "/t/a", &one).await;
            put(&mut client, "/t/sub/b", &two).await;
            client.delete(&path("/t"), true).await.unwrap();
            assert!(client.list(&path("/")).await.unwrap().is_empty());
            client.undelete(&path("/t")).await.unwrap();
            assert!(client.read(&path("/t/a"), 0, 1 << 20).await.unwrap() == one);
            assert!(client.read(&path("/t/sub/b"), 0, 1 << 20).await.unwrap() == two);
            // Twice the same path: the latest first.
            client.delete(&path("/t/a"), false).await.unwrap();
            put(&mut client, "/t/a", &two).await;
            client.delete(&path("/t/a"), false).await.unwrap();
            assert_eq!(client.trash(&path("/t")).await.unwrap().len(), 2);
            client.undelete(&path("/t/a")).await.unwrap();
            assert!(client.read(&path("/t/a"), 0, 1 << 20).await.unwrap() == two);
            assert_eq!(
                refusal(client.undelete(&path("/t/a")).await),
                FsErrorCode::AlreadyExists
            );
            client
                .delete_skipping_trash(&path("/t/a"), false)
                .await
                .unwrap();
            client.undelete(&path("/t/a")).await.unwrap();
            assert!(client.read(&path("/t/a"), 0, 1 << 20).await.unwrap() == one);
            assert_eq!(
                refusal(client.undelete(&path("/never")).await),
                FsErrorCode::NotInTrash
            );
            let handles: Vec<u64> = client
                .stat(&path("/t/sub/b"))
                .await
                .unwrap()
                .chunks
                .iter()
                .map(|c| c.handle)
                .collect();
            client
                .delete_skipping_trash(&path("/t/sub"), true)
                .await
                .unwrap();
            assert!(client.trash(&path("/")).await.unwrap().is_empty());
            handles
        })
        .await;
    if referenced(&cluster, at_once).await.iter().any(|&r| r) {
        cluster.fail("a deletion with --skip-trash left its chunks referenced".into());
    }
}
