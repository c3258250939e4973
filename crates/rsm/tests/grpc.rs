//! The runtime over real gRPC on loopback and real files: a 3-node group
//! elects a leader, applies commands, serves linearizable reads, survives
//! the loss of its leader, and a restarted node catches up from its disk.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_raft::{LogIndex, Role};
use cairn_rsm::{LocalNet, Node, NodeConfig, StateMachine, SubmitError};
use cairn_storage::{MemDisk, RealDisk};

/// Sums the numbers it applies; answers with the running sum.
#[derive(Default)]
struct Sum(u64);

impl StateMachine for Sum {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        self.0 += u64::from_le_bytes(command.try_into().unwrap_or_default());
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }

    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        self.0 = u64::from_le_bytes(snapshot.try_into().map_err(|_| "bad snapshot")?);
        Ok(())
    }
}

fn number(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn leader_of(nodes: &[Option<Node<Sum>>]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.status().role == Role::Leader))
}

async fn start(
    id: u64,
    peers: &BTreeMap<u64, String>,
    listener: tokio::net::TcpListener,
    root: &std::path::Path,
) -> (Node<Sum>, cairn_rpc::ServerTask) {
    let mut config = NodeConfig::new(id, peers.clone(), "raft");
    config.max_raft_state = 4096; // snapshot often
    let disk = Arc::new(RealDisk::new(root.join(format!("node{id}"))).unwrap());
    let node = Node::start(config, disk, Sum::default()).unwrap();
    let router = tonic::transport::Server::builder().add_service(node.raft_service());
    let (_, server) = cairn_rpc::serve_on(router, listener).unwrap();
    (node, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc_survive_the_loss_of_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, format!("http://{}", listener.local_addr().unwrap()));
        listeners.push(listener);
    }
    let mut nodes: Vec<Option<Node<Sum>>> = Vec::new();
    let mut servers = Vec::new();
    for (id, listener) in (1..=3u64).zip(listeners) {
        let (node, server) = start(id, &peers, listener, root.path()).await;
        nodes.push(Some(node));
        servers.push(Some(server));
    }
    let leader = wait_for("a leader", || leader_of(&nodes)).await;
    let node = nodes[leader].clone().unwrap();
    let mut expected = 0;
    for n in 1..=200u64 {
        expected += n;
        let output = node
            .submit(number(n), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(output, number(expected));
    }
    assert_eq!(
        node.read(|sum| sum.0, Duration::from_secs(5))
            .await
            .unwrap(),
        expected
    );
    // A follower refuses and names the leader.
    let follower = (leader + 1) % 3;
    let refused = nodes[follower]
        .as_ref()
        .unwrap()
        .submit(number(1), Duration::from_secs(5))
        .await;
    assert_eq!(
        refused,
        Err(SubmitError::NotLeader {
            hint: Some(leader as u64 + 1)
        })
    );
    assert!(
        node.status().snapshot_index > 0,
        "the Raft state passed max_raft_state: a snapshot was taken"
    );

    // The leader goes away; the others elect a new one and go on.
    node.shutdown().await;
    servers[leader].take().unwrap().abort();
    nodes[leader] = None;
    let new_leader = wait_for("a new leader", || leader_of(&nodes)).await;
    let node = nodes[new_leader].clone().unwrap();
    loop {
        match node.submit(number(1000), Duration::from_secs(5)).await {
            Ok(output) => {
                expected += 1000;
                assert_eq!(output, number(expected));
                break;
            }
            Err(SubmitError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("submit failed: {error}"),
        }
    }
    // The old leader restarts from its disk and catches up.
    let listener =
        tokio::net::TcpListener::bind(peers[&(leader as u64 + 1)].trim_start_matches("http://"))
            .await
            .unwrap();
    let (restarted, server) = start(leader as u64 + 1, &peers, listener, root.path()).await;
    servers[leader] = Some(server);
    let commit = node.status().commit;
    wait_for("the restarted node to catch up", || {
        (restarted.status().applied >= commit).then_some(())
    })
    .await;
    for server in servers.into_iter().flatten() {
        server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_net_group_applies_in_order() {
    let net = LocalNet::new();
    let peers: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("local://{id}"))).collect();
    let nodes: Vec<Option<Node<Sum>>> = (1..=3)
        .map(|id| {
            let config = NodeConfig::new(id, peers.clone(), "raft");
            Some(Node::start_local(config, Arc::new(MemDisk::new()), Sum::default(), &net).unwrap())
        })
        .collect();
    let leader = wait_for("a leader", || leader_of(&nodes)).await;
    let node = nodes[leader].clone().unwrap();
    let tasks: Vec<_> = (0..32u64)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move {
                node.submit(number(1), Duration::from_secs(5))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outputs = Vec::new();
    for task in tasks {
        outputs.push(u64::from_le_bytes(
            task.await.unwrap()[..].try_into().unwrap(),
        ));
    }
    outputs.sort_unstable();
    assert_eq!(
        outputs,
        (1..=32).collect::<Vec<_>>(),
        "each command saw the sum after it, once"
    );
}
