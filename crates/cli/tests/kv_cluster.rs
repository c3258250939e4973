//! The key/value service as real processes: a 3-node cluster of the built
//! `cairn` binary on loopback, written through the CLI and the library
//! clerk, its leader killed with SIGKILL and restarted, a node's log tail
//! torn, and bad requests refused with clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_kv::{Client, ClientConfig};
use common::{CAIRN, NodeProcesses, free_ports};

/// A 3-node key/value cluster of `cairn kv serve` processes.
struct Cluster(NodeProcesses);

impl std::ops::Deref for Cluster {
    type Target = NodeProcesses;
    fn deref(&self) -> &NodeProcesses {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut NodeProcesses {
        &mut self.0
    }
}

impl Cluster {
    fn start() -> Self {
        Self(NodeProcesses::start(
            &["kv", "serve", "--max-raft-state", "20000"],
            3,
        ))
    }

    fn client(&self) -> Client {
        Client::new(
            &self.urls,
            ClientConfig {
                deadline: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// The id of the node that reports itself leader (waits up to 20 s).
    async fn leader(&self, client: &Client) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for index in 0..self.urls.len() {
                if let Ok(status) = client.status(index).await
                    && status.role == "leader"
                {
                    return status.id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within 20 s; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_caught_up(&self, client: &Client, id: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let target = {
                let leader = self.leader(client).await;
                client
                    .status(leader as usize - 1)
                    .await
                    .map(|s| s.commit)
                    .unwrap_or(u64::MAX)
            };
            if let Ok(status) = client.status(id as usize - 1).await
                && status.applied >= target
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not catch up within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The newest write-ahead-log segment of a node.
fn last_segment(dir: &Path) -> PathBuf {
    let wal = dir.join("raft").join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments
        .pop()
        .unwrap_or_else(|| panic!("no segment in {}", wal.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_processes_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start();
    let mut client = cluster.client();

    // Writes through the CLI and the library.
    let put = cluster.cli(&["kv", "put", "greeting", "hello"]);
    assert!(
        put.status.success(),
        "cairn kv put failed: {}",
        stderr(&put)
    );
    assert_eq!(stdout(&cluster.cli(&["kv", "get", "greeting"])), "hello");
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        client
            .append(b"log", format!("{i},").as_bytes())
            .await
            .unwrap();
        acknowledged.push(i);
    }

    // SIGKILL the leader: writes resume at the new leader.
    let leader = cluster.leader(&client).await;
    cluster.kill(leader);
    for i in 100..200 {
        client
            .append(b"log", format!("{i},").as_bytes())
            .await
            .unwrap();
        acknowledged.push(i);
    }
    let new_leader = cluster.leader(&client).await;
    assert_ne!(new_leader, leader);
    let expected: String = acknowledged.iter().map(|i| format!("{i},")).collect();
    assert_eq!(
        client.get(b"log").await.unwrap().unwrap(),
        expected.as_bytes(),
        "an acknowledged write was lost"
    );

    // The old leader restarts from its disk and catches up.
    cluster.start_node(leader);
    cluster.wait_caught_up(&client, leader).await;

    // Tear the tail of a follower's log while it is down: it recovers.
    let victim = (1..=3).find(|&id| id != new_leader).unwrap();
    cluster.kill(victim);
    let segment = last_segment(&cluster.node_dir(victim));
    let length = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(length - 3).unwrap(); // a record cut short, as a crash mid-write leaves it
    drop(file);
    client.append(b"log", b"after-tear,").await.unwrap();
    cluster.start_node(victim);
    cluster.wait_caught_up(&client, victim).await;
    let value = client.get(b"log").await.unwrap().unwrap();
    assert!(value.ends_with(b"after-tear,"));
    assert!(value.starts_with(expected.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let cluster = Cluster::start();
    let mut client = cluster.client();
    client.put(b"k", b"v").await.unwrap();

    // An oversized value, through the library and the CLI.
    let big = vec![b'x'; (1 << 20) + 1];
    let error = client.put(b"k", &big).await.unwrap_err();
    assert!(
        error.to_string().contains("limited to 1048576 bytes"),
        "{error}"
    );
    let mut put = Command::new(CAIRN)
        .args(["kv", "put", "k", "-", "--endpoints", &cluster.endpoints()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), &big).unwrap();
    let output = put.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("values are limited"),
        "{}",
        stderr(&output)
    );
    // An empty key.
    let output = cluster.cli(&["kv", "put", "", "v"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("the key is empty"),
        "{}",
        stderr(&output)
    );
    // Nothing changed.
    assert_eq!(client.get(b"k").await.unwrap().unwrap(), &b"v"[..]);

    // An unknown flag is a usage error (exit status 2).
    let output = Command::new(CAIRN)
        .args(["kv", "put", "--frobnicate", "k", "v"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    // Unreachable endpoints: a clear error at once, well within the timeout.
    let port = free_ports(1)[0];
    let started = Instant::now();
    let output = Command::new(CAIRN)
        .args([
            "kv",
            "get",
            "k",
            "--endpoints",
            &format!("http://127.0.0.1:{port}"),
            "--timeout",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is the cluster running?"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Appends grow a value to the limit and no further: the largest value
/// reads back whole, and the append that would pass the limit is refused at
/// once (no retry loop) with the value unchanged, through the library and
/// the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_stop_at_the_value_limit_and_the_largest_value_reads_back() {
    let cluster = Cluster::start();
    let mut client = cluster.client();
    let quarter = vec![b'v'; cairn_kv::MAX_VALUE_BYTES / 4];
    for _ in 0..4 {
        client.append(b"big", &quarter).await.unwrap();
    }
    let value = client.get(b"big").await.unwrap().unwrap();
    assert_eq!(value.len(), cairn_kv::MAX_VALUE_BYTES);

    let started = Instant::now();
    let error = client.append(b"big", b"x").await.unwrap_err();
    assert!(
        matches!(error, cairn_kv::KvError::ValueTooLarge { .. }),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusal took {:?}",
        started.elapsed()
    );
    let output = cluster.cli(&["kv", "append", "big", "x"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("nothing was changed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(client.get(b"big").await.unwrap().unwrap(), value);
    // The client goes on working.
    client.put(b"small", b"ok").await.unwrap();
}
