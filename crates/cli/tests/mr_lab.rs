//! The 6.824 lab 1 test cases (`test-mr.sh`), as real processes: a
//! `cairn mr coordinator` and `cairn mr worker`s on loopback, over the 8
//! Gutenberg inputs with 10 reduce tasks. Like the lab, each compares
//! `sort mr-out* | grep .` with the sequential run's output.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    CAIRN, Processes, assert_same, cairn, sorted_lines, sorted_output, wait_exit, worker,
};

/// The lab gives each process 45 s (the crash test 120 s).
const DEADLINE: Duration = Duration::from_secs(60);

fn expected(dir: &Path, app: &str) -> Vec<String> {
    let files = common::corpus_files();
    let mut args = vec!["mr", "seq", "--app", app, "--output", "expected"];
    args.extend(files.iter().map(String::as_str));
    cairn(dir, &args);
    sorted_lines(&dir.join("expected"))
}

/// Runs a coordinator for `app` and `workers` workers in `dir` until all
/// exit, and returns the sorted output.
fn run_lab_job(dir: &Path, app: &str, workers: usize) -> Vec<String> {
    let files = common::corpus_files();
    let mut args = vec!["--app", app, "--reduces", "10", "--output", "."];
    args.extend(files.iter().map(String::as_str));
    let (coordinator, url) = common::coordinator(dir, &args, "127.0.0.1:0");
    let mut processes = Processes(vec![coordinator]);
    for i in 0..workers {
        processes.0.push(worker(dir, &url, &i.to_string()));
    }
    for process in &mut processes.0 {
        let status = wait_exit(process, DEADLINE);
        assert!(status.success(), "a {app} process failed: {status}");
    }
    sorted_output(dir, "mr-out")
}

#[test]
fn wc_matches_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path(), "wc");
    let dir_out = dir.path().join("job");
    std::fs::create_dir(&dir_out).unwrap();
    assert_same(&run_lab_job(&dir_out, "wc", 3), &expected, "wc output");
}

#[test]
fn indexer_matches_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path(), "indexer");
    let dir_out = dir.path().join("job");
    std::fs::create_dir(&dir_out).unwrap();
    assert_same(
        &run_lab_job(&dir_out, "indexer", 2),
        &expected,
        "indexer output",
    );
}

#[test]
fn map_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_lab_job(dir.path(), "mtiming", 2);
    let workers = output
        .iter()
        .filter(|line| line.starts_with("times-"))
        .count();
    assert_eq!(workers, 2, "both workers ran maps: {output:?}");
    let parallel = output
        .iter()
        .filter(|line| line.starts_with("parallel-"))
        .any(|line| line.split_whitespace().skip(1).any(|n| n == "2"));
    assert!(parallel, "maps ran in parallel: {output:?}");
}

#[test]
fn reduce_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_lab_job(dir.path(), "rtiming", 2);
    let parallel = output
        .iter()
        .filter(|line| {
            let bytes = line.as_bytes();
            bytes.len() >= 3 && bytes[0].is_ascii_lowercase() && &bytes[1..3] == b" 2"
        })
        .count();
    assert!(parallel >= 2, "reduces ran in parallel: {output:?}");
}

#[test]
fn job_count() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_lab_job(dir.path(), "jobcount", 4);
    assert_eq!(output, ["a 8"], "every map ran exactly once");
}

#[test]
fn early_exit() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path(), "early_exit");
    let job = dir.path().join("job");
    std::fs::create_dir(&job).unwrap();
    let files = common::corpus_files();
    let mut args = vec!["--app", "early_exit", "--reduces", "10", "--output", "."];
    args.extend(files.iter().map(String::as_str));
    let (coordinator, url) = common::coordinator(&job, &args, "127.0.0.1:0");
    let mut processes = Processes(vec![coordinator]);
    for i in 0..3 {
        processes.0.push(worker(&job, &url, &i.to_string()));
    }
    // When the first process exits, the output must already be final.
    let start = Instant::now();
    let at_first_exit = 'first: loop {
        for process in &mut processes.0 {
            if process.try_wait().unwrap().is_some() {
                break 'first sorted_output(&job, "mr-out");
            }
        }
        assert!(start.elapsed() < DEADLINE, "no process exited");
        std::thread::sleep(Duration::from_millis(10));
    };
    for process in &mut processes.0 {
        assert!(wait_exit(process, DEADLINE).success());
    }
    let at_end = sorted_output(&job, "mr-out");
    assert_same(
        &at_first_exit,
        &at_end,
        "output when the first process exited vs at the end",
    );
    assert_same(&at_end, &expected, "early_exit output");
}

/// A worker slot of the crash test: restarts its worker a second after it
/// exits, until the coordinator is gone.
struct CrashSlot {
    child: Option<Child>,
    restart_at: Option<Instant>,
}

#[test]
fn crash_matches_nocrash() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path(), "nocrash");
    let job = dir.path().join("job");
    std::fs::create_dir(&job).unwrap();
    let files = common::corpus_files();
    let mut args = vec!["--app", "crash", "--reduces", "10", "--output", "."];
    args.extend(files.iter().map(String::as_str));
    let (coordinator, url) = common::coordinator(&job, &args, "127.0.0.1:0");
    let mut coordinator = Processes(vec![coordinator]);
    let mut slots: Vec<CrashSlot> = (0..4)
        .map(|_| CrashSlot {
            child: None,
            restart_at: Some(Instant::now()),
        })
        .collect();
    let mut spawned = 0;
    let start = Instant::now();
    let mut workers = Processes::default();
    while coordinator.0[0].try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the crash job did not finish in 120 s"
        );
        for slot in &mut slots {
            if let Some(child) = slot.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                slot.child = None;
                slot.restart_at = Some(Instant::now() + Duration::from_secs(1));
            }
            if slot.child.is_none() && slot.restart_at.is_some_and(|at| Instant::now() >= at) {
                spawned += 1;
                let child = Command::new(CAIRN)
                    .current_dir(&job)
                    .args([
                        "mr",
                        "worker",
                        "--coordinator",
                        &url,
                        "--coordinator-timeout",
                        "5",
                    ])
                    .args(["--work-dir", &format!("work-{spawned}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                slot.child = Some(child);
                slot.restart_at = None;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(coordinator.0[0].wait().unwrap().success());
    workers
        .0
        .extend(slots.into_iter().filter_map(|slot| slot.child));
    assert_same(
        &sorted_output(&job, "mr-out"),
        &expected,
        "crash output vs nocrash",
    );
}

#[test]
fn run_wc_matches_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path(), "wc");
    let files = common::corpus_files();
    let mut args = vec![
        "mr",
        "run",
        "--app",
        "wc",
        "--workers",
        "3",
        "--reduces",
        "10",
        "--output",
        "out",
    ];
    args.extend(files.iter().map(String::as_str));
    cairn(dir.path(), &args);
    assert_same(
        &sorted_output(&dir.path().join("out"), "mr-out-"),
        &expected,
        "mr run wc output",
    );
}

#[test]
fn streaming_wc_matches_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path(), "wc");
    let files = common::corpus_files();
    // perl's \p{Alphabetic} is the Unicode property behind Rust's
    // char::is_alphabetic, which the built-in wc splits on.
    let mapper = r#"perl -CSD -ne 'print "$_\t1\n" for /\p{Alphabetic}+/g'"#;
    let reducer = r#"awk -F'\t' '{ c[$1] += $2 } END { for (k in c) print k, c[k] }'"#;
    let mut args = vec![
        "mr",
        "run",
        "--mapper",
        mapper,
        "--reducer",
        reducer,
        "--workers",
        "2",
        "--output",
        "out",
    ];
    args.extend(files.iter().map(String::as_str));
    cairn(dir.path(), &args);
    assert_same(
        &sorted_output(&dir.path().join("out"), "mr-out-"),
        &expected,
        "streaming wc output",
    );
}
