//! `cairn kv` as scripts use it: exact bytes in and out, keys that are not
//! text, and exit statuses that tell "no" (3) from "could not answer" (1)
//! and from a usage error (2).

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use common::{CAIRN, NodeProcesses, free_ports};

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn put_stdin(cluster: &NodeProcesses, args: &[&str], value: &[u8]) -> Output {
    let mut child = Command::new(CAIRN)
        .args(args)
        .args(["--endpoints", &cluster.endpoints(), "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(value).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn values_and_keys_are_binary_safe_and_exit_statuses_are_distinct() {
    let cluster = NodeProcesses::start(&["kv", "serve"], 3);
    let value: &[u8] = b"\x00\xffbinary\nwith a trailing newline\n";
    let put = put_stdin(&cluster, &["kv", "put", "--key-hex", "00ff10", "-"], value);
    assert_eq!(
        code(&put),
        Some(0),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );

    let raw = cluster.cli(&["kv", "get", "--key-hex", "00ff10", "--raw"]);
    assert_eq!(code(&raw), Some(0));
    assert_eq!(raw.stdout, value, "--raw prints the exact bytes");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value");
    let to_file = cluster.cli(&[
        "kv",
        "get",
        "--key-hex",
        "00ff10",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&to_file), Some(0));
    assert_eq!(std::fs::read(&file).unwrap(), value);

    let json = cluster.cli(&["kv", "get", "--key-hex", "00ff10", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        json["value_base64"],
        "AP9iaW5hcnkKd2l0aCBhIHRyYWlsaW5nIG5ld2xpbmUK"
    );

    let missing = cluster.cli(&["kv", "get", "no-such-key"]);
    assert_eq!(
        code(&missing),
        Some(3),
        "a missing key is 'no', not an error"
    );
    let deleted = cluster.cli(&["kv", "del", "no-such-key"]);
    assert_eq!(code(&deleted), Some(3));
    assert!(String::from_utf8_lossy(&deleted.stderr).contains("not found"));

    let nobody = format!("127.0.0.1:{}", free_ports(1)[0]);
    let unreachable = Command::new(CAIRN)
        .args(["kv", "get", "k", "--endpoints", &nobody, "--timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(
        code(&unreachable),
        Some(1),
        "an unreachable cluster is an error"
    );
    let usage = Command::new(CAIRN)
        .args(["kv", "get", "k", "--key-hex"])
        .output()
        .unwrap();
    assert_eq!(
        code(&usage),
        Some(1),
        "odd hex digits: {}",
        String::from_utf8_lossy(&usage.stderr)
    );
    let bad_flag = Command::new(CAIRN)
        .args(["kv", "get", "k", "--timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(code(&bad_flag), Some(2));
}
