//! `cairn bench fs` through the real binary, on a small size: a row for
//! every workload with a positive figure (and a ratio and a target where
//! the issue names a reference), no store or cluster process left
//! running, and its directory removed.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The rows the issue asks for, in order.
const WORKLOADS: [&str; 11] = [
    "ceiling write + fsync",
    "ceiling read (hot)",
    "write 1 client",
    "write 4 clients",
    "hot read 1 client (RPC)",
    "hot read 4 clients (RPC)",
    "hot read 1 client",
    "hot read 4 clients",
    "record append 16 clients",
    "creates 64 clients",
    "kv put 64 clients",
];
/// The rows judged against a reference.
const JUDGED: usize = 8;

/// The process ids the progress lines name (`... pids [1, 2, 3], ...`).
fn announced_pids(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|line| line.split("pids [").nth(1))
        .filter_map(|rest| rest.split(']').next())
        .flat_map(|list| list.split(',').map(|pid| pid.trim().parse().unwrap()))
        .collect()
}

#[test]
fn bench_fs_reports_every_workload_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(common::CAIRN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["bench", "fs", "--size", "8MiB", "--seconds", "1", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut processes = common::Processes(vec![child]);
    let bench = &mut processes.0[0];
    let status = common::wait_exit(bench, Duration::from_secs(120));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    bench
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    bench
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "bench fs failed:\n{stderr}");

    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stdout}"));
    let rows = report["rows"].as_array().expect("a rows array");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["workload"].as_str()).collect();
    assert_eq!(names, WORKLOADS, "the rows, in order");
    let mut judged = 0;
    for row in rows {
        let value = row["value"].as_f64().unwrap_or(0.0);
        assert!(value.is_finite() && value > 0.0, "a positive figure: {row}");
        if !row["reference"].is_null() {
            judged += 1;
            assert!(row["ratio"].as_f64().is_some_and(|r| r > 0.0), "{row}");
            assert!(row["target"].as_f64().is_some_and(|t| t > 0.0), "{row}");
            assert!(row["pass"].is_boolean(), "{row}");
        }
    }
    assert_eq!(judged, JUDGED, "rows with a reference and a target");
    assert!(
        report["gfs_paper"]
            .as_array()
            .is_some_and(|g| !g.is_empty()),
        "the GFS paper's figures"
    );
    assert_eq!(report["conditions"]["size_bytes"], 8 << 20);

    // 3 masters, 3 chunkservers, then 3 key/value nodes: all gone.
    let pids = announced_pids(&stderr);
    assert_eq!(
        pids.len(),
        9,
        "the progress lines name 9 processes:\n{stderr}"
    );
    let run_dir = dir.path().to_string_lossy().to_string();
    for pid in pids {
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(&run_dir),
                "process {pid} is still running after the bench: {cmdline}"
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.is_empty(),
        "the run's directory was not removed: {left:?}"
    );
}

#[test]
fn bench_fs_refuses_a_size_too_small_to_share_and_says_what_to_pass() {
    let output = Command::new(common::CAIRN)
        .args(["bench", "fs", "--size", "64KiB"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--size must be at least 1MiB") && stderr.contains("--size 64MiB"),
        "{stderr}"
    );
}
