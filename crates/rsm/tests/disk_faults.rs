//! A node whose disk fails: a write it cannot persist stops it with the
//! reason (reported, not a silent zombie), and a snapshot it cannot save
//! leaves the Raft core uncompacted and is retried with a back-off, not on
//! every turn of the loop.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_raft::{LogIndex, Role};
use cairn_rsm::{FatalError, LocalNet, Node, NodeConfig, StateMachine, SubmitError};
use cairn_storage::{CrashPoints, Disk, DiskFile, MemDisk, OpenMode};

/// Remembers how many commands it applied; its snapshot is 8 bytes.
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

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn single_node(disk: Arc<dyn Disk>, max_raft_state: i64) -> Node<Count> {
    let peers = BTreeMap::from([(1, "http://127.0.0.1:1".to_string())]);
    let mut config = NodeConfig::new(1, peers, "raft");
    config.max_raft_state = max_raft_state;
    Node::start_local(config, disk, Count::default(), &LocalNet::new()).unwrap()
}

/// Bug 13 of the reliability review: a node that could not persist (disk
/// full) stayed up as a follower with a stale commit index.
#[tokio::test]
async fn a_node_that_cannot_persist_stops_and_says_why() {
    let disk = CrashPoints::new(MemDisk::new());
    let node = single_node(Arc::new(disk.clone()), -1);
    wait_for("a leader", || {
        (node.status().role == Role::Leader).then_some(())
    })
    .await;
    disk.fail_from(Some(disk.points()));
    let result = node
        .submit(Bytes::from_static(b"x"), Duration::from_secs(5))
        .await;
    // Its writer hears why, as does every client after it.
    assert!(
        matches!(&result, Err(SubmitError::Stopped(FatalError::Persist(_)))),
        "a write that cannot be persisted is not acknowledged: {result:?}"
    );
    let reason = tokio::time::timeout(Duration::from_secs(10), node.stopped())
        .await
        .expect("the node stops");
    assert!(reason.to_string().contains("cannot persist"), "{reason}");
    let status = node.status();
    assert!(!status.running);
    assert_eq!(status.stopped.as_ref(), Some(&reason));
    let later = node
        .submit(Bytes::from_static(b"y"), Duration::from_secs(5))
        .await;
    assert_eq!(later, Err(SubmitError::Stopped(reason.clone())));
    let answer = node.error_status(later.unwrap_err());
    assert_eq!(answer.code(), tonic::Code::Unavailable);
    assert!(answer.message().contains("cannot persist"), "{answer:?}");
}

/// Fails every write to a snapshot file and counts the attempts.
#[derive(Debug, Clone)]
struct NoSnapshots {
    disk: MemDisk,
    attempts: Arc<std::sync::atomic::AtomicU64>,
}

impl Disk for NoSnapshots {
    fn open(&self, path: &std::path::Path, mode: OpenMode) -> std::io::Result<Box<dyn DiskFile>> {
        if mode == OpenMode::Truncate && path.starts_with("raft/snapshots") {
            self.attempts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(std::io::Error::other("no space left on device (simulated)"));
        }
        self.disk.open(path, mode)
    }
    fn create_dir_all(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.disk.create_dir_all(path)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.disk.remove_file(path)
    }
    fn remove_dir_all(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.disk.remove_dir_all(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        self.disk.rename(from, to)
    }
    fn exists(&self, path: &std::path::Path) -> bool {
        self.disk.exists(path)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.disk.sync_dir(dir)
    }
}

/// Bug 8: the core was compacted before the snapshot was saved, and a save
/// that failed was retried on every turn of the node's loop.
#[tokio::test]
async fn a_snapshot_that_cannot_be_saved_leaves_the_core_alone_and_backs_off() {
    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let disk = NoSnapshots {
        disk: MemDisk::new(),
        attempts: attempts.clone(),
    };
    let node = single_node(Arc::new(disk), 2_000);
    wait_for("a leader", || {
        (node.status().role == Role::Leader).then_some(())
    })
    .await;
    let writes = 400;
    for _ in 0..writes {
        node.submit(Bytes::from_static(&[7; 64]), Duration::from_secs(5))
            .await
            .unwrap();
    }
    let status = node.status();
    assert!(status.running, "a failed snapshot does not stop the node");
    assert_eq!(
        status.snapshot_index, 0,
        "the core was compacted although the snapshot was not saved"
    );
    let tried = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(tried >= 1, "a snapshot was due");
    assert!(
        tried <= 3,
        "{tried} save attempts for {writes} writes in well under a second: no back-off"
    );
}
