//! Real processes: the store heals itself. One replica of a file's chunk
//! has a byte flipped on disk and another has its files deleted; `cairn fs
//! fsck` exits 1 naming the damage, then, with nobody doing anything, the
//! leader's healer clones the intact replica back until fsck is clean
//! (exit 0), and the file reads back whole. `cairn fs setrep 2 --wait`
//! deletes an extra replica and `setrep 3 --wait` clones it back.

mod common;

use std::time::{Duration, Instant};

use cairn_testkit::pattern;
use common::fs_store::{Store, chunk_file, holders};
use common::poll_until;

/// How long healing may take (heartbeats of 1 s; the healer looks every
/// heartbeat interval).
const HEALING: Duration = Duration::from_secs(60);

/// `fsck --json` once: (exit code, report).
fn fsck(store: &Store) -> (Option<i32>, serde_json::Value) {
    let out = store.fs(&["fsck", "--json"], b"");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report)
}

fn wait_clean(store: &Store, what: &str) -> serde_json::Value {
    poll_until(what, HEALING, || match fsck(store) {
        (Some(0), report) => Ok(report),
        (code, report) => Err(format!("exit {code:?}: {report}")),
    })
}

#[test]
fn a_damaged_chunk_is_healed_and_setrep_moves_the_replica_count() {
    let store = Store::start();
    let data = pattern(1 << 20, 5);
    let out = store.fs(&["put", "-", "/f"], &data);
    assert!(out.status.success(), "{out:?}");
    let report = wait_clean(&store, "fsck is clean after the put");
    let handle = report["files"][0]["chunks"][0]["handle"].as_u64().unwrap();
    let disks = holders(&store, handle);
    assert_eq!(disks.len(), 3, "three replicas on disk: {disks:?}");

    // One replica flipped, another's files deleted: one intact copy left.
    let flipped = chunk_file(&disks[0], handle);
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[70_000] ^= 0x5a;
    std::fs::write(&flipped, &bytes).unwrap();
    let wiped = chunk_file(&disks[1], handle);
    std::fs::remove_file(&wiped).unwrap();
    let damaged_at = Instant::now();
    let (code, report) = fsck(&store);
    assert_eq!(code, Some(1), "fsck fails on the damage: {report}");
    assert_eq!(
        report["summary"]["problems"]["under-replicated"], 1,
        "{report}"
    );

    // Nobody repairs it by hand: the healer does.
    let report = wait_clean(&store, "the healer restores three good replicas");
    let healed_in = damaged_at.elapsed();
    let chunk = &report["files"][0]["chunks"][0];
    assert_eq!(chunk["good"], 3, "{report}");
    let out = store.fs(&["get", "/f", "-"], b"");
    assert!(
        out.status.success() && out.stdout == data,
        "the file reads back whole"
    );
    eprintln!("healed one 1 MiB chunk from 1 intact replica in {healed_in:?}");

    // setrep: down to two replicas, then back to three.
    let out = store.fs(
        &["setrep", "2", "/f", "--wait", "--wait-timeout", "60"],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(holders(&store, handle).len(), 2, "an extra replica deleted");
    let out = store.fs(
        &["setrep", "3", "/f", "--wait", "--wait-timeout", "60"],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    let report = wait_clean(&store, "fsck clean at three replicas again");
    assert_eq!(report["files"][0]["chunks"][0]["good"], 3, "{report}");
    let out = store.fs(&["setrep", "0", "/f"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a goal of 0 is refused: {out:?}"
    );
}
