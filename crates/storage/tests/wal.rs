//! The write-ahead log: round trips, truncation, state, rotation,
//! compaction, crashes at every kind of point, torn tails and corruption.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_storage::{
    Disk, MAX_RECORD_BYTES, MemDisk, RealDisk, Recovered, Wal, WalEntry, WalError, WalOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::FaultyDisk;

const DIR: &str = "wal";

/// Bytes of an entry record besides its data: header, index and term.
const ENTRY_OVERHEAD: u64 = 13 + 16;

/// Bytes of a state record besides the state.
const STATE_OVERHEAD: u64 = 13;

fn entry(index: u64, term: u64) -> WalEntry {
    WalEntry::new(
        index,
        term,
        format!("entry {index} of term {term}").into_bytes(),
    )
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<WalEntry> {
    indexes.map(|index| entry(index, term)).collect()
}

fn open(disk: &Arc<dyn Disk>, options: WalOptions) -> (Wal, Recovered) {
    Wal::open(disk.clone(), Path::new(DIR), options).expect("open the log")
}

fn small_segments(segment_bytes: u64) -> WalOptions {
    WalOptions { segment_bytes }
}

fn mem_disk() -> (MemDisk, Arc<dyn Disk>) {
    let mem = MemDisk::new();
    let disk: Arc<dyn Disk> = Arc::new(mem.clone());
    (mem, disk)
}

/// The segment files under a real disk's root, oldest first.
fn segment_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root.join(DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

fn round_trip(disk: Arc<dyn Disk>) {
    let options = small_segments(1024);
    {
        let (mut wal, recovered) = open(&disk, options);
        assert_eq!(recovered, Recovered::default());
        assert_eq!(wal.last_index(), 0);
        wal.append(&entries(1..=20, 1)).unwrap();
        wal.set_state(b"term 1 vote 2 commit 15").unwrap();
        wal.sync().unwrap();
    }
    let (mut wal, recovered) = open(&disk, options);
    assert_eq!(recovered.entries, entries(1..=20, 1));
    assert_eq!(
        recovered.state.as_deref(),
        Some(&b"term 1 vote 2 commit 15"[..])
    );
    assert_eq!(recovered.compacted_to, 0);
    assert_eq!(wal.last_index(), 20);
    wal.append(&entries(21..=60, 2)).unwrap();
    wal.sync().unwrap();
    wal.compact(50).unwrap();
    drop(wal);
    let (wal, recovered) = open(&disk, options);
    assert_eq!(recovered.entries, entries(51..=60, 2));
    assert_eq!(recovered.compacted_to, 50);
    assert_eq!(wal.last_index(), 60);
    assert!(recovered.state.is_some());
}

#[test]
fn round_trip_on_mem_disk() {
    round_trip(mem_disk().1);
}

#[test]
fn round_trip_on_real_disk() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(Arc::new(RealDisk::new(dir.path()).unwrap()));
}

#[test]
fn a_crash_keeps_the_synced_log_and_a_whole_record_prefix_of_the_rest() {
    let (mem, disk) = mem_disk();
    let mut rng = StdRng::seed_from_u64(7);
    let (mut wal, _) = open(&disk, WalOptions::default());
    wal.append(&entries(1..=10, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    // Four records that overflow the write buffer, so they reach the file in
    // one unsynced write, which the crash may tear anywhere.
    let unsynced: Vec<WalEntry> = (11..=14)
        .map(|index| WalEntry::new(index, 2, vec![index as u8; 300 << 10]))
        .collect();
    let mut kept = std::collections::BTreeSet::new();
    for round in 0..40 {
        let (mut wal, recovered) = open(&disk, WalOptions::default());
        let n = recovered.entries.len();
        assert!((10..=14).contains(&n), "round {round}: {n} entries");
        assert_eq!(recovered.entries[..10], entries(1..=10, 1)[..]);
        assert_eq!(recovered.entries[10..], unsynced[..n - 10]);
        kept.insert(n);
        if n > 10 {
            wal.truncate(11).unwrap();
            wal.sync().unwrap();
        }
        wal.append(&unsynced).unwrap();
        drop(wal);
        mem.crash(&mut rng);
    }
    assert!(kept.len() >= 3, "tears at several records: {kept:?}");
}

#[test]
fn conflict_truncation_survives_recovery() {
    let (mem, disk) = mem_disk();
    let options = small_segments(300);
    let (mut wal, _) = open(&disk, options);
    wal.append(&entries(1..=10, 1)).unwrap();
    wal.sync().unwrap();
    // A new leader's entries conflict from index 6 on.
    wal.append(&entries(6..=8, 2)).unwrap();
    assert_eq!(wal.last_index(), 8);
    wal.sync().unwrap();
    drop(wal);
    mem.crash(&mut StdRng::seed_from_u64(1));
    let (mut wal, recovered) = open(&disk, options);
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=8, 2));
    assert_eq!(recovered.entries, expected);
    // An explicit truncation, then appends after it.
    wal.truncate(7).unwrap();
    assert_eq!(wal.last_index(), 6);
    wal.append(&entries(7..=9, 3)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = open(&disk, options);
    expected.truncate(6);
    expected.extend(entries(7..=9, 3));
    assert_eq!(recovered.entries, expected);
}

#[test]
fn the_latest_state_wins_across_segments() {
    let (_, disk) = mem_disk();
    let options = small_segments(200);
    let (mut wal, _) = open(&disk, options);
    wal.set_state(b"term 1").unwrap();
    wal.sync().unwrap();
    for index in 1..=30 {
        wal.append(&[entry(index, 1)]).unwrap();
        if index == 12 {
            wal.set_state(b"term 2").unwrap();
            wal.set_state(b"term 3 vote 1").unwrap();
        }
        wal.sync().unwrap();
    }
    assert!(wal.segment_count() > 3, "{wal:?}");
    drop(wal);
    let (_, recovered) = open(&disk, options);
    assert_eq!(recovered.state.as_deref(), Some(&b"term 3 vote 1"[..]));
    assert_eq!(recovered.entries, entries(1..=30, 1));
}

#[test]
fn rotation_spreads_the_log_over_many_segments_and_recovery_reads_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::new(dir.path()).unwrap());
    let options = small_segments(256);
    let (mut wal, _) = open(&disk, options);
    for index in 1..=200 {
        wal.append(&[entry(index, 1 + index / 50)]).unwrap();
        wal.sync().unwrap();
    }
    let segments = wal.segment_count();
    assert!(segments >= 20, "{segments} segments");
    assert_eq!(segment_files(dir.path()).len(), segments);
    let sizes: u64 = segment_files(dir.path())
        .iter()
        .map(|path| fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(sizes, wal.disk_bytes());
    drop(wal);
    let (wal, recovered) = open(&disk, options);
    let expected: Vec<WalEntry> = (1..=200).map(|i| entry(i, 1 + i / 50)).collect();
    assert_eq!(recovered.entries, expected);
    assert_eq!(wal.segment_count(), segments);
}

#[test]
fn compact_deletes_segments_and_recovery_keeps_live_entries_and_state() {
    let (mem, disk) = mem_disk();
    let options = small_segments(256);
    let (mut wal, _) = open(&disk, options);
    // The state is set once, in the first segment; rotation carries it.
    wal.set_state(b"hard state").unwrap();
    for index in 1..=100 {
        wal.append(&[entry(index, 1)]).unwrap();
        wal.sync().unwrap();
    }
    let before = wal.segment_count();
    let live_before = wal.live_bytes();
    wal.compact(90).unwrap();
    assert!(
        wal.segment_count() <= 3,
        "{before} -> {}",
        wal.segment_count()
    );
    assert_eq!(mem.used_bytes(), wal.disk_bytes());
    let expected_live = (91..=100)
        .map(|i| ENTRY_OVERHEAD + entry(i, 1).data.len() as u64)
        .sum::<u64>()
        + STATE_OVERHEAD
        + b"hard state".len() as u64;
    assert_eq!(wal.live_bytes(), expected_live);
    assert!(wal.live_bytes() < live_before);
    assert_eq!(wal.compacted_to(), 90);
    assert_eq!(wal.last_index(), 100);
    drop(wal);
    mem.crash(&mut StdRng::seed_from_u64(2));
    let (mut wal, recovered) = open(&disk, options);
    assert_eq!(recovered.compacted_to, 90);
    assert_eq!(recovered.entries, entries(91..=100, 1));
    assert_eq!(recovered.state.as_deref(), Some(&b"hard state"[..]));
    assert_eq!(wal.live_bytes(), expected_live);
    // Compacting to an older index changes nothing.
    wal.compact(50).unwrap();
    assert_eq!(wal.compacted_to(), 90);
}

/// A crash while a segment was being started can leave its begin record
/// without the state record after it; the state then lives only in the
/// older segment, which compaction must keep.
#[test]
fn a_state_torn_off_a_new_segment_is_kept_in_the_older_one() {
    let (_, disk) = mem_disk();
    let options = small_segments(200);
    let (mut wal, _) = open(&disk, options);
    wal.set_state(b"hard state").unwrap();
    let mut last = 0;
    while wal.segment_count() < 2 {
        last += 1;
        wal.append(&[entry(last, 1)]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    // The new segment holds its begin record and the state: keep only the
    // begin record, as a torn write would.
    let names = disk.list(Path::new(DIR)).unwrap();
    let newest = Path::new(DIR).join(names.last().unwrap());
    let mut file = disk.open(&newest, cairn_storage::OpenMode::Write).unwrap();
    let begin_only = 38;
    assert_eq!(
        file.len().unwrap(),
        begin_only + STATE_OVERHEAD + b"hard state".len() as u64
    );
    file.set_len(begin_only).unwrap();
    file.sync().unwrap();
    drop(file);
    let (mut wal, recovered) = open(&disk, options);
    assert_eq!(recovered.state.as_deref(), Some(&b"hard state"[..]));
    assert_eq!(recovered.entries, entries(1..=last, 1));
    wal.compact(last).unwrap();
    drop(wal);
    let (_, recovered) = open(&disk, options);
    assert_eq!(recovered.state.as_deref(), Some(&b"hard state"[..]));
    assert!(recovered.entries.is_empty());
}

#[test]
fn compact_past_the_last_index_continues_the_log_after_the_snapshot() {
    let (_, disk) = mem_disk();
    let (mut wal, _) = open(&disk, WalOptions::default());
    wal.append(&entries(1..=5, 1)).unwrap();
    wal.compact(10).unwrap();
    assert_eq!(wal.last_index(), 10);
    wal.append(&entries(11..=12, 3)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, recovered) = open(&disk, WalOptions::default());
    assert_eq!(recovered.compacted_to, 10);
    assert_eq!(recovered.entries, entries(11..=12, 3));
    assert_eq!(wal.last_index(), 12);
}

#[test]
fn disk_usage_stays_proportional_to_the_live_log() {
    let (mem, disk) = mem_disk();
    let options = small_segments(64 << 10);
    let threshold = cairn_storage::REWRITE_MIN_DEAD_BYTES.min(options.segment_bytes);
    let (mut wal, _) = open(&disk, options);
    let mut shrinks = 0;
    for index in 1..=20_000u64 {
        wal.append(&[WalEntry::new(index, 1, vec![index as u8; 100])])
            .unwrap();
        if index % 20 == 0 {
            wal.set_state(&index.to_le_bytes()).unwrap();
        }
        if index % 100 == 0 {
            let segments_before = mem.used_bytes();
            wal.compact(index - 30).unwrap();
            let live = wal.live_bytes();
            assert!(
                wal.disk_bytes() <= 2 * live + threshold + 38,
                "at {index}: {} bytes on disk for {live} live",
                wal.disk_bytes()
            );
            assert_eq!(mem.used_bytes(), wal.disk_bytes());
            shrinks += u64::from(mem.used_bytes() < segments_before / 2);
        }
    }
    assert!(shrinks > 5, "{shrinks} compactions freed most of the disk");
    drop(wal);
    let (_, recovered) = open(&disk, options);
    assert_eq!(recovered.compacted_to, 19_970);
    assert_eq!(recovered.entries.len(), 30);
    assert_eq!(recovered.entries[0].index, 19_971);
    assert_eq!(
        recovered.state.as_deref(),
        Some(&20_000u64.to_le_bytes()[..])
    );
}

// ---------------------------------------------------------------------------
// Random crashes.

/// Random operations, a crash (power loss, or the process dying after a
/// random number of disk operations, mid-rotation or mid-compaction
/// included), recovery; repeated. Recovery must return exactly the log as it
/// was after some record written since the last successful sync: everything
/// synced is there, unsynced records are there whole or absent from some
/// point on, and nothing else appears.
#[test]
fn random_crashes_recover_a_prefix_consistent_log() {
    for seed in 0..150 {
        crash_scenario(seed);
    }
}

const ROUNDS: usize = 8;
const OPS_PER_ROUND: usize = 40;

/// The log states recovery may return: one after each record written since
/// the last durable point (the first is that point).
type Candidates = Vec<Recovered>;

fn crash_scenario(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mem = MemDisk::new();
    let options = small_segments(rng.gen_range(150..2000));
    let mut candidates: Candidates = vec![Recovered::default()];
    let mut term = 1;
    for round in 0..ROUNDS {
        let (mut wal, recovered) = open_after_crash(&mem, options, &mut rng, seed);
        if !candidates.contains(&recovered) {
            panic!(
                "seed {seed} round {round}: recovered {} but expected one of {:?}",
                describe(&recovered),
                candidates.iter().map(describe).collect::<Vec<_>>()
            );
        }
        let mut model = recovered;
        candidates = vec![model.clone()];
        assert_matches_model(&wal, &model, seed);
        for _ in 0..OPS_PER_ROUND {
            let outcome = random_op(&mut wal, &mut model, &mut candidates, &mut rng, &mut term);
            match outcome {
                Ok(synced) => {
                    assert_matches_model(&wal, &model, seed);
                    if synced {
                        assert_eq!(mem.used_bytes(), wal.disk_bytes(), "seed {seed}");
                    }
                }
                Err(error) => {
                    assert_injected(&error, seed);
                    break;
                }
            }
        }
        drop(wal);
        mem.crash(&mut rng);
    }
}

/// Opens the log through a disk that may fail after a random number of
/// operations; if opening itself fails that way, crashes and tries again.
fn open_after_crash(
    mem: &MemDisk,
    options: WalOptions,
    rng: &mut StdRng,
    seed: u64,
) -> (Wal, Recovered) {
    loop {
        let budget = rng.gen_bool(0.5).then(|| rng.gen_range(0..150));
        match Wal::open(FaultyDisk::new(mem, budget), Path::new(DIR), options) {
            Ok(opened) => return opened,
            Err(error) => {
                assert_injected(&error, seed);
                mem.crash(rng);
            }
        }
    }
}

fn assert_injected(error: &WalError, seed: u64) {
    assert!(
        matches!(error, WalError::Io { source, .. } if source.to_string() == "injected failure"),
        "seed {seed}: {error}"
    );
}

/// One random operation, applied to the log and the model. Returns whether
/// it synced.
fn random_op(
    wal: &mut Wal,
    model: &mut Recovered,
    candidates: &mut Candidates,
    rng: &mut StdRng,
    term: &mut u64,
) -> Result<bool, WalError> {
    let last = model.compacted_to + model.entries.len() as u64;
    match rng.gen_range(0..100) {
        0..40 => {
            let conflict = last > model.compacted_to && rng.gen_bool(0.2);
            let first = if conflict {
                *term += 1;
                rng.gen_range(model.compacted_to + 1..=last)
            } else {
                last + 1
            };
            *term += u64::from(rng.gen_bool(0.05));
            let batch: Vec<WalEntry> = (first..first + rng.gen_range(1..=6))
                .map(|index| random_entry(rng, index, *term))
                .collect();
            if first <= last {
                model
                    .entries
                    .truncate((first - model.compacted_to - 1) as usize);
                candidates.push(model.clone());
            }
            for entry in &batch {
                model.entries.push(entry.clone());
                candidates.push(model.clone());
            }
            wal.append(&batch)?;
        }
        40..50 => {
            let state: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.r#gen()).collect();
            model.state = Some(Bytes::from(state.clone()));
            candidates.push(model.clone());
            wal.set_state(&state)?;
        }
        50..55 if last > model.compacted_to => {
            let from = rng.gen_range(model.compacted_to + 1..=last);
            model
                .entries
                .truncate((from - model.compacted_to - 1) as usize);
            candidates.push(model.clone());
            wal.truncate(from)?;
        }
        50..85 => {
            wal.sync()?;
            *candidates = vec![model.clone()];
            return Ok(true);
        }
        _ => {
            let index = rng.gen_range(model.compacted_to + 1..=last + 3);
            let covered = (index - model.compacted_to).min(model.entries.len() as u64);
            model.entries.drain(..covered as usize);
            model.compacted_to = index;
            candidates.push(model.clone());
            wal.compact(index)?;
            *candidates = vec![model.clone()];
            return Ok(true);
        }
    }
    Ok(false)
}

fn random_entry(rng: &mut StdRng, index: u64, term: u64) -> WalEntry {
    let len = if rng.gen_bool(0.1) {
        rng.gen_range(100..600)
    } else {
        rng.gen_range(0..40)
    };
    let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
    WalEntry::new(index, term, data)
}

fn assert_matches_model(wal: &Wal, model: &Recovered, seed: u64) {
    let last = model.compacted_to + model.entries.len() as u64;
    assert_eq!(wal.last_index(), last, "seed {seed}");
    assert_eq!(wal.compacted_to(), model.compacted_to, "seed {seed}");
    let entry_bytes: u64 = model
        .entries
        .iter()
        .map(|e| ENTRY_OVERHEAD + e.data.len() as u64)
        .sum();
    let state_bytes = model
        .state
        .as_ref()
        .map_or(0, |s| STATE_OVERHEAD + s.len() as u64);
    assert_eq!(wal.live_bytes(), entry_bytes + state_bytes, "seed {seed}");
}

fn describe(log: &Recovered) -> String {
    let terms: Vec<u64> = log.entries.iter().map(|e| e.term).collect();
    format!(
        "(compacted to {}, {} entries, terms {terms:?}, state {:?})",
        log.compacted_to,
        log.entries.len(),
        log.state.as_deref()
    )
}

// ---------------------------------------------------------------------------
// Torn tails and corruption, on real files.

/// A real-disk log with entries 1..=3 and a state, synced; returns the
/// disk, and the bytes of its only segment.
fn real_log(root: &Path) -> (Arc<dyn Disk>, PathBuf, Vec<u8>) {
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::new(root).unwrap());
    let (mut wal, _) = open(&disk, WalOptions::default());
    wal.append(&entries(1..=3, 1)).unwrap();
    wal.set_state(b"state").unwrap();
    wal.sync().unwrap();
    let files = segment_files(root);
    assert_eq!(files.len(), 1);
    let bytes = fs::read(&files[0]).unwrap();
    (disk, files[0].clone(), bytes)
}

#[test]
fn a_torn_last_record_is_dropped_at_every_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, file, good) = real_log(dir.path());
    let (mut wal, _) = open(&disk, WalOptions::default());
    wal.append(&[entry(4, 1)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let full = fs::read(&file).unwrap();
    assert!(full.len() > good.len() + 20);
    for cut in good.len() + 1..full.len() {
        fs::write(&file, &full[..cut]).unwrap();
        let (mut wal, recovered) = open(&disk, WalOptions::default());
        assert_eq!(recovered.entries, entries(1..=3, 1), "cut at {cut}");
        assert_eq!(recovered.state.as_deref(), Some(&b"state"[..]));
        assert_eq!(fs::metadata(&file).unwrap().len(), good.len() as u64);
        wal.append(&[entry(4, 2)]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered) = open(&disk, WalOptions::default());
        assert_eq!(recovered.entries.last(), Some(&entry(4, 2)), "cut at {cut}");
    }
}

#[test]
fn zeros_or_garbage_after_the_last_record_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, file, good) = real_log(dir.path());
    let mut rng = StdRng::seed_from_u64(3);
    let garbage: Vec<u8> = (0..300).map(|_| rng.r#gen()).collect();
    for tail in [vec![0; 4096], garbage, vec![1, 2, 3, 4, 5]] {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&tail);
        fs::write(&file, &bytes).unwrap();
        let (_, recovered) = open(&disk, WalOptions::default());
        assert_eq!(recovered.entries, entries(1..=3, 1));
        assert_eq!(fs::read(&file).unwrap(), good);
    }
}

/// The offset of the record whose entry data is `data`.
fn record_offset(bytes: &[u8], data: &[u8]) -> usize {
    let at = bytes
        .windows(data.len())
        .position(|window| window == data)
        .expect("data is in the file");
    at - ENTRY_OVERHEAD as usize
}

fn expect_corrupt(disk: &Arc<dyn Disk>, file: &Path, offset: usize) {
    let error = Wal::open(disk.clone(), Path::new(DIR), small_segments(256))
        .expect_err("a damaged log must not open");
    let message = error.to_string();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(message.contains(&name), "{message}");
    assert!(
        message.contains(&format!("byte offset {offset}")),
        "{message}"
    );
    match error {
        WalError::Corrupt {
            path, offset: at, ..
        } => {
            assert_eq!(path, Path::new(DIR).join(&name));
            assert_eq!(at, offset as u64);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn a_flipped_byte_before_the_tail_of_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, file, good) = real_log(dir.path());
    let offset = record_offset(&good, &entry(2, 1).data);
    // In the payload, then in the length field of the header.
    for at in [offset + 40, offset + 5] {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        fs::write(&file, &bad).unwrap();
        expect_corrupt(&disk, &file, offset);
    }
}

#[test]
fn a_flipped_byte_in_an_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::new(dir.path()).unwrap());
    let (mut wal, _) = open(&disk, small_segments(256));
    for index in 1..=40 {
        wal.append(&[entry(index, 1)]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() > 3);
    let first = fs::read(&files[0]).unwrap();
    // The last record of the first segment: no valid record follows it in
    // that file, but the segment is not the newest, so it was synced.
    let last = (1..=40)
        .find(|&i| first.ends_with(&entry(i, 1).data))
        .expect("segment 1 ends with an entry");
    assert!(last > 1);
    let data = entry(last, 1).data;
    let offset = record_offset(&first, &data);
    let mut bad = first.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    fs::write(&files[0], &bad).unwrap();
    expect_corrupt(&disk, &files[0], offset);
    // Cut short instead: also corruption, outside the newest segment.
    fs::write(&files[0], &first[..first.len() - 3]).unwrap();
    expect_corrupt(&disk, &files[0], offset);
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::new(dir.path()).unwrap());
    let (mut wal, _) = open(&disk, small_segments(256));
    for index in 1..=40 {
        wal.append(&[entry(index, 1)]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let files = segment_files(dir.path());
    let saved: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    // A gap in the middle: replay starts after it and finds live entries
    // missing; a missing first segment: the same.
    for missing in [files.len() / 2, 0] {
        fs::remove_file(&files[missing]).unwrap();
        expect_corrupt(&disk, &files[missing + 1], 0);
        fs::write(&files[missing], &saved[missing]).unwrap();
    }
    let (_, recovered) = open(&disk, small_segments(256));
    assert_eq!(recovered.entries, entries(1..=40, 1));
}

// ---------------------------------------------------------------------------
// Caller errors and operating errors.

#[test]
#[should_panic(expected = "append at index 7 outside 1 ..= 6")]
fn an_append_that_leaves_a_gap_panics() {
    let (_, disk) = mem_disk();
    let (mut wal, _) = open(&disk, WalOptions::default());
    wal.append(&entries(1..=5, 1)).unwrap();
    wal.append(&[entry(7, 1)]).unwrap();
}

#[test]
#[should_panic(expected = "append at index 3 outside 5 ..= 6")]
fn an_append_into_the_compacted_prefix_panics() {
    let (_, disk) = mem_disk();
    let (mut wal, _) = open(&disk, WalOptions::default());
    wal.append(&entries(1..=5, 1)).unwrap();
    wal.compact(4).unwrap();
    wal.append(&[entry(3, 2)]).unwrap();
}

#[test]
fn the_log_and_the_store_can_move_to_another_task() {
    fn assert_send<T: Send>() {}
    assert_send::<Wal>();
    assert_send::<cairn_storage::SnapshotStore>();
}

#[test]
fn an_oversized_record_is_an_error_that_writes_nothing() {
    let (_, disk) = mem_disk();
    let (mut wal, _) = open(&disk, WalOptions::default());
    wal.append(&entries(1..=2, 1)).unwrap();
    let huge = WalEntry::new(4, 1, vec![0; MAX_RECORD_BYTES]);
    let error = wal.append(&[entry(3, 1), huge]).unwrap_err();
    assert!(matches!(error, WalError::RecordTooLarge { .. }), "{error}");
    assert_eq!(wal.last_index(), 2);
    wal.append(&[entry(3, 1)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = open(&disk, WalOptions::default());
    assert_eq!(recovered.entries, entries(1..=3, 1));
}

#[test]
fn a_failed_sync_poisons_the_log() {
    let mem = MemDisk::new();
    // Opening a new log takes 6 operations; the sync's write is the 7th.
    let disk = FaultyDisk::new(&mem, Some(6));
    let (mut wal, _) = Wal::open(disk, Path::new(DIR), WalOptions::default()).unwrap();
    wal.append(&entries(1..=2, 1)).unwrap();
    assert!(matches!(wal.sync(), Err(WalError::Io { .. })));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    assert!(matches!(
        wal.append(&[entry(3, 1)]),
        Err(WalError::Poisoned)
    ));
    let (_, recovered) = Wal::open(Arc::new(mem), Path::new(DIR), WalOptions::default()).unwrap();
    assert!(recovered.entries.is_empty());
}
