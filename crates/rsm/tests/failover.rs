//! Fast failover: when the leader's process dies, its followers' streams
//! to it break, and they ask for pre-votes at once instead of waiting out
//! an election timeout (300-600 ms at the default tick). A new leader is
//! in place well before the shortest election timeout could have fired.
#![cfg(madsim)]

mod lab;

use std::time::Duration;

use lab::{Tester, command};

/// Below the shortest election timeout (30 ticks of 10 ms): only the
/// broken streams can explain an election this fast.
const FAST_FAILOVER: Duration = Duration::from_millis(250);

#[madsim::test]
async fn a_dead_leader_is_replaced_before_an_election_timeout() {
    let servers = 3;
    let t = Tester::new(servers, true, -1);
    t.one(command(1), servers, true).await;
    let leader = t.check_one_leader().await;
    let (term, _) = t.state(leader).expect("the leader runs");
    t.crash1(leader);
    let killed = tokio::time::Instant::now();
    let replaced = loop {
        let new_leader = (0..servers)
            .filter(|&i| i != leader)
            .find(|&i| t.state(i).is_some_and(|(t1, leading)| leading && t1 > term));
        if new_leader.is_some() || killed.elapsed() > 4 * FAST_FAILOVER {
            break new_leader;
        }
        t.sleep(Duration::from_millis(5)).await;
    };
    let took = killed.elapsed();
    assert!(
        replaced.is_some() && took <= FAST_FAILOVER,
        "no new leader within {FAST_FAILOVER:?} of killing the leader (took {took:?}; seed {})",
        t.seed()
    );
    // The new leader commits with the two that are left.
    t.one(command(2), servers - 1, true).await;
}
