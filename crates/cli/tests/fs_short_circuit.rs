//! Real processes: short-circuit reads. `cairn cluster --fs` runs every
//! chunkserver on this machine, so `cairn fs cat` reads through the file
//! descriptors they hand over: the file comes back equal, and the client's
//! debug log shows the descriptors were used; with `--no-short-circuit` it
//! comes back equal through the RPC alone. Then one replica's data file
//! has a byte flipped in each 4 MiB piece: the client's own check catches
//! it, it reads that piece through the RPC instead (whose chunkserver sets
//! the replica aside), and the file still comes back equal.

mod common;

use std::process::{Command, Output, Stdio};

use cairn_testkit::pattern;
use common::fs_store::{Store, chunk_file, holders};

/// Three 4 MiB pieces of one chunk: a reader asks the replicas in turn,
/// so each replica serves one.
const FILE_BYTES: usize = 12 << 20;
const PIECE_BYTES: u64 = 4 << 20;
/// What the client logs for a piece read through a descriptor.
const DESCRIPTOR_READ: &str = "read through a descriptor";
/// What it logs when a descriptor read fails its checksums.
const CHECKSUM_FALLBACK: &str = "reading through the RPC";

/// `cairn fs cat /f` with the client's debug log.
fn cat(store: &Store, flags: &[&str]) -> Output {
    let child = Command::new(common::CAIRN)
        .args(["fs", "cat", "/f", "--masters", &store.masters])
        .args(flags)
        .env("RUST_LOG", "cairn_fs=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

fn assert_equal(out: &Output, data: &[u8], what: &str) -> String {
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: cat failed: {log}");
    assert!(out.stdout == data, "{what}: the bytes differ: {log}");
    log
}

#[test]
fn short_circuit_reads_verify_and_fall_back() {
    let store = Store::start();
    let data = pattern(FILE_BYTES, 13);
    let out = store.fs(&["put", "-", "/f"], &data);
    assert!(out.status.success(), "{out:?}");

    let log = assert_equal(&cat(&store, &[]), &data, "short-circuit");
    assert!(
        log.contains(DESCRIPTOR_READ),
        "the pieces came through descriptors: {log}"
    );
    let log = assert_equal(&cat(&store, &["--no-short-circuit"]), &data, "RPC only");
    assert!(!log.contains(DESCRIPTOR_READ), "no descriptor: {log}");

    let stat = store.json(&["stat", "/f"]).unwrap();
    let handle = stat["chunks"][0]["handle"].as_u64().unwrap();
    let disks = holders(&store, handle);
    assert_eq!(disks.len(), 3, "three replicas on disk: {disks:?}");
    let victim = chunk_file(&disks[0], handle);
    let mut bytes = std::fs::read(&victim).unwrap();
    for piece in 0..FILE_BYTES as u64 / PIECE_BYTES {
        bytes[(piece * PIECE_BYTES + 1000) as usize] ^= 0x5a;
    }
    std::fs::write(&victim, &bytes).unwrap();

    let log = assert_equal(&cat(&store, &[]), &data, "one replica corrupt");
    assert!(
        log.contains(CHECKSUM_FALLBACK) && log.contains("fails its checksum"),
        "the client caught the corrupt block and fell back: {log}"
    );
}
