//! Faults in the middle of a membership change, in simulation (issue 16;
//! the catalog's M9, M10 and M11 in `reference/membership-tests.md`): a
//! leader change while a change is in the log (Ongaro's 2015 cases),
//! partitions while a change is on its way, and crashes of the leader, of
//! a learner installing a snapshot, and of every node.
//!
//! Cairn changes one server at a time (there is no joint phase, so the
//! catalog's "joint configuration with one side cut off" does not arise)
//! and a configuration takes effect when appended, so a change cut off
//! with its leader must either reach a quorum and commit or be truncated
//! everywhere. Each test checks the
//! catalog's oracles: the applied sequence (two servers applying different
//! commands at one index fail the test as it happens), every acknowledged
//! command applied by every member, the members agreeing on the
//! configuration, and — through a [`Monitor`] sampling every server's
//! status — at most one leader per term and a removed server never
//! leading again.
#![cfg(madsim)]

mod lab;
mod members;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rsm::{ClusterConfig, ConfChange, ConfChangeError, MembershipError, Term};
use lab::{Tester, command, name, node_id};
use members::{
    CHANGE_DEADLINE, Monitor, Writer, check_members_agree, config_of, join, leader, must_change,
    promote, url_of, voters,
};
use rand::Rng;
use tokio::task::JoinHandle;

type Outcome = Result<ClusterConfig, MembershipError>;

/// A pause of up to `most_ms` milliseconds chosen by the seed, so that
/// seeds cut a change at different moments.
async fn random_pause(most_ms: u64) {
    let ms = madsim::rand::thread_rng().gen_range(0..=most_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Splits the servers into groups that cannot reach each other.
fn partition(t: &Tester, groups: &[&[usize]]) {
    let names: Vec<Vec<String>> = groups
        .iter()
        .map(|group| group.iter().map(|&s| name(s)).collect())
        .collect();
    let names: Vec<Vec<&str>> = names
        .iter()
        .map(|group| group.iter().map(String::as_str).collect())
        .collect();
    let groups: Vec<&[&str]> = names.iter().map(Vec::as_slice).collect();
    t.world.lock().unwrap().partition(&groups);
}

fn heal(t: &Tester) {
    t.world.lock().unwrap().heal_all();
}

/// Proposes `step` at `server` in the background.
fn propose_at(t: &Tester, server: usize, step: ConfChange) -> JoinHandle<Outcome> {
    let node = t
        .node(server)
        .unwrap_or_else(|| t.fail(format!("server {server} does not run")));
    tokio::spawn(async move {
        let url = url_of(step);
        node.propose_conf_change(step, url.as_deref(), CHANGE_DEADLINE)
            .await
    })
}

/// Has the leader among `voters` append `step` (made from the leader and
/// the other voters) and cuts it off: before it sends the change (`None`:
/// the change is in its log only), or after letting it send for the given
/// time (a few tens of microseconds reach some followers, or all).
/// Returns the old leader, its term, and its proposal's outcome to come.
async fn append_and_cut_off(
    t: &Tester,
    voters: &[usize],
    step: impl Fn(usize, &[usize]) -> ConfChange,
    send_for: Option<Duration>,
) -> (usize, Term, JoinHandle<Outcome>) {
    let begin = tokio::time::Instant::now();
    while begin.elapsed() < CHANGE_DEADLINE {
        let old = leader(t, voters).await;
        let others: Vec<usize> = voters.iter().copied().filter(|&s| s != old).collect();
        let step = step(old, &others);
        let before = config_of(t, old).await;
        let term = t.node(old).unwrap().status().term;
        if send_for.is_none() {
            t.disconnect(old);
        }
        let proposal = propose_at(t, old, step);
        if let Some(duration) = send_for {
            tokio::time::sleep(duration).await;
            t.disconnect(old);
        }
        let wanted = before.apply(step).expect("the step applies");
        for _ in 0..50 {
            if config_of(t, old).await == wanted {
                return (old, term, proposal);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Leadership moved just before: try again at the new leader.
        t.connect(old);
    }
    t.fail("no leader appended a change".into())
}

/// Has the first of `servers` that leads a term after `after` propose
/// `step` the moment it becomes leader. Answers (server, term, outcome),
/// or `None` if none leads within [`CHANGE_DEADLINE`].
fn propose_at_next_leader(
    t: &Tester,
    servers: &[usize],
    after: Term,
    step: ConfChange,
) -> JoinHandle<Option<(usize, Term, Outcome)>> {
    let (sender, mut first) = tokio::sync::mpsc::channel(servers.len());
    let watchers: Vec<JoinHandle<()>> = servers
        .iter()
        .map(|&server| {
            let node = t.node(server).expect("the server runs");
            let mut status = node.watch_status();
            let sender = sender.clone();
            tokio::spawn(async move {
                loop {
                    let now = status.borrow_and_update().clone();
                    if now.is_leader() && now.term > after {
                        let url = url_of(step);
                        let outcome = node
                            .propose_conf_change(step, url.as_deref(), CHANGE_DEADLINE)
                            .await;
                        let _ = sender.send((server, now.term, outcome)).await;
                        return;
                    }
                    if status.changed().await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        let outcome = tokio::time::timeout(CHANGE_DEADLINE, first.recv()).await;
        watchers.iter().for_each(JoinHandle::abort);
        outcome.ok().flatten()
    })
}

/// The voters 0-3 but `old`.
fn others_of(old: usize) -> Vec<usize> {
    (0..4).filter(|&s| s != old).collect()
}

/// M9, Ongaro's cases: the leader of voters 0-3 (learners 4 and 5 caught
/// up) appends `first` and is cut off, before it sends it or a moment
/// after; the others elect a new leader, which proposes `second` the
/// moment it leads — refused until it has committed an entry of its own
/// term — then makes it. Healed, every member agrees that the old
/// leader's change was either truncated or (if the new leader had it)
/// committed before `second`: never both committed on their own, by
/// quorums of disjoint configurations.
async fn changes_by_two_leaders(
    first: fn(usize, &[usize]) -> ConfChange,
    second: fn(usize, &[usize]) -> ConfChange,
) {
    let t = Arc::new(Tester::growable(4, 6, true, -1));
    let monitor = Monitor::start(&t);
    for spare in [4, 5] {
        join(&t, spare, 0).await;
        must_change(&t, &[0, 1, 2, 3], ConfChange::AddLearner(node_id(spare))).await;
    }
    let writer = Writer::start(&t, Arc::new(Mutex::new((0..6).collect())), 1);
    writer.goes_on(&t, 10).await;
    let start = config_of(&t, 0).await;
    // Half the seeds cut the old leader off before it sends its change,
    // half a moment after, when some or all of the others may have it.
    let send_for = madsim::rand::thread_rng()
        .gen_bool(0.5)
        .then(|| Duration::from_micros(madsim::rand::thread_rng().gen_range(0..200)));
    let (old, old_term, first_outcome) =
        append_and_cut_off(&t, &[0, 1, 2, 3], first, send_for).await;
    let first = first(old, &others_of(old));
    let second = second(old, &others_of(old));
    // Learner 4 may lead too, if the first change promoted it.
    let others: Vec<usize> = (0..6).filter(|&s| s != old).collect();
    let early = propose_at_next_leader(&t, &others, old_term, second);
    let Some((new, new_term, outcome)) = early.await.expect("the watch ends") else {
        t.fail(format!("no server but {old} led after term {old_term}"))
    };
    assert_eq!(
        outcome,
        Err(MembershipError::Refused(ConfChangeError::LeaderNotReady {
            term: new_term
        })),
        "server {new} proposed a change before committing an entry of its term {new_term} (seed {})",
        t.seed()
    );
    must_change(&t, &others, second).await;
    let first_made = first_outcome.await.expect("the proposal ends").is_ok();
    let config = config_of(&t, leader(&t, &others).await).await;
    for server in (0..6).filter(|&s| config.removed.contains(&node_id(s))) {
        monitor.removed(server);
    }
    t.connect(old);
    writer.goes_on(&t, 10).await;
    let acknowledged = writer.finish().await;
    let live: Vec<usize> = (0..6).filter(|&s| config.is_member(node_id(s))).collect();
    assert_eq!(check_members_agree(&t, &live, &acknowledged).await, config);
    // The first change is made (committed by the next leader, which had
    // it) or truncated everywhere; made if its proposer was told so, and
    // truncated if it never left the old leader.
    let without_first = start.apply(second).unwrap();
    let with_first = start.apply(first).and_then(|c| c.apply(second)).ok();
    if first_made {
        assert_eq!(Some(config), with_first, "an acknowledged change was lost");
    } else if send_for.is_none() {
        assert_eq!(
            config, without_first,
            "a change only the old leader had was made"
        );
    } else {
        assert!(
            config == without_first || Some(&config) == with_first.as_ref(),
            "{config:?}"
        );
    }
    monitor.finish(&t);
}

/// M9: one leader adds a voter (promotes learner 4), the next removes the
/// first.
#[madsim::test]
async fn add_and_remove_by_two_leaders() {
    changes_by_two_leaders(
        |_, _| ConfChange::Promote(node_id(4)),
        |old, _| ConfChange::Remove(node_id(old)),
    )
    .await;
}

/// M9: two leaders each add a voter.
#[madsim::test]
async fn add_and_add_by_two_leaders() {
    changes_by_two_leaders(
        |_, _| ConfChange::Promote(node_id(4)),
        |_, _| ConfChange::Promote(node_id(5)),
    )
    .await;
}

/// M9: two leaders each remove a voter.
#[madsim::test]
async fn remove_and_remove_by_two_leaders() {
    changes_by_two_leaders(
        |_, others| ConfChange::Remove(node_id(others[0])),
        |old, _| ConfChange::Remove(node_id(old)),
    )
    .await;
}

/// M10: the leader of five voters promotes a learner and is cut off, at a
/// moment the seed picks, with one follower; the other three voters and
/// the learner go on. Healed, the change is made or not on every member:
/// made if its proposer was told so, rolled back if it never left the
/// minority.
#[madsim::test]
async fn a_change_cut_off_with_the_old_leader_in_the_minority() {
    let t = Arc::new(Tester::growable(5, 6, true, -1));
    let monitor = Monitor::start(&t);
    join(&t, 5, 0).await;
    must_change(&t, &[0, 1, 2, 3, 4], ConfChange::AddLearner(node_id(5))).await;
    let members = Arc::new(Mutex::new((0..6).collect::<Vec<usize>>()));
    let writer = Writer::start(&t, members.clone(), 1);
    writer.goes_on(&t, 10).await;
    let old = leader(&t, &[0, 1, 2, 3, 4]).await;
    let minority = [old, (old + 1) % 5];
    let majority: Vec<usize> = (0..6).filter(|s| !minority.contains(s)).collect();
    // Half the seeds cut the leader off before it sends the change (which
    // must then be rolled back), half at a moment after.
    let cut_first = madsim::rand::thread_rng().gen_bool(0.5);
    if cut_first {
        partition(&t, &[&minority, &majority]);
    }
    let proposal = propose_at(&t, old, ConfChange::Promote(node_id(5)));
    if !cut_first {
        random_pause(20).await;
        partition(&t, &[&minority, &majority]);
    }
    *members.lock().unwrap() = majority.clone();
    writer.goes_on(&t, 20).await;
    heal(&t);
    *members.lock().unwrap() = (0..6).collect();
    let outcome = proposal.await.expect("the proposal ends");
    writer.goes_on(&t, 10).await;
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &(0..6).collect::<Vec<_>>(), &acknowledged).await;
    if outcome.is_ok() {
        assert!(
            config.is_voter(node_id(5)),
            "an acknowledged promotion was lost"
        );
    }
    if cut_first {
        assert!(
            !config.is_voter(node_id(5)),
            "a change only the minority had was made"
        );
    }
    assert!(
        [voters(&[0, 1, 2, 3, 4]), voters(&[0, 1, 2, 3, 4, 5])].contains(&config.voters),
        "{config:?}"
    );
    monitor.finish(&t);
}

/// M10: the leader of three voters promotes a learner and the group
/// splits, at a moment the seed picks, into the leader and one follower
/// (a majority of the old configuration) against the other follower and
/// the learner. Once the leader has appended the promotion, neither side
/// may commit: the leader's side is two of the new four voters, and the
/// other side is a majority of neither configuration. Healed, the group
/// finishes or rolls back the promotion, consistently.
#[madsim::test]
async fn a_promotion_split_across_old_and_new_configuration() {
    let t = Arc::new(Tester::growable(3, 4, true, -1));
    let monitor = Monitor::start(&t);
    join(&t, 3, 0).await;
    must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    let all = vec![0, 1, 2, 3];
    let writer = Writer::start(&t, Arc::new(Mutex::new(all.clone())), 1);
    writer.goes_on(&t, 10).await;
    let old = leader(&t, &[0, 1, 2]).await;
    let (a, b) = ((old + 1) % 3, (old + 2) % 3);
    let proposal = propose_at(&t, old, ConfChange::Promote(node_id(3)));
    random_pause(10).await;
    partition(&t, &[&[old, a], &[b, 3]]);
    if config_of(&t, old).await.is_voter(node_id(3)) {
        // Commands committed before the split are acknowledged at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let frozen = writer.count();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(writer.count(), frozen, "a side of the split committed");
    }
    heal(&t);
    let _ = proposal.await.expect("the proposal ends");
    writer.goes_on(&t, 10).await;
    let acknowledged = writer.finish().await;
    let config = check_members_agree(&t, &all, &acknowledged).await;
    assert!(
        [voters(&[0, 1, 2]), voters(&all)].contains(&config.voters),
        "{config:?}"
    );
    monitor.finish(&t);
}

/// M11: the leader appends a removal while cut off, and every node is
/// killed before it commits. Restarted, each node's configuration comes
/// back from its snapshot (which holds an earlier, committed removal) and
/// its log — the old leader's with the uncommitted removal. The others
/// elect a leader and commit; healed, the old leader's change is rolled
/// back everywhere.
#[madsim::test]
async fn every_node_killed_with_a_change_appended_but_not_committed() {
    let t = Arc::new(Tester::growable(4, 4, true, 2000));
    let monitor = Monitor::start(&t);
    must_change(&t, &[0, 1, 2, 3], ConfChange::Remove(node_id(3))).await;
    monitor.removed(3);
    t.crash1(3);
    let removal = (0..3).map(|s| t.node(s).unwrap().status().commit).max();
    for value in 1..=60 {
        t.one(command(value), 3, true).await;
    }
    let (old, _, _) = append_and_cut_off(
        &t,
        &[0, 1, 2],
        |_, others| ConfChange::Remove(node_id(others[0])),
        None,
    )
    .await;
    let others: Vec<usize> = (0..3).filter(|&s| s != old).collect();
    for server in 0..3 {
        t.start1(server);
    }
    let committed = ClusterConfig::new(voters(&[0, 1, 2, 3]))
        .apply(ConfChange::Remove(node_id(3)))
        .unwrap();
    let uncommitted = committed
        .apply(ConfChange::Remove(node_id(others[0])))
        .unwrap();
    assert_eq!(config_of(&t, old).await, uncommitted);
    for &server in &others {
        assert_eq!(config_of(&t, server).await, committed);
    }
    assert!(
        Some(t.max_snapshot_index()) > removal,
        "no snapshot holds the committed removal"
    );
    for value in 61..=65 {
        t.one(command(value), 2, true).await;
    }
    t.connect(old);
    let acknowledged: Vec<u64> = (1..=65).collect();
    let config = check_members_agree(&t, &[0, 1, 2], &acknowledged).await;
    assert_eq!(config, committed);
    monitor.finish(&t);
}

/// M11: every node killed, at a moment the seed picks, while the leader
/// removes a voter under load (with snapshots taken). Restarted, the group
/// finishes the removal or rolls it back, the same on every member, and
/// keeps every acknowledged write; a removal its proposer was told of is
/// finished.
#[madsim::test]
async fn every_node_killed_at_a_random_moment_of_a_change() {
    let t = Arc::new(Tester::growable(4, 4, true, 2000));
    let monitor = Monitor::start(&t);
    let members = Arc::new(Mutex::new(vec![0, 1, 2, 3]));
    let writer = Writer::start(&t, members.clone(), 1);
    writer.goes_on(&t, 60).await;
    let old = leader(&t, &[0, 1, 2, 3]).await;
    let gone = (old + 1) % 4;
    let proposal = propose_at(&t, old, ConfChange::Remove(node_id(gone)));
    random_pause(15).await;
    for server in 0..4 {
        t.crash1(server);
    }
    let outcome = proposal.await.expect("the proposal ends");
    for server in 0..4 {
        t.start1(server);
    }
    writer.goes_on(&t, 10).await;
    let config = config_of(&t, leader(&t, &[0, 1, 2, 3]).await).await;
    let finished = config.removed.contains(&node_id(gone));
    assert!(
        finished || outcome.is_err(),
        "an acknowledged removal was rolled back: {config:?}"
    );
    if finished {
        monitor.removed(gone);
        members.lock().unwrap().retain(|&s| s != gone);
    }
    writer.goes_on(&t, 10).await;
    let acknowledged = writer.finish().await;
    let live = members.lock().unwrap().clone();
    assert_eq!(check_members_agree(&t, &live, &acknowledged).await, config);
    assert!(t.max_snapshot_index() > 0, "no snapshot was taken");
    monitor.finish(&t);
}

/// M11: a new learner killed, at a moment the seed picks, while it
/// installs the snapshot that starts it; restarted, it finishes catching
/// up and is promoted.
#[madsim::test]
async fn a_learner_killed_while_it_installs_a_snapshot() {
    let t = Arc::new(Tester::growable(3, 4, true, 2000));
    let monitor = Monitor::start(&t);
    for value in 1..=60 {
        t.one(command(value), 3, true).await;
    }
    assert!(t.max_snapshot_index() > 0, "no snapshot was taken");
    let restores = t.restores();
    join(&t, 3, 0).await;
    must_change(&t, &[0, 1, 2], ConfChange::AddLearner(node_id(3))).await;
    random_pause(40).await;
    t.crash1(3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.start1(3);
    let config = promote(&t, &[0, 1, 2], 3).await;
    assert_eq!(config.voters, voters(&[0, 1, 2, 3]));
    assert!(t.restores() > restores, "the learner installed no snapshot");
    for value in 61..=65 {
        t.one(command(value), 4, true).await;
    }
    let acknowledged: Vec<u64> = (1..=65).collect();
    check_members_agree(&t, &[0, 1, 2, 3], &acknowledged).await;
    monitor.finish(&t);
}
