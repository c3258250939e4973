//! Real processes: `cairn fs fsck` is clean (exit 0) on a fresh store with
//! a file; after bytes are flipped in one replica's chunk file on a
//! chunkserver's disk it exits 1 naming the chunk and that chunkserver;
//! `cairn fs report` lists every chunkserver; `cairn fs checksum` prints
//! the CRC32C of the file's bytes.

mod common;

use std::path::Path;
use std::time::Duration;

use cairn_testkit::pattern;
use common::fs_store::{Store, chunk_file};
use common::poll_until;

/// CRC32C (Castagnoli), bit by bit: the oracle for `checksum`.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Polls `fsck --json` until the store under `/` is healthy.
fn wait_healthy(store: &Store) -> serde_json::Value {
    poll_until("fsck is clean", Duration::from_secs(30), || {
        let out = store.fs(&["fsck", "--json"], b"");
        let report: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        match report {
            Some(report) if out.status.success() => Ok(report),
            report => Err(format!(
                "{report:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    })
}

#[test]
fn fsck_report_and_checksum_see_a_flipped_replica() {
    let store = Store::start();
    let data = pattern(300_000, 1);
    let out = store.fs(&["put", "-", "/f"], &data);
    assert!(out.status.success(), "{out:?}");
    let report = wait_healthy(&store);
    assert_eq!(report["summary"]["chunks"], 1, "{report}");
    let handle = report["files"][0]["chunks"][0]["handle"].as_u64().unwrap();
    let text = String::from_utf8(store.ok(&["fsck", "/", "--locations"])).unwrap();
    assert!(
        text.contains("Status: HEALTHY") && text.contains("good"),
        "{text}"
    );

    let sum = store.json(&["checksum", "/f"]).unwrap();
    assert_eq!(sum["crc32c"], format!("{:08x}", crc32c(&data)), "{sum}");
    assert_eq!(sum["bytes"], data.len(), "{sum}");
    let text = String::from_utf8(store.ok(&["checksum", "/f"])).unwrap();
    assert!(
        text.starts_with(&format!("CRC32C {:08x}", crc32c(&data))),
        "{text}"
    );

    // Reports are as of each chunkserver's last heartbeat: poll.
    let servers = poll_until(
        "report shows 3 live chunkservers with the chunk",
        Duration::from_secs(30),
        || {
            let report = store.json(&["report"]).unwrap();
            let servers = report["servers"].as_array().unwrap().clone();
            let current = servers.len() == 3
                && servers
                    .iter()
                    .all(|s| s["live"] == true && s["chunks"] == 1);
            current.then_some(servers).ok_or(report.to_string())
        },
    );
    let text = String::from_utf8(store.ok(&["report"])).unwrap();
    assert!(
        text.contains("heartbeat") && text.contains("scrubbed"),
        "{text}"
    );

    // Flip a byte in one chunkserver's replica file, found by the disk
    // its report names.
    let victim = &servers[0];
    let file = chunk_file(Path::new(victim["disk"].as_str().unwrap()), handle);
    let mut bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    bytes[1234] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let out = store.fs(&["fsck"], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let url = victim["url"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("handle {handle}"))
            && stdout.contains(url)
            && stdout.contains("corrupt"),
        "{stdout}"
    );
    assert!(stdout.contains("NOT HEALTHY"), "{stdout}");
    // The other replicas still verify: the checksum is unchanged.
    let sum = store.json(&["checksum", "/f"]).unwrap();
    assert_eq!(sum["crc32c"], format!("{:08x}", crc32c(&data)), "{sum}");
}
