//! `cairn cluster` through the real binary: the nodes it starts do not
//! outlive it, even when it is killed with SIGKILL (which it cannot catch).

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether process `pid` has exited (gone, or a zombie nobody reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Starts `cairn cluster` in `dir` on a base port whose next three ports
/// are free right now; returns it, the base port and its stderr.
fn launch(dir: &Path) -> (Child, u16, BufReader<ChildStderr>) {
    let base = common::free_ports(1)[0].saturating_sub(10).max(1024);
    let mut launcher = Command::new(common::CAIRN)
        .args(["cluster", "--base-port", &base.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(launcher.stderr.take().unwrap());
    (launcher, base, stderr)
}

#[test]
fn nodes_exit_when_their_launcher_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut launcher, _, stderr) = launch(dir.path());
    // The banner lists every node with its pid.
    let mut pids = Vec::new();
    let mut banner = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.split(" pid ").nth(1) {
            pids.push(
                rest.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            );
        }
        if line.contains("Ctrl-C stops every node") || banner.contains("error") {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "the banner names 3 node pids:\n{banner}");
    assert!(pids.iter().all(|&pid| !exited(pid)), "{banner}");

    launcher.kill().unwrap(); // SIGKILL: no handler runs in the launcher
    launcher.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pids.iter().all(|&pid| exited(pid)) {
        assert!(
            Instant::now() < deadline,
            "nodes {:?} still run 20 s after their launcher was killed",
            pids.iter().filter(|&&pid| !exited(pid)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With its standard error closed (a pipe whose reader went away), the
/// launcher keeps running its cluster: its messages are lost, not its
/// nodes.
#[test]
fn a_closed_stderr_does_not_stop_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (mut launcher, base, stderr) = launch(dir.path());
    for line in stderr.lines() {
        if line.unwrap().contains("Ctrl-C stops every node") {
            break;
        }
    }
    // The reader is gone: the pipe is closed.
    let endpoints = (1..=3)
        .map(|i| format!("http://127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",");
    let kv = |args: &[&str]| {
        Command::new(common::CAIRN)
            .arg("kv")
            .args(args)
            .args(["--endpoints", &endpoints])
            .output()
            .unwrap()
    };
    // The nodes listen a moment after the banner.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kv(&["status"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the nodes did not answer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let put = kv(&["put", "k", "v"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    // The status line changed (a leader, a commit): the launcher wrote to
    // the closed pipe at its next tick. It must still run a while later.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        assert!(
            launcher.try_wait().unwrap().is_none(),
            "the launcher exited when its stderr closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let get = kv(&["get", "k"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "v");
    launcher.kill().unwrap();
    launcher.wait().unwrap();
}
