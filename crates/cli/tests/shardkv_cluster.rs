//! The sharded store as real processes: 3 shard controllers and 3 replica
//! groups of 3 `cairn` servers each on loopback, written to without pause
//! while groups join and leave and one whole group is killed with SIGKILL
//! and restarted; every acknowledged append is there, once, in order, at
//! the end.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_shardkv::{Client, ClientConfig, shard_of};
use common::NodeProcesses;

fn start_group(gid: u64, controllers: &NodeProcesses) -> NodeProcesses {
    NodeProcesses::start(
        &[
            "shardkv",
            "serve",
            "--gid",
            &gid.to_string(),
            "--controllers",
            &controllers.endpoints(),
        ],
        3,
    )
}

fn client(controllers: &NodeProcesses) -> Client {
    let settings = ClientConfig {
        deadline: Duration::from_secs(60),
        ..ClientConfig::default()
    };
    Client::new(&controllers.urls, shard_of, settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_joins_leaves_and_a_killed_group() {
    let controllers = NodeProcesses::start(&["shardctl", "serve"], 3);
    let mut groups: BTreeMap<u64, NodeProcesses> = (1..=3)
        .map(|gid| (gid, start_group(gid, &controllers)))
        .collect();
    let mut admin = cairn_shardctrler::Client::new(
        &controllers.urls,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .unwrap();
    let servers = |gid: u64, groups: &BTreeMap<u64, NodeProcesses>| {
        BTreeMap::from([(gid, groups[&gid].urls.clone())])
    };
    admin.join(&servers(1, &groups)).await.unwrap();

    // Writers: each appends to its own keys and remembers what it expects.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (mut client, stop) = (client(&controllers), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut expected: BTreeMap<String, String> = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-k{}", i % 8);
                let piece = format!("{i},");
                client
                    .append(key.as_bytes(), piece.as_bytes())
                    .await
                    .unwrap();
                expected.entry(key).or_default().push_str(&piece);
                i += 1;
            }
            expected
        }));
    }

    let pause = || tokio::time::sleep(Duration::from_millis(700));
    pause().await;
    admin.join(&servers(2, &groups)).await.unwrap();
    pause().await;
    admin.join(&servers(3, &groups)).await.unwrap();
    pause().await;
    admin.leave(&[1]).await.unwrap();
    pause().await;
    // Group 2 dies whole while it holds shards; writes to its shards wait.
    for id in 1..=3 {
        groups.get_mut(&2).unwrap().kill(id);
    }
    admin.join(&servers(1, &groups)).await.unwrap();
    pause().await;
    for id in 1..=3 {
        groups.get_mut(&2).unwrap().start_node(id);
    }
    pause().await;
    admin.leave(&[3]).await.unwrap();
    pause().await;
    stop.store(true, Ordering::Relaxed);

    let mut reader = client(&controllers);
    let mut checked = 0;
    for writer in writers {
        let expected = writer.await.unwrap();
        for (key, value) in expected {
            let got = reader
                .get(key.as_bytes())
                .await
                .unwrap()
                .unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&got),
                value,
                "key {key}: logs in {}",
                groups[&1].dir.path().display()
            );
            checked += value.matches(',').count();
        }
    }
    assert!(checked > 20, "only {checked} appends were made");
    eprintln!("{checked} acknowledged appends, all present once and in order");

    // The CLI reads the same data through the controllers.
    let output = controllers.cli(&["kv", "get", "w0-k0"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got = reader.get(b"w0-k0").await.unwrap().unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&got)
    );
}

/// A hand-over of shards holding megabytes: 30 values of about 1 MB in one
/// group, then a second group joins and takes half the shards (each shard
/// moves in its own calls and log entries, chunks of at most
/// `MAX_CHUNK_BYTES`, well past gRPC's default 4 MiB message limit in
/// total).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_of_shards_move_between_groups() {
    let controllers = NodeProcesses::start(&["shardctl", "serve"], 3);
    let groups: BTreeMap<u64, NodeProcesses> = (1..=2)
        .map(|gid| (gid, start_group(gid, &controllers)))
        .collect();
    let mut admin = cairn_shardctrler::Client::new(
        &controllers.urls,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .unwrap();
    admin
        .join(&BTreeMap::from([(1, groups[&1].urls.clone())]))
        .await
        .unwrap();
    let mut client = client(&controllers);
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 1_000_000];
    for i in 0..30 {
        client
            .put(format!("big-{i}").as_bytes(), &value(i))
            .await
            .unwrap();
    }
    admin
        .join(&BTreeMap::from([(2, groups[&2].urls.clone())]))
        .await
        .unwrap();
    let config = admin.query(None).await.unwrap();
    assert_eq!(config.shards_of(2).len(), 5);
    for i in 0..30 {
        let got = client
            .get(format!("big-{i}").as_bytes())
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(
            got[..] == value(i)[..],
            "big-{i} differs after the hand-over"
        );
    }
}
