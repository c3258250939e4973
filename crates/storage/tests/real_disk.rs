//! The same contract on real files.

use std::path::Path;

use cairn_storage::{Disk, OpenMode, RealDisk, write_atomic};

#[test]
fn real_disk_reads_back_writes_and_lists_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = RealDisk::new(dir.path()).unwrap();
    disk.create_dir_all(Path::new("wal")).unwrap();
    for name in ["b", "a", "c"] {
        let mut file = disk
            .open(&Path::new("wal").join(name), OpenMode::Create)
            .unwrap();
        assert_eq!(file.append(name.as_bytes()).unwrap(), 0);
        file.sync().unwrap();
    }
    assert_eq!(disk.list(Path::new("wal")).unwrap(), ["a", "b", "c"]);
    write_atomic(&disk, Path::new("wal/a"), b"replaced").unwrap();
    assert_eq!(disk.read(Path::new("wal/a")).unwrap(), b"replaced");
    assert!(!disk.exists(Path::new("wal/a.tmp")));
    let mut file = disk.open(Path::new("wal/b"), OpenMode::Write).unwrap();
    file.set_len(0).unwrap();
    assert!(file.is_empty().unwrap());
    assert!(disk.open(Path::new("missing"), OpenMode::Read).is_err());
}
