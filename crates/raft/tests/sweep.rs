//! A seeded random sweep of the Raft core: thousands of schedules of ticks,
//! message delivery in any order, drops, duplicates, partitions, proposals,
//! snapshots, reads, leader transfers, membership changes (add a learner on
//! a new machine, promote, remove; ids never reused), and crashes (some in
//! the middle of a `Ready`, losing what was not yet persisted) with
//! restarts. The harness checks election safety (one leader per term),
//! leader completeness, state machine safety, monotonic commit, that every
//! commit is held by a quorum of the leader's voters (so never counts a
//! learner or a removed node) and that each node's configuration is the
//! one its applied log implies, after every step; log matching after every
//! action. At the end the network heals and every member of the final
//! configuration must agree on a new entry.
//!
//! Two profiles: every fault at once, and a calmer one in which leaders
//! last long enough to change the membership again and again.
//! `RAFT_SWEEP_SCHEDULES=N` runs N schedules of each (default 2500 and
//! 1000), from `RAFT_SWEEP_BASE`; a failure prints the test and the seed,
//! and `RAFT_SWEEP_SEED=S` replays that one schedule.

mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use cairn_raft::{ConfChange, EntryKind, NodeId};
use harness::Cluster;
use rand::Rng;

/// The most machines a schedule starts (the first ones included).
const MAX_MACHINES: u64 = 9;

const STEPS_PER_SCHEDULE: usize = 400;

/// What one step of a schedule does.
#[derive(Debug, Clone, Copy)]
enum Action {
    Tick,
    /// Deliver, drop or duplicate a message on the wire.
    Deliver,
    Propose,
    Compact,
    Read,
    Crash,
    Restart,
    Partition,
    Heal,
    /// Leader churn, the stuff of Raft's Figure 8.
    Campaign,
    Transfer,
    AddLearner,
    Promote,
    Remove,
}

/// A kind of schedule.
struct Profile {
    /// The test that runs it.
    name: &'static str,
    /// How often each action happens, out of the sum of the weights.
    weights: &'static [(Action, u32)],
    /// Whether the schedule starts with an elected leader.
    elected: bool,
    /// How many schedules `cargo test` runs (`RAFT_SWEEP_SCHEDULES` sets
    /// another number).
    schedules: u64,
}

/// Every fault at once; membership changes now and then.
const CHAOS: Profile = Profile {
    name: "random_schedules_keep_raft_safe_and_live",
    elected: false,
    schedules: 2500,
    weights: &[
        (Action::Tick, 30),
        (Action::Deliver, 32),
        (Action::Propose, 14),
        (Action::Compact, 4),
        (Action::Read, 3),
        (Action::Crash, 2),
        (Action::Restart, 5),
        (Action::Partition, 4),
        (Action::Heal, 2),
        (Action::Campaign, 2),
        (Action::Transfer, 2),
        (Action::AddLearner, 4),
        (Action::Promote, 4),
        (Action::Remove, 4),
    ],
};

/// Fewer faults, from an elected leader, so that leaders last long enough
/// to make one membership change after another.
const MEMBERSHIP: Profile = Profile {
    name: "random_membership_changes_keep_raft_safe_and_live",
    elected: true,
    // Longer schedules (more entries, more machines): fewer of them.
    schedules: 1000,
    weights: &[
        (Action::Tick, 30),
        (Action::Deliver, 45),
        (Action::Propose, 8),
        (Action::Compact, 3),
        (Action::Read, 1),
        (Action::Crash, 1),
        (Action::Restart, 4),
        (Action::Partition, 1),
        (Action::Heal, 2),
        (Action::Campaign, 1),
        (Action::Transfer, 1),
        (Action::AddLearner, 6),
        (Action::Promote, 6),
        (Action::Remove, 3),
    ],
};

fn pick_action(cluster: &mut Cluster, profile: &Profile) -> Action {
    let total: u32 = profile.weights.iter().map(|&(_, weight)| weight).sum();
    let mut roll = cluster.rng.gen_range(0..total);
    for &(action, weight) in profile.weights {
        if roll < weight {
            return action;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the total weight")
}

fn run_schedule(seed: u64, profile: &Profile) -> harness::Stats {
    let size = if seed.is_multiple_of(2) { 3 } else { 5 };
    let mut cluster = Cluster::with_config(size, seed, |c| {
        c.election_timeout_ticks = 10;
        c.heartbeat_ticks = 3;
        // One entry per message in a third of the schedules, so that a new
        // leader's no-op and older entries travel (and get lost) apart.
        c.max_append_bytes = if seed.is_multiple_of(3) { 1 } else { 64 };
        c.max_inflight_appends = 4;
        c.snapshot_chunk_bytes = 6;
    });
    if profile.elected {
        cluster.elect();
    }
    cluster.crash_in_ready = 0.01;
    let mut proposals = 0u64;
    for _ in 0..STEPS_PER_SCHEDULE {
        let ids = cluster.ids();
        let action = pick_action(&mut cluster, profile);
        let id = ids[cluster.rng.gen_range(0..ids.len())];
        let up = cluster.is_up(id);
        match action {
            Action::Tick => cluster.tick(id),
            Action::Deliver => deliver_one(&mut cluster),
            Action::Propose if up => {
                proposals += 1;
                let _ = cluster
                    .raft_mut(id)
                    .propose(Bytes::from(format!("p{proposals}")));
            }
            Action::Compact => cluster.compact(id),
            Action::Read if up => {
                let _ = cluster.raft_mut(id).read_index(proposals);
            }
            Action::Crash if up => cluster.crash(id),
            Action::Restart if !up => cluster.start(id),
            Action::Partition => {
                let side: Vec<_> = ids
                    .iter()
                    .copied()
                    .filter(|_| cluster.rng.gen_bool(0.4))
                    .collect();
                cluster.partition(&side);
            }
            Action::Heal => cluster.heal(),
            Action::Campaign if up => cluster.raft_mut(id).campaign(),
            Action::Transfer if up => {
                let target = ids[cluster.rng.gen_range(0..ids.len())];
                let _ = cluster.raft_mut(id).transfer_leader(target);
            }
            Action::AddLearner | Action::Promote | Action::Remove => {
                // Most proposals would miss the leader; these go to it.
                let at = cluster.leader().unwrap_or(id);
                change_membership(&mut cluster, at, action);
            }
            _ => {}
        }
        cluster.process_readies();
        cluster.check_log_matching();
    }
    // Liveness: heal everything; a leader must emerge and commit a new
    // entry on every node.
    cluster.crash_in_ready = 0.0;
    cluster.heal();
    for id in cluster.ids() {
        if !cluster.is_up(id) {
            cluster.start(id);
        }
    }
    // A leader may be mid-transfer and refuse for up to an election timeout,
    // or lose leadership before the entry commits: propose again under each
    // new leader until one entry is applied everywhere.
    let mut final_index = None;
    let mut proposed_in = None;
    for _ in 0..1_000 {
        if let Some(leader) = cluster.leader() {
            let term = cluster.raft(leader).term();
            if proposed_in != Some(term)
                && let Ok((index, _)) = cluster
                    .raft_mut(leader)
                    .propose(Bytes::from_static(b"final"))
            {
                final_index = Some(index);
                proposed_in = Some(term);
            }
        }
        if final_index.is_some_and(|index| cluster.all_applied(index)) {
            break;
        }
        cluster.tick_all();
        cluster.stabilize();
    }
    let index = final_index.expect("no leader accepted a proposal after healing");
    assert!(
        cluster.all_applied(index),
        "the healed cluster did not apply index {index} on every member"
    );
    cluster.check_log_matching();
    let members = cluster.members();
    let machines: Vec<_> = members.iter().map(|id| cluster.nodes[id].machine).collect();
    assert!(
        machines.windows(2).all(|w| w[0] == w[1]),
        "state machines differ at the end: {machines:?}"
    );
    cluster.stats.conf_changes_committed = cluster
        .applied
        .values()
        .filter(|(_, kind, _)| *kind == EntryKind::Config)
        .count() as u64;
    cluster.stats
}

/// Delivers a random message on the wire; one in ten is lost instead, one
/// in ten delivered twice.
fn deliver_one(cluster: &mut Cluster) {
    if cluster.pool.is_empty() {
        return;
    }
    let position = cluster.rng.gen_range(0..cluster.pool.len());
    match cluster.rng.gen_range(0..10) {
        0 | 1 => drop(cluster.pool.remove(position)),
        2 => {
            let copy = cluster.pool[position].clone();
            cluster.pool.push(copy);
            cluster.deliver(position);
        }
        _ => cluster.deliver(position),
    }
}

/// Node `id` proposes a membership change: a learner on a new machine
/// (started at once, with an empty disk, under an id never used), or the
/// promotion or removal of a member it knows. Refusals are expected (not
/// the leader, a change pending, a lagging learner) and change nothing.
fn change_membership(cluster: &mut Cluster, id: NodeId, action: Action) {
    if !cluster.is_up(id) {
        return;
    }
    let config = cluster.raft(id).cluster().clone();
    let pick = |cluster: &mut Cluster, ids: Vec<NodeId>| {
        (!ids.is_empty()).then(|| ids[cluster.rng.gen_range(0..ids.len())])
    };
    let change = match action {
        Action::AddLearner => {
            let new = cluster.nodes.keys().max().unwrap() + 1;
            (new <= MAX_MACHINES).then_some(ConfChange::AddLearner(new))
        }
        Action::Promote => {
            pick(cluster, config.learners.iter().copied().collect()).map(ConfChange::Promote)
        }
        _ => pick(cluster, config.members().collect()).map(ConfChange::Remove),
    };
    let Some(change) = change else { return };
    let result = cluster
        .raft_mut(id)
        .propose_conf_change(change, Bytes::new());
    let accepted = result.is_ok();
    if let (true, ConfChange::AddLearner(new)) = (accepted, change) {
        cluster.add_node(new);
    }
}

/// Runs the schedules of `profile` (`RAFT_SWEEP_SCHEDULES`, from
/// `RAFT_SWEEP_BASE`), or replays `RAFT_SWEEP_SEED`; returns the totals.
fn sweep(profile: &Profile) -> Option<(u64, harness::Stats)> {
    let name = profile.name;
    if let Ok(seed) = std::env::var("RAFT_SWEEP_SEED") {
        run_schedule(seed.parse().expect("RAFT_SWEEP_SEED is a number"), profile);
        return None;
    }
    let schedules: u64 = std::env::var("RAFT_SWEEP_SCHEDULES")
        .map_or(profile.schedules, |n| n.parse().expect("a number"));
    let base: u64 = std::env::var("RAFT_SWEEP_BASE").map_or(0, |n| n.parse().expect("a number"));
    let mut total = harness::Stats::default();
    for seed in base..base + schedules {
        match catch_unwind(AssertUnwindSafe(|| run_schedule(seed, profile))) {
            Ok(stats) => {
                total.crashes_in_ready += stats.crashes_in_ready;
                total.snapshots_installed += stats.snapshots_installed;
                total.reads_confirmed += stats.reads_confirmed;
                total.entries_applied += stats.entries_applied;
                total.conf_changes_committed += stats.conf_changes_committed;
            }
            Err(_) => panic!(
                "{name}: schedule {seed} failed; replay it with RAFT_SWEEP_SEED={seed} \
                 cargo test -p cairn-raft --test sweep {name}"
            ),
        }
    }
    eprintln!("{name}: {schedules} schedules: {total:?}");
    Some((schedules, total))
}

#[test]
fn random_schedules_keep_raft_safe_and_live() {
    let Some((schedules, total)) = sweep(&CHAOS) else {
        return;
    };
    // The sweep must exercise what it claims to.
    assert!(
        total.crashes_in_ready >= schedules / 10,
        "too few crashes inside a Ready: {total:?}"
    );
    assert!(
        total.snapshots_installed >= schedules / 20,
        "too few snapshot installs: {total:?}"
    );
    assert!(
        total.reads_confirmed >= schedules / 10,
        "too few confirmed reads: {total:?}"
    );
    assert!(
        total.entries_applied >= schedules * 5,
        "too few applied entries: {total:?}"
    );
}

#[test]
fn random_membership_changes_keep_raft_safe_and_live() {
    let Some((schedules, total)) = sweep(&MEMBERSHIP) else {
        return;
    };
    assert!(
        total.conf_changes_committed >= schedules * 2,
        "too few configuration changes committed: {total:?}"
    );
    assert!(
        total.snapshots_installed >= schedules / 20,
        "too few snapshot installs: {total:?}"
    );
}
