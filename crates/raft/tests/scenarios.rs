//! Scenarios of the Raft core that check a property over runs rather than
//! an exact exchange, on the in-memory cluster of `harness` (which also
//! checks the safety properties after every step). The named scenarios
//! (election, split vote, pre-vote, check quorum, log repair, Figure 8,
//! snapshots, read index, leadership transfer and more) are golden scripts
//! in `crates/raft/testdata/`, run by `tests/golden.rs`.

mod harness;

use harness::Cluster;

/// Bug 12 of the reliability review: a node started empty in place of a
/// damaged data directory (the recovery the storage's error message
/// recommends) must be brought back, with a snapshot when the leader's log
/// no longer reaches back to index 1, within a few election timeouts and
/// without a storm of messages.
#[test]
fn a_wiped_follower_catches_up_promptly() {
    for compacted in [false, true] {
        let mut cluster = Cluster::new(3, 21);
        let leader = cluster.elect();
        for i in 0..30 {
            cluster.propose(&format!("w{i}"));
        }
        if compacted {
            for id in cluster.ids() {
                cluster.compact(id);
            }
        }
        let last = cluster.raft(leader).status().last_index;
        let wiped = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
        cluster.crash(wiped);
        cluster.nodes.get_mut(&wiped).unwrap().durable = harness::Durable::default();
        cluster.start(wiped);
        let election_timeout = cluster.config.election_timeout_ticks;
        let mut sent_to_wiped = 0;
        let mut caught_up_after = None;
        for tick in 0..3 * election_timeout {
            cluster.tick_all();
            sent_to_wiped += cluster.pool.iter().filter(|m| m.to == wiped).count();
            cluster.stabilize();
            if cluster.raft(wiped).status().commit >= last {
                caught_up_after = Some(tick);
                break;
            }
        }
        assert!(
            caught_up_after.is_some(),
            "compacted {compacted}: the wiped node is at commit {} of {last} after {} ticks",
            cluster.raft(wiped).status().commit,
            3 * election_timeout
        );
        assert!(
            sent_to_wiped <= 20,
            "compacted {compacted}: {sent_to_wiped} messages to bring one node back"
        );
    }
}
