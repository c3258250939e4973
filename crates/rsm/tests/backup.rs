//! Backups and disaster recovery in simulation (issue 16, catalog M15):
//! a 3-node group under load loses two nodes for good (killed, disks
//! wiped); the survivor's data directory, read offline
//! (`snapshot_of_data_dir`), is restored (`restore_data_dir`) on a new
//! machine as a new one-node cluster, which must hold every command the
//! survivor had applied up to the backup's index, at the same indices;
//! then it grows by membership change (a learner added and promoted)
//! and keeps taking writes, which both members apply. Also: a live
//! backup (`Node::backup`) taken on the leader under load holds every
//! command acknowledged before it was asked for.
#![cfg(madsim)]

mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_rsm::{
    ConfChange, ConfChangeError, LogIndex, MembershipError, SubmitError, restore_data_dir,
    snapshot_of_data_dir,
};
use lab::{Tester, command, name, node_id, url};

/// How long a writer runs, and each membership step may take.
const LOAD: Duration = Duration::from_secs(2);
const STEP_DEADLINE: Duration = Duration::from_secs(10);
/// The pause between a writer's commands.
const WRITE_PAUSE: Duration = Duration::from_millis(2);

/// Submits numbered commands from `first` to whichever of `servers`
/// leads, for `load` of virtual time; returns those acknowledged.
fn write_for(
    t: &Arc<Tester>,
    servers: Vec<usize>,
    first: u64,
    load: Duration,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let t = t.clone();
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + load;
        let mut acknowledged = Vec::new();
        let mut value = first;
        while tokio::time::Instant::now() < until {
            let leader = servers
                .iter()
                .filter_map(|&s| t.node(s))
                .find(|n| n.status().is_leader());
            let Some(node) = leader else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            if node
                .submit(command(value), Duration::from_secs(1))
                .await
                .is_ok()
            {
                acknowledged.push(value);
            }
            value += 1;
            // A one-node group commits in no virtual time: pace the
            // client, or it would write forever in one instant.
            tokio::time::sleep(WRITE_PAUSE).await;
        }
        acknowledged
    })
}

/// What `server` has applied, by index.
fn applied(t: &Tester, server: usize) -> BTreeMap<LogIndex, Bytes> {
    t.shared.lock().unwrap().logs[server].clone()
}

/// Proposes `change` on `server` until it is made, retrying while its
/// leadership is new, a change is pending or the learner is behind.
async fn change(t: &Tester, server: usize, change: ConfChange) {
    let address = match change {
        ConfChange::AddLearner(id) => Some(url(id as usize - 1)),
        _ => None,
    };
    let begin = tokio::time::Instant::now();
    loop {
        let node = t.node(server).expect("the restored node runs");
        let result = node
            .propose_conf_change(change, address.as_deref(), STEP_DEADLINE)
            .await;
        let retry = matches!(
            result,
            Err(MembershipError::Submit(SubmitError::NotLeader { .. }))
                | Err(MembershipError::Refused(
                    ConfChangeError::LeaderNotReady { .. }
                        | ConfChangeError::ChangePending { .. }
                        | ConfChangeError::LearnerBehind { .. }
                ))
        );
        match result {
            Ok(_) => return,
            Err(error) if !retry || begin.elapsed() > STEP_DEADLINE => {
                t.fail(format!("{change:?} failed: {error}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// M15: quorum lost for good → a new cluster from the survivor's data
/// directory, then grown back and written to.
#[madsim::test]
async fn a_new_cluster_from_the_survivor_holds_what_it_had_and_grows() {
    // Servers 0-2 form the group; 3 is the new machine, 4 the one it grows by.
    let t = Arc::new(Tester::growable(3, 5, true, 3000));
    let writer = write_for(&t, vec![0, 1, 2], 0, LOAD);
    t.sleep(LOAD / 2).await;
    let leader = t.check_one_leader().await;
    let survivor = (leader + 1) % 3;
    for lost in (0..3).filter(|&s| s != survivor) {
        t.crash1(lost);
        t.world.lock().unwrap().disk(&name(lost)).wipe();
    }
    let acknowledged: BTreeSet<Bytes> = writer.await.unwrap().into_iter().map(command).collect();
    let had = applied(&t, survivor);
    t.crash1(survivor);

    let disk = t.world.lock().unwrap().disk(&name(survivor));
    let read = snapshot_of_data_dir(Arc::new(disk), Path::new("raft"), t.machine(3), false)
        .unwrap_or_else(|e| t.fail(format!("reading the survivor's data directory: {e}")));
    let backup = read.snapshot;
    let cluster = Mutex::new(None);
    t.start_alone(3, |disk| {
        let id = restore_data_dir(
            Arc::new(disk),
            Path::new("raft"),
            "cairn",
            node_id(3),
            &backup,
            t.machine(3),
        );
        *cluster.lock().unwrap() = Some(id);
    });
    let cluster = cluster.into_inner().unwrap().unwrap();
    let cluster = cluster.unwrap_or_else(|e| t.fail(format!("restore: {e}")));
    assert!(cluster.contains("restored"), "{cluster}");
    // Forget what the checks above recorded as server 3's: from here on
    // its record is what the node itself restores and applies.
    t.shared.lock().unwrap().logs[3].clear();
    let begin = tokio::time::Instant::now();
    while !t.node(3).is_some_and(|n| n.status().is_leader()) {
        if begin.elapsed() > STEP_DEADLINE {
            t.fail("the restored node did not lead its one-node cluster".into());
        }
        t.sleep(Duration::from_millis(20)).await;
    }

    // What the survivor had up to the backup's index is all there, at the
    // same indices; the acknowledged commands among it are counted.
    let writer = write_for(&t, vec![3, 4], 1_000_000, LOAD);
    let kept: BTreeMap<LogIndex, Bytes> = had
        .range(..=backup.index)
        .map(|(&i, c)| (i, c.clone()))
        .collect();
    let restored = applied(&t, 3);
    for (index, command) in &kept {
        if restored.get(index) != Some(command) {
            t.fail(format!(
                "the survivor applied {command:?} at {index} (backup at {}), the restored node has {:?}",
                backup.index,
                restored.get(index)
            ));
        }
    }
    let kept_acknowledged = kept.values().filter(|c| acknowledged.contains(*c)).count();
    assert!(
        kept_acknowledged > 0 && backup.index > 0,
        "nothing acknowledged survived (backup at {}; seed {})",
        backup.index,
        t.seed()
    );

    // Grow: server 4 joins the restored cluster, is added and promoted.
    t.join(4, 3);
    change(&t, 3, ConfChange::AddLearner(node_id(4))).await;
    change(&t, 3, ConfChange::Promote(node_id(4))).await;
    let later: Vec<Bytes> = writer.await.unwrap().into_iter().map(command).collect();
    assert!(
        !later.is_empty(),
        "no write acknowledged after the restore (seed {})",
        t.seed()
    );
    let begin = tokio::time::Instant::now();
    loop {
        t.n_committed(0); // fails on any two servers applying different commands
        let both = [3, 4].map(|s| {
            let log: BTreeSet<Bytes> = applied(&t, s).into_values().collect();
            later.iter().all(|c| log.contains(c))
        });
        if both == [true, true] {
            break;
        }
        if begin.elapsed() > STEP_DEADLINE {
            t.fail(format!("servers 3 and 4 hold the later writes: {both:?}"));
        }
        t.sleep(Duration::from_millis(50)).await;
    }
    let membership = t.node(3).unwrap().membership().await.unwrap();
    assert_eq!(
        membership.config.voters,
        BTreeSet::from([node_id(3), node_id(4)]),
        "seed {}",
        t.seed()
    );
    eprintln!(
        "backup at {} ({} entries left out); {} of {} acknowledged commands kept; {} written after",
        backup.index,
        read.last_index - backup.index,
        kept_acknowledged,
        acknowledged.len(),
        later.len()
    );
}

/// A live backup on the leader, taken under load, holds every command
/// any server had applied (so committed) before it was asked for: the
/// read barrier waits for the leader to apply at least that far.
#[madsim::test]
async fn a_live_backup_holds_every_command_committed_before_it() {
    // Server 3 never runs: its record holds the backup, restored.
    let t = Arc::new(Tester::growable(3, 4, true, 3000));
    let writers: Vec<_> = (0..3u64)
        .map(|w| write_for(&t, vec![0, 1, 2], w * 1_000_000, LOAD))
        .collect();
    t.sleep(LOAD / 2).await;
    let leader = t.check_one_leader().await;
    let before: BTreeSet<Bytes> = (0..3).flat_map(|s| applied(&t, s).into_values()).collect();
    let backup = t
        .node(leader)
        .unwrap()
        .backup(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| t.fail(format!("a backup on the leader of a reliable network: {e}")));
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap().len();
    }
    cairn_rsm::StateMachine::restore(&mut t.machine(3), &backup.data).unwrap();
    let in_backup: BTreeSet<Bytes> = applied(&t, 3).into_values().collect();
    let missing = before.difference(&in_backup).count();
    assert_eq!(
        missing,
        0,
        "of {} commands applied before the backup, some are missing (seed {})",
        before.len(),
        t.seed()
    );
    assert!(
        written > before.len(),
        "the writers kept writing during the backup"
    );
}
