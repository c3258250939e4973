//! The sharded cluster and `kv status` operated the way people do, as real
//! processes: a typo in `shardctl join` is refused (and, forced, waits
//! visibly and is undone by `leave`), `kv status` lists every node and the
//! groups that left, `member list` lists the controllers and a group's
//! servers, `bench kv` runs through the controllers, and `cairn cluster`
//! refuses data of another shape.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_shardkv::{Client, ClientConfig, shard_of};
use common::{CAIRN, NodeProcesses, free_ports};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    text(&output.stdout)
}

fn failed(output: &Output, what: &str) -> String {
    assert!(
        !output.status.success(),
        "{what} succeeded: {}",
        text(&output.stdout)
    );
    text(&output.stderr)
}

fn start_group(gid: u64, controllers: &NodeProcesses) -> NodeProcesses {
    NodeProcesses::start(
        &[
            "shardkv",
            "serve",
            "--gid",
            &gid.to_string(),
            "--controllers",
            &controllers.endpoints(),
        ],
        3,
    )
}

fn join_arg(gid: u64, group: &NodeProcesses) -> String {
    format!("{gid}={}", group.endpoints())
}

/// `kv status --json` rows.
fn status_rows(controllers: &NodeProcesses, endpoints: &str) -> Vec<serde_json::Value> {
    let output = Command::new(CAIRN)
        .args(["kv", "status", "--json", "--endpoints", endpoints])
        .output()
        .unwrap();
    serde_json::from_str(&ok(&output, "kv status")).unwrap_or_else(|e| {
        panic!(
            "kv status printed no JSON ({e}); logs in {}",
            controllers.dir.path().display()
        )
    })
}

/// Waits until `condition` holds, failing with `what` after `deadline`.
fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn waiting_lines(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r["waiting"].as_array())
        .flatten()
        .filter_map(|l| l.as_str().map(String::from))
        .collect()
}

fn log_of(group: &NodeProcesses) -> String {
    (1..=3)
        .map(|id| std::fs::read_to_string(group.dir.path().join(format!("node{id}.log"))))
        .filter_map(Result::ok)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_join_is_refused_and_a_forced_phantom_is_undone_by_leave() {
    let controllers = NodeProcesses::start(&["shardctl", "serve"], 3);
    let groups: BTreeMap<u64, NodeProcesses> = (1..=2)
        .map(|gid| (gid, start_group(gid, &controllers)))
        .collect();
    let admin = |args: &[&str]| {
        Command::new(CAIRN)
            .arg("shardctl")
            .args(args)
            .args(["--endpoints", &controllers.endpoints(), "--timeout", "20"])
            .output()
            .unwrap()
    };
    // The servers are starting: `join` refuses until a majority answers.
    wait_until("group 1 can be joined", Duration::from_secs(30), || {
        admin(&["join", &join_arg(1, &groups[&1])]).status.success()
    });
    // The membership commands: the controllers', and a group's (its
    // servers found through the controllers).
    let voters = |json: &str| -> Vec<String> {
        let list: serde_json::Value = serde_json::from_str(json).unwrap();
        let voters = list["voters"].as_array().unwrap().iter();
        voters
            .map(|m| m["url"].as_str().unwrap().to_string())
            .collect()
    };
    let list = ok(
        &admin(&["member", "list", "--json"]),
        "shardctl member list",
    );
    assert_eq!(voters(&list), controllers.urls);
    let group_list = |gid: &str| {
        Command::new(CAIRN)
            .args(["shardkv", "member", "list", "--json", "--gid", gid])
            .args(["--controllers", &controllers.endpoints()])
            .output()
            .unwrap()
    };
    let list = ok(&group_list("1"), "shardkv member list --gid 1");
    assert_eq!(voters(&list), groups[&1].urls);
    let error = failed(&group_list("7"), "shardkv member list --gid 7");
    assert!(
        error.contains("group 7 is not in the controllers'"),
        "{error}"
    );
    // Group 1's servers under another gid, and an address where nothing
    // runs: refused, nothing changes.
    let error = failed(
        &admin(&["join", &join_arg(2, &groups[&1])]),
        "join 2=group 1",
    );
    assert!(
        error.contains("is a server of group 1, not of group 2"),
        "{error}"
    );
    let [port] = free_ports(1)[..] else {
        unreachable!()
    };
    let phantom = format!("9=http://127.0.0.1:{port}");
    let error = failed(&admin(&["join", &phantom]), "join of a phantom");
    assert!(
        error.contains("group 9 cannot be joined") && error.contains("--force"),
        "{error}"
    );
    wait_until("group 2 can be joined", Duration::from_secs(30), || {
        admin(&["join", &join_arg(2, &groups[&2])]).status.success()
    });
    let query = ok(&admin(&["query", "--json"]), "query");
    let before: serde_json::Value = serde_json::from_str(&query).unwrap();
    assert_eq!(before["num"], 2, "a refused join changed the configuration");

    let mut client = Client::new(
        &controllers.urls,
        shard_of,
        ClientConfig {
            deadline: Duration::from_secs(60),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    for i in 0..30 {
        client
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    // `bench kv` finds the controllers and runs through the sharded clerk.
    let bench = Command::new(CAIRN)
        .args([
            "bench",
            "kv",
            "--seconds",
            "1",
            "--clients",
            "2",
            "--keys",
            "20",
        ])
        .args(["--json", "--endpoints", &controllers.endpoints()])
        .output()
        .unwrap();
    let bench: serde_json::Value =
        serde_json::from_str(ok(&bench, "bench kv").lines().next().unwrap()).unwrap();
    assert!(bench["ops_per_sec"].as_f64().unwrap() > 0.0, "{bench}");

    // Forced, the phantom takes shards; the groups say what they wait for.
    ok(&admin(&["join", "--force", &phantom]), "join --force");
    wait_until(
        "kv status shows the wait for group 9",
        Duration::from_secs(30),
        || {
            waiting_lines(&status_rows(&controllers, &controllers.endpoints()))
                .iter()
                .any(|l| l.contains("waiting for group 9 to take shards"))
        },
    );
    let table = Command::new(CAIRN)
        .args(["kv", "status", "--endpoints", &controllers.endpoints()])
        .output()
        .unwrap();
    let table = ok(&table, "kv status");
    assert!(
        table.contains("waiting:") && table.contains("cairn shardctl leave 9"),
        "{table}"
    );
    wait_until(
        "a group logs the wait for group 9",
        Duration::from_secs(30),
        || {
            groups
                .values()
                .any(|g| log_of(g).contains("waiting for group 9 to take shards"))
        },
    );

    // Leaving gives the shards back, with their data.
    ok(&admin(&["leave", "9"]), "leave 9");
    for i in 0..30 {
        let got = client.get(format!("k{i}").as_bytes()).await.unwrap();
        assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
    client.put(b"k0", b"after").await.unwrap();
    wait_until("no group waits", Duration::from_secs(30), || {
        waiting_lines(&status_rows(&controllers, &controllers.endpoints())).is_empty()
    });

    // A group that left still answers: listed, marked.
    ok(&admin(&["leave", "2"]), "leave 2");
    let rows = status_rows(&controllers, &controllers.urls[0]);
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "controller").count(),
        3,
        "given one controller, status lists all three: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "group 1").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "group 2 (left)").count(),
        3,
        "{kinds:?}"
    );
}

#[test]
fn kv_status_lists_every_node_of_the_cluster() {
    let nodes = NodeProcesses::start(&["kv", "serve"], 5);
    let first_three = nodes.urls[..3].join(",");
    wait_until(
        "kv status lists all five nodes",
        Duration::from_secs(30),
        || {
            let rows = status_rows(&nodes, &first_three);
            let ids: Vec<u64> = rows.iter().filter_map(|r| r["id"].as_u64()).collect();
            ids.len() == 5
        },
    );
}

#[test]
fn bench_kv_that_completes_nothing_fails() {
    let [port] = free_ports(1)[..] else {
        unreachable!()
    };
    let output = Command::new(CAIRN)
        .args(["bench", "kv", "--seconds", "1", "--clients", "1"])
        .args(["--endpoints", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let error = failed(&output, "bench kv against nothing");
    assert!(
        error.contains("no operation completed") && error.contains("cairn kv status"),
        "{error}"
    );
}

#[test]
fn cluster_refuses_data_of_another_shape() {
    let dir = tempfile::tempdir().unwrap();
    for id in 1..=3 {
        std::fs::create_dir_all(dir.path().join(format!("cairn-data/node{id}"))).unwrap();
    }
    let [port] = free_ports(1)[..] else {
        unreachable!()
    };
    let base = port.saturating_sub(10).to_string();
    let mut child = Command::new(CAIRN)
        .current_dir(dir.path())
        .args(["cluster", "--nodes", "5", "--base-port", &base])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(20) {
            // It started a cluster: stop it (and its nodes) before failing.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            panic!("cairn cluster started on data of another shape");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut error = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut error).unwrap();
    assert!(!exit.success(), "started: {error}");
    assert!(
        error.contains("holds a 3-node cluster")
            && error.contains("cairn cluster --nodes 3")
            && error.contains("rm -rf"),
        "{error}"
    );
}
