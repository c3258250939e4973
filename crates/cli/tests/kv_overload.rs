//! The request bound on a 3-node key/value cluster over real gRPC on
//! loopback: with a tiny `max_concurrent_requests`, a burst of concurrent
//! writes gets some `overloaded` answers at once (none waits past its
//! deadline), and the cluster serves normally right after.
//!
//! The nodes run in this process and are served by
//! `cairn_rpc::serve_routes_on` (the serve path that carries the request
//! bound). `cairn kv serve` still passes a ready-made router to
//! `cairn_rpc::serve`, which applies the connection limits only.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_kv::{ClientConfig, KvServer};
use cairn_rpc::kv::kv_client::KvClient;
use cairn_rpc::kv::kv_server::KvServer as KvGrpcServer;
use cairn_rpc::kv::{Op, WriteRequest};
use cairn_rpc::tonic::Code;
use cairn_rpc::tonic::transport::Endpoint;
use cairn_rpc::{ServeOptions, ServerTask};
use cairn_rsm::NodeConfig;
use cairn_storage::MemDisk;

/// The bound under test: far below the burst.
const MAX_CONCURRENT_REQUESTS: usize = 2;
/// Concurrent writes in the burst.
const BURST: usize = 200;
/// How long the burst, and then the recovery, may take.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn start_cluster() -> (Vec<String>, Vec<KvServer>, Vec<ServerTask>) {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, format!("http://{}", listener.local_addr().unwrap()));
        listeners.push(listener);
    }
    let options = ServeOptions {
        max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
        ..ServeOptions::default()
    };
    let (mut servers, mut tasks) = (Vec::new(), Vec::new());
    for (id, listener) in (1..=3u64).zip(listeners) {
        let config = NodeConfig::new(id, peers.clone(), "raft");
        let server = KvServer::start(config, Arc::new(MemDisk::new())).unwrap();
        let routes = cairn_rpc::tonic::service::Routes::new(server.node().raft_service())
            .add_service(KvGrpcServer::new(server.clone()));
        let (_, task) = cairn_rpc::serve_routes_on(routes, listener, &options).unwrap();
        servers.push(server);
        tasks.push(task);
    }
    (peers.into_values().collect(), servers, tasks)
}

/// A put and a get through a clerk, which finds the leader and retries.
async fn put_and_get(endpoints: &[String], key: &[u8]) {
    let config = ClientConfig {
        call_timeout: Duration::from_secs(2),
        deadline: TEST_DEADLINE,
    };
    let mut clerk = cairn_kv::Client::new(endpoints, config).unwrap();
    clerk.put(key, b"value").await.unwrap();
    let value = clerk.get(key).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"value"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_request_bound_is_answered_overloaded_and_the_cluster_serves_after() {
    let (endpoints, servers, _tasks) = start_cluster().await;
    put_and_get(&endpoints, b"before").await;
    let leader = servers
        .iter()
        .position(|s| s.node().status().is_leader())
        .expect("a put succeeded, so there is a leader");
    let channel = Endpoint::from_shared(endpoints[leader].clone())
        .unwrap()
        .timeout(TEST_DEADLINE)
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let calls: Vec<_> = (0..BURST as u64)
        .map(|n| {
            let mut stub = KvClient::new(channel.clone());
            tokio::spawn(async move {
                let request = WriteRequest {
                    client_id: 1000 + n,
                    seq: 1,
                    op: Op::Put.into(),
                    key: format!("burst{n}").into(),
                    value: "v".into(),
                    ..Default::default()
                };
                stub.write(request).await
            })
        })
        .collect();
    let (mut ok, mut overloaded) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(status.message().starts_with("overloaded:"), "{status:?}");
                overloaded += 1;
            }
            Err(status) => panic!("neither an answer nor overloaded: {status:?}"),
        }
    }
    let took = started.elapsed();
    assert!(overloaded > 0, "{BURST} concurrent writes, none overloaded");
    assert!(ok > 0, "every write of the burst was refused");
    assert!(took < TEST_DEADLINE, "the burst took {took:?}");
    put_and_get(&endpoints, b"after").await;
}
