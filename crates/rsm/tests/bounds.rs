//! Every queue of a node is bounded: a burst larger than the bounds gets
//! answers (applied, or `Overloaded` with nothing done), memory stays
//! bounded, and the node serves normally right after.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_raft::{LogIndex, Role};
use cairn_rsm::{LocalNet, MAX_QUEUED_COMMANDS, Node, NodeConfig, StateMachine, SubmitError};
use cairn_storage::MemDisk;

#[derive(Default)]
struct Count(u64);

impl StateMachine for Count {
    fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Bytes {
        self.0 += 1;
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }
    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        self.0 = u64::from_le_bytes(snapshot.try_into().map_err(|_| "bad snapshot")?);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_bounds_is_answered_overloaded_and_the_node_recovers() {
    let peers = BTreeMap::from([(1, "http://127.0.0.1:1".to_string())]);
    let node = Node::start_local(
        NodeConfig::new(1, peers, "raft"),
        Arc::new(MemDisk::new()),
        Count::default(),
        &LocalNet::new(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.status().role != Role::Leader {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Hold the node task inside an inspection so that its queue fills.
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let holder = node.clone();
    let held = tokio::spawn(async move {
        holder
            .inspect(move |_: &Count| {
                entered_tx.send(()).unwrap();
                gate.recv().unwrap();
            })
            .await
    });
    entered.recv_timeout(Duration::from_secs(20)).unwrap();
    let turned_away = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let burst = MAX_QUEUED_COMMANDS + 1_000;
    let tasks: Vec<_> = (0..burst)
        .map(|i| {
            let (node, turned_away) = (node.clone(), turned_away.clone());
            tokio::spawn(async move {
                let result = if i % 2 == 0 {
                    node.submit(Bytes::from_static(b"w"), Duration::from_secs(30))
                        .await
                        .map(|_| ())
                } else {
                    node.read(|machine: &Count| machine.0, Duration::from_secs(30))
                        .await
                        .map(|_| ())
                };
                if matches!(result, Err(SubmitError::Overloaded)) {
                    turned_away.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                result
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while turned_away.load(std::sync::atomic::Ordering::SeqCst) < 1_000 {
        assert!(Instant::now() < deadline, "a full queue turned nobody away");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let (mut ok, mut overloaded) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(SubmitError::Overloaded) => overloaded += 1,
            Err(other) => panic!("a burst request failed with {other}"),
        }
    }
    assert!(ok > 0, "some requests were served");
    assert_eq!(
        overloaded, 1_000,
        "exactly the requests past the queue's bound"
    );
    let after = node
        .submit(Bytes::from_static(b"after"), Duration::from_secs(5))
        .await;
    assert!(after.is_ok(), "the node serves right after: {after:?}");
}
