//! Learners at work, in simulation (issue 16; the catalog's M3, M6, M7 and
//! M16 in `reference/membership-tests.md`): learners that never start,
//! replacing the leader and then every member through learners, and what a
//! learner refuses and still does.
//!
//! Each test runs the lab 2 tester's nodes while a writer submits numbered
//! commands to the leader, and checks the catalog's oracles: the applied
//! sequence (two servers applying different commands at one index fail the
//! test as it happens), every acknowledged command applied by every member,
//! the members agreeing on the configuration, and — through a [`Monitor`]
//! sampling every server's status — at most one leader per term and a
//! removed server never leading again.
#![cfg(madsim)]

mod lab;
mod members;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rsm::{ConfChange, ConfChangeError, MembershipError, SubmitError};
use lab::{Tester, command, node_id};
use members::{
    Monitor, Writer, change, check_members_agree, config_of, join, leader, must_change, promote,
    transfer, voters,
};

/// M3: learners whose machines never start (their addresses answer
/// nothing) are added under load. Promoting one is refused with its lag;
/// learners never count toward a quorum, so the group keeps committing,
/// and a second never-started learner may be added too. (etcd's strict
/// check refuses the second unstarted *voter*; Cairn only adds learners,
/// and promotes those caught up.)
#[madsim::test]
async fn never_started_learners_do_not_stop_the_group() {
    let t = Arc::new(Tester::growable(3, 5, true, -1));
    let monitor = Monitor::start(&t);
    let members = Arc::new(Mutex::new(vec![0, 1, 2]));
    let writer = Writer::start(&t, members.clone(), 1);
    writer.goes_on(&t, 10).await;
    for spare in [3, 4] {
        let config = must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(spare))).await;
        assert!(config.is_learner(node_id(spare)), "{config:?}");
        match change(&t, &[0, 1, 2], ConfChange::Promote(node_id(spare))).await {
            Err(MembershipError::Refused(ConfChangeError::LearnerBehind {
                id, behind, ..
            })) => {
                assert_eq!(id, node_id(spare));
                assert!(
                    behind > 10,
                    "a learner that never ran lacks every entry: {behind}"
                );
            }
            other => t.fail(format!("promoting never-started server {spare}: {other:?}")),
        }
        writer.goes_on(&t, 20).await;
    }
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &[0, 1, 2], &acknowledged).await;
    assert_eq!(config.voters, voters(&[0, 1, 2]));
    assert_eq!(config.learners, voters(&[3, 4]));
    monitor.finish(&t);
}

/// M6: replace the leader under load. Cairn changes membership one server
/// at a time with learners, not by joint consensus, so etcd's single
/// joint step becomes four: add the new machine as a learner, promote it
/// once caught up, hand it leadership, and have it remove the old leader.
#[madsim::test]
async fn replace_the_leader_under_load() {
    let t = Arc::new(Tester::growable(3, 4, true, -1));
    let monitor = Monitor::start(&t);
    let members = Arc::new(Mutex::new(vec![0, 1, 2]));
    let writer = Writer::start(&t, members.clone(), 1);
    writer.goes_on(&t, 20).await;
    let old = leader(&t, &[0, 1, 2]).await;
    join(&t, 3, old).await;
    must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    promote(&t, &[0, 1, 2], 3).await;
    members.lock().unwrap().push(3);
    transfer(&t, &[0, 1, 2, 3], 3).await;
    let config = must_change(&t, &[3], ConfChange::Remove(node_id(old))).await;
    assert!(config.removed.contains(&node_id(old)), "{config:?}");
    monitor.removed(old);
    members.lock().unwrap().retain(|&s| s != old);
    let survivors = members.lock().unwrap().clone();
    writer.goes_on(&t, 20).await;
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &survivors, &acknowledged).await;
    assert_eq!(config.voters, voters(&survivors));
    assert!(!t.node(old).unwrap().status().is_leader());
    monitor.finish(&t);
}

/// M7: every member replaced one by one until no original remains, under
/// write load, with one node killed and restarted per round. A round adds
/// a new machine (a new id) as a learner, kills a member that stays while
/// the learner catches up, promotes the learner, restarts the killed
/// member, removes an original and wipes it: its machine never runs again
/// under the old id (a wiped machine comes back only under a new one, as
/// M8 checks).
#[madsim::test]
async fn replace_every_member_one_by_one() {
    let t = Arc::new(Tester::growable(3, 6, true, -1));
    let monitor = Monitor::start(&t);
    let members = Arc::new(Mutex::new(vec![0, 1, 2]));
    let writer = Writer::start(&t, members.clone(), 1);
    for original in 0..3 {
        let spare = original + 3;
        let current = members.lock().unwrap().clone();
        let staying: Vec<usize> = current.iter().copied().filter(|&s| s != original).collect();
        join(&t, spare, staying[0]).await;
        must_change(&t, &current, ConfChange::AddLearner(node_id(spare))).await;
        let victim = staying[original % 2];
        t.crash1(victim);
        promote(&t, &current, spare).await;
        members.lock().unwrap().push(spare);
        t.start1(victim);
        let current = members.lock().unwrap().clone();
        must_change(&t, &current, ConfChange::Remove(node_id(original))).await;
        monitor.removed(original);
        members.lock().unwrap().retain(|&s| s != original);
        t.crash1(original);
        writer.goes_on(&t, 10).await;
    }
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &[3, 4, 5], &acknowledged).await;
    assert_eq!(config.voters, voters(&[3, 4, 5]));
    assert_eq!(config.removed, voters(&[0, 1, 2]));
    monitor.finish(&t);
}

/// M16: a learner refuses writes and linearizable reads, naming the
/// leader; and it still votes when a candidate asks, for the candidate
/// may know a newer configuration in which it is a voter (the core's
/// `conf_change_learner_must_vote.txt`, through whole nodes): server 3 is
/// promoted while cut off, so it still believes it is a learner; the
/// leader then dies, and no one can win without server 3's vote.
#[madsim::test]
async fn a_learner_refuses_clients_but_votes() {
    let t = Arc::new(Tester::growable(3, 4, true, -1));
    let monitor = Monitor::start(&t);
    t.one(command(1), 3, true).await;
    join(&t, 3, 0).await;
    must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    check_members_agree(&t, &[0, 1, 2, 3], &[1]).await;
    let lead = leader(&t, &[0, 1, 2]).await;
    let learner = t.node(3).unwrap();
    let hint = Some(node_id(lead));
    assert_eq!(
        learner.submit(command(2), Duration::from_secs(1)).await,
        Err(SubmitError::NotLeader { hint })
    );
    assert_eq!(
        learner.read(|_| (), Duration::from_secs(1)).await,
        Err(SubmitError::NotLeader { hint })
    );
    t.disconnect(3);
    let config = promote(&t, &[0, 1, 2], 3).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
    assert!(config_of(&t, 3).await.is_learner(node_id(3)));
    t.crash1(lead);
    t.connect(3);
    let survivors: Vec<usize> = (0..4).filter(|&s| s != lead).collect();
    t.one(command(3), 3, true).await;
    let config = check_members_agree(&t, &survivors, &[1, 3]).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
    monitor.finish(&t);
}
