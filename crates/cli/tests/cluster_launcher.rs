//! `cairn cluster` through the real binary: the nodes it starts do not
//! outlive it, even when it is killed with SIGKILL (which it cannot catch).

mod common;

use std::io::BufReader;
use std::path::Path;
use std::process::{Child, ChildStderr, Command};
use std::time::{Duration, Instant};

use common::exited;

fn launch(dir: &Path) -> (Child, u16, String, BufReader<ChildStderr>) {
    common::launch_cluster(dir, &[], 3)
}

#[test]
fn nodes_exit_when_their_launcher_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut launcher, _, banner, _stderr) = launch(dir.path());
    // The banner lists every node with its pid.
    let pids: Vec<u32> = banner
        .lines()
        .filter_map(|line| line.split(" pid ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
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
    let (mut launcher, base, _, stderr) = launch(dir.path());
    // The reader is gone: the pipe is closed.
    drop(stderr);
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
