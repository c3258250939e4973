//! Helpers for the tests that run the real `cairn` binary as processes.
#![allow(dead_code)] // each test binary uses a different subset

pub(crate) mod fs_store;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// Kills every process it holds when dropped, also when a test panics.
#[derive(Default)]
pub(crate) struct Processes(pub(crate) Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The 6.824 inputs: `$CAIRN_CORPUS_DIR`, or the copy committed under
/// `testdata/gutenberg` in the workspace.
pub(crate) fn corpus_files() -> Vec<String> {
    let dir = match std::env::var("CAIRN_CORPUS_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/gutenberg"),
    };
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!("the test corpus is missing at {} ({e}); set CAIRN_CORPUS_DIR to a directory of pg-*.txt files", dir.display())
    });
    let mut files: Vec<String> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .map(|path| std::fs::canonicalize(path).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        8,
        "expected the 8 lab inputs in {}",
        dir.display()
    );
    files
}

/// Sorted non-empty lines of every file in `dir` whose name starts with
/// `prefix` (temporary files excluded), as `sort mr-out* | grep .` gives.
pub(crate) fn sorted_output(dir: &Path, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(prefix) && !name.ends_with(".tmp") {
            lines.extend(sorted_lines(&path));
        }
    }
    lines.sort();
    lines
}

pub(crate) fn sorted_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read(path).unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// Asserts equal line lists, showing the first difference.
pub(crate) fn assert_same(got: &[String], expected: &[String], what: &str) {
    if got != expected {
        let at = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: {} lines vs {} expected; first difference at line {at}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            got.get(at),
            expected.get(at)
        );
    }
}

/// Runs `cairn ARGS` in `dir` to completion and asserts success.
pub(crate) fn cairn(dir: &Path, args: &[&str]) {
    let output = Command::new(CAIRN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cairn {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `cairn mr coordinator ARGS --listen LISTEN` in `dir`; returns it
/// with the URL it printed.
pub(crate) fn coordinator(dir: &Path, args: &[&str], listen: &str) -> (Child, String) {
    let mut child = Command::new(CAIRN)
        .current_dir(dir)
        .args([
            "--data-dir",
            "data",
            "mr",
            "coordinator",
            "--listen",
            listen,
        ])
        .args(args)
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
        .unwrap_or_else(|| panic!("unexpected first line from the coordinator: {line:?}"))
        .to_string();
    (child, url)
}

/// Starts a worker in `dir`.
pub(crate) fn worker(dir: &Path, url: &str, name: &str) -> Child {
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

/// The coordinator's status as JSON, if it answers.
pub(crate) fn status(url: &str) -> Option<serde_json::Value> {
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

/// Calls `probe` every 100 ms until it gives a value, and fails the test
/// once `deadline` has passed: `Err` carries what the probe saw, for the
/// failure message. The one polling loop of these tests.
pub(crate) fn poll_until<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) => assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting until {what}; last seen: {seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the coordinator until `condition` holds on its status.
pub(crate) fn wait_for(
    url: &str,
    what: &str,
    deadline: Duration,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll_until(what, deadline, || match status(url) {
        Some(status) if condition(&status) => Ok(status),
        other => Err(format!("{other:?}")),
    })
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
pub(crate) fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits for `child` to exit, failing the test after `deadline`.
pub(crate) fn wait_exit(child: &mut Child, deadline: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < deadline,
            "a process did not exit within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A base port for `cairn cluster --base-port` whose next `span` ports are
/// free right now, drawn from below Linux's ephemeral range (32768 and
/// up), where other tests' connections do not take ports. A port can still
/// be taken before the launcher binds it: callers retry when the launcher
/// says a port is in use.
pub(crate) fn cluster_base_port(span: u16) -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    for _ in 0..100 {
        // A random draw: std's hasher keys are random per process.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let base = 20_000 + (hasher.finish() % 12_000) as u16;
        if (1..=span).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no run of {span} free ports found below 32768");
}

/// Starts `cairn cluster --base-port B ARGS` in `dir` and reads its
/// banner; returns it, the base port and the rest of its stderr. The base
/// is drawn with `span` free ports above it (see [`cluster_base_port`]);
/// if a port is taken anyway between the check and the launcher's own, the
/// launcher says so and a new base is tried.
pub(crate) fn launch_cluster(
    dir: &Path,
    args: &[&str],
    span: u16,
) -> (Child, u16, String, BufReader<std::process::ChildStderr>) {
    for _ in 0..20 {
        let base = cluster_base_port(span);
        let mut launcher = Command::new(CAIRN)
            .args(["cluster", "--base-port", &base.to_string()])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(launcher.stderr.take().unwrap());
        let mut banner = String::new();
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            banner.push_str(&line);
            if line.contains("Ctrl-C stops every node") {
                return (launcher, base, banner, stderr);
            }
            line.clear();
        }
        // The launcher ended before its banner was complete.
        launcher.wait().unwrap();
        assert!(banner.contains("in use"), "the launcher failed:\n{banner}");
    }
    panic!("the launcher found a port in use 20 times");
}

/// Ports free on loopback right now.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The nodes of one Raft group as `cairn ... serve` processes on loopback,
/// each with its data directory and log file under a temporary directory.
pub(crate) struct NodeProcesses {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) urls: Vec<String>,
    serve: Vec<String>,
    processes: Processes,
    /// The position in `processes` of each node's current process.
    slots: Vec<Option<usize>>,
}

impl NodeProcesses {
    /// Starts `n` nodes, each running `cairn SERVE... --id I --peers ...
    /// --data-dir ...`.
    pub(crate) fn start(serve: &[&str], n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let urls: Vec<String> = free_ports(n)
            .into_iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Self {
            dir,
            urls,
            serve: serve.iter().map(|s| s.to_string()).collect(),
            processes: Processes::default(),
            slots: vec![None; n],
        };
        for id in 1..=n as u64 {
            nodes.start_node(id);
        }
        nodes.wait_listening();
        nodes
    }

    /// Waits until every node accepts connections: a clerk gives up early
    /// when every node refuses, as it would on nodes not listening yet.
    pub(crate) fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &self.urls {
            let addr = url.trim_start_matches("http://");
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{url} did not listen within 30 s; logs in {}",
                    self.dir.path().display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub(crate) fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Starts node `id` (again), on its data directory.
    pub(crate) fn start_node(&mut self, id: u64) {
        let peers: Vec<String> = self
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{}={u}", i + 1))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))
            .unwrap();
        let child = Command::new(CAIRN)
            .args(&self.serve)
            .args(["--id", &id.to_string(), "--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(self.node_dir(id))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes.0.push(child);
        self.slots[id as usize - 1] = Some(self.processes.0.len() - 1);
    }

    /// SIGKILLs node `id`.
    pub(crate) fn kill(&mut self, id: u64) {
        let slot = self.slots[id as usize - 1].take().expect("node is running");
        let child: &mut Child = &mut self.processes.0[slot];
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub(crate) fn endpoints(&self) -> String {
        self.urls.join(",")
    }

    /// Runs `cairn ARGS --endpoints ... --timeout 20`.
    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(CAIRN)
            .args(args)
            .args(["--endpoints", &self.endpoints(), "--timeout", "20"])
            .output()
            .unwrap()
    }
}
