//! 6.824 lab 2D (snapshots), ported with the catalog's parameters
//! (`reference/6824-test-catalog.md` §2.1.4 and `TestSnapshotInit2D` of
//! §2.1.6). The lab's service snapshots every 10 entries; here each node
//! snapshots when its Raft state passes `MAX_RAFT_STATE` bytes, which is
//! about every 10 of these 8-byte commands, and the lab's bound on the Raft
//! state (`MAXLOGSIZE`) is checked as written.
#![cfg(madsim)]

mod lab;

use lab::{Tester, command};
use rand::Rng;

/// About ten entries of the log (38 bytes each on disk) plus the hard state.
const MAX_RAFT_STATE: i64 = 400;
const MAX_LOG_SIZE: u64 = 2000;
const SNAPSHOT_INTERVAL: u64 = 10;

fn rand_u64() -> u64 {
    madsim::rand::thread_rng().r#gen()
}

async fn snap_common(disconnect: bool, reliable: bool, crash: bool) {
    let iters = 30;
    let servers = 3;
    let t = Tester::new(servers, reliable, MAX_RAFT_STATE);
    t.one(command(rand_u64()), servers, true).await;
    let mut leader1 = t.check_one_leader().await;
    for i in 0..iters {
        let (mut victim, mut sender) = ((leader1 + 1) % servers, leader1);
        if i % 3 == 1 {
            sender = (leader1 + 1) % servers;
            victim = leader1;
        }
        if disconnect {
            t.disconnect(victim);
            t.one(command(rand_u64()), servers - 1, true).await;
        }
        if crash {
            t.crash1(victim);
            t.one(command(rand_u64()), servers - 1, true).await;
        }
        // Perhaps send enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + madsim::rand::thread_rng().gen_range(0..SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            t.start(sender, command(rand_u64())).await;
        }
        // Let the appliers catch up with the starts.
        if !disconnect && !crash {
            t.one(command(rand_u64()), servers, true).await;
        } else {
            t.one(command(rand_u64()), servers - 1, true).await;
        }
        let size = t.log_size();
        assert!(
            size < MAX_LOG_SIZE,
            "log size too large: {size} bytes (seed {})",
            t.seed()
        );
        if disconnect {
            // Reconnect a follower, who may be behind and need to receive a
            // snapshot to catch up.
            t.connect(victim);
            t.one(command(rand_u64()), servers, true).await;
            leader1 = t.check_one_leader().await;
        }
        if crash {
            t.start1(victim);
            t.connect(victim);
            t.one(command(rand_u64()), servers, true).await;
            leader1 = t.check_one_leader().await;
        }
    }
    // The test exercised what it is about.
    assert!(
        t.max_snapshot_index() > 0,
        "no server took a snapshot (seed {})",
        t.seed()
    );
    if disconnect || crash {
        assert!(
            t.restores() > 0,
            "no server restored from a snapshot (seed {})",
            t.seed()
        );
    }
}

#[madsim::test]
async fn snapshot_basic_2d() {
    snap_common(false, true, false).await;
}

#[madsim::test]
async fn snapshot_install_2d() {
    snap_common(true, true, false).await;
}

#[madsim::test]
async fn snapshot_install_unreliable_2d() {
    snap_common(true, false, false).await;
}

#[madsim::test]
async fn snapshot_install_crash_2d() {
    snap_common(false, true, true).await;
}

#[madsim::test]
async fn snapshot_install_uncrash_2d() {
    snap_common(false, false, true).await;
}

/// Crash and restart all servers at once.
#[madsim::test]
async fn snapshot_all_crash_2d() {
    let servers = 3;
    let iters = 5;
    let t = Tester::new(servers, true, MAX_RAFT_STATE);
    t.one(command(rand_u64()), servers, true).await;
    for _ in 0..iters {
        // Perhaps enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + madsim::rand::thread_rng().gen_range(0..SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            t.one(command(rand_u64()), servers, true).await;
        }
        let index1 = t.one(command(rand_u64()), servers, true).await;
        for i in 0..servers {
            t.crash1(i);
        }
        for i in 0..servers {
            t.start1(i);
            t.connect(i);
        }
        let index2 = t.one(command(rand_u64()), servers, true).await;
        assert!(
            index2 > index1,
            "index decreased from {index1} to {index2} (seed {})",
            t.seed()
        );
    }
}

/// A restarted server must keep its snapshot: forgetting it and then
/// overwriting it on the next save loses state.
#[madsim::test]
async fn snapshot_init_2d() {
    let servers = 3;
    let t = Tester::new(servers, true, MAX_RAFT_STATE);
    t.one(command(rand_u64()), servers, true).await;
    // Enough ops to make a snapshot.
    for _ in 0..=SNAPSHOT_INTERVAL {
        t.one(command(rand_u64()), servers, true).await;
    }
    for round in 0..2 {
        for i in 0..servers {
            t.crash1(i);
        }
        for i in 0..servers {
            t.start1(i);
            t.connect(i);
        }
        // A single op, to get something to be written back to persistent
        // storage.
        t.one(command(rand_u64()), servers, true).await;
        let _ = round;
    }
}
