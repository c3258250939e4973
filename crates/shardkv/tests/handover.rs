//! A shard many chunks large moves between groups while the receiving
//! group, then the sending group, crash in the middle of the hand-over
//! (the bug 9). The groups pull in chunks of [`CHUNK_BYTES`], a
//! small setting so that the simulated world stays small; the shard is 16
//! chunks, as a shard of 64 MiB is to the real `MAX_CHUNK_BYTES` (and 8
//! times `MAX_COMMAND_BYTES`). The real limits are exercised by the
//! real-process test `crates/cli/tests/shardkv_handover.rs`.
#![cfg(madsim)]

mod lab;

use std::time::Duration;

use cairn_shardkv::{HandoverConfig, ShardState, lab_shard_of};
use lab::{GIDS, NSHARDS, Tester, random_string};
use tokio::time::{Instant, sleep};

/// The chunk size the groups ask for.
const CHUNK_BYTES: usize = 64 << 10;
/// The values in the big shard, and their size: 16 chunks in all.
const VALUES: usize = 64;
const VALUE_BYTES: usize = 16 << 10;
/// The shard of every key here ("0...": `b'0' % 10`).
const SHARD: u32 = 8;
/// How long (virtual) a stage of the hand-over may take.
const STAGE_DEADLINE: Duration = Duration::from_secs(30);
/// The step of virtual time between looks at the groups' state.
const STEP: Duration = Duration::from_millis(1);

/// Waits (in virtual time) until `group` is pulling the shard with more
/// than `after` but not all of its keys installed on some server, and
/// returns that count. Fails if the shard arrives whole first.
async fn wait_part_way(t: &Tester, group: usize, after: usize) -> usize {
    let started = Instant::now();
    loop {
        for (state, keys) in t.shard_on(group, SHARD).await {
            match state {
                Some(ShardState::Pulling) if keys > after && keys < VALUES => return keys,
                Some(ShardState::Collecting | ShardState::Serving) => t.fail(format!(
                    "group {} got the whole shard before it was seen part-way (after {after} keys)",
                    GIDS[group]
                )),
                _ => {}
            }
        }
        if started.elapsed() > STAGE_DEADLINE {
            t.fail(format!(
                "group {} installed no more than {after} keys of the shard within {STAGE_DEADLINE:?}",
                GIDS[group]
            ));
        }
        sleep(STEP).await;
    }
}

/// Waits until no running server of `group` holds the shard.
async fn wait_dropped(t: &Tester, group: usize) {
    let started = Instant::now();
    while t
        .shard_on(group, SHARD)
        .await
        .iter()
        .any(|(s, _)| s.is_some())
    {
        if started.elapsed() > STAGE_DEADLINE {
            t.fail(format!(
                "group {} still holds the shard {STAGE_DEADLINE:?} after handing it over",
                GIDS[group]
            ));
        }
        sleep(STEP).await;
    }
}

#[madsim::test]
async fn a_shard_of_many_chunks_moves_across_crashes_of_both_groups() {
    let handover = HandoverConfig {
        chunk_bytes: CHUNK_BYTES,
    };
    // Snapshots during the hand-over: a restart recovers the cursor from one.
    let t = Tester::with_handover(3, false, 256 << 10, NSHARDS, lab_shard_of, handover);
    let ck = t.make_client();
    t.joinm(&[0, 1]).await;
    let from = if t.query().await.shards[SHARD as usize] == GIDS[0] {
        0
    } else {
        1
    };
    let to = 1 - from;
    let keys: Vec<String> = (0..VALUES).map(|i| format!("0-{i:03}")).collect();
    let mut values = Vec::new();
    for key in &keys {
        assert_eq!(lab_shard_of(key.as_bytes(), NSHARDS), SHARD as usize);
        let value = random_string(VALUE_BYTES);
        ck.put(key, &value).await;
        values.push(value);
    }
    t.leave(from).await;
    let first = wait_part_way(&t, to, 0).await;
    eprintln!("group {} crashes with {first} of {VALUES} keys", GIDS[to]);
    t.shutdown_group(to);
    sleep(Duration::from_secs(1)).await;
    t.start_group(to);
    let second = wait_part_way(&t, to, first).await;
    eprintln!(
        "group {} crashes with {second} of {VALUES} keys",
        GIDS[from]
    );
    t.shutdown_group(from);
    sleep(Duration::from_secs(1)).await;
    t.start_group(from);

    for (key, value) in keys.iter().zip(&values) {
        ck.check(&t, key, value).await;
    }
    // Deleted at the old owner only once the new owner had everything.
    wait_dropped(&t, from).await;
    t.checklogs();
    t.end("a_shard_of_many_chunks_moves_across_crashes_of_both_groups");
}
