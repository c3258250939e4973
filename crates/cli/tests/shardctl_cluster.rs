//! The shard controller as real processes: 3 `cairn shardctl serve` nodes on
//! loopback, changed and queried through the CLI, a node killed with
//! SIGKILL and restarted, and bad requests refused with clear errors. No
//! group servers run here, so joins pass `--force`.

mod common;

use std::process::Output;

use common::NodeProcesses;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn ok(nodes: &NodeProcesses, args: &[&str]) -> String {
    let output = nodes.cli(args);
    assert!(
        output.status.success(),
        "cairn {args:?} failed: {}; logs in {}",
        stderr(&output),
        nodes.dir.path().display()
    );
    stdout(&output)
}

fn query(nodes: &NodeProcesses, num: Option<u64>) -> serde_json::Value {
    let num = num.map(|n| n.to_string());
    let mut args = vec!["shardctl", "query", "--json"];
    args.extend(num.as_deref());
    serde_json::from_str(&ok(nodes, &args)).unwrap()
}

#[test]
fn a_controller_cluster_of_processes() {
    let mut nodes = NodeProcesses::start(&["shardctl", "serve", "--shards", "12"], 3);

    let initial = query(&nodes, None);
    assert_eq!(initial["num"], 0);
    assert_eq!(initial["shards"], serde_json::json!(vec![0; 12]));

    assert_eq!(
        ok(
            &nodes,
            &[
                "shardctl",
                "join",
                "--force",
                "1=http://a:1,http://b:1",
                "2=http://c:1"
            ]
        ),
        "joined: configuration 1"
    );
    let one = query(&nodes, None);
    assert_eq!(
        one["groups"]["1"],
        serde_json::json!(["http://a:1", "http://b:1"])
    );
    let shards: Vec<u64> = serde_json::from_value(one["shards"].clone()).unwrap();
    assert_eq!(shards.iter().filter(|&&g| g == 1).count(), 6);
    assert_eq!(shards.iter().filter(|&&g| g == 2).count(), 6);

    // A node dies; the other two go on, and it catches up after a restart.
    nodes.kill(1);
    assert_eq!(
        ok(&nodes, &["shardctl", "move", "0", "2"]),
        "moved: configuration 2"
    );
    assert_eq!(
        ok(&nodes, &["shardctl", "leave", "1"]),
        "left: configuration 3"
    );
    nodes.start_node(1);
    nodes.kill(2);
    let latest = query(&nodes, None);
    assert_eq!(latest["num"], 3);
    assert_eq!(latest["shards"], serde_json::json!(vec![2; 12]));
    assert_eq!(query(&nodes, Some(1)), one, "history is kept exactly");
    let text = ok(&nodes, &["shardctl", "query"]);
    assert!(text.contains("group 2: 12 shards"), "{text}");

    // Refused and invalid changes say why and change nothing.
    for (args, want) in [
        (vec!["shardctl", "leave", "7"], "not in the configuration"),
        (vec!["shardctl", "leave", "2"], "last group"),
        (
            vec!["shardctl", "join", "--force", "2=http://d:1"],
            "already joined",
        ),
        (vec!["shardctl", "join", "7=http://d:1"], "--force"),
        (vec!["shardctl", "move", "12", "2"], "does not exist"),
        (
            vec!["shardctl", "join", "--force", "0=http://d:1"],
            "reserved",
        ),
        (vec!["shardctl", "join", "5"], "GID=SERVER"),
    ] {
        let output = nodes.cli(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(want),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(query(&nodes, None)["num"], 3);
}
