//! A misconfigured group over real gRPC says what is wrong in its logs
//! (issue 19: such a node "runs silently as a follower with no leader"):
//! a peer list naming a node that never answers, and a second process
//! running with a node's id at another node's address.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_raft::LogIndex;
use cairn_rsm::{Node, NodeConfig, StateMachine};
use cairn_storage::MemDisk;

struct Nothing;

impl StateMachine for Nothing {
    fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Bytes {
        Bytes::new()
    }
    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }
    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        Ok(())
    }
}

/// Everything logged by this test binary, for the tests to search.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
}

/// Waits until a logged line contains every one of `words`; returns it.
async fn logged(words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).to_string();
        if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?} within 20 s; the logs:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Node `id` of `peers`, serving on `listener`.
fn start(
    id: u64,
    peers: &BTreeMap<u64, String>,
    listener: tokio::net::TcpListener,
) -> (Node<Nothing>, cairn_rpc::ServerTask) {
    let mut config = NodeConfig::new(id, peers.clone(), "raft");
    config.problem_log_interval = Duration::from_millis(300);
    let node = Node::start(config, Arc::new(MemDisk::new()), Nothing).unwrap();
    let router = tonic::transport::Server::builder().add_service(node.raft_service());
    let (_, server) = cairn_rpc::serve_on(router, listener).unwrap();
    (node, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_leader_names_the_peers_that_do_not_answer() {
    logs();
    let (own, own_url) = listener().await;
    let (missing, missing_url) = listener().await;
    drop(missing); // nothing listens there
    let peers = BTreeMap::from([(1, own_url), (2, missing_url.clone())]);
    let (_node, _server) = start(1, &peers, own);
    let line = logged(&["node 1 has had no leader", &missing_url]).await;
    assert!(
        line.contains("node 2 at")
            && line.contains("needs 2 of the 2 nodes")
            && line.contains("start the missing nodes"),
        "{line}"
    );
}

/// Nodes 1 and 2 at their addresses, and a second node 2 at node 3's
/// address: the messages for node 3 reach a node 2, which refuses them and
/// says so; the real node 2 learns that node 3's address answers with its
/// own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_nodes_id_is_reported_by_both_sides() {
    logs();
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3 {
        let (listener, url) = listener().await;
        peers.insert(id, url);
        listeners.push(listener);
    }
    let third = listeners.pop().unwrap();
    let second = listeners.pop().unwrap();
    let first = listeners.pop().unwrap();
    let _nodes = [
        start(1, &peers, first),
        start(2, &peers, second),
        start(2, &peers, third),
    ];
    let line = logged(&["node 2 refused a message batch", "a message for node 3"]).await;
    assert!(line.contains("ERROR"), "{line}");
    let line = logged(&[
        &format!("node 3's address {}", peers[&3]),
        "this node's own id 2",
    ])
    .await;
    assert!(
        line.contains("ERROR") && line.contains("two processes run as node 2"),
        "{line}"
    );
}
