//! A seeded random sweep of the Raft core: thousands of schedules of ticks,
//! message delivery in any order, drops, duplicates, partitions, proposals,
//! snapshots, reads, leader transfers, and crashes (some in the middle of
//! a `Ready`, losing what was not yet persisted) with restarts. The harness
//! checks election safety, leader completeness, state machine safety and
//! monotonic commit after every step, log matching after every action; at
//! the end the network heals and the cluster must agree on a new entry.
//!
//! `RAFT_SWEEP_SCHEDULES=N` runs more (default 2500); a failure prints the
//! seed, and `RAFT_SWEEP_SEED=S` replays that one schedule.

mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use harness::Cluster;
use rand::Rng;

const STEPS_PER_SCHEDULE: usize = 400;

fn run_schedule(seed: u64) -> harness::Stats {
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
    cluster.crash_in_ready = 0.01;
    let ids = cluster.ids();
    let mut proposals = 0u64;
    for _ in 0..STEPS_PER_SCHEDULE {
        let roll = cluster.rng.gen_range(0..100);
        let id = ids[cluster.rng.gen_range(0..ids.len())];
        match roll {
            0..30 => cluster.tick(id),
            30..62 => {
                if !cluster.pool.is_empty() {
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
            }
            62..76 => {
                if cluster.is_up(id) {
                    proposals += 1;
                    let _ = cluster
                        .raft_mut(id)
                        .propose(Bytes::from(format!("p{proposals}")));
                }
            }
            76..80 => cluster.compact(id),
            80..83 => {
                if cluster.is_up(id) {
                    let _ = cluster.raft_mut(id).read_index(proposals);
                }
            }
            83..85 => {
                if cluster.is_up(id) {
                    cluster.crash(id);
                }
            }
            85..90 => {
                if !cluster.is_up(id) {
                    cluster.start(id);
                }
            }
            90..94 => {
                let side: Vec<_> = ids
                    .iter()
                    .copied()
                    .filter(|_| cluster.rng.gen_bool(0.4))
                    .collect();
                cluster.partition(&side);
            }
            94..96 => cluster.heal(),
            96..98 => {
                // Leader churn, the stuff of Raft's Figure 8.
                if cluster.is_up(id) {
                    cluster.raft_mut(id).campaign();
                }
            }
            _ => {
                let target = ids[cluster.rng.gen_range(0..ids.len())];
                if cluster.is_up(id) {
                    let _ = cluster.raft_mut(id).transfer_leader(target);
                }
            }
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
        "the healed cluster did not apply index {index} everywhere"
    );
    cluster.check_log_matching();
    let machines: Vec<_> = cluster.nodes.values().map(|n| n.machine).collect();
    assert!(
        machines.windows(2).all(|w| w[0] == w[1]),
        "state machines differ at the end: {machines:?}"
    );
    cluster.stats
}

#[test]
fn random_schedules_keep_raft_safe_and_live() {
    if let Ok(seed) = std::env::var("RAFT_SWEEP_SEED") {
        run_schedule(seed.parse().expect("RAFT_SWEEP_SEED is a number"));
        return;
    }
    let schedules: u64 =
        std::env::var("RAFT_SWEEP_SCHEDULES").map_or(2500, |n| n.parse().expect("a number"));
    let base: u64 = std::env::var("RAFT_SWEEP_BASE").map_or(0, |n| n.parse().expect("a number"));
    let mut total = harness::Stats::default();
    for seed in base..base + schedules {
        match catch_unwind(AssertUnwindSafe(|| run_schedule(seed))) {
            Ok(stats) => {
                total.crashes_in_ready += stats.crashes_in_ready;
                total.snapshots_installed += stats.snapshots_installed;
                total.reads_confirmed += stats.reads_confirmed;
                total.entries_applied += stats.entries_applied;
            }
            Err(_) => panic!("schedule {seed} failed; replay it with RAFT_SWEEP_SEED={seed}"),
        }
    }
    eprintln!("{schedules} schedules: {total:?}");
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
