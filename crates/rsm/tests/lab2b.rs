//! 6.824 lab 2B (log replication), continued: the tests after
//! `basic_agree_2b` and `count_2b` (which are in `lab2.rs`), ported with the
//! catalog's servers, sleeps and limits (`reference/6824-test-catalog.md`
//! §2.1.2 and the 2023 additions of §2.1.6).
#![cfg(madsim)]

mod lab;

use std::time::Duration;

use lab::{RAFT_ELECTION_TIMEOUT, Tester, command};
use rand::Rng;

fn random_string(n: usize) -> bytes::Bytes {
    let mut rng = madsim::rand::thread_rng();
    (0..n)
        .map(|_| rng.gen_range(b'a'..=b'z'))
        .collect::<Vec<u8>>()
        .into()
}

#[madsim::test]
async fn rpc_bytes_2b() {
    let t = Tester::new(3, true, -1);
    t.one(command(99), 3, false).await;
    let bytes0 = t.bytes_total();
    let mut sent = 0u64;
    for _ in 2..12 {
        let cmd = random_string(5000);
        sent += cmd.len() as u64;
        t.one(cmd, 3, false).await;
    }
    let got = t.bytes_total() - bytes0;
    let expected = 3 * sent;
    assert!(
        got <= expected + 50_000,
        "too many RPC bytes; got {got}, expected {expected} (seed {})",
        t.seed()
    );
}

#[madsim::test]
async fn follower_failure_2b() {
    let t = Tester::new(3, true, -1);
    t.one(command(101), 3, false).await;
    let leader1 = t.check_one_leader().await;
    t.disconnect((leader1 + 1) % 3);
    t.one(command(102), 2, false).await;
    t.sleep(RAFT_ELECTION_TIMEOUT).await;
    let index103 = t.one(command(103), 2, false).await;
    let leader2 = t.check_one_leader().await;
    t.disconnect((leader2 + 1) % 3);
    t.disconnect((leader2 + 2) % 3);
    let (index, _) = t
        .start(leader2, command(104))
        .await
        .expect("leader rejected Start()");
    // The lab expects index 4: the next index after 103's (no-ops aside).
    assert_eq!(
        index,
        index103 + 1,
        "expected index {}, got {index} (seed {})",
        index103 + 1,
        t.seed()
    );
    t.sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    let (n, _) = t.n_committed(index);
    assert_eq!(n, 0, "{n} committed but no majority (seed {})", t.seed());
}

#[madsim::test]
async fn leader_failure_2b() {
    let t = Tester::new(3, true, -1);
    t.one(command(101), 3, false).await;
    let leader1 = t.check_one_leader().await;
    t.disconnect(leader1);
    t.one(command(102), 2, false).await;
    t.sleep(RAFT_ELECTION_TIMEOUT).await;
    let index103 = t.one(command(103), 2, false).await;
    let leader2 = t.check_one_leader().await;
    t.disconnect(leader2);
    for i in 0..3 {
        t.start(i, command(104)).await;
    }
    t.sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    // The lab checks index 4, the index after 103's.
    let (n, _) = t.n_committed(index103 + 1);
    assert_eq!(n, 0, "{n} committed but no majority (seed {})", t.seed());
}

#[madsim::test]
async fn fail_agree_2b() {
    let t = Tester::new(3, true, -1);
    t.one(command(101), 3, false).await;
    let leader = t.check_one_leader().await;
    t.disconnect((leader + 1) % 3);
    t.one(command(102), 2, false).await;
    t.one(command(103), 2, false).await;
    t.sleep(RAFT_ELECTION_TIMEOUT).await;
    t.one(command(104), 2, false).await;
    t.one(command(105), 2, false).await;
    t.connect((leader + 1) % 3);
    t.one(command(106), 3, true).await;
    t.sleep(RAFT_ELECTION_TIMEOUT).await;
    t.one(command(107), 3, true).await;
}

#[madsim::test]
async fn fail_no_agree_2b() {
    let servers = 5;
    let t = Tester::new(servers, true, -1);
    let index10 = t.one(command(10), servers, false).await;
    let leader = t.check_one_leader().await;
    t.disconnect((leader + 1) % servers);
    t.disconnect((leader + 2) % servers);
    t.disconnect((leader + 3) % servers);
    let (index, _) = t
        .start(leader, command(20))
        .await
        .expect("leader rejected Start()");
    // The lab expects index 2: right after 10's.
    assert_eq!(
        index,
        index10 + 1,
        "expected index {}, got {index} (seed {})",
        index10 + 1,
        t.seed()
    );
    t.sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    let (n, _) = t.n_committed(index);
    assert_eq!(n, 0, "{n} committed but no majority (seed {})", t.seed());
    t.connect((leader + 1) % servers);
    t.connect((leader + 2) % servers);
    t.connect((leader + 3) % servers);
    // The disconnected majority may have chosen a leader from among its own
    // number, forgetting index 2, or not.
    let leader2 = t.check_one_leader().await;
    let (index2, _) = t
        .start(leader2, command(30))
        .await
        .expect("leader2 rejected Start()");
    // The lab allows [2, 3]; a new leader's no-op takes one more index.
    assert!(
        (index..=index + 2).contains(&index2),
        "unexpected index {index2}, expected {index}..={} (seed {})",
        index + 2,
        t.seed()
    );
    t.one(command(1000), servers, true).await;
}

#[madsim::test]
async fn concurrent_starts_2b() {
    let t = std::sync::Arc::new(Tester::new(3, true, -1));
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            t.sleep(Duration::from_secs(3)).await;
        }
        let leader = t.check_one_leader().await;
        let Some((_, term)) = t.start(leader, command(1)).await else {
            continue;
        };
        let mut handles = Vec::new();
        for i in 0..5u64 {
            let t = t.clone();
            handles.push(tokio::spawn(async move {
                match t.start(leader, command(100 + i)).await {
                    Some((index, term1)) if term1 == term => Some(index),
                    _ => None,
                }
            }));
        }
        let mut indices = Vec::new();
        for handle in handles {
            if let Some(index) = handle.await.unwrap() {
                indices.push(index);
            }
        }
        if (0..3)
            .filter_map(|i| t.state(i))
            .any(|(term1, _)| term1 != term)
        {
            continue; // the term moved on: try again
        }
        let mut committed = Vec::new();
        for index in indices {
            match t.wait(index, 3, Some(term)).await {
                Some(cmd) => committed.push(u64::from_le_bytes(cmd[..].try_into().unwrap())),
                None => continue 'tries,
            }
        }
        for i in 0..5u64 {
            assert!(
                committed.contains(&(100 + i)),
                "cmd {} missing in {committed:?} (seed {})",
                100 + i,
                t.seed()
            );
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often (seed {})", t.seed());
}

#[madsim::test]
async fn rejoin_2b() {
    let t = Tester::new(3, true, -1);
    t.one(command(101), 3, true).await;
    let leader1 = t.check_one_leader().await;
    t.disconnect(leader1);
    // The old leader takes entries it can never commit.
    t.start(leader1, command(102)).await;
    t.start(leader1, command(103)).await;
    t.start(leader1, command(104)).await;
    t.one(command(103), 2, true).await;
    let leader2 = t.check_one_leader().await;
    t.disconnect(leader2);
    t.connect(leader1);
    t.one(command(104), 2, true).await;
    t.connect(leader2);
    t.one(command(105), 3, true).await;
}

#[madsim::test]
async fn backup_2b() {
    let servers = 5;
    let t = Tester::new(servers, true, -1);
    let random = || madsim::rand::thread_rng().r#gen::<u64>();
    t.one(command(random()), servers, true).await;
    // Put the leader and one follower in a partition.
    let leader1 = t.check_one_leader().await;
    t.disconnect((leader1 + 2) % servers);
    t.disconnect((leader1 + 3) % servers);
    t.disconnect((leader1 + 4) % servers);
    // Lots of commands that won't commit.
    for _ in 0..50 {
        t.start(leader1, command(random())).await;
    }
    t.sleep(RAFT_ELECTION_TIMEOUT / 2).await;
    t.disconnect(leader1);
    t.disconnect((leader1 + 1) % servers);
    // Allow the other partition to recover.
    t.connect((leader1 + 2) % servers);
    t.connect((leader1 + 3) % servers);
    t.connect((leader1 + 4) % servers);
    for _ in 0..50 {
        t.one(command(random()), 3, true).await;
    }
    // Now another partitioned leader and one follower.
    let leader2 = t.check_one_leader().await;
    let mut other = (leader1 + 2) % servers;
    if leader2 == other {
        other = (leader2 + 1) % servers;
    }
    t.disconnect(other);
    for _ in 0..50 {
        t.start(leader2, command(random())).await;
    }
    t.sleep(RAFT_ELECTION_TIMEOUT / 2).await;
    // Bring the original leader back to life.
    for i in 0..servers {
        t.disconnect(i);
    }
    t.connect(leader1);
    t.connect((leader1 + 1) % servers);
    t.connect(other);
    for _ in 0..50 {
        t.one(command(random()), 3, true).await;
    }
    for i in 0..servers {
        t.connect(i);
    }
    t.one(command(random()), servers, true).await;
}
