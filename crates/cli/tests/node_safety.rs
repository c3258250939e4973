//! A careless operator against real `cairn kv serve` processes: a node
//! restarted with the wrong `--peers`, a second process on a live node's
//! data directory after its files were tampered with, a node started empty
//! in place of a damaged data directory.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_kv::{Client, ClientConfig};
use common::{CAIRN, NodeProcesses, free_ports, wait_exit};

fn start_cluster() -> NodeProcesses {
    NodeProcesses::start(&["kv", "serve", "--max-raft-state", "20000"], 3)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

/// Runs `cairn kv serve` for node 1 with `peers` and `extra` flags on
/// `data_dir`, waits for it to exit (it must), and returns its stderr.
fn serve_must_fail(peers: &str, data_dir: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(CAIRN)
        .args(["kv", "serve", "--id", "1", "--peers", peers])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the node started: {stderr}");
    stderr
}

/// Bug 10 of the reliability review, the operator's sequence: node 1 is
/// restarted with `--peers` naming only itself. Before, it elected itself
/// and acknowledged a write the majority never saw (and later overwrote
/// theirs); now it refuses to start and says what to do.
#[test]
fn a_node_restarted_with_other_peers_refuses_to_start() {
    let mut cluster = start_cluster();
    ok(cluster.cli(&["kv", "put", "k", "majority"]), "put");
    cluster.kill(1);
    let alone = format!("1={}", cluster.urls[0]);
    let stderr = serve_must_fail(&alone, &cluster.node_dir(1), &[]);
    assert!(
        stderr.contains("[1, 2, 3]") && stderr.contains("--peers"),
        "the refusal names the stored members and the fix: {stderr}"
    );
    ok(
        cluster.cli(&["kv", "put", "k", "second"]),
        "put on the majority",
    );
    cluster.start_node(1);
    assert_eq!(ok(cluster.cli(&["kv", "get", "k"]), "get"), "second");
}

/// Bug 14: the lock was a file whose existence was checked, so removing it
/// let a second process open a live node's data. Now the directory itself
/// is locked for the life of the process.
#[test]
fn a_live_nodes_data_cannot_be_opened_twice_even_after_its_files_are_removed() {
    let cluster = start_cluster();
    ok(cluster.cli(&["kv", "put", "k", "v"]), "put");
    let dir = cluster.node_dir(1);
    let _ = std::fs::remove_file(dir.join("LOCK"));
    let peers: Vec<String> = cluster
        .urls
        .iter()
        .enumerate()
        .map(|(i, url)| format!("{}={url}", i + 1))
        .collect();
    let listen = format!("127.0.0.1:{}", free_ports(1)[0]);
    let stderr = serve_must_fail(&peers.join(","), &dir, &["--listen", &listen]);
    assert!(
        stderr.contains("another cairn node is using"),
        "the refusal says why: {stderr}"
    );
}

/// Bug 12: a node started empty in place of a damaged data directory (the
/// recovery the corruption error recommends) stayed at commit 0 while the
/// leader sent it about 1,200 requests a second. It must catch up, from a
/// snapshot here (the leader's log is compacted), within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_empty_in_place_of_a_lost_one_catches_up() {
    let mut cluster = start_cluster();
    let value = "v".repeat(500);
    for i in 0..100 {
        ok(
            cluster.cli(&["kv", "put", &format!("key{i}"), &value]),
            "put",
        );
    }
    cluster.kill(3);
    std::fs::remove_dir_all(cluster.node_dir(3)).unwrap();
    cluster.start_node(3);
    let client = Client::new(&cluster.urls, ClientConfig::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leader_commit = futures_max_commit(&client).await;
        if let Ok(status) = client.status(2).await
            && leader_commit > 0
            && status.applied >= leader_commit
        {
            assert!(
                status.snapshot_index > 0,
                "it was sent a snapshot: {status:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the empty node did not catch up within 15 s; logs in {}",
            cluster.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill(1);
    assert_eq!(
        ok(
            cluster.cli(&["kv", "get", "key99"]),
            "get with node 3 in the quorum"
        ),
        value
    );
}

/// The highest commit index any of the first two nodes reports.
async fn futures_max_commit(client: &Client) -> u64 {
    let mut best = 0;
    for endpoint in 0..2 {
        if let Ok(status) = client.status(endpoint).await {
            best = best.max(status.commit);
        }
    }
    best
}
