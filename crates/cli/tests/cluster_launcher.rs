//! `cairn cluster` through the real binary: the nodes it starts do not
//! outlive it, even when it is killed with SIGKILL (which it cannot catch).

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
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

#[test]
fn nodes_exit_when_their_launcher_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // A base port whose next three ports are free right now.
    let base = common::free_ports(1)[0].saturating_sub(10).max(1024);
    let mut launcher = Command::new(common::CAIRN)
        .args(["cluster", "--base-port", &base.to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(launcher.stderr.take().unwrap());
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
