use std::sync::Arc;

use cairn_storage::{CrashPoints, Disk, MemDisk, OpenMode};
use proptest::prelude::*;
use rand::SeedableRng as _;

use super::*;

const CHUNK: u64 = 1 << 20;

fn dir() -> &'static Path {
    Path::new("chunks")
}

fn open(disk: &Arc<dyn Disk>) -> ChunkStore {
    ChunkStore::open(disk.clone(), dir(), CHUNK).unwrap()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read_all(store: &ChunkStore, handle: ChunkHandle) -> Vec<u8> {
    store.read(handle, 0, CHUNK).unwrap().0.to_vec()
}

#[test]
fn writes_read_back_across_blocks_and_survive_a_reopen() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.create(7, 1).unwrap();
    let first = bytes(100_000, 1);
    assert_eq!(store.write(7, 1, 0, &first).unwrap(), 100_000);
    let second = bytes(70_000, 2);
    assert_eq!(store.write(7, 1, 100_000, &second).unwrap(), 170_000);
    let mut model = first.clone();
    model.extend_from_slice(&second);
    assert_eq!(read_all(&store, 7), model);
    // A read in the middle, across a block boundary, and one past the end.
    let (middle, version) = store.read(7, 65_000, 2_000).unwrap();
    assert_eq!((&middle[..], version), (&model[65_000..67_000], 1));
    assert!(store.read(7, 170_000, 10).unwrap().0.is_empty());

    let store = open(&disk);
    assert_eq!(
        store.report(),
        [ReplicaReport {
            handle: 7,
            version: 1,
            length: 170_000
        }]
    );
    assert_eq!(read_all(&store, 7), model);
}

#[test]
fn a_batch_reads_back_as_its_writes_one_by_one() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.create(1, 1).unwrap();
    store.create(2, 1).unwrap();
    let writes: Vec<(u64, Vec<u8>)> = vec![
        (0, bytes(100_000, 1)),
        (100_000, bytes(30_000, 2)),
        (50_000, bytes(70_000, 3)), // over both, across blocks
        (300_000, bytes(10, 4)),    // past the end: a gap of zeros
    ];
    for (offset, data) in &writes {
        store.write(1, 1, *offset, data).unwrap();
    }
    let batch: Vec<(u64, &[u8])> = writes.iter().map(|(o, d)| (*o, &d[..])).collect();
    assert_eq!(store.write_batch(2, 1, &batch).unwrap(), 300_010);
    assert_eq!(read_all(&store, 2), read_all(&store, 1));
    let reopened = open(&disk);
    assert_eq!(read_all(&reopened, 2), read_all(&store, 1));
    // One write past the chunk refuses the whole batch.
    let refused = store.write_batch(2, 1, &[(0, b"x"), (CHUNK, b"y")]);
    assert!(matches!(refused, Err(ChunkError::BeyondChunk { .. })));
    assert_eq!(read_all(&store, 2)[0], bytes(100_000, 1)[0]);
}

#[test]
fn an_overwrite_in_the_middle_keeps_every_other_block() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.create(1, 1).unwrap();
    let mut model = bytes(400_000, 3);
    store.write(1, 1, 0, &model).unwrap();
    let patch = bytes(10, 9);
    store.write(1, 1, 140_000, &patch).unwrap();
    model[140_000..140_010].copy_from_slice(&patch);
    assert_eq!(read_all(&open(&disk), 1), model);
    // A write past the end leaves zeros in the gap.
    store.write(1, 1, 500_000, b"tail").unwrap();
    model.resize(500_000, 0);
    model.extend_from_slice(b"tail");
    assert_eq!(read_all(&open(&disk), 1), model);
}

#[test]
fn versions_and_bounds_are_enforced() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.create(1, 3).unwrap();
    assert!(matches!(
        store.create(1, 3),
        Err(ChunkError::AlreadyExists(1))
    ));
    assert!(matches!(
        store.write(1, 2, 0, b"x"),
        Err(ChunkError::VersionMismatch {
            have: 3,
            given: 2,
            ..
        })
    ));
    assert!(matches!(
        store.write(1, 3, CHUNK - 1, b"xy"),
        Err(ChunkError::BeyondChunk { .. })
    ));
    assert!(matches!(
        store.write(2, 1, 0, b"x"),
        Err(ChunkError::NoSuchChunk(2))
    ));
    store.set_version(1, 4).unwrap();
    assert!(matches!(
        store.set_version(1, 3),
        Err(ChunkError::VersionMismatch { .. })
    ));
    store.write(1, 4, 0, b"ok").unwrap();
    assert_eq!(open(&disk).replica(1).unwrap().version, 4);
    store.delete(1).unwrap();
    assert!(open(&disk).report().is_empty());
    assert!(!disk.exists(&dir().join(format!("{:016x}.chunk", 1))));
}

#[test]
fn a_flipped_byte_is_caught_on_read_and_never_rechecksummed() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.create(5, 1).unwrap();
    store.write(5, 1, 0, &bytes(200_000, 4)).unwrap();
    let path = dir().join(format!("{:016x}.chunk", 5));
    let mut file = disk.open(&path, OpenMode::Write).unwrap();
    file.write_at(70_000, b"\xff").unwrap(); // inside block 1
    drop(file);
    assert!(matches!(
        store.read(5, 69_000, 2_000),
        Err(ChunkError::Corrupt { block: 1, .. })
    ));
    // Blocks 0 and 2 still read.
    assert_eq!(store.read(5, 0, 1_000).unwrap().0.len(), 1_000);
    assert_eq!(store.read(5, 140_000, 1_000).unwrap().0.len(), 1_000);
    // A write that covers part of the bad block refuses to checksum it.
    assert!(matches!(
        store.write(5, 1, 66_000, b"x"),
        Err(ChunkError::Corrupt { block: 1, .. })
    ));
}

#[test]
fn a_scan_finds_every_bad_block_and_reads_the_bytes_as_they_are() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.create(6, 2).unwrap();
    let data = bytes(300_000, 9);
    store.write(6, 2, 0, &data).unwrap();
    let whole = store.scan(6, 0, 100).unwrap();
    assert_eq!((whole.version, whole.length), (2, 300_000));
    assert_eq!(
        (whole.bytes.to_vec(), whole.corrupt),
        (data.clone(), vec![])
    );
    let path = dir().join(format!("{:016x}.chunk", 6));
    let mut file = disk.open(&path, OpenMode::Write).unwrap();
    file.write_at(70_000, b"\xff").unwrap(); // block 1
    file.write_at(299_000, b"\xff").unwrap(); // block 4, the last
    drop(file);
    assert_eq!(store.scan(6, 0, 100).unwrap().corrupt, vec![1, 4]);
    let piece = store.scan(6, 2, 2).unwrap();
    assert_eq!(piece.bytes.to_vec(), data[2 * 65_536..4 * 65_536].to_vec());
    assert!(piece.corrupt.is_empty());
    assert!(store.scan(6, 9, 1).unwrap().bytes.is_empty());
    assert!(matches!(
        store.scan(8, 0, 1),
        Err(ChunkError::NoSuchChunk(8))
    ));
    assert_eq!(
        (store.next_handle(None), store.next_handle(Some(6))),
        (Some(6), None)
    );
}

#[test]
fn damaged_metadata_and_leftovers_are_handled_at_open() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    for handle in 1..=3 {
        store.create(handle, 1).unwrap();
        store.write(handle, 1, 0, b"data").unwrap();
    }
    // 1: metadata garbled; 2: data file cut short; 3: left intact.
    let meta = dir().join(format!("{:016x}.meta", 1));
    let mut file = disk.open(&meta, OpenMode::Write).unwrap();
    file.write_at(20, b"\x00\x01").unwrap();
    drop(file);
    let data = dir().join(format!("{:016x}.chunk", 2));
    disk.open(&data, OpenMode::Write)
        .unwrap()
        .set_len(2)
        .unwrap();
    // Leftovers: a temporary file, and data whose metadata never landed.
    disk.open(&dir().join("0000000000000009.meta.tmp"), OpenMode::Create)
        .unwrap();
    disk.open(&dir().join("0000000000000009.chunk"), OpenMode::Create)
        .unwrap();

    let store = open(&disk);
    assert_eq!(
        store.report().iter().map(|r| r.handle).collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(store.damaged().collect::<Vec<_>>(), [1, 2]);
    assert!(!disk.exists(&dir().join("0000000000000009.chunk")));
    assert!(!disk.exists(&dir().join("0000000000000009.meta.tmp")));
}

/// One step of a crash-point scenario.
type Step<'a> = dyn Fn(&mut ChunkStore) -> Result<(), ChunkError> + 'a;

/// Crash at every I/O point of: create, append A, append B, append C and
/// D as one batch, raise the version. After recovery the replica shows a
/// state the sequence passed through (never A B C without D: a batch is
/// all or nothing), every step acknowledged before the crash included.
#[test]
fn crash_points_of_a_replica() {
    let a = bytes(90_000, 1);
    let b = bytes(50_000, 2);
    let c = bytes(70_000, 3);
    let d = bytes(1_000, 4);
    let run = |disk: &CrashPoints| -> usize {
        let disk: Arc<dyn Disk> = Arc::new(disk.clone());
        let mut done = 0;
        let Ok(mut store) = ChunkStore::open(disk, dir(), CHUNK) else {
            return done;
        };
        let steps: [&Step<'_>; 5] = [
            &|s| s.create(1, 1),
            &|s| s.write(1, 1, 0, &a).map(drop),
            &|s| s.write(1, 1, 90_000, &b).map(drop),
            &|s| {
                s.write_batch(1, 1, &[(140_000, &c[..]), (210_000, &d[..])])
                    .map(drop)
            },
            &|s| s.set_version(1, 2),
        ];
        for step in steps {
            if step(&mut store).is_err() {
                return done;
            }
            done += 1;
        }
        done
    };
    let counting = CrashPoints::new(MemDisk::new());
    assert_eq!(run(&counting), 5);
    let points = counting.points();
    let mut ab = a.clone();
    ab.extend_from_slice(&b);
    let mut abcd = ab.clone();
    abcd.extend_from_slice(&c);
    abcd.extend_from_slice(&d);
    for point in 0..points {
        for seed in 0..4 {
            let disk = CrashPoints::new(MemDisk::new());
            disk.fail_from(Some(point));
            let acknowledged = run(&disk);
            disk.disk()
                .crash(&mut rand::rngs::StdRng::seed_from_u64(seed));
            disk.fail_from(None);
            let recovered: Arc<dyn Disk> = Arc::new(disk.disk().clone());
            let store = open(&recovered);
            let context = format!(
                "crash at point {point} of {points}, seed {seed}, {acknowledged} steps acknowledged"
            );
            let replica = store.replica(1);
            if acknowledged >= 1 {
                assert!(replica.is_some(), "{context}: the created replica is gone");
            }
            let Some(replica) = replica else { continue };
            let data = read_all(&store, 1);
            let states: [&[u8]; 4] = [&[], &a, &ab, &abcd];
            let state = states.iter().position(|s| *s == &data[..]);
            assert!(
                state.is_some(),
                "{context}: {} bytes that are no state of the replica",
                data.len()
            );
            assert!(
                state.unwrap() + 1 >= acknowledged.min(4),
                "{context}: an acknowledged write is lost"
            );
            if acknowledged == 5 {
                assert_eq!(replica.version, 2, "{context}");
            }
        }
    }
    println!("crash points: replica {points}");
}

/// Crash at every I/O point of installing a cloned replica over a stale
/// one: after recovery the replica is the old one, absent, or the whole
/// new one at its new version; never a short one at the new version.
#[test]
fn crash_points_of_an_install() {
    let old = bytes(70_000, 5);
    let new = bytes(150_000, 6);
    let run = |disk: &CrashPoints| -> bool {
        let disk: Arc<dyn Disk> = Arc::new(disk.clone());
        let Ok(mut store) = ChunkStore::open(disk, dir(), CHUNK) else {
            return false;
        };
        store.install(3, 4, &new).is_ok()
    };
    let prepared = || {
        let disk = MemDisk::new();
        let shared: Arc<dyn Disk> = Arc::new(disk.clone());
        let mut store = open(&shared);
        store.create(3, 2).unwrap();
        store.write(3, 2, 0, &old).unwrap();
        CrashPoints::new(disk)
    };
    let counting = prepared();
    assert!(run(&counting));
    let points = counting.points();
    for point in 0..points {
        for seed in 0..4 {
            let disk = prepared();
            disk.fail_from(Some(point));
            let acknowledged = run(&disk);
            disk.disk()
                .crash(&mut rand::rngs::StdRng::seed_from_u64(seed));
            disk.fail_from(None);
            let recovered: Arc<dyn Disk> = Arc::new(disk.disk().clone());
            let store = open(&recovered);
            let context = format!("crash at point {point} of {points}, seed {seed}");
            match store.replica(3) {
                None => assert!(!acknowledged, "{context}: the installed replica is gone"),
                Some(r) if r.version == 4 => assert_eq!(read_all(&store, 3), new, "{context}"),
                Some(r) => {
                    assert!(
                        !acknowledged,
                        "{context}: version {} after the install",
                        r.version
                    );
                    assert_eq!(
                        (r.version, read_all(&store, 3)),
                        (2, old.clone()),
                        "{context}"
                    );
                }
            }
        }
    }
}

proptest! {
    /// Random writes and reads agree with a plain byte vector.
    #[test]
    fn reads_match_a_model(writes in proptest::collection::vec((0u64..300_000, 1usize..150_000, any::<u8>()), 1..8),
                           reads in proptest::collection::vec((0u64..450_000, 0u64..200_000), 1..8)) {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let mut store = open(&disk);
        store.create(1, 1).unwrap();
        let mut model = Vec::new();
        for (offset, len, seed) in writes {
            let data = bytes(len, seed);
            store.write(1, 1, offset, &data).unwrap();
            let end = offset as usize + len;
            if model.len() < end { model.resize(end, 0); }
            model[offset as usize..end].copy_from_slice(&data);
        }
        let store = open(&disk);
        for (offset, len) in reads {
            let got = store.read(1, offset, len).unwrap().0;
            let from = (offset as usize).min(model.len());
            let to = (offset as usize + len as usize).min(model.len());
            prop_assert_eq!(&got[..], &model[from..to]);
        }
    }

    /// The metadata decoder takes any bytes without panicking, and takes
    /// no mutation of a valid file.
    #[test]
    fn the_metadata_decoder_is_total(garbage in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..64) {
        let _ = decode_meta(1, &garbage);
        let replica = Replica { version: 3, length: 70_000, checksums: vec![1, 2] };
        let mut valid = encode_meta(1, &replica);
        prop_assert_eq!(decode_meta(1, &valid), Some(replica));
        prop_assert_eq!(decode_meta(2, &valid), None);
        let at = flip % valid.len();
        valid[at] ^= 0x40;
        prop_assert_eq!(decode_meta(1, &valid), None);
    }
}

/// A read planned before a write runs after it: an append leaves the bytes
/// it covers alone (the plan still reads them), an overwrite makes the
/// plan fail its checksums (never return mixed bytes), and a read through
/// the store, ordered with the writes, succeeds.
#[test]
fn a_read_planned_before_a_write_never_returns_mixed_bytes() {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let mut store = open(&disk);
    store.create(3, 1).unwrap();
    let old = bytes(100_000, 1);
    store.write(3, 1, 0, &old).unwrap();
    let before_append = store.plan_read(3, 0, 100_000).unwrap();
    store.write(3, 1, 100_000, &bytes(10_000, 2)).unwrap();
    assert_eq!(before_append.run().unwrap().0, old);
    let before_overwrite = store.plan_read(3, 0, 1_000).unwrap();
    store.write(3, 1, 500, &bytes(100, 3)).unwrap();
    assert!(matches!(
        before_overwrite.run(),
        Err(ChunkError::Corrupt { block: 0, .. })
    ));
    assert_eq!(store.read(3, 500, 100).unwrap().0, bytes(100, 3));
}
