//! The 6.824 lab 2 (Raft) test suite, ported test for test to the
//! simulated world (`reference/6824-test-catalog.md` §2.1), with the same
//! servers, network conditions, iteration counts and limits. Run with
//! `scripts/test` or `scripts/sim-sweep raft N`.
#![cfg(madsim)]

mod lab;

use std::time::Duration;

use lab::{RAFT_ELECTION_TIMEOUT, Tester, command};

// ---- 2A: leader election ---------------------------------------------------

#[madsim::test]
async fn initial_election_2a() {
    let t = Tester::new(3, true, -1);
    t.check_one_leader().await;
    t.sleep(Duration::from_millis(50)).await;
    let term1 = t.check_terms();
    assert!(
        term1 >= 1,
        "term is {term1}, but should be at least 1 (seed {})",
        t.seed()
    );
    t.sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    let term2 = t.check_terms();
    if term1 != term2 {
        tracing::warn!("term changed even though there were no failures");
    }
    t.check_one_leader().await;
}

#[madsim::test]
async fn re_election_2a() {
    let t = Tester::new(3, true, -1);
    let leader1 = t.check_one_leader().await;
    t.disconnect(leader1);
    t.check_one_leader().await;
    t.connect(leader1);
    let leader2 = t.check_one_leader().await;
    t.disconnect(leader2);
    t.disconnect((leader2 + 1) % 3);
    t.sleep(2 * RAFT_ELECTION_TIMEOUT).await;
    t.check_no_leader();
    t.connect((leader2 + 1) % 3);
    t.check_one_leader().await;
    t.connect(leader2);
    t.check_one_leader().await;
}

#[madsim::test]
async fn many_elections_2a() {
    let servers = 7;
    let t = Tester::new(servers, true, -1);
    t.check_one_leader().await;
    for _ in 1..10 {
        let (i1, i2, i3) = {
            let mut rng = madsim::rand::thread_rng();
            use rand::Rng;
            (
                rng.gen_range(0..servers),
                rng.gen_range(0..servers),
                rng.gen_range(0..servers),
            )
        };
        t.disconnect(i1);
        t.disconnect(i2);
        t.disconnect(i3);
        t.check_one_leader().await;
        t.connect(i1);
        t.connect(i2);
        t.connect(i3);
    }
    t.check_one_leader().await;
}

// ---- 2B: log replication ---------------------------------------------------

#[madsim::test]
async fn basic_agree_2b() {
    let t = Tester::new(3, true, -1);
    let mut previous = 0;
    for value in 1..=3u64 {
        let (count, _) = t.n_committed(previous + 1);
        assert_eq!(
            count,
            0,
            "some have committed before Start() (seed {})",
            t.seed()
        );
        let index = t.one(command(value * 100), 3, false).await;
        // The first command follows the leader's no-op; the others follow
        // each other.
        let expected = if value == 1 { 2 } else { previous + 1 };
        assert_eq!(
            index,
            expected,
            "got index {index} but expected {expected} (seed {})",
            t.seed()
        );
        previous = index;
    }
}

#[madsim::test]
async fn count_2b() {
    let t = Tester::new(3, true, -1);
    let leader = t.check_one_leader().await;
    let total1 = t.rpc_total();
    assert!(
        (1..=30).contains(&total1),
        "too many or few RPCs ({total1}) to elect initial leader (seed {})",
        t.seed()
    );

    let mut total2 = 0;
    let mut success = false;
    'outer: for attempt in 0..5 {
        if attempt > 0 {
            t.sleep(Duration::from_secs(3)).await;
        }
        let leader = t.check_one_leader().await;
        let total1 = t.rpc_total();
        let iters = 10u64;
        let Some((starti, term)) = t.start(leader, command(1)).await else {
            continue;
        };
        let mut cmds = Vec::new();
        for i in 1..iters + 2 {
            let x = t.random_command();
            cmds.push(x.clone());
            match t.start(leader, x).await {
                Some((index1, term1)) if term1 == term => {
                    assert_eq!(index1, starti + i, "Start() failed (seed {})", t.seed());
                }
                _ => continue 'outer,
            }
        }
        for i in 1..=iters {
            let Some(cmd) = t.wait(starti + i, 3, Some(term)).await else {
                continue 'outer;
            };
            assert_eq!(
                cmd,
                cmds[i as usize - 1],
                "wrong value committed for index {} (seed {})",
                starti + i,
                t.seed()
            );
        }
        if (0..3)
            .filter_map(|i| t.state(i))
            .any(|(term1, _)| term1 != term)
        {
            continue;
        }
        total2 = t.rpc_total();
        assert!(
            total2 - total1 <= (iters + 1 + 3) * 3,
            "too many RPCs ({}) for {iters} entries (seed {})",
            total2 - total1,
            t.seed()
        );
        success = true;
        break;
    }
    assert!(success, "term changed too often (seed {})", t.seed());
    let _ = leader;
    t.sleep(RAFT_ELECTION_TIMEOUT).await;
    let total3 = t.rpc_total();
    assert!(
        total3 - total2 <= 3 * 20,
        "too many RPCs ({}) for 1 second of idleness (seed {})",
        total3 - total2,
        t.seed()
    );
}
