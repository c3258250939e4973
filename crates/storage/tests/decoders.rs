//! Property tests of every decoder that reads this crate's files: a
//! write-ahead-log segment or a snapshot file holding arbitrary bytes, or
//! a valid one with bytes changed or cut, must open to a clear error or a
//! consistent result, never a panic.
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` runs more.

use std::path::Path;
use std::sync::Arc;

use cairn_storage::{Disk, MemDisk, OpenMode, SnapshotStore, Wal, WalEntry, WalOptions};
use proptest::prelude::*;

fn put(disk: &MemDisk, path: &str, bytes: &[u8]) {
    let path = Path::new(path);
    disk.create_dir_durable(path.parent().unwrap()).unwrap();
    let mut file = disk.open(path, OpenMode::Truncate).unwrap();
    file.write_at(0, bytes).unwrap();
    file.sync().unwrap();
}

/// The bytes of a real log: a few appends, a truncation, a state.
fn valid_segment() -> Vec<u8> {
    let disk = MemDisk::new();
    let (mut wal, _) = Wal::open(
        Arc::new(disk.clone()),
        Path::new("wal"),
        WalOptions::default(),
    )
    .unwrap();
    let entries: Vec<WalEntry> = (1..=5)
        .map(|i| WalEntry::new(i, 1, vec![i as u8; 10]))
        .collect();
    wal.append(&entries).unwrap();
    wal.append(&[WalEntry::new(4, 2, b"new".to_vec())]).unwrap();
    wal.set_state(b"hard state").unwrap();
    wal.sync().unwrap();
    let name = disk.list(Path::new("wal")).unwrap().remove(0);
    disk.read(&Path::new("wal").join(name)).unwrap()
}

/// Opens a log whose only segment holds `bytes`; checks what it returns.
fn open_segment(bytes: &[u8]) {
    let disk = MemDisk::new();
    let name = {
        // The name a real segment gets.
        let probe = MemDisk::new();
        drop(
            Wal::open(
                Arc::new(probe.clone()),
                Path::new("wal"),
                WalOptions::default(),
            )
            .unwrap(),
        );
        let (mut wal, _) = Wal::open(
            Arc::new(probe.clone()),
            Path::new("wal"),
            WalOptions::default(),
        )
        .unwrap();
        wal.append(&[WalEntry::new(1, 1, b"x".to_vec())]).unwrap();
        wal.sync().unwrap();
        probe.list(Path::new("wal")).unwrap().remove(0)
    };
    put(&disk, &format!("wal/{name}"), bytes);
    if let Ok((_, recovered)) = Wal::open(Arc::new(disk), Path::new("wal"), WalOptions::default()) {
        for pair in recovered.entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index + 1,
                "recovered entries leave a gap"
            );
        }
        if let Some(first) = recovered.entries.first() {
            assert_eq!(first.index, recovered.compacted_to + 1);
        }
    }
}

fn load_snapshot(bytes: &[u8]) {
    let disk = MemDisk::new();
    put(
        &disk,
        "snap/snapshot-0000000000000007-0000000000000002.snap",
        bytes,
    );
    put(
        &disk,
        "snap/snapshot-0000000000000009-0000000000000002.snap.tmp",
        bytes,
    );
    if let Ok(store) = SnapshotStore::open(Arc::new(disk), Path::new("snap")) {
        let _ = store.load_latest();
    }
}

proptest! {
    #[test]
    fn a_segment_of_arbitrary_bytes_opens_or_fails_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        open_segment(&bytes);
    }

    #[test]
    fn a_damaged_segment_opens_or_fails_cleanly(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_segment();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        open_segment(&bytes);
    }

    #[test]
    fn a_snapshot_of_arbitrary_bytes_loads_or_fails_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        load_snapshot(&bytes);
    }
}
