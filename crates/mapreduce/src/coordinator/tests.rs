//! Tests of opening a coordinator on a data directory: resuming its job,
//! retiring a finished job's journal, refusing a different unfinished job,
//! keeping a resumed job's elapsed time, and stopping (not exiting) when
//! the journal cannot be written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_storage::{MemDisk, write_atomic};
use tokio::time::Instant;

use super::journal::{FINISHED_JOURNAL, Journal};
use super::*;

fn disk_with_input() -> MemDisk {
    let disk = MemDisk::new();
    let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
    write_atomic(&disk, Path::new("in"), text.as_bytes()).unwrap();
    disk
}

fn config(reduces: u32) -> JobConfig {
    JobConfig {
        app: AppSpec::BuiltIn {
            name: "wc".into(),
            pattern: String::new(),
        },
        inputs: vec!["in".into()],
        reduces,
        split_bytes: 200,
        output_dir: "out".into(),
        hadoop_names: false,
        scheduler: SchedulerConfig::default(),
        heartbeat_interval: Duration::from_millis(500),
    }
}

fn data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// Appends `record` to the journal in `data`, as a coordinator would.
fn journal(disk: &MemDisk, record: Record) {
    let (mut journal, _) = Journal::open(disk, &data_dir()).unwrap();
    journal.append(&record).unwrap();
}

#[tokio::test]
async fn an_unfinished_job_resumes_with_its_id() {
    let disk = disk_with_input();
    let first = CoordinatorCore::open(&config(2), &disk, &disk, data_dir()).unwrap();
    let id = first.status().job_id;
    drop(first);
    let again = CoordinatorCore::open(&config(2), &disk, &disk, data_dir()).unwrap();
    assert_eq!(again.status().job_id, id);
}

#[tokio::test]
async fn a_finished_jobs_journal_is_retired_so_the_next_job_starts() {
    for outcome in [
        Record::JobDone,
        Record::JobFailed {
            error: "boom".into(),
        },
    ] {
        let disk = disk_with_input();
        let first = CoordinatorCore::open(&config(2), &disk, &disk, data_dir()).unwrap();
        let id = first.status().job_id;
        drop(first);
        journal(&disk, outcome.clone());
        // The same command line again runs the job again.
        let second = CoordinatorCore::open(&config(2), &disk, &disk, data_dir()).unwrap();
        let status = second.status();
        assert_ne!(status.job_id, id, "a new job after {outcome:?}");
        assert!(!status.done && status.error.is_empty(), "{status:?}");
        assert_eq!(status.maps_done, 0);
        let retired = disk.read(&data_dir().join(FINISHED_JOURNAL)).unwrap();
        assert!(
            String::from_utf8_lossy(&retired).contains(&id),
            "the finished journal is kept"
        );
        drop(second);
        // A different job after a finished one starts too.
        journal(&disk, Record::JobDone);
        let third = CoordinatorCore::open(&config(3), &disk, &disk, data_dir()).unwrap();
        assert_eq!(third.status().reduces_total, 3);
    }
}

#[tokio::test]
async fn a_different_job_than_an_unfinished_one_is_refused_with_how_to_resume_or_discard() {
    let disk = disk_with_input();
    let first = CoordinatorCore::open(&config(2), &disk, &disk, data_dir()).unwrap();
    let id = first.status().job_id;
    drop(first);
    let error = CoordinatorCore::open(&config(3), &disk, &disk, data_dir()).unwrap_err();
    let message = error.to_string();
    for expected in [
        id.as_str(),
        "not finished",
        "maps 0/",
        "--reduces: 2 there, 3 here",
        "To resume",
        "--app wc --reduces 2 --output out, inputs: in",
        "to discard it, remove data",
    ] {
        assert!(message.contains(expected), "{expected:?} in: {message}");
    }
    // Refusing changed nothing: the first job still resumes.
    let again = CoordinatorCore::open(&config(2), &disk, &disk, data_dir()).unwrap();
    assert_eq!(again.status().job_id, id);
}

#[test]
fn a_resumed_job_counts_its_elapsed_time_from_its_start() {
    let mut job = JobRecord {
        job_id: "0000beef".into(),
        app: "wc".into(),
        pattern: String::new(),
        mapper: String::new(),
        reducer: String::new(),
        inputs: vec!["in".into()],
        splits: vec![("in".into(), 0, 10)],
        reduces: 1,
        output_dir: "out".into(),
        hadoop_names: false,
        started_unix_ms: Some(1_000_000),
    };
    let now = Instant::now();
    let scheduler = SchedulerConfig::default();
    let records = [Record::Job(job.clone())];
    let state = resume(&job, &scheduler, &records, now, 1_090_000)
        .unwrap()
        .unwrap();
    assert_eq!(state.status(now).elapsed_ms, 90_000);
    assert_eq!(
        state.status(now + Duration::from_secs(1)).elapsed_ms,
        91_000
    );
    // The command line's record has no start time: still the same job.
    job.started_unix_ms = None;
    assert!(resume(&job, &scheduler, &records, now, 1_090_000).is_ok());
}

#[test]
fn a_journal_from_before_start_times_still_resumes() {
    let line = br#"{"type":"job","job_id":"0000beef","app":"wc","pattern":"","mapper":"","reducer":"","inputs":["in"],"splits":[["in",0,10]],"reduces":1,"output_dir":"out","hadoop_names":false}
"#;
    let decoded = journal::decode(line).unwrap();
    let Some(Record::Job(job)) = decoded.records.first() else {
        panic!("a job record: {decoded:?}");
    };
    assert_eq!(job.started_unix_ms, None);
    let now = Instant::now();
    let state = resume(
        job,
        &SchedulerConfig::default(),
        &decoded.records,
        now,
        5_000,
    )
    .unwrap()
    .unwrap();
    assert_eq!(state.status(now).elapsed_ms, 0);
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_stops_the_coordinator_with_an_error() {
    let disk = disk_with_input();
    let data = cairn_storage::CrashPoints::new(disk.clone());
    let core = CoordinatorCore::open(&config(2), &disk, &data, data_dir()).unwrap();
    data.fail_from(Some(data.points()));
    let register = RegisterRequest {
        shuffle_addr: "http://127.0.0.1:1".into(),
        host: "here".into(),
        pid: 1,
    };
    let refused = CoordinatorRpc::register(&core, Request::new(register.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("cannot write its journal"),
        "{refused:?}"
    );
    assert!(core.status().error.contains("cannot write its journal"));
    // Every later request is refused too, and the ticker returns the error.
    let again = CoordinatorRpc::register(&core, Request::new(register)).await;
    assert_eq!(again.unwrap_err().code(), tonic::Code::Unavailable);
    let stopped = core.run_until_released(Duration::ZERO).await.unwrap_err();
    assert!(stopped.to_string().contains("Restart it"), "{stopped}");
}
