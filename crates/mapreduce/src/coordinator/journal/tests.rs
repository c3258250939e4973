//! Tests of the journal: replay and a torn tail, and property tests feeding
//! arbitrary and mutated bytes to the decoder and the resume that follows
//! it. Cases: 64 by default, `PROPTEST_CASES=N` for more.
use super::*;
use cairn_storage::MemDisk;
use proptest::prelude::*;
use tokio::time::Instant;

use super::super::{ResumeError, SchedulerConfig, resume};

#[test]
fn replays_and_drops_a_torn_tail() {
    let disk = MemDisk::new();
    let (mut journal, records) = Journal::open(&disk, Path::new("d")).unwrap();
    assert!(records.is_empty());
    journal
        .append(&Record::Worker {
            id: 1,
            addr: "http://a:1".into(),
            host: String::new(),
        })
        .unwrap();
    journal.append(&Record::MapLost { task: 3 }).unwrap();
    let mut file = disk.open(Path::new("d/journal"), OpenMode::Write).unwrap();
    file.append(b"{\"type\":\"job_do").unwrap();
    file.sync().unwrap();
    let (mut journal, records) = Journal::open(&disk, Path::new("d")).unwrap();
    assert_eq!(records.len(), 2);
    journal.append(&Record::JobDone).unwrap();
    let (_, records) = Journal::open(&disk, Path::new("d")).unwrap();
    assert_eq!(records.last(), Some(&Record::JobDone));

    let mut file = disk.open(Path::new("d/journal"), OpenMode::Write).unwrap();
    file.write_at(0, b"garbage!").unwrap();
    file.sync().unwrap();
    let error = Journal::open(&disk, Path::new("d")).unwrap_err();
    assert!(error.to_string().contains("line 1"), "{error}");
}

/// Property cases per test: `PROPTEST_CASES`, or 64.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

/// The job the generated journals belong to: 3 maps, 2 reduces.
fn job() -> JobRecord {
    JobRecord {
        job_id: "0000beef".into(),
        app: "wc".into(),
        pattern: String::new(),
        mapper: String::new(),
        reducer: String::new(),
        inputs: vec!["in".into()],
        splits: (0..3).map(|i| ("in".into(), i * 10, 10)).collect(),
        reduces: 2,
        output_dir: "out".into(),
        hadoop_names: false,
        started_unix_ms: None,
    }
}

fn encode(records: &[Record]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for record in records {
        bytes.extend(serde_json::to_vec(record).unwrap());
        bytes.push(b'\n');
    }
    bytes
}

/// Mostly small numbers (valid task indices), sometimes the extremes.
fn number_u32() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..4u32, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

fn number_u64() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..4u64, 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn record() -> impl Strategy<Value = Record> {
    let counters = proptest::collection::btree_map("[a-c.]{1,4}", number_u64(), 0..3);
    prop_oneof![
        (number_u64(), "[a-z:/0-9]{0,12}").prop_map(|(id, addr)| Record::Worker {
            id,
            addr,
            host: String::new()
        }),
        (
            any::<bool>(),
            number_u32(),
            number_u32(),
            number_u64(),
            counters
        )
            .prop_map(|(map, task, attempt, worker, counters)| Record::TaskDone {
                map,
                task,
                attempt,
                worker,
                counters,
            }),
        number_u32().prop_map(|task| Record::MapLost { task }),
        Just(Record::JobDone),
        ".{0,8}".prop_map(|error| Record::JobFailed { error }),
    ]
}

/// A journal as the coordinator writes it: the job's record first.
fn journal() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(record(), 0..12).prop_map(|mut records| {
        records.insert(0, Record::Job(job()));
        records
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![any::<u8>(), Just(b'\n'), Just(b'"'), Just(b'}'), Just(b'9')];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        (any::<usize>(), byte).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Cut),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let at = |index: usize, len: usize| index % len.max(1);
    match *mutation {
        Mutation::Set(index, byte) if !bytes.is_empty() => {
            let index = at(index, bytes.len());
            bytes[index] = byte;
        }
        Mutation::Insert(index, byte) => {
            let index = at(index, bytes.len() + 1);
            bytes.insert(index, byte);
        }
        Mutation::Remove(index) if !bytes.is_empty() => {
            let index = at(index, bytes.len());
            bytes.remove(index);
        }
        Mutation::Cut(index) => bytes.truncate(at(index, bytes.len() + 1)),
        _ => {}
    }
}

/// What the decoder must give for any bytes: a valid prefix of complete
/// lines (which decodes again to the same records), or an error naming the
/// corrupt line and saying what to do.
fn check_decoded(data: &[u8]) -> Option<Vec<Record>> {
    match decode(data) {
        Ok(decoded) => {
            let valid = &data[..decoded.valid_len as usize];
            assert!(valid.is_empty() || valid.ends_with(b"\n"));
            let again = decode(valid).expect("a valid prefix decodes");
            assert_eq!(again, decoded, "the valid prefix holds every record");
            Some(decoded.records)
        }
        Err(corrupt) => {
            let lines = data.split_inclusive(|byte| *byte == b'\n').count();
            assert!(corrupt.line >= 1 && corrupt.line < lines, "{corrupt}");
            assert!(corrupt.to_string().contains("move the data directory away"));
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_decode_to_a_valid_prefix_or_a_clear_error(
        data in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        check_decoded(&data);
    }

    #[test]
    fn a_journal_cut_anywhere_decodes_to_a_prefix_of_its_records(
        records in journal(),
        cut in any::<usize>(),
    ) {
        let bytes = encode(&records);
        let cut = cut % (bytes.len() + 1);
        let decoded = check_decoded(&bytes[..cut]).expect("a cut journal is never corrupt");
        let complete = bytes[..cut].iter().filter(|byte| **byte == b'\n').count();
        prop_assert_eq!(&decoded[..], &records[..complete]);
    }

    #[test]
    fn a_mutated_journal_resumes_or_fails_clearly(
        records in journal(),
        mutations in proptest::collection::vec(mutation(), 0..4),
    ) {
        let mut bytes = encode(&records);
        for mutation in &mutations {
            mutate(&mut bytes, mutation);
        }
        let Some(decoded) = check_decoded(&bytes) else {
            return Ok(());
        };
        let now = Instant::now();
        match resume(&job(), &SchedulerConfig::default(), &decoded, now, 0) {
            Ok(Some(mut state)) => {
                // A resumed state serves requests without panicking.
                state.status(now);
                state.tick(now);
                let (worker, _) = state.register("http://w".into(), String::new(), now);
                state.assign(worker, now);
            }
            Ok(None) => prop_assert!(decoded.is_empty()),
            Err(ResumeError::DifferentJob(_)) => {}
            Err(ResumeError::Bad(reason)) => prop_assert!(!reason.is_empty()),
        }
    }
}
