//! Named scenarios of the Raft core, each driven step by step on the
//! in-memory cluster of `harness` (which also checks the safety properties
//! after every step).

mod harness;

use bytes::Bytes;
use cairn_raft::{MessageBody, ProposeError, Role};
use harness::Cluster;

fn data(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

#[test]
fn election() {
    let mut cluster = Cluster::new(3, 1);
    let leader = cluster.elect();
    let term = cluster.raft(leader).term();
    assert!(term >= 1);
    for id in cluster.ids() {
        let raft = cluster.raft(id);
        assert_eq!(raft.term(), term, "node {id} is in another term");
        assert_eq!(
            raft.leader(),
            Some(leader),
            "node {id} does not know the leader"
        );
        assert_eq!(raft.role() == Role::Leader, id == leader);
    }
    // The leader's no-op is committed; followers learn so at its next tick.
    assert!(cluster.raft(leader).status().commit >= 1);
    cluster.run_ticks(1);
    assert!(cluster.all_applied(1));
    let index = cluster.propose("x");
    assert!(cluster.all_applied(index));
    // Quiet heartbeats keep the same leader and term.
    cluster.run_ticks(500);
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.raft(leader).term(), term);
}

#[test]
fn single_node_elects_itself_and_commits() {
    let mut cluster = Cluster::new(1, 2);
    let leader = cluster.elect();
    assert_eq!(leader, 1);
    let index = cluster.propose("solo");
    assert!(cluster.all_applied(index));
}

#[test]
fn split_vote_then_a_leader() {
    let mut cluster = Cluster::with_config(3, 3, |c| c.pre_vote = false);
    // Nodes 1 and 2 campaign in the same term while 3 is cut off: each
    // votes for itself and refuses the other, so nobody wins term 1.
    cluster.isolate(3);
    cluster.raft_mut(1).campaign();
    cluster.raft_mut(2).campaign();
    cluster.stabilize();
    assert_eq!(cluster.raft(1).role(), Role::Candidate);
    assert_eq!(cluster.raft(2).role(), Role::Candidate);
    assert_eq!(cluster.raft(1).term(), 1);
    assert_eq!(cluster.leader(), None);
    // Randomized timeouts break the tie in a later term.
    cluster.heal();
    let leader = cluster.elect();
    assert!(cluster.raft(leader).term() >= 2);
}

#[test]
fn pre_vote_stops_a_disruptive_rejoin() {
    let mut cluster = Cluster::new(3, 4);
    let leader = cluster.elect();
    let term = cluster.raft(leader).term();
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.isolate(follower);
    cluster.run_ticks(300); // many election timeouts alone
    assert_eq!(
        cluster.raft(follower).term(),
        term,
        "pre-vote keeps the isolated node's term"
    );
    cluster.heal();
    cluster.run_ticks(50);
    assert_eq!(cluster.leader(), Some(leader), "the healthy leader stays");
    assert_eq!(cluster.raft(leader).term(), term);
}

#[test]
fn without_pre_vote_a_rejoin_disrupts() {
    // The control for the test above: the same schedule without pre-vote and
    // check-quorum forces a new term.
    let mut cluster = Cluster::with_config(3, 4, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    let leader = cluster.elect();
    let term = cluster.raft(leader).term();
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.isolate(follower);
    cluster.run_ticks(300);
    assert!(cluster.raft(follower).term() > term);
    cluster.heal();
    cluster.run_ticks(50);
    let new_leader = cluster.elect();
    assert!(cluster.raft(new_leader).term() > term);
}

#[test]
fn check_quorum_steps_a_cut_off_leader_down() {
    let mut cluster = Cluster::new(3, 5);
    let leader = cluster.elect();
    cluster.isolate(leader);
    let timeout = cluster.config.election_timeout_ticks;
    for _ in 0..2 * timeout {
        cluster.tick(leader);
        cluster.stabilize();
    }
    assert_eq!(
        cluster.raft(leader).role(),
        Role::Follower,
        "a leader without a quorum steps down"
    );
    // The majority side elects its own leader.
    let others: Vec<_> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    for _ in 0..20 * timeout {
        for &id in &others {
            cluster.tick(id);
        }
        cluster.stabilize();
    }
    let new_leader = cluster.leader().unwrap();
    assert_ne!(new_leader, leader);
}

#[test]
fn log_conflict_repair() {
    let mut cluster = Cluster::new(5, 6);
    let old = cluster.elect();
    cluster.propose("a");
    // The old leader, alone, appends entries that can never commit.
    cluster.isolate(old);
    for i in 0..5 {
        cluster
            .raft_mut(old)
            .propose(data(&format!("lost{i}")))
            .unwrap();
    }
    cluster.stabilize();
    let old_last = cluster.raft(old).status().last_index;
    // The majority elects another leader and commits other entries.
    let timeout = cluster.config.election_timeout_ticks;
    let others: Vec<_> = cluster.ids().into_iter().filter(|&id| id != old).collect();
    let mut new = None;
    for _ in 0..40 * timeout {
        for &id in &others {
            cluster.tick(id);
        }
        cluster.stabilize();
        new = others
            .iter()
            .copied()
            .find(|&id| cluster.raft(id).role() == Role::Leader);
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("the majority elects a leader");
    for i in 0..8 {
        cluster
            .raft_mut(new)
            .propose(data(&format!("kept{i}")))
            .unwrap();
    }
    cluster.stabilize();
    // Rejoin: the old leader's conflicting suffix is replaced.
    cluster.heal();
    cluster.run_ticks(100);
    let last = cluster.raft(new).status().last_index;
    assert!(cluster.all_applied(last));
    cluster.check_log_matching();
    for index in 1..=old_last.max(last) {
        if let Some(entry) = cluster.raft(old).entry(index) {
            assert!(
                !entry.data.starts_with(b"lost"),
                "index {index} still holds an uncommitted entry of the old leader"
            );
        }
    }
}

#[test]
fn figure_8_commit_rule() {
    // Raft Figure 8: an entry of an older term stored on a majority is not
    // committed by counting replicas; only an entry of the leader's own term
    // commits it.
    let mut cluster = Cluster::with_config(5, 7, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
        c.max_append_bytes = 1; // one entry per AppendEntries
    });
    cluster.raft_mut(1).campaign();
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(1));
    // S1 (term 1) gets "x" to S2 only, then crashes.
    cluster.partition(&[1, 2]);
    cluster.raft_mut(1).propose(data("x")).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.raft(2).entry(2).map(|e| e.data.clone()),
        Some(data("x"))
    );
    cluster.crash(1);
    // S5 wins term 2 with S3 and S4, but its entries reach nobody; it crashes.
    cluster.partition(&[3, 4, 5]);
    cluster.raft_mut(5).campaign();
    cluster.process_readies();
    cluster.drop_filter = Some(Box::new(|m| {
        matches!(m.body, MessageBody::AppendEntries(_))
    }));
    cluster.stabilize();
    assert_eq!(cluster.raft(5).role(), Role::Leader);
    cluster.crash(5);
    // S1 restarts and wins term 3; its AppendEntries may carry "x" (index 2,
    // term 1) but nothing of term 3 (its no-op at index 3 is stripped).
    cluster.heal();
    cluster.start(1);
    cluster.drop_filter = None;
    cluster.mutate = Some(Box::new(|m| {
        if let MessageBody::AppendEntries(request) = &mut m.body {
            request.entries.retain(|e| e.index < 3);
        }
    }));
    // Its first campaign (term 2) meets voters that already voted for S5 in
    // term 2; the next one wins.
    for _ in 0..3 {
        cluster.raft_mut(1).campaign();
        cluster.stabilize();
        if cluster.raft(1).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(cluster.leader(), Some(1));
    assert_eq!(cluster.raft(1).term(), 3);
    let holders = [1, 2, 3, 4]
        .iter()
        .filter(|&&id| {
            cluster
                .raft(id)
                .entry(2)
                .is_some_and(|e| e.data == data("x"))
        })
        .count();
    assert!(holders >= 3, "x is on a majority ({holders} nodes)");
    assert_eq!(
        cluster.raft(1).status().commit,
        1,
        "an older term's entry is not committed by counting replicas"
    );
    // Once an entry of term 3 reaches a majority, both commit.
    cluster.mutate = None;
    cluster.run_ticks(20);
    assert!(cluster.raft(1).status().commit >= 3);
    assert_eq!(
        cluster.applied.get(&2).map(|(_, _, d)| d.clone()),
        Some(data("x"))
    );
}

#[test]
fn snapshot_install_in_chunks() {
    let mut cluster = Cluster::with_config(3, 8, |c| c.snapshot_chunk_bytes = 5);
    let leader = cluster.elect();
    let lagging = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.partition(&[lagging]);
    for i in 0..20 {
        cluster
            .raft_mut(leader)
            .propose(data(&format!("v{i}")))
            .unwrap();
    }
    cluster.stabilize();
    let last = cluster.raft(leader).status().last_index;
    for id in cluster.ids() {
        if id != lagging {
            cluster.compact(id);
        }
    }
    assert_eq!(cluster.raft(leader).status().snapshot_index, last);
    cluster.heal();
    cluster.run_ticks(30);
    let node = &cluster.nodes[&lagging];
    assert_eq!(
        node.durable.snapshot.as_ref().map(|s| s.meta.index),
        Some(last),
        "the snapshot was installed"
    );
    assert_eq!(
        node.machine, cluster.nodes[&leader].machine,
        "same state machine"
    );
    // It goes on replicating normally, and survives a restart.
    let index = cluster.propose("after");
    assert!(cluster.all_applied(index));
    cluster.crash(lagging);
    cluster.start(lagging);
    assert_eq!(
        cluster.nodes[&lagging].machine.applied, last,
        "restored from the snapshot"
    );
    cluster.run_ticks(30);
    assert!(cluster.all_applied(index));
}

#[test]
fn read_index_confirms_leadership() {
    let mut cluster = Cluster::new(3, 9);
    let leader = cluster.elect();
    let index = cluster.propose("w");
    cluster.raft_mut(leader).read_index(7).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.nodes[&leader].reads, vec![(7, index)]);
    // A follower refuses, naming the leader.
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    assert_eq!(
        cluster.raft_mut(follower).read_index(8),
        Err(ProposeError::NotLeader { hint: Some(leader) })
    );
    // A leader cut off from the quorum cannot confirm a read.
    cluster.isolate(leader);
    cluster.raft_mut(leader).read_index(9).unwrap();
    cluster.stabilize();
    for _ in 0..5 {
        cluster.tick(leader);
        cluster.stabilize();
    }
    assert_eq!(
        cluster.nodes[&leader].reads.len(),
        1,
        "no read confirmed without a quorum"
    );
}

#[test]
fn leader_transfer_to_a_lagging_follower() {
    let mut cluster = Cluster::new(3, 10);
    let leader = cluster.elect();
    let target = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.partition(&[target]);
    for i in 0..5 {
        cluster
            .raft_mut(leader)
            .propose(data(&format!("t{i}")))
            .unwrap();
    }
    cluster.stabilize();
    cluster.heal();
    let term = cluster.raft(leader).term();
    cluster.raft_mut(leader).transfer_leader(target).unwrap();
    assert_eq!(
        cluster.raft_mut(leader).propose(data("no")),
        Err(ProposeError::Transferring { to: target })
    );
    // The next heartbeat round resumes sending to the lagging target.
    cluster.run_ticks(cluster.config.heartbeat_ticks * 2);
    assert_eq!(cluster.leader(), Some(target));
    assert!(cluster.raft(target).term() > term);
    let index = cluster.propose("after transfer");
    assert!(cluster.all_applied(index));
}

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
