//! The runtime over real gRPC on loopback and real files: a 3-node group
//! elects a leader, applies commands, serves linearizable reads, survives
//! the loss of its leader, and a restarted node catches up from its disk.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_raft::{LogIndex, Role};
use cairn_rpc::node::change_members_request::Change;
use cairn_rpc::node::members_client::MembersClient;
use cairn_rpc::node::{
    ChangeMembersRequest, JoinRequest, ListMembersRequest, MemberState, TransferLeaderRequest,
};
use cairn_rsm::{LocalNet, Node, NodeConfig, StateMachine, SubmitError};
use cairn_storage::{MemDisk, RealDisk};
use tonic::Code;

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
    let router = tonic::transport::Server::builder()
        .add_service(node.raft_service())
        .add_service(node.members_service());
    let (_, server) = cairn_rpc::serve_on(router, listener).unwrap();
    (node, server)
}

/// Nodes 1-3 on loopback ports, with their servers and URLs.
async fn start_three(
    root: &std::path::Path,
) -> (
    Vec<Option<Node<Sum>>>,
    Vec<Option<cairn_rpc::ServerTask>>,
    BTreeMap<u64, String>,
) {
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
        let (node, server) = start(id, &peers, listener, root).await;
        nodes.push(Some(node));
        servers.push(Some(server));
    }
    (nodes, servers, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc_survive_the_loss_of_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let (mut nodes, mut servers, peers) = start_three(root.path()).await;
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

/// A `Members` client of the node at `url`.
async fn members(url: &str) -> MembersClient<tonic::transport::Channel> {
    MembersClient::connect(url.to_string()).await.unwrap()
}

fn ids(members: &[MemberState]) -> Vec<u64> {
    members.iter().map(|m| m.id).collect()
}

/// The `Members` service: a follower lists and refuses changes naming the
/// leader's URL; the leader joins new nodes under ids never used (a
/// retried join gets its first id), refuses a voter's address, a
/// promotion of a learner never heard from and a transfer to a learner
/// with what to do, and transfers leadership; every node's status lists
/// the members added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_service_changes_the_group_and_refuses_clearly() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, _servers, peers) = start_three(root.path()).await;
    let leader = wait_for("a leader", || leader_of(&nodes)).await as u64 + 1;
    let follower = leader % 3 + 1;
    nodes[leader as usize - 1]
        .as_ref()
        .unwrap()
        .submit(number(1), Duration::from_secs(5))
        .await
        .unwrap();
    let (at_leader, at_follower) = (&peers[&leader], &peers[&follower]);

    let list = members(at_follower)
        .await
        .list(ListMembersRequest {})
        .await
        .unwrap();
    let list = list.into_inner();
    assert_eq!((list.answered_by, list.leader), (follower, leader));
    let urls: Vec<String> = list.voters.iter().map(|m| m.url.clone()).collect();
    assert_eq!(urls, peers.values().cloned().collect::<Vec<_>>());

    let new_url = "http://127.0.0.1:1";
    let join = |url: &str| JoinRequest { url: url.into() };
    let refused = members(at_follower)
        .await
        .join(join(new_url))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let hint = refused.metadata().get(cairn_rpc::LEADER_URL_KEY).unwrap();
    assert_eq!(hint.to_str().unwrap(), at_leader);

    let mut client = members(at_leader).await;
    let joined = client.join(join(new_url)).await.unwrap().into_inner();
    assert_eq!(joined.added, 4);
    assert_eq!(ids(&joined.learners), [4]);
    assert!(joined.learners[0].lag.is_some(), "{joined:?}");
    // A join retried (its answer lost) gets the same id; a voter's address
    // is refused.
    let retried = client.join(join(new_url)).await.unwrap().into_inner();
    assert_eq!((retried.added, ids(&retried.learners)), (4, vec![4]));
    let refused = client.join(join(at_follower)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("remove it first"), "{refused:?}");
    // Every node's status lists the new member with its URL (a node's
    // not-leader answers name the leader from the same list).
    wait_for("every node lists node 4", || {
        let listed = |n: &Option<Node<Sum>>| {
            let members = n.as_ref().unwrap().status_reply().members;
            members.iter().any(|m| m.id == 4 && m.url == new_url)
        };
        nodes.iter().all(listed).then_some(())
    })
    .await;
    let promote = |id| ChangeMembersRequest {
        change: Some(Change::Promote(id)),
    };
    let refused = client.change(promote(4)).await.unwrap_err();
    assert!(
        refused.message().contains("has not answered the leader"),
        "{refused:?}"
    );
    let refused = client
        .transfer_leader(TransferLeaderRequest { to: 4 })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("promote it first"),
        "{refused:?}"
    );

    let remove = ChangeMembersRequest {
        change: Some(Change::Remove(4)),
    };
    let removed = client.change(remove).await.unwrap().into_inner();
    assert_eq!(removed.removed, [4]);
    let again = client.join(join(new_url)).await.unwrap().into_inner();
    assert_eq!(again.added, 5, "ids are never reused");

    let moved = client
        .transfer_leader(TransferLeaderRequest { to: follower })
        .await;
    assert_eq!(moved.unwrap().into_inner().leader, follower);
}
