//! Real processes (issue 13): `cairn cluster --fs`, a 1 GiB file put and
//! read back with its sha256 equal, while a chunkserver is SIGKILLed during
//! the put, the master leader once during the put, and another chunkserver
//! during the get. The killed processes stay dead: replication 3 covers
//! the chunkservers (every chunk keeps a replica on the one left), and the
//! two masters left are a majority.
//!
//! `CAIRN_FS_KILL_MIB` sets the size (default 1024).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fs_store::{Store, sigkill};
use common::poll_until;

/// The whole test's limit; the put and the get each get this much.
const DEADLINE: Duration = Duration::from_secs(300);

/// Writes `mib` MiB of pseudo-random bytes: one random MiB, each copy
/// stamped with its index so that no two MiB are alike.
fn write_input(path: &Path, mib: usize) {
    use std::io::Write as _;
    let block = cairn_testkit::pattern(1 << 20, 1);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut copy = block.clone();
    for i in 0..mib {
        for at in (0..copy.len()).step_by(4096) {
            copy[at..at + 8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        out.write_all(&copy).unwrap();
    }
    out.flush().unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Bytes of `name` in `/` as the masters report them (0 if absent).
fn stored_bytes(store: &Store, name: &str) -> u64 {
    store
        .json(&["ls", "/"])
        .and_then(|list| list.as_array()?.iter().find(|e| e["path"] == name)?["bytes"].as_u64())
        .unwrap_or(0)
}

/// Polls `progress` until it reaches `at`, while `child` runs; fails if
/// the child ends first (the kill would not be *during* the operation).
fn wait_until(child: &mut Child, what: &str, at: u64, progress: impl Fn() -> u64) {
    poll_until(&format!("{what} reaches {at} bytes"), DEADLINE, || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} ended ({status}) before reaching {at} bytes: no kill during it");
        }
        let done = progress();
        (done >= at).then_some(()).ok_or(format!("{done} bytes"))
    });
}

/// Kills `pid` and checks that `child` was still running then.
fn kill_during(child: &mut Child, what: &str, pid: u32) {
    assert!(sigkill(pid), "pid {pid} was not running");
    assert!(
        child.try_wait().unwrap().is_none(),
        "{what} had already ended when pid {pid} was killed"
    );
    eprintln!("killed pid {pid} during the {what}");
}

/// Waits for `child` and asserts it succeeded.
fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_1_gib_file_survives_chunkserver_and_leader_kills() {
    let mib: u64 = std::env::var("CAIRN_FS_KILL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bytes = mib << 20;
    let store = Store::start();
    let input = store.dir.path().join("input.bin");
    let output = store.dir.path().join("output.bin");
    write_input(&input, mib as usize);
    let expected = sha256(&input);
    let started = Instant::now();

    let timeout = DEADLINE.as_secs().to_string();
    let mut put = store.spawn(
        &[
            "put",
            input.to_str().unwrap(),
            "/big",
            "--timeout",
            &timeout,
        ],
        Stdio::null(),
    );
    // A chunkserver at a quarter, the master leader at a half (sizes as of
    // the chunkservers' heartbeats: they lag the put a little).
    wait_until(&mut put, "put", bytes / 4, || {
        stored_bytes(&store, "/big._COPYING_")
    });
    kill_during(&mut put, "put", store.chunkservers[0]);
    wait_until(&mut put, "put", bytes / 2, || {
        stored_bytes(&store, "/big._COPYING_")
    });
    let leader = store.leader().expect("a master leader");
    kill_during(&mut put, "put", store.master_pids[&leader]);
    finish(put, "put");
    let put_time = started.elapsed();

    let started = Instant::now();
    let mut get = store.spawn(
        &[
            "get",
            "/big",
            output.to_str().unwrap(),
            "--timeout",
            &timeout,
        ],
        Stdio::null(),
    );
    wait_until(&mut get, "get", bytes / 3, || {
        std::fs::metadata(&output).map_or(0, |m| m.len())
    });
    kill_during(&mut get, "get", store.chunkservers[1]);
    finish(get, "get");
    let get_time = started.elapsed();

    assert_eq!(std::fs::metadata(&output).unwrap().len(), bytes);
    assert_eq!(sha256(&output), expected, "the file read back differs");
    eprintln!(
        "{mib} MiB: put {put_time:.1?} (a chunkserver and the master leader killed), get {get_time:.1?} (a chunkserver killed)"
    );
}
