//! Crash-point enumeration of a node's storage: a scripted run of `Ready`
//! batches and snapshots (elections, appends, a conflict truncation, segment
//! rotation, a service snapshot with compaction, a leader's snapshot
//! replacing a diverged log), replayed once per I/O point with the disk
//! failing from that point on, then crashed (unsynced data lost, the last
//! write torn, unsynced directory entries undone) and recovered. After each
//! recovery: the node opens and its Raft core starts, term and vote never
//! went back, the log is one history (contiguous, terms never decreasing,
//! each entry from the state before or after the interrupted step) and no
//! entry that a completed step made durable is missing.
//!
//! `cargo test -p cairn-rsm crash_points -- --nocapture` prints how many
//! crash points each scenario covered.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cairn_raft::{
    ClusterConfig, Config, Entry, EntryKind, HardState, Raft, Ready, Snapshot, SnapshotMeta,
};
use cairn_storage::{CrashPoints, Disk, MemDisk, WalOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::storage::RaftStorage;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    /// `Ready` step 1 of a batch.
    Persist(Box<Ready>),
    /// The service took a snapshot at (index, term); the log before it goes.
    ServiceSnapshot(u64, u64),
}

/// What the durable state must be after a step completed.
#[derive(Debug, Clone, Default)]
struct Model {
    term: u64,
    vote: Option<u64>,
    /// Every entry the node holds, compacted ones included: index -> term.
    entries: BTreeMap<u64, u64>,
    /// The newest snapshot: (index, term).
    snapshot: Option<(u64, u64)>,
}

impl Model {
    fn after(&self, step: &Step) -> Model {
        let mut next = self.clone();
        match step {
            Step::Persist(ready) => {
                if let Some(snapshot) = &ready.snapshot {
                    next.entries.clear();
                    next.entries.insert(snapshot.meta.index, snapshot.meta.term);
                    next.snapshot = Some((snapshot.meta.index, snapshot.meta.term));
                }
                if let Some(first) = ready.entries.first() {
                    next.entries.retain(|&index, _| index < first.index);
                    next.entries
                        .extend(ready.entries.iter().map(|e| (e.index, e.term)));
                }
                if let Some(hard_state) = &ready.hard_state {
                    next.term = hard_state.term;
                    next.vote = hard_state.vote;
                }
            }
            Step::ServiceSnapshot(index, term) => next.snapshot = Some((*index, *term)),
        }
        next
    }

    fn last_index(&self) -> u64 {
        self.entries.keys().next_back().copied().unwrap_or(0)
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|index| Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![index as u8; 40]),
        })
        .collect()
}

/// A `Ready` step 1 that must sync (new entries, or a new term or vote).
fn persist(hard_state: Option<(u64, Option<u64>, u64)>, entries: Vec<Entry>) -> Step {
    persist_synced(hard_state, entries, true)
}

/// A `Ready` step 1 whose `must_sync` is given: false when the core would
/// say so, for a hard state that moves only the commit index.
fn persist_synced(
    hard_state: Option<(u64, Option<u64>, u64)>,
    entries: Vec<Entry>,
    must_sync: bool,
) -> Step {
    Step::Persist(Box::new(Ready {
        hard_state: hard_state.map(|(term, vote, commit)| HardState { term, vote, commit }),
        must_sync,
        entries,
        ..Ready::default()
    }))
}

fn install(index: u64, term: u64) -> Step {
    Step::Persist(Box::new(Ready {
        hard_state: Some(HardState {
            term,
            vote: None,
            commit: index,
        }),
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                config: cluster(),
                urls: Default::default(),
            },
            data: Bytes::from_static(b"leader's state"),
        }),
        must_sync: true,
        ..Ready::default()
    }))
}

fn cluster() -> ClusterConfig {
    ClusterConfig::new([1, 2, 3])
}

/// Elections, appends with segment rotation, a conflict truncation, a
/// service snapshot, then a leader's snapshot inside a diverged log (the
/// crash between saving it and truncating the log was bug 1 of the
/// reliability review), more appends and a second service snapshot.
fn diverged_follower() -> Vec<Step> {
    vec![
        persist(Some((1, Some(1), 0)), Vec::new()),
        persist(None, entries(1..=6, 1)),
        persist(Some((1, Some(1), 4)), entries(7..=10, 1)),
        persist(Some((2, None, 4)), entries(5..=8, 2)),
        Step::ServiceSnapshot(6, 2),
        persist(Some((2, None, 6)), entries(9..=12, 2)),
        install(10, 3),
        persist(Some((3, None, 10)), entries(11..=14, 3)),
        // Only the commit index moves: written, not synced.
        persist_synced(Some((3, None, 13)), Vec::new(), false),
        Step::ServiceSnapshot(14, 3),
        persist(Some((4, Some(2), 14)), entries(15..=16, 4)),
    ]
}

/// A brand-new node votes in its first election: the vote must survive a
/// power loss even though every directory on the way was just created
/// (bug 3 of the reliability review).
fn first_start() -> Vec<Step> {
    vec![persist(Some((1, Some(2), 0)), Vec::new())]
}

const DIR: &str = "node/data/raft";

fn open(disk: Arc<dyn Disk>) -> Result<(RaftStorage, crate::storage::Recovered), String> {
    let options = WalOptions { segment_bytes: 256 };
    RaftStorage::open_with(disk, Path::new(DIR), cluster(), options).map_err(|e| e.to_string())
}

/// Runs `steps` failing from I/O point `fail_from`; returns how many steps
/// completed and the disk.
fn run(steps: &[Step], fail_from: Option<u64>) -> (usize, CrashPoints) {
    let disk = CrashPoints::new(MemDisk::new());
    disk.fail_from(fail_from);
    let Ok((mut storage, _)) = open(Arc::new(disk.clone())) else {
        return (0, disk);
    };
    for (done, step) in steps.iter().enumerate() {
        let result = match step {
            Step::Persist(ready) => storage.persist(ready),
            Step::ServiceSnapshot(index, term) => {
                let meta = SnapshotMeta {
                    index: *index,
                    term: *term,
                    config: cluster(),
                    urls: Default::default(),
                };
                storage
                    .save_snapshot(&meta, b"service state")
                    .and_then(|()| storage.compact(*index))
            }
        };
        if result.is_err() {
            return (done, disk);
        }
    }
    (steps.len(), disk)
}

/// Checks what a crash left, given the state before the interrupted step
/// (`old`) and after it (`new`).
fn check_recovered(disk: MemDisk, old: &Model, new: &Model) -> Result<(), String> {
    let (_, recovered) = open(Arc::new(disk))?;
    let initial = recovered.initial;
    let hard = initial.hard_state;
    if hard.term < old.term
        || (hard.term == old.term && hard.vote != old.vote && hard.vote != new.vote)
    {
        return Err(format!(
            "term/vote went back: recovered ({}, {:?}), durable before ({}, {:?})",
            hard.term, hard.vote, old.term, old.vote
        ));
    }
    let mut log: Vec<(u64, u64)> = Vec::new();
    if let Some(snapshot) = &initial.snapshot {
        log.push((snapshot.meta.index, snapshot.meta.term));
    }
    log.extend(initial.entries.iter().map(|e| (e.index, e.term)));
    for pair in log.windows(2) {
        let ((index_a, term_a), (index_b, term_b)) = (pair[0], pair[1]);
        if index_b != index_a + 1 || term_b < term_a {
            return Err(format!("not one history: {log:?}"));
        }
    }
    for &(index, term) in &log {
        let known = |model: &Model| model.entries.get(&index) == Some(&term);
        if !known(old) && !known(new) {
            return Err(format!(
                "entry {index} of term {term} was never written: {log:?}"
            ));
        }
    }
    let last = log.last().map_or(0, |&(index, _)| index);
    // What the interrupted step keeps of the old log must survive it (what
    // it replaces was never committed: the leader's log differs there).
    let must_have = (1..=old.last_index().min(new.last_index()))
        .take_while(|index| old.entries.get(index) == new.entries.get(index))
        .last()
        .unwrap_or(0);
    if last < must_have {
        return Err(format!(
            "lost durable entries: log ends at {last}, {must_have} was durable"
        ));
    }
    let started = std::panic::catch_unwind(|| Raft::new(Config::new(1), initial, 1));
    match started {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("the core refuses the recovered state: {error}")),
        Err(_) => Err("the core panics on the recovered state".into()),
    }
}

/// Enumerates every crash point of `steps`; returns how many there were.
fn enumerate(name: &str, steps: &[Step]) -> u64 {
    let (completed, disk) = run(steps, None);
    assert_eq!(
        completed,
        steps.len(),
        "{name}: the scenario fails without a crash"
    );
    let total = disk.points();
    let mut models = vec![Model::default()];
    for step in steps {
        let next = models.last().expect("starts with one").after(step);
        models.push(next);
    }
    let mut rng = StdRng::seed_from_u64(7);
    for point in 0..=total {
        for tear in 0..3 {
            let (completed, disk) = run(steps, Some(point));
            let trace = disk.trace();
            let memory = disk.disk().clone();
            memory.crash(&mut rng);
            let old = &models[completed];
            let new = &models[(completed + 1).min(steps.len())];
            if let Err(error) = check_recovered(memory, old, new) {
                panic!(
                    "{name}: crash at I/O point {point} of {total} (during step {completed}, \
                     tear {tear}): {error}\nlast I/O: {:?}",
                    trace.iter().rev().take(6).collect::<Vec<_>>()
                );
            }
        }
    }
    println!("crash points: {name}: {total} I/O points, each crashed 3 times, all recovered");
    total
}

#[test]
fn crash_points_diverged_follower() {
    assert!(enumerate("diverged follower", &diverged_follower()) > 50);
}

#[test]
fn crash_points_first_start() {
    assert!(enumerate("first start", &first_start()) > 3);
}
