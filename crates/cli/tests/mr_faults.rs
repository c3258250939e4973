//! MapReduce failures with real processes, beyond the lab's cases: a worker
//! killed with SIGKILL in the middle of a map and of a reduce, and the
//! coordinator killed and restarted in the middle of a job. Each job's
//! output must equal the sequential run's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");
/// A mapper that is slow (so that it can be killed mid-map) and splits
/// ASCII words; a reducer that is slow and sums counts.
const MAPPER: &str = "sleep 1; tr -cs 'A-Za-z' '\\n' | awk 'length > 0 { print $0 \"\\t1\" }'";
const REDUCER: &str = "sleep 1; awk -F'\\t' '{ c[$1] += $2 } END { for (k in c) print k, c[k] }'";

/// Kills every process it holds when dropped (also when a test panics).
#[derive(Default)]
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn inputs(dir: &Path) -> Vec<String> {
    // Small inputs of many lines, so the job is quick apart from the sleeps.
    let corpus = corpus_dir();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(&path).unwrap();
            let short: String = text.lines().take(400).map(|l| format!("{l}\n")).collect();
            let target = dir.join(path.file_name().unwrap());
            std::fs::write(&target, short).unwrap();
            files.push(target.display().to_string());
        }
    }
    files.sort();
    assert!(files.len() >= 4, "no corpus in {}", corpus.display());
    files
}

fn corpus_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CAIRN_CORPUS_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/gutenberg")
}

fn sorted_output(dir: &Path, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(prefix) && !name.ends_with(".tmp") {
            let text = std::fs::read_to_string(&path).unwrap();
            lines.extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
        }
    }
    lines.sort();
    lines
}

fn expected(dir: &Path, files: &[String]) -> Vec<String> {
    let out = dir.join("expected");
    let status = Command::new(CAIRN)
        .args([
            "mr",
            "seq",
            "--mapper",
            MAPPER,
            "--reducer",
            REDUCER,
            "--output",
        ])
        .arg(&out)
        .args(files)
        .status()
        .unwrap();
    assert!(status.success());
    let mut lines: Vec<String> = std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    assert!(lines.len() > 1000, "a non-trivial expected output");
    lines
}

/// Starts a coordinator and returns it with its URL.
fn coordinator(dir: &Path, files: &[String], listen: &str) -> (Child, String) {
    let mut child = Command::new(CAIRN)
        .current_dir(dir)
        .args([
            "--data-dir",
            "data",
            "mr",
            "coordinator",
            "--mapper",
            MAPPER,
            "--reducer",
            REDUCER,
        ])
        .args([
            "--reduces",
            "4",
            "--task-timeout",
            "2",
            "--linger",
            "2",
            "--output",
            "out",
            "--listen",
            listen,
        ])
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("coordinator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, url)
}

fn worker(dir: &Path, url: &str, name: &str) -> Child {
    Command::new(CAIRN)
        .current_dir(dir)
        .args([
            "mr",
            "worker",
            "--coordinator",
            url,
            "--coordinator-timeout",
            "60",
            "--work-dir",
        ])
        .arg(format!("work-{name}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn status(url: &str) -> Option<serde_json::Value> {
    let output = Command::new(CAIRN)
        .args(["mr", "status", url, "--json"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

/// Polls the coordinator until `condition` holds on its status.
fn wait_for(
    url: &str,
    what: &str,
    deadline: Duration,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(status) = status(url)
            && condition(&status)
        {
            return status;
        }
        assert!(start.elapsed() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < deadline,
            "process did not exit in {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    assert_eq!(sorted_output(&dir.path().join("out"), "mr-out-"), expected);
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
    assert_eq!(sorted_output(&dir.path().join("out"), "mr-out-"), expected);
}
