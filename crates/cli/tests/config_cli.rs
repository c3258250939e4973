//! `cairn config` and the global flags, through the real binary: where each
//! value came from, the file's keys in `--help`, and `--data-dir` refused
//! where nothing would read it.

use std::process::{Command, Output};

fn cairn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(args)
        .env_remove("CAIRN_DATA_DIR")
        .env_remove("CAIRN_LOG_LEVEL");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("running cairn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_names_the_source_of_every_value_and_every_variable() {
    let out = cairn(
        &["config", "--data-dir", "/tmp/here"],
        &[("CAIRN_LOG_LEVEL", "warn"), ("CAIRN_DATADIR", "typo")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("/tmp/here") && stdout.contains("# command-line flag"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# environment variable CAIRN_LOG_LEVEL"),
        "{stdout}"
    );
    assert!(stdout.contains("CAIRN_DATADIR=typo"), "{stdout}");
    assert!(stdout.contains("not a Cairn variable"), "{stdout}");
    assert!(stdout.contains("CAIRN_ENDPOINTS"), "{stdout}");
}

#[test]
fn config_help_lists_the_file_keys() {
    let out = cairn(&["config", "--help"], &[]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for key in [
        "data_dir",
        "log_level",
        "[node]",
        "id",
        "peers",
        "listen",
        "max_raft_state",
    ] {
        assert!(stdout.contains(key), "{key} missing from:\n{stdout}");
    }
}

#[test]
fn data_dir_is_refused_where_nothing_reads_it() {
    let out = cairn(&["kv", "get", "k", "--data-dir", "/tmp/x"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("does not use --data-dir"));
    // The variable is set for every command at once, so it stays allowed:
    // the command goes on (and fails later, for want of a cluster).
    let out = cairn(
        &[
            "kv",
            "get",
            "k",
            "--endpoints",
            "http://127.0.0.1:9",
            "--timeout",
            "1",
        ],
        &[("CAIRN_DATA_DIR", "/tmp/x")],
    );
    assert!(!text(&out.stderr).contains("does not use --data-dir"));
}
