//! A shard far larger than one log entry moves between real processes:
//! 100 values of 1 MiB, all in one shard, are written to group 1; group 2
//! joins, then group 1 leaves, and the whole shard moves to group 2 in
//! bounded chunks (`cairn_rsm::MAX_COMMAND_BYTES` is 8 MiB; the shard is
//! 100 MiB). Every value reads back intact from group 2, and the time the
//! move took is printed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_rpc::kv::StatusRequest;
use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
use cairn_shardkv::{Client, ClientConfig, shard_of};
use common::NodeProcesses;

/// How many values the big shard holds.
const VALUES: usize = 100;
/// The size of each value: the value limit.
const VALUE_BYTES: usize = cairn_shardkv::MAX_VALUE_BYTES;
/// How long the move may take before the test fails.
const MOVE_DEADLINE: Duration = Duration::from_secs(120);

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

/// `VALUES` keys that all fall in the same shard.
fn keys_of_one_shard(shards: usize) -> Vec<String> {
    let target = shard_of(b"big-0", shards);
    (0..)
        .map(|i| format!("big-{i}"))
        .filter(|key| shard_of(key.as_bytes(), shards) == target)
        .take(VALUES)
        .collect()
}

/// Value `i`: distinct bytes per value and per position, so that a value
/// swapped, truncated or shifted is noticed.
fn value(i: usize) -> Vec<u8> {
    (0..VALUE_BYTES)
        .map(|at| (at.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
        .collect()
}

/// Whether a server of the group at `urls` has reached configuration
/// `num` and serves `shard`.
async fn serves(urls: &[String], num: u64, shard: u32) -> bool {
    for url in urls {
        let Ok(mut server) = ShardKvClient::connect(url.clone()).await else {
            continue;
        };
        if let Ok(status) = server.status(StatusRequest::default()).await {
            let status = status.into_inner();
            if status.config_num >= num && status.serving.contains(&shard) {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabyte_shard_moves_when_its_group_leaves() {
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
    let join = |gid: u64| BTreeMap::from([(gid, groups[&gid].urls.clone())]);
    admin.join(&join(1)).await.unwrap();
    let settings = ClientConfig {
        deadline: MOVE_DEADLINE,
        ..ClientConfig::default()
    };
    let mut client = Client::new(&controllers.urls, shard_of, settings).unwrap();
    let keys = keys_of_one_shard(cairn_shardctrler::DEFAULT_SHARDS);
    let started = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        client.put(key.as_bytes(), &value(i)).await.unwrap();
    }
    eprintln!(
        "wrote {VALUES} values of {VALUE_BYTES} bytes to one shard in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    admin.join(&join(2)).await.unwrap();
    admin.leave(&[1]).await.unwrap();
    let config = admin.query(None).await.unwrap();
    assert!(config.shards.iter().all(|&gid| gid == 2), "{config:?}");

    // Group 1 may answer for the shard until it applies the leave; the
    // move is over when group 2 serves it.
    let shard = shard_of(keys[0].as_bytes(), cairn_shardctrler::DEFAULT_SHARDS) as u32;
    let moving = Instant::now();
    while !serves(&groups[&2].urls, config.num, shard).await {
        assert!(
            moving.elapsed() < MOVE_DEADLINE,
            "group 2 does not serve shard {shard} {MOVE_DEADLINE:?} after group 1 left; logs in {} and {}",
            groups[&1].dir.path().display(),
            groups[&2].dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "a shard of {} MiB moved from group 1 to group 2 in {:.1}s",
        (VALUES * VALUE_BYTES) >> 20,
        moving.elapsed().as_secs_f64()
    );
    for (i, key) in keys.iter().enumerate() {
        let got = client.get(key.as_bytes()).await.unwrap();
        assert!(
            got.as_deref() == Some(&value(i)[..]),
            "{key} differs after the hand-over ({:?} bytes)",
            got.map(|v| v.len())
        );
    }
}
