//! `cairn cluster --fs` and `cairn fs` through the real binary: a file put
//! and read back byte for byte, also with a chunkserver killed; record
//! appends; bad paths refused with the reason.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A store started by `cairn cluster --fs` in a temporary directory.
struct Store {
    dir: tempfile::TempDir,
    launcher: Child,
    masters: String,
    /// The chunkservers' pids, from the banner.
    chunkservers: Vec<u32>,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.launcher.kill(); // the nodes exit with their launcher
        let _ = self.launcher.wait();
    }
}

impl Store {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A base port with room for the masters and the chunkservers.
        let base = common::free_ports(1)[0].saturating_sub(20).max(1024);
        let mut launcher = Command::new(common::CAIRN)
            .args(["cluster", "--fs", "--base-port", &base.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(launcher.stderr.take().unwrap()).lines();
        let mut chunkservers = Vec::new();
        let mut banner = String::new();
        for line in stderr.by_ref() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if line.trim_start().starts_with("chunkserver")
                && let Some(rest) = line.split(" pid ").nth(1)
            {
                chunkservers.push(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
            if line.contains("Ctrl-C stops every node") || line.contains("error") {
                break;
            }
        }
        assert_eq!(
            chunkservers.len(),
            3,
            "the banner names 3 chunkservers:\n{banner}"
        );
        // The launcher's status lines are not needed here; read them so
        // that the pipe never fills.
        std::thread::spawn(move || stderr.for_each(drop));
        let masters = (1..=3)
            .map(|i| format!("http://127.0.0.1:{}", base + i))
            .collect::<Vec<_>>()
            .join(",");
        let store = Self {
            dir,
            launcher,
            masters,
            chunkservers,
        };
        // The processes start listening a moment after the banner.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !store.fs(&["status"], b"").status.success() {
            assert!(
                Instant::now() < deadline,
                "the masters did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        store
    }

    fn fs(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(common::CAIRN)
            .arg("fs")
            .args(args)
            .args(["--masters", &self.masters])
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.fs(args, b"");
        assert!(
            out.status.success(),
            "cairn fs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_file_round_trips_also_with_a_chunkserver_killed() {
    let store = Store::start();
    let data = random_bytes(9 << 20);
    let local = store.dir.path().join("input.bin");
    std::fs::write(&local, &data).unwrap();
    store.ok(&["mkdir", "-p", "/data"]);
    store.ok(&["put", local.to_str().unwrap(), "/data/blob"]);
    let listing = String::from_utf8(store.ok(&["ls", "-R", "/"])).unwrap();
    assert!(listing.contains("/data/blob"), "{listing}");
    assert!(!listing.contains("_COPYING_"), "{listing}");
    assert_eq!(store.ok(&["cat", "/data/blob"]), data);

    // Reads go to another replica when one chunkserver is gone.
    let killed = store.chunkservers[0];
    Command::new("kill")
        .args(["-9", &killed.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let copy = store.dir.path().join("copy.bin");
    store.ok(&["get", "/data/blob", copy.to_str().unwrap()]);
    assert_eq!(std::fs::read(&copy).unwrap(), data);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the read took {:?}",
        started.elapsed()
    );
}

#[test]
fn appends_renames_and_bad_paths() {
    let store = Store::start();
    let out = store.fs(&["append", "/log"], b"one\ntwo\nthree\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(store.ok(&["cat", "/log"])).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["one", "three", "two"]);
    store.ok(&["mv", "/log", "/log2"]);
    let stat = String::from_utf8(store.ok(&["stat", "/log2"])).unwrap();
    assert!(stat.contains("chunk 0: handle"), "{stat}");

    for (path, reason) in [
        ("relative", "relative"),
        ("/a/../b", ".."),
        ("/a//b", "empty component"),
    ] {
        let out = store.fs(&["mkdir", path], b"");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "mkdir {path}: {stderr}");
    }
    let out = store.fs(&["cat", "/missing"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = store.fs(&["put", "/nonexistent/local/file", "/x"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    assert!(Path::new(common::CAIRN).exists());
}
