//! `cairn cluster --fs` and `cairn fs` through the real binary: a file put
//! and read back byte for byte, also with a chunkserver killed; record
//! appends; bad paths refused with the reason.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_testkit::pattern;
use common::fs_store::{Store, sigkill};
use common::poll_until;

#[test]
fn a_file_round_trips_also_with_a_chunkserver_killed() {
    let store = Store::start();
    let data = pattern(9 << 20, 1);
    let local = store.dir.path().join("input.bin");
    std::fs::write(&local, &data).unwrap();
    store.ok(&["mkdir", "-p", "/data"]);
    store.ok(&["put", local.to_str().unwrap(), "/data/blob"]);
    let listing = String::from_utf8(store.ok(&["ls", "-R", "/"])).unwrap();
    assert!(listing.contains("/data/blob"), "{listing}");
    assert!(!listing.contains("_COPYING_"), "{listing}");
    assert_eq!(store.ok(&["cat", "/data/blob"]), data);

    // Reads go to another replica when one chunkserver is gone.
    assert!(sigkill(store.chunkservers[0]));
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

/// Runs a command that must fail with `status` and say `reason`.
fn refused(store: &Store, args: &[&str], status: i32, reason: &str) {
    let out = store.fs(args, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(status),
        "cairn fs {args:?}: {stderr}"
    );
    assert!(stderr.contains(reason), "cairn fs {args:?}: {stderr}");
}

#[test]
fn bad_input_is_refused_with_what_to_do_and_changes_nothing() {
    let store = Store::start();
    let local = store.dir.path().join("small.bin");
    std::fs::write(&local, b"hello").unwrap();
    let local = local.to_str().unwrap();
    store.ok(&["mkdir", "-p", "/d/e"]);
    store.ok(&["put", local, "/f"]);
    let before = store.ok(&["ls", "-R", "/"]);

    let long = format!("/{}", "x".repeat(5000));
    let bad_paths = [
        ("", "empty"),
        ("relative", "start with /"),
        ("/a/../b", "without them"),
        (long.as_str(), "use a shorter path"),
    ];
    for (path, reason) in bad_paths {
        for args in [
            vec!["ls", path],
            vec!["stat", path],
            vec!["cat", path],
            vec!["mkdir", path],
            vec!["rm", path],
            vec!["get", path, "out"],
            vec!["put", local, path],
            vec!["append", path],
            vec!["mv", "/f", path],
            vec!["mv", path, "/g"],
        ] {
            refused(&store, &args, 2, reason);
        }
    }
    // A path that is not UTF-8 (the shell can pass one).
    let out = std::process::Command::new(common::CAIRN)
        .args(["fs", "mkdir"])
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"/caf\xe9"))
        .args(["--masters", &store.masters])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8; use names of UTF-8"));

    // Bad local paths.
    let missing = store.dir.path().join("missing.bin");
    refused(
        &store,
        &["put", missing.to_str().unwrap(), "/x"],
        2,
        "give an existing local file",
    );
    let here = store.dir.path().to_str().unwrap();
    refused(
        &store,
        &["put", here, "/x"],
        2,
        "is a directory; put copies one file",
    );
    refused(
        &store,
        &["get", "/f", here],
        2,
        "is a directory; give the file to write",
    );
    let nowhere = store.dir.path().join("no/such/dir/out");
    refused(
        &store,
        &["get", "/f", nowhere.to_str().unwrap()],
        2,
        "does not exist; create it",
    );
    // Store-side refusals: exit status 1, with what to do.
    refused(&store, &["get", "/d", "out"], 1, "is a directory");
    refused(&store, &["cat", "/d"], 1, "is a directory");
    refused(&store, &["rm", "/"], 2, "root directory cannot be deleted");
    refused(&store, &["rm", "/d"], 1, "remove it recursively");
    refused(
        &store,
        &["mv", "/d", "/d/e/inside"],
        2,
        "pick a destination outside it",
    );
    refused(
        &store,
        &["mv", "/d", "/f"],
        1,
        "already exists; pick another name",
    );
    refused(
        &store,
        &["mv", "/missing", "/g"],
        1,
        "does not exist; `cairn fs ls`",
    );
    refused(&store, &["mkdir", "/f/sub"], 1, "not a directory");

    assert_eq!(store.ok(&["ls", "-R", "/"]), before, "something changed");
    assert!(!store.dir.path().join("out").exists());
    assert_eq!(store.ok(&["cat", "/f"]), b"hello");
}

#[test]
fn ls_l_and_stat_show_sizes_and_df_the_space() {
    let store = Store::start();
    let data = pattern((64 << 20) + 1234, 1);
    let local = store.dir.path().join("input.bin");
    std::fs::write(&local, &data).unwrap();
    store.ok(&["put", local.to_str().unwrap(), "/blob"]);
    store.ok(&["mkdir", "/dir"]);
    // Sizes come from the chunkservers' heartbeats (every second), as the
    // master node answering heard them.
    let listing = poll_until("ls and stat show the size", Duration::from_secs(20), || {
        let listing = String::from_utf8(store.ok(&["ls", "-l", "/"])).unwrap();
        let stat = String::from_utf8(store.ok(&["stat", "/blob"])).unwrap();
        let entries = store.json(&["ls", "/"]).unwrap();
        let sized = listing.contains(&format!("file  {:>12}       2  /blob", data.len()))
            && stat.contains(&format!("{} bytes", data.len()))
            && entries[0]["bytes"] == data.len() as u64;
        sized
            .then_some(listing.clone())
            .ok_or(format!("\n{listing}\n{stat}\n{entries}"))
    });
    assert!(
        listing.contains("dir              -       -  /dir/"),
        "{listing}"
    );

    // Every master keeps its own reports: wait until the one answering has
    // the last ones.
    let df = poll_until("df shows the file", Duration::from_secs(20), || {
        let df = store.json(&["df"]).unwrap();
        let servers = df["servers"].as_array().unwrap();
        let current = servers.len() == 3
            && servers.iter().all(|s| {
                s["live"] == true && s["chunks"] == 2 && s["used_bytes"] == data.len() as u64
            });
        current.then_some(df.clone()).ok_or(df.to_string())
    });
    for server in df["servers"].as_array().unwrap() {
        let (capacity, free) = (
            server["capacity_bytes"].as_u64().unwrap(),
            server["free_bytes"].as_u64().unwrap(),
        );
        assert!(free > 0 && capacity == free + data.len() as u64, "{df}");
    }
    assert_eq!(df["total"]["used_bytes"], 3 * data.len() as u64, "{df}");
    assert!(sigkill(store.chunkservers[2]));
    poll_until("df shows a dead server", Duration::from_secs(20), || {
        let text = String::from_utf8(store.ok(&["df"])).unwrap();
        (text.contains("dead (") && text.contains("2 of 3 live"))
            .then_some(())
            .ok_or(text)
    });
}
