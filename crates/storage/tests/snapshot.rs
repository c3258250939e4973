//! The snapshot store: round trips, replacement, crashes during a save,
//! corruption.

mod common;

use std::path::Path;
use std::sync::Arc;

use cairn_storage::{
    Disk, MemDisk, OpenMode, RealDisk, SnapshotError, SnapshotStore, StoredSnapshot,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use common::FaultyDisk;

const DIR: &str = "snapshots";

fn open(disk: &Arc<dyn Disk>) -> SnapshotStore {
    SnapshotStore::open(disk.clone(), Path::new(DIR)).expect("open the store")
}

fn snapshot_files(disk: &dyn Disk) -> Vec<String> {
    disk.list(Path::new(DIR)).unwrap()
}

fn stored(index: u64, term: u64, data: &[u8]) -> StoredSnapshot {
    StoredSnapshot {
        index,
        term,
        data: bytes::Bytes::copy_from_slice(data),
    }
}

fn save_and_load(disk: Arc<dyn Disk>) {
    let mut store = open(&disk);
    assert_eq!(store.load_latest().unwrap(), None);
    assert_eq!(store.latest_meta(), None);
    store.save(10, 2, b"kv state at 10").unwrap();
    assert_eq!(store.latest_meta(), Some((10, 2)));
    assert_eq!(
        store.load_latest().unwrap(),
        Some(stored(10, 2, b"kv state at 10"))
    );
    let store = open(&disk);
    assert_eq!(store.latest_meta(), Some((10, 2)));
    assert_eq!(
        store.load_latest().unwrap(),
        Some(stored(10, 2, b"kv state at 10"))
    );
}

#[test]
fn save_and_load_on_mem_disk() {
    save_and_load(Arc::new(MemDisk::new()));
}

#[test]
fn save_and_load_on_real_disk() {
    let dir = tempfile::tempdir().unwrap();
    save_and_load(Arc::new(RealDisk::new(dir.path()).unwrap()));
}

#[test]
fn a_newer_snapshot_replaces_the_older() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.save(10, 2, b"old").unwrap();
    store.save(20, 3, b"new").unwrap();
    assert_eq!(store.load_latest().unwrap(), Some(stored(20, 3, b"new")));
    assert_eq!(snapshot_files(&*disk).len(), 1);
    // The same index again (an empty snapshot, even) replaces it too.
    store.save(20, 3, b"").unwrap();
    assert_eq!(store.load_latest().unwrap(), Some(stored(20, 3, b"")));
    let store = open(&disk);
    assert_eq!(store.load_latest().unwrap(), Some(stored(20, 3, b"")));
    assert_eq!(snapshot_files(&*disk).len(), 1);
}

/// The process dies after each possible number of disk operations during a
/// save, then the power goes: the old snapshot or the new one is loaded,
/// whole, and the new one whenever the save returned.
#[test]
fn a_crash_during_save_leaves_the_old_snapshot_or_the_new() {
    let mut outcomes = Vec::new();
    for budget in 0.. {
        let mem = MemDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(mem.clone());
        open(&disk).save(5, 1, b"old").unwrap();
        let faulty = FaultyDisk::new(&mem, Some(budget));
        let saved = SnapshotStore::open(faulty, Path::new(DIR))
            .and_then(|mut store| store.save(9, 2, b"new state"));
        mem.crash(&mut StdRng::seed_from_u64(budget));
        let store = open(&disk);
        let latest = store.load_latest().unwrap().unwrap();
        if saved.is_ok() {
            assert_eq!(latest, stored(9, 2, b"new state"), "budget {budget}");
        } else {
            assert!(
                latest == stored(5, 1, b"old") || latest == stored(9, 2, b"new state"),
                "budget {budget}: {latest:?}"
            );
        }
        assert!(
            snapshot_files(&*disk).iter().all(|f| !f.ends_with(".tmp")),
            "budget {budget}: temporary file left"
        );
        outcomes.push(latest.index);
        if saved.is_ok() {
            break;
        }
    }
    assert!(
        outcomes.contains(&5) && outcomes.contains(&9),
        "{outcomes:?}"
    );
}

#[test]
fn an_unsynced_temporary_file_is_removed_at_open() {
    let mem = MemDisk::new();
    let disk: Arc<dyn Disk> = Arc::new(mem.clone());
    open(&disk).save(5, 1, b"old").unwrap();
    let temp = Path::new(DIR).join("snapshot-0000000000000009-0000000000000002.snap.tmp");
    let mut file = disk.open(&temp, OpenMode::Create).unwrap();
    file.write_at(0, b"half a snapshot").unwrap();
    drop(file);
    mem.crash(&mut StdRng::seed_from_u64(1));
    let store = open(&disk);
    assert_eq!(store.latest_meta(), Some((5, 1)));
    assert_eq!(store.load_latest().unwrap(), Some(stored(5, 1, b"old")));
    assert_eq!(snapshot_files(&*disk).len(), 1);
}

#[test]
fn a_damaged_snapshot_is_corruption_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::new(dir.path()).unwrap());
    open(&disk).save(7, 3, b"some state machine bytes").unwrap();
    let name = snapshot_files(&*disk).pop().unwrap();
    let path = dir.path().join(DIR).join(&name);
    let good = std::fs::read(&path).unwrap();
    let damaged = |at: usize| {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        bad
    };
    // A data byte, the term, the magic; then cut short; then extended.
    let mut longer = good.clone();
    longer.push(0);
    for bad in [
        damaged(good.len() - 1),
        damaged(21),
        damaged(0),
        good[..good.len() - 1].to_vec(),
        good[..10].to_vec(),
        longer,
    ] {
        std::fs::write(&path, &bad).unwrap();
        let error = open(&disk).load_latest().unwrap_err();
        assert!(
            matches!(error, SnapshotError::Corrupt { .. }),
            "expected Corrupt, got {error}"
        );
        assert!(error.to_string().contains(&name), "{error}");
    }
}

#[test]
#[should_panic(expected = "snapshot at index 4 is older than the saved one at 5")]
fn saving_an_older_snapshot_panics() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.save(5, 1, b"x").unwrap();
    store.save(4, 1, b"y").unwrap();
}
