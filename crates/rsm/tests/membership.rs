//! Membership change through the replicated-state-machine runtime, in
//! simulation (issue 16; the cases are the catalog's M1, M2, M4, M5, M12
//! (a configuration and its addresses in snapshots), M14, M17 and M18 in
//! `reference/membership-tests.md`).
//!
//! Each test runs the lab 2 tester's nodes (a state machine that records
//! what it applied and fails the test if two servers apply different
//! commands at one index) while a writer submits numbered commands to the
//! leader; it changes the membership through `Node::propose_conf_change`
//! and checks at the end that every acknowledged command was applied by
//! every member, that all members agree on the configuration, and the
//! case's own promise (a refusal with the lag, no disruption by a removed
//! node, ...).
#![cfg(madsim)]

mod lab;
mod members;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rsm::{ConfChange, ConfChangeError, MembershipError};
use lab::{RAFT_ELECTION_TIMEOUT, Tester, command, node_id, url};
use members::{
    CHANGE_DEADLINE, Writer, change, check_members_agree, leader, must_change, promote, voters,
};

/// M1: a learner added under write load catches up and is promoted; the
/// four members agree on the configuration and hold every acknowledged
/// write.
#[madsim::test]
async fn add_learner_under_load_then_promote() {
    let t = Arc::new(Tester::growable(3, 4, true, -1));
    let members = Arc::new(Mutex::new(vec![0, 1, 2]));
    let writer = Writer::start(&t, members.clone(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.join(3, 0);
    // Past the problem log interval, the joining node warns it was not
    // added yet (and does not trip over its empty configuration).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let config = must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    assert!(config.is_learner(node_id(3)), "{config:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = promote(&t, &[0, 1, 2], 3).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
    members.lock().unwrap().push(3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acknowledged = writer.finish().await;
    assert!(
        acknowledged.len() > 20,
        "only {} writes acknowledged",
        acknowledged.len()
    );
    let config = check_members_agree(&t, &[0, 1, 2, 3], &acknowledged).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
    assert!(config.learners.is_empty());
}

/// M2: promoting a learner that never started is refused, saying how far
/// behind it is; once it runs and catches up the promotion succeeds.
#[madsim::test]
async fn promoting_a_lagging_learner_is_refused_with_its_lag() {
    let t = Arc::new(Tester::growable(3, 4, true, -1));
    for value in 1..=5 {
        t.one(command(value), 3, true).await;
    }
    must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    let refused = change(&t, &[0, 1, 2], ConfChange::Promote(node_id(3))).await;
    match refused {
        Err(MembershipError::Refused(
            error @ ConfChangeError::LearnerBehind {
                id,
                behind,
                answered,
                ..
            },
        )) => {
            assert_eq!(id, node_id(3));
            assert!(
                behind >= 6,
                "a learner that never ran lacks every entry: {behind}"
            );
            assert!(!answered);
            let said = error.to_string();
            assert!(said.contains("has not answered the leader yet"), "{said}");
        }
        other => t.fail(format!(
            "a never-started learner was not refused: {other:?}"
        )),
    }
    let at_leader = t.node(leader(&t, &[0, 1, 2]).await).unwrap();
    let membership = at_leader.membership().await.unwrap();
    assert!(membership.learner_lag[&node_id(3)] >= 6, "{membership:?}");
    // The transfer to a learner is refused too.
    assert_eq!(
        at_leader.transfer_leader(node_id(3)).await,
        Err(MembershipError::NotVoter { id: node_id(3) })
    );
    t.join(3, 0);
    let config = promote(&t, &[0, 1, 2], 3).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
    let acknowledged: Vec<u64> = (1..=5).collect();
    check_members_agree(&t, &[0, 1, 2, 3], &acknowledged).await;
}

/// M4: a follower removed under load, left running but partitioned, then
/// healed, does not disrupt the group: no new term after the heal.
#[madsim::test]
async fn a_removed_follower_left_running_does_not_disrupt() {
    let t = Arc::new(Tester::growable(3, 3, true, -1));
    let members = Arc::new(Mutex::new(vec![0, 1, 2]));
    let writer = Writer::start(&t, members.clone(), 1);
    let first = leader(&t, &[0, 1, 2]).await;
    let removed = (first + 1) % 3;
    let config = must_change(&t, &[0, 1, 2], ConfChange::Remove(node_id(removed))).await;
    assert!(config.removed.contains(&node_id(removed)));
    members.lock().unwrap().retain(|&s| s != removed);
    let survivors = members.lock().unwrap().clone();
    t.disconnect(removed);
    tokio::time::sleep(3 * RAFT_ELECTION_TIMEOUT).await;
    let before = t.node(leader(&t, &survivors).await).unwrap().status();
    t.connect(removed);
    tokio::time::sleep(3 * RAFT_ELECTION_TIMEOUT).await;
    let after = t.node(leader(&t, &survivors).await).unwrap().status();
    assert_eq!(
        (after.term, after.id),
        (before.term, before.id),
        "the removed node disrupted the group (seed {})",
        t.seed()
    );
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &survivors, &acknowledged).await;
    assert_eq!(config.voters, voters(&survivors));
}

/// M5: removing the leader while proposals are in flight: the change is
/// answered, another leader takes over, every survivor applies the same
/// sequence and every acknowledged command.
#[madsim::test]
async fn removing_the_leader_with_proposals_in_flight() {
    let t = Arc::new(Tester::growable(3, 3, true, -1));
    let members = Arc::new(Mutex::new(vec![0, 1, 2]));
    let writer = Writer::start(&t, members.clone(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = leader(&t, &[0, 1, 2]).await;
    let config = must_change(&t, &[0, 1, 2], ConfChange::Remove(node_id(old))).await;
    assert_eq!(config.voters.len(), 2);
    members.lock().unwrap().retain(|&s| s != old);
    let survivors = members.lock().unwrap().clone();
    let new = leader(&t, &survivors).await;
    assert_ne!(new, old);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &survivors, &acknowledged).await;
    assert_eq!(config.voters, voters(&survivors));
    assert!(!t.node(old).unwrap().status().is_leader());
}

/// M12: a learner added after the log was compacted installs a snapshot
/// (whose configuration names it) and is then promoted.
#[madsim::test]
async fn a_learner_added_after_compaction_installs_a_snapshot() {
    let t = Arc::new(Tester::growable(3, 4, true, 2000));
    for value in 1..=60 {
        t.one(command(value), 3, true).await;
    }
    assert!(t.max_snapshot_index() > 0, "no snapshot was taken");
    let restores = t.restores();
    t.join(3, 0);
    must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    let config = promote(&t, &[0, 1, 2], 3).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
    assert!(
        t.restores() > restores,
        "the new member did not install a snapshot"
    );
    for value in 61..=65 {
        t.one(command(value), 4, true).await;
    }
    let acknowledged: Vec<u64> = (1..=65).collect();
    check_members_agree(&t, &[0, 1, 2, 3], &acknowledged).await;
}

/// M14: shrink from three voters to one (through the two-member edge)
/// and grow to five with new ids, writing all along; on the way, M8 (a
/// removed id is refused) and M13 (a second change while one is pending is
/// refused).
#[madsim::test]
async fn shrink_to_one_and_grow_back_to_five() {
    let t = Arc::new(Tester::growable(3, 7, true, -1));
    let members = Arc::new(Mutex::new(vec![0, 1, 2]));
    let writer = Writer::start(&t, members.clone(), 1);
    for _ in 0..2 {
        let current = members.lock().unwrap().clone();
        let lead = leader(&t, &current).await;
        let gone = *current.iter().find(|&&s| s != lead).unwrap();
        must_change(&t, &current, ConfChange::Remove(node_id(gone))).await;
        members.lock().unwrap().retain(|&s| s != gone);
    }
    let sole = members.lock().unwrap()[0];
    // M8: a removed id never comes back (a wiped machine joins anew).
    let gone = (0..3).find(|&s| s != sole).unwrap();
    assert_eq!(
        change(&t, &[sole], ConfChange::AddLearner(node_id(gone))).await,
        Err(MembershipError::Refused(ConfChangeError::IdRemoved {
            id: node_id(gone)
        }))
    );
    // M13: of two changes proposed at once, the second is refused while
    // the first is pending.
    t.join(3, sole);
    let node = t.node(sole).unwrap();
    let spare_url = url(3);
    let (first, second) = tokio::join!(
        node.propose_conf_change(
            ConfChange::AddLearner(node_id(3)),
            Some(&spare_url),
            CHANGE_DEADLINE
        ),
        node.propose_conf_change(ConfChange::Remove(node_id(3)), None, CHANGE_DEADLINE),
    );
    assert!(first.is_ok(), "{first:?}");
    assert!(
        matches!(
            second,
            Err(MembershipError::Refused(
                ConfChangeError::ChangePending { .. }
            ))
        ),
        "{second:?}"
    );
    for spare in [3, 4, 5, 6] {
        let current = members.lock().unwrap().clone();
        if spare != 3 {
            t.join(spare, sole);
            must_change(&t, &current, ConfChange::AddLearner(node_id(spare))).await;
        }
        promote(&t, &current, spare).await;
        members.lock().unwrap().push(spare);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &[sole, 3, 4, 5, 6], &acknowledged).await;
    assert_eq!(config.voters, voters(&[sole, 3, 4, 5, 6]));
    assert_eq!(config.removed.len(), 2);
}

/// M18: every node restarted after a promotion comes back with the
/// configuration its log implies (not the bootstrap flags'), reaches the
/// promoted member at the URL its log carries, and the group commits.
#[madsim::test]
async fn every_node_restarted_after_a_promotion_keeps_the_configuration() {
    let t = Arc::new(Tester::growable(3, 4, true, -1));
    t.one(command(1), 3, true).await;
    t.join(3, 0);
    must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    promote(&t, &[0, 1, 2], 3).await;
    for server in 0..4 {
        t.start1(server);
    }
    // Server 0, an old voter, leads without server 2: its quorum of three
    // needs the promoted member, reached at the URL its log carries.
    t.crash1(2);
    lead_and_commit(&t, 0, &[0, 1, 3], 2).await;
    t.start1(2);
    let config = check_members_agree(&t, &[0, 1, 2, 3], &[1, 2]).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
}

/// Makes `server` lead (by transfer from the leader among `alive`) and
/// commit `command(value)` in its own term on the members in `alive`,
/// which needs it to reach them; fails the test otherwise.
async fn lead_and_commit(t: &Tester, server: usize, alive: &[usize], value: u64) {
    let begin = tokio::time::Instant::now();
    let placed = loop {
        if let Some(placed) = t.start(server, command(value)).await {
            break placed;
        }
        let lead = leader(t, alive).await;
        let _ = t.node(lead).unwrap().transfer_leader(node_id(server)).await;
        if begin.elapsed() > Duration::from_secs(10) {
            t.fail(format!("server {server} never became leader"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (index, term) = placed;
    if t.wait(index, alive.len(), Some(term)).await.is_none() {
        t.fail(format!(
            "server {server} lost its term {term} before committing index {index}"
        ));
    }
}

/// M12 (addresses in snapshots): a member added after bootstrap stays
/// reachable once the group compacted past its configuration entry. Server
/// 0 sleeps while server 3 joins, is promoted and server 2 is removed;
/// back, it installs the leader's snapshot (its log never saw server 3)
/// and, with server 1 stopped, must lead and commit with server 3 alone:
/// first after the install, then after a restart from the snapshot it
/// stored. Fails when snapshots do not carry the members' URLs.
#[madsim::test]
async fn a_member_added_before_a_snapshot_is_reached_through_it() {
    let t = Arc::new(Tester::growable(3, 4, true, 1000));
    t.one(command(1), 3, true).await;
    t.crash1(0);
    t.join(3, 1);
    let added = must_change(&t, &[1, 2], ConfChange::AddLearner(node_id(3))).await;
    assert!(added.is_learner(node_id(3)), "{added:?}");
    promote(&t, &[1, 2], 3).await;
    must_change(&t, &[1, 2, 3], ConfChange::Remove(node_id(2))).await;
    let mut value = 2;
    // Servers 1 and 3 compact far past server 3's entries.
    while [1, 3]
        .iter()
        .any(|&s| t.node(s).unwrap().status().snapshot_index < 40)
    {
        if value > 400 {
            t.fail("servers 1 and 3 never compacted past index 40".into());
        }
        t.one(command(value), 2, true).await;
        value += 1;
    }
    let restores = t.restores();
    t.start1(0);
    t.one(command(value), 3, true).await;
    assert!(
        t.restores() > restores,
        "server 0 did not install a snapshot"
    );
    t.crash1(1);
    lead_and_commit(&t, 0, &[0, 3], value + 1).await;
    t.start1(0);
    lead_and_commit(&t, 0, &[0, 3], value + 2).await;
    t.start1(1);
    let acknowledged: Vec<u64> = (1..=value + 2).collect();
    let config = check_members_agree(&t, &[0, 1, 3], &acknowledged).await;
    assert_eq!(config.voters, voters(&[0, 1, 3]));
}

/// M17: adding a learner at an address another member has is refused
/// (naming that member, saying to remove it first) and changes nothing;
/// the same node at its own address is then added.
#[madsim::test]
async fn an_address_pointing_at_another_node_is_refused() {
    let t = Arc::new(Tester::growable(3, 4, true, -1));
    t.one(command(1), 3, true).await;
    let at_leader = t.node(leader(&t, &[0, 1, 2]).await).unwrap();
    let before = at_leader.membership().await.unwrap().config;
    let refused = at_leader
        .propose_conf_change(
            ConfChange::AddLearner(node_id(3)),
            Some(&format!("{}/", url(1))),
            CHANGE_DEADLINE,
        )
        .await;
    match &refused {
        Err(error @ MembershipError::AddressInUse { id, .. }) => {
            assert_eq!(*id, node_id(1));
            assert!(error.to_string().contains("remove it first"), "{error}");
        }
        other => t.fail(format!("a second node at node 2's address: {other:?}")),
    }
    assert_eq!(at_leader.membership().await.unwrap().config, before);
    t.join(3, 0);
    let config = must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    assert!(config.is_learner(node_id(3)), "{config:?}");
    check_members_agree(&t, &[0, 1, 2, 3], &[1]).await;
}
