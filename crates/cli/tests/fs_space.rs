//! Real processes: a chunkserver whose `--capacity` leaves less than the
//! free-space floor shows as full in `cairn fs df` and gets no replica of
//! a new chunk (and no part in its lease), even when the other live
//! chunkservers are fewer than the replication asks for.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fs_store::{Store, sigkill};
use common::{Processes, poll_until};

/// Polls `df --json` until `condition` holds on it.
fn wait_df(
    store: &Store,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll_until(what, Duration::from_secs(30), || {
        match store.json(&["df"]) {
            Some(df) if condition(&df) => Ok(df),
            other => Err(format!("{other:?}")),
        }
    })
}

fn server<'a>(df: &'a serde_json::Value, url: &str) -> Option<&'a serde_json::Value> {
    df["servers"].as_array()?.iter().find(|s| s["url"] == url)
}

#[test]
fn a_full_chunkserver_gets_no_new_chunks() {
    let store = Store::start();
    let port = common::free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}");
    let mut processes = Processes::default();
    processes.0.push(
        Command::new(common::CAIRN)
            .args(["fs", "serve-chunk", "--url", &url, "--capacity", "1M"])
            .args(["--masters", &store.masters, "--data-dir"])
            .arg(store.dir.path().join("small-chunk"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _ = wait_df(&store, "4 chunkservers live, the small one full", |df| {
        df["total"]["live"] == 4
            && server(df, &url).is_some_and(|s| s["live"] == true && s["full"] == true)
    });
    let text = String::from_utf8(store.ok(&["df"])).unwrap();
    assert!(
        text.contains("full") && text.contains("4 of 4 live"),
        "{text}"
    );

    // Two roomy chunkservers live, one full: a new chunk goes on the two.
    assert!(sigkill(store.chunkservers[0]));
    let _ = wait_df(&store, "the killed chunkserver dead", |df| {
        df["total"]["live"] == 3
    });
    let out = store.fs(&["put", "-", "/f"], b"hello");
    assert!(out.status.success(), "{out:?}");
    let put_done = Instant::now();
    // Once every live chunkserver has reported since, none of the replicas
    // placed is on the full one (not even a never-written one).
    let df = wait_df(
        &store,
        "a report from every live chunkserver after the put",
        |df| {
            let since = put_done.elapsed().as_millis() as u64;
            df["total"]["chunks"].as_u64() >= Some(2)
                && df["servers"].as_array().is_some_and(|servers| {
                    servers
                        .iter()
                        .filter(|s| s["live"] == true)
                        .all(|s| s["last_seen_ms"].as_u64().is_some_and(|ms| ms < since))
                })
        },
    );
    assert_eq!(server(&df, &url).unwrap()["chunks"], 0, "{df}");
    assert_eq!(df["total"]["chunks"], 2, "{df}");
    let stat = store.json(&["stat", "/f"]).unwrap();
    let replicas = stat["replicas"][0].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{stat}");
    assert!(!replicas.iter().any(|r| r == url.as_str()), "{stat}");
    assert_eq!(store.ok(&["cat", "/f"]), b"hello");
}
