//! 6.824 lab 2C (persistence), ported with the catalog's servers, network
//! conditions, iteration counts and sleeps (`reference/6824-test-catalog.md`
//! §2.1.3). A crash kills the simulated node, whose disk keeps only what
//! was synced.
#![cfg(madsim)]

mod lab;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lab::{RAFT_ELECTION_TIMEOUT, Tester, command};
use rand::Rng;

fn rand_u64() -> u64 {
    madsim::rand::thread_rng().r#gen()
}

fn rand_below(n: u64) -> u64 {
    madsim::rand::thread_rng().gen_range(0..n)
}

#[madsim::test]
async fn persist1_2c() {
    let t = Tester::new(3, true, -1);
    t.one(command(11), 3, true).await;
    // Crash and restart all.
    for i in 0..3 {
        t.start1(i);
    }
    for i in 0..3 {
        t.disconnect(i);
        t.connect(i);
    }
    t.one(command(12), 3, true).await;
    let leader1 = t.check_one_leader().await;
    t.disconnect(leader1);
    t.start1(leader1);
    t.connect(leader1);
    t.one(command(13), 3, true).await;
    let leader2 = t.check_one_leader().await;
    t.disconnect(leader2);
    let index14 = t.one(command(14), 2, true).await;
    t.start1(leader2);
    t.connect(leader2);
    t.wait(index14, 3, None).await; // wait for leader2 to join before killing i3
    let i3 = (t.check_one_leader().await + 1) % 3;
    t.disconnect(i3);
    t.one(command(15), 2, true).await;
    t.start1(i3);
    t.connect(i3);
    t.one(command(16), 3, true).await;
}

#[madsim::test]
async fn persist2_2c() {
    let servers = 5;
    let t = Tester::new(servers, true, -1);
    let mut index = 1;
    for _ in 0..5 {
        t.one(command(10 + index), servers, true).await;
        index += 1;
        let leader1 = t.check_one_leader().await;
        t.disconnect((leader1 + 1) % servers);
        t.disconnect((leader1 + 2) % servers);
        t.one(command(10 + index), servers - 2, true).await;
        index += 1;
        t.disconnect(leader1 % servers);
        t.disconnect((leader1 + 3) % servers);
        t.disconnect((leader1 + 4) % servers);
        t.start1((leader1 + 1) % servers);
        t.start1((leader1 + 2) % servers);
        t.connect((leader1 + 1) % servers);
        t.connect((leader1 + 2) % servers);
        t.sleep(RAFT_ELECTION_TIMEOUT).await;
        t.start1((leader1 + 3) % servers);
        t.connect((leader1 + 3) % servers);
        t.one(command(10 + index), servers - 2, true).await;
        index += 1;
        t.connect((leader1 + 4) % servers);
        t.connect(leader1 % servers);
    }
    t.one(command(1000), servers, true).await;
}

#[madsim::test]
async fn persist3_2c() {
    let t = Tester::new(3, true, -1);
    t.one(command(101), 3, true).await;
    let leader = t.check_one_leader().await;
    t.disconnect((leader + 2) % 3);
    t.one(command(102), 2, true).await;
    t.crash1(leader % 3);
    t.crash1((leader + 1) % 3);
    t.connect((leader + 2) % 3);
    t.start1(leader % 3);
    t.connect(leader % 3);
    t.one(command(103), 2, true).await;
    t.start1((leader + 1) % 3);
    t.connect((leader + 1) % 3);
    t.one(command(104), 3, true).await;
}

/// The lab's sleep between Figure 8 iterations: 0-499 ms one time in ten,
/// else 0-12 ms.
async fn figure_8_pause() {
    let ms = if rand_below(1000) < 100 {
        rand_below(500)
    } else {
        rand_below(13)
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[madsim::test]
async fn figure_8_2c() {
    let servers = 5;
    let t = Tester::new(servers, true, -1);
    t.one(command(rand_u64()), 1, true).await;
    let mut nup = servers;
    for _ in 0..1000 {
        let mut leader = None;
        for i in 0..servers {
            if t.is_alive(i) && t.start(i, command(rand_u64())).await.is_some() {
                leader = Some(i);
            }
        }
        figure_8_pause().await;
        if let Some(leader) = leader {
            t.crash1(leader);
            nup -= 1;
        }
        if nup < 3 {
            let s = rand_below(servers as u64) as usize;
            if !t.is_alive(s) {
                t.start1(s);
                t.connect(s);
                nup += 1;
            }
        }
    }
    for i in 0..servers {
        if !t.is_alive(i) {
            t.start1(i);
            t.connect(i);
        }
    }
    t.one(command(rand_u64()), servers, true).await;
}

#[madsim::test]
async fn unreliable_agree_2c() {
    let servers = 5;
    let t = Arc::new(Tester::new(servers, false, -1));
    for iters in 1..50u64 {
        let mut handles = Vec::new();
        for j in 0..4u64 {
            let t = t.clone();
            handles.push(tokio::spawn(async move {
                t.one(command(100 * iters + j), 1, true).await;
            }));
        }
        t.one(command(iters), 1, true).await;
        for handle in handles {
            handle.await.unwrap();
        }
    }
    t.set_reliable(true);
    t.one(command(100), servers, true).await;
}

#[madsim::test]
async fn figure_8_unreliable_2c() {
    let servers = 5;
    let t = Tester::new(servers, false, -1);
    t.one(command(rand_below(10_000)), 1, true).await;
    let mut nup = servers;
    for iters in 0..1000 {
        if iters == 200 {
            t.set_long_reordering(true);
        }
        let mut leader = None;
        for i in 0..servers {
            if t.start(i, command(rand_below(10_000))).await.is_some() && t.is_connected(i) {
                leader = Some(i);
            }
        }
        figure_8_pause().await;
        if let Some(leader) = leader
            && rand_below(1000) < RAFT_ELECTION_TIMEOUT.as_millis() as u64 / 2
        {
            t.disconnect(leader);
            nup -= 1;
        }
        if nup < 3 {
            let s = rand_below(servers as u64) as usize;
            if !t.is_connected(s) {
                t.connect(s);
                nup += 1;
            }
        }
    }
    for i in 0..servers {
        if !t.is_connected(i) {
            t.connect(i);
        }
    }
    // Still unreliable, with long reordering on.
    t.one(command(rand_below(10_000)), servers, true).await;
}

async fn internal_churn(unreliable: bool) {
    let servers = 5;
    let t = Arc::new(Tester::new(servers, !unreliable, -1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for me in 0..3u64 {
        let (t, stop) = (t.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut values = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let x = rand_u64();
                let mut placed = None;
                for i in 0..servers {
                    if let Some((index, _)) = t.start(i, command(x)).await {
                        placed = Some(index);
                    }
                }
                if let Some(index) = placed {
                    // Maybe leader will commit our value, maybe not. But don't
                    // wait forever.
                    for ms in [10, 20, 50, 100, 200] {
                        let (n, cmd) = t.n_committed(index);
                        if n > 0 {
                            if cmd == Some(command(x)) {
                                values.push(x);
                            }
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(79 + me * 17)).await;
                }
            }
            values
        }));
    }
    for _ in 0..20 {
        if rand_below(1000) < 200 {
            t.disconnect(rand_below(servers as u64) as usize);
        }
        if rand_below(1000) < 500 {
            let i = rand_below(servers as u64) as usize;
            if !t.is_alive(i) {
                t.start1(i);
            }
            t.connect(i);
        }
        if rand_below(1000) < 200 {
            let i = rand_below(servers as u64) as usize;
            if t.is_alive(i) {
                t.crash1(i);
            }
        }
        // Make crash/restart infrequent enough that the peers can often
        // keep up, but not so infrequent that everything has settled.
        t.sleep(RAFT_ELECTION_TIMEOUT * 7 / 10).await;
    }
    t.sleep(RAFT_ELECTION_TIMEOUT).await;
    t.set_reliable(true);
    for i in 0..servers {
        if !t.is_alive(i) {
            t.start1(i);
        }
        t.connect(i);
    }
    stop.store(true, Ordering::SeqCst);
    let mut seen = Vec::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    t.sleep(RAFT_ELECTION_TIMEOUT).await;
    let last = t.one(command(rand_u64()), servers, true).await;
    // Every index up to `last` is applied on all five and they agree (no-op
    // indices have no command).
    let log = t.check_all_applied(last);
    let values: Vec<u64> = log
        .values()
        .map(|c| u64::from_le_bytes(c[..].try_into().unwrap()))
        .collect();
    for x in seen {
        assert!(
            values.contains(&x),
            "didn't find a value {x} a client saw committed (seed {})",
            t.seed()
        );
    }
}

#[madsim::test]
async fn reliable_churn_2c() {
    internal_churn(false).await;
}

#[madsim::test]
async fn unreliable_churn_2c() {
    internal_churn(true).await;
}
