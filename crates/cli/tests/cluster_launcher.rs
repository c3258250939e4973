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

/// Starts `cairn cluster` in `dir` and reads its banner; returns it, the
/// base port and the rest of its stderr. The base lies below Linux's
/// ephemeral range (32768 and up), where other tests' connections do not
/// take ports; if a port is taken anyway between the check and the
/// launcher's own, the launcher says so and a new base is tried.
fn launch(dir: &Path) -> (Child, u16, String, BufReader<ChildStderr>) {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for attempt in 0..20u64 {
        let base = 20_000 + ((seed.wrapping_mul(7919) + attempt * 613) % 12_000) as u16;
        let free = (1..=3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if !free {
            continue;
        }
        let mut launcher = Command::new(common::CAIRN)
            .args(["cluster", "--base-port", &base.to_string()])
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
    panic!("no free base port found in 20 attempts");
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
