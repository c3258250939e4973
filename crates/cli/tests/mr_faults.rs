//! MapReduce failures with real processes, beyond the lab's cases: a worker
//! killed with SIGKILL in the middle of a map and of a reduce, and the
//! coordinator killed and restarted in the middle of a job. Each job's
//! output must equal the sequential run's.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Processes, assert_same, cairn, sorted_lines, sorted_output, status, wait_exit, wait_for, worker,
};

/// A mapper that is slow (so that it can be killed mid-map) and splits
/// ASCII words; a reducer that is slow and sums counts.
const MAPPER: &str = "sleep 1; tr -cs 'A-Za-z' '\\n' | awk 'length > 0 { print $0 \"\\t1\" }'";
const REDUCER: &str = "sleep 1; awk -F'\\t' '{ c[$1] += $2 } END { for (k in c) print k, c[k] }'";

/// The corpus cut to 400 lines a file, so the job is quick but for the sleeps.
fn inputs(dir: &Path) -> Vec<String> {
    common::corpus_files()
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let short: String = text.lines().take(400).map(|l| format!("{l}\n")).collect();
            let target = dir.join(Path::new(path).file_name().unwrap());
            std::fs::write(&target, short).unwrap();
            target.display().to_string()
        })
        .collect()
}

fn expected(dir: &Path, files: &[String]) -> Vec<String> {
    let mut args = vec![
        "mr",
        "seq",
        "--mapper",
        MAPPER,
        "--reducer",
        REDUCER,
        "--output",
        "expected",
    ];
    args.extend(files.iter().map(String::as_str));
    cairn(dir, &args);
    let lines = sorted_lines(&dir.join("expected"));
    assert!(lines.len() > 1000, "a non-trivial expected output");
    lines
}

fn coordinator(dir: &Path, files: &[String], listen: &str) -> (std::process::Child, String) {
    let mut args = vec!["--mapper", MAPPER, "--reducer", REDUCER, "--reduces", "4"];
    args.extend(["--task-timeout", "2", "--linger", "2", "--output", "out"]);
    args.extend(files.iter().map(String::as_str));
    common::coordinator(dir, &args, listen)
}

#[test]
fn workers_killed_mid_map_and_mid_reduce() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let expected = expected(dir.path(), &files);
    let mut processes = Processes::default();
    let (first, url) = coordinator(dir.path(), &files, "127.0.0.1:0");
    processes.0.push(first);
    processes.0.push(worker(dir.path(), &url, "a"));
    processes.0.push(worker(dir.path(), &url, "b"));

    wait_for(&url, "two maps run", Duration::from_secs(30), |s| {
        s["maps"]["running"] == 2
    });
    processes.0[1].kill().unwrap();
    processes.0.push(worker(dir.path(), &url, "c"));
    wait_for(&url, "reduces run", Duration::from_secs(60), |s| {
        s["reduces"]["running"].as_u64() >= Some(1)
    });
    processes.0[2].kill().unwrap();
    processes.0.push(worker(dir.path(), &url, "d"));

    let coordinator_exit = wait_exit(&mut processes.0[0], Duration::from_secs(90));
    assert!(
        coordinator_exit.success(),
        "coordinator: {coordinator_exit}"
    );
    assert_same(
        &sorted_output(&dir.path().join("out"), "mr-out-"),
        &expected,
        "output",
    );
}

#[test]
fn coordinator_killed_and_restarted_resumes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let expected = expected(dir.path(), &files);
    let mut processes = Processes::default();
    let (first, url) = coordinator(dir.path(), &files, "127.0.0.1:0");
    processes.0.push(first);
    processes.0.push(worker(dir.path(), &url, "a"));
    processes.0.push(worker(dir.path(), &url, "b"));

    let before = wait_for(&url, "some maps are done", Duration::from_secs(30), |s| {
        s["maps"]["done"].as_u64() >= Some(2)
    });
    processes.0[0].kill().unwrap();
    processes.0[0].wait().unwrap();
    let listen = url.strip_prefix("http://").unwrap().to_string();
    let (restarted, again) = coordinator(dir.path(), &files, &listen);
    processes.0[0] = restarted;
    assert_eq!(again, url);
    let after = status(&url).expect("the restarted coordinator answers");
    assert_eq!(after["job_id"], before["job_id"], "the same job resumes");
    assert!(
        after["maps"]["done"].as_u64() >= Some(2),
        "journaled maps stay done: {after}"
    );

    let coordinator_exit = wait_exit(&mut processes.0[0], Duration::from_secs(90));
    assert!(
        coordinator_exit.success(),
        "coordinator: {coordinator_exit}"
    );
    for worker in &mut processes.0[1..] {
        assert!(
            wait_exit(worker, Duration::from_secs(30)).success(),
            "workers exit cleanly when told"
        );
    }
    assert_same(
        &sorted_output(&dir.path().join("out"), "mr-out-"),
        &expected,
        "output",
    );
}

#[test]
fn a_failing_mapper_fails_the_job_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let output = std::process::Command::new(common::CAIRN)
        .current_dir(dir.path())
        .args([
            "mr",
            "run",
            "--mapper",
            "echo boom >&2; exit 3",
            "--reducer",
            "cat",
            "--workers",
            "2",
        ])
        .args(&files[..2])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("failed 4 times"), "{stderr}");
    assert!(stderr.contains("exit status: 3"), "{stderr}");
}

#[test]
fn streaming_counters_reach_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let mapper = "awk '{ print $1 \"\\t1\" } END { print \"reporter:counter:lines,seen,\" NR > \"/dev/stderr\" }'";
    let output = std::process::Command::new(common::CAIRN)
        .current_dir(dir.path())
        .args([
            "mr",
            "run",
            "--mapper",
            mapper,
            "--reducer",
            "cat",
            "--workers",
            "2",
            "--reduces",
            "3",
        ])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    let seen = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("user.lines.seen"))
        .unwrap_or_else(|| panic!("no user counter in the report:\n{report}"));
    let lines: usize = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    assert_eq!(
        seen.trim().parse::<usize>().unwrap(),
        lines,
        "each input line counted once"
    );
}

/// A mapper that hangs (while its worker stays alive and heartbeating) the
/// first time it sees the line `HANG-ONCE`: it starts `sleep` under its
/// shell, notes the sleep's pid in `hung.pid`, and waits. The directory
/// `hung.marker` makes every later attempt go through.
const HANGING_MAPPER: &str = "input=$(cat); \
    case \"$input\" in *HANG-ONCE*) if mkdir hung.marker 2>/dev/null; then \
    sleep 100000 & echo $! > hung.pid; wait; fi;; esac; \
    printf '%s\\n' \"$input\" | tr -cs 'A-Za-z' '\\n' | awk 'length > 0 { print $0 \"\\t1\" }'";
const SUMMING_REDUCER: &str = "awk -F'\\t' '{ c[$1] += $2 } END { for (k in c) print k, c[k] }'";

#[test]
fn a_mapper_that_hangs_is_timed_out_killed_and_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = inputs(dir.path());
    files.truncate(3);
    let hang = dir.path().join("hang.txt");
    std::fs::write(&hang, "the line below hangs the mapper once\nHANG-ONCE\n").unwrap();
    files.push(hang.display().to_string());
    // The reference, run where the marker already exists so nothing hangs.
    let reference = dir.path().join("reference");
    std::fs::create_dir_all(reference.join("hung.marker")).unwrap();
    let mut args = vec![
        "mr",
        "seq",
        "--mapper",
        HANGING_MAPPER,
        "--reducer",
        SUMMING_REDUCER,
    ];
    args.extend(["--output", "expected"]);
    args.extend(files.iter().map(String::as_str));
    cairn(&reference, &args);
    let expected = sorted_lines(&reference.join("expected"));

    let child = std::process::Command::new(common::CAIRN)
        .current_dir(dir.path())
        .args([
            "mr",
            "run",
            "--mapper",
            HANGING_MAPPER,
            "--reducer",
            SUMMING_REDUCER,
        ])
        .args(["--workers", "2", "--reduces", "3", "--task-timeout", "2"])
        .args(["--output", "out"])
        .args(&files)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut processes = Processes(vec![child]);
    let exit = wait_exit(&mut processes.0[0], Duration::from_secs(60));
    assert!(exit.success(), "the job fails: {exit}");
    let mut report = String::new();
    std::io::Read::read_to_string(&mut processes.0[0].stdout.take().unwrap(), &mut report).unwrap();
    assert!(
        report.contains("timed-out attempts 1"),
        "the hung attempt is reported as timed out:\n{report}"
    );
    assert_same(
        &sorted_output(&dir.path().join("out"), "mr-out-"),
        &expected,
        "output",
    );
    let pid = std::fs::read_to_string(dir.path().join("hung.pid")).unwrap();
    let start = std::time::Instant::now();
    while !common::exited(pid.trim().parse().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the hung mapper's sleep (pid {}) still runs: the attempt's process group was not killed",
            pid.trim()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
