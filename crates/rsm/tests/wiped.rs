//! A follower whose disk was replaced by an empty one (the recovery the
//! storage's corruption error recommends) is brought back by the leader
//! within a few election timeouts, with a snapshot when the leader's log no
//! longer reaches back to index 1, and without a storm of messages (bug 12
//! of the reliability review: it stayed at commit 0 while the leader sent
//! it about 1,200 requests a second).
#![cfg(madsim)]

mod lab;

use std::time::Duration;

use lab::{Tester, command};

async fn wiped_follower_catches_up(max_raft_state: i64) {
    let servers = 3;
    let t = Tester::new(servers, true, max_raft_state);
    let mut last = 0;
    for i in 0..40 {
        last = t.one(command(i), servers, true).await;
    }
    let leader = t.check_one_leader().await;
    let wiped = (leader + 1) % servers;
    t.wipe1(wiped);
    let calls_before = t.rpc_count(wiped);
    // Three election timeouts (300 ms each at the default tick), no writes.
    for _ in 0..90 {
        t.sleep(Duration::from_millis(10)).await;
        if t.applied(wiped).is_some_and(|applied| applied >= last) {
            break;
        }
    }
    let applied = t.applied(wiped).unwrap_or(0);
    let calls = t.rpc_count(wiped) - calls_before;
    assert!(
        applied >= last,
        "the wiped server applied {applied} of {last} after 900 ms (seed {})",
        t.seed()
    );
    assert!(
        calls <= 60,
        "{calls} calls to bring one server back (seed {})",
        t.seed()
    );
    // And it serves in the group again: a write needs all three.
    t.one(command(1_000), servers, true).await;
}

#[madsim::test]
async fn a_wiped_follower_catches_up_from_the_log() {
    wiped_follower_catches_up(-1).await;
}

#[madsim::test]
async fn a_wiped_follower_catches_up_from_a_snapshot() {
    wiped_follower_catches_up(400).await;
}
