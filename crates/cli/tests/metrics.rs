//! `--metrics-listen` through the real binary: a node's `/metrics` moves
//! when load is applied, a one-shot `cairn kv` command costs the node one
//! request (no `Status` probe first), `cairn cluster --metrics` says where
//! every node's metrics are and a leader times its round trips per peer,
//! and a metrics port that cannot be bound stops the node before anything
//! starts, saying what to do.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{CAIRN, NodeProcesses, Processes, free_ports, poll_until};

/// One scrape: every sample line as `name{labels}` -> value.
type Samples = BTreeMap<String, f64>;

/// `GET path` over HTTP/1.1: the status line and the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    Ok((status, body.to_string()))
}

fn scrape(addr: &str) -> Result<Samples, String> {
    let (status, body) = http_get(addr, "/metrics").map_err(|e| e.to_string())?;
    if !status.contains("200") {
        return Err(status);
    }
    Ok(body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The value of the series of `name` whose labels include `label`.
fn value(samples: &Samples, name: &str, label: &str) -> f64 {
    samples
        .iter()
        .find(|(series, _)| series.starts_with(&format!("{name}{{")) && series.contains(label))
        .map(|(_, &value)| value)
        .unwrap_or_else(|| panic!("no {name} with {label} in {samples:#?}"))
}

/// Scrapes `addr` until its node says it leads.
fn wait_for_leader(addr: &str) -> Samples {
    poll_until("the node leads", Duration::from_secs(20), || {
        let samples = scrape(addr)?;
        if leads(&samples) {
            Ok(samples)
        } else {
            Err(format!("{samples:?}"))
        }
    })
}

fn leads(samples: &Samples) -> bool {
    samples
        .iter()
        .any(|(series, &v)| series.contains(r#"role="leader""#) && v == 1.0)
}

fn ok(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn metrics_move_with_load_and_a_one_shot_command_is_one_request() {
    let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let node = NodeProcesses::start(&["kv", "serve", "--metrics-listen", &addr], 1);
    let before = wait_for_leader(&addr);

    ok(&node.cli(&["kv", "put", "k", "v"]));
    let get = node.cli(&["kv", "get", "k"]);
    ok(&get);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "v\n");
    let after = scrape(&addr).unwrap();

    let moved = |name: &str, label: &str| value(&after, name, label) - value(&before, name, label);
    // A session and a put: two entries proposed, persisted and applied.
    assert!(moved("cairn_raft_proposals_total", "") >= 2.0);
    assert!(moved("cairn_raft_applied_index", "") >= 2.0);
    assert!(moved("cairn_raft_fsync_seconds_count", "") >= 1.0);
    assert!(moved("cairn_raft_read_index_rounds_total", "") >= 1.0);
    assert!(value(&after, "cairn_sessions", "") >= 1.0);
    // Each command reached the node as its one request: no Status probe.
    assert_eq!(moved("cairn_kv_request_seconds_count", r#"op="put""#), 1.0);
    assert_eq!(moved("cairn_kv_request_seconds_count", r#"op="get""#), 1.0);
    assert_eq!(
        moved("cairn_kv_request_seconds_count", r#"op="register""#),
        1.0
    );
    assert_eq!(
        moved("cairn_kv_request_seconds_count", r#"op="status""#),
        0.0
    );

    let (status, body) = http_get(&addr, "/").unwrap();
    assert!(
        status.contains("404") && body.contains("/metrics"),
        "{status} {body}"
    );
}

#[test]
fn cluster_metrics_say_where_they_are_and_time_each_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (launcher, base, banner, _stderr) = common::launch_cluster(dir.path(), &["--metrics"], 103);
    let _launcher = Processes(vec![launcher]);
    for n in 1..=3 {
        let url = format!("http://127.0.0.1:{}/metrics", base + 100 + n);
        assert!(banner.contains(&url), "{url} not in the banner:\n{banner}");
    }
    let endpoints: Vec<String> = (1..=3)
        .map(|n| format!("http://127.0.0.1:{}", base + n))
        .collect();
    let put = Command::new(CAIRN)
        .args(["kv", "put", "k", "v", "--endpoints", &endpoints.join(",")])
        .output()
        .unwrap();
    ok(&put);
    // The leader has heard its followers answer, each timed.
    poll_until("a leader timed both peers", Duration::from_secs(20), || {
        for n in 1..=3 {
            let samples = scrape(&format!("127.0.0.1:{}", base + 100 + n))?;
            let timed = samples
                .iter()
                .filter(|(s, v)| {
                    s.starts_with("cairn_raft_peer_round_trip_seconds_count") && **v > 0.0
                })
                .count();
            if leads(&samples) && timed == 2 {
                return Ok(());
            }
        }
        Err("no leader with round trips to 2 peers".into())
    });
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_node_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let peers = format!("1=http://127.0.0.1:{}", free_ports(1)[0]);
    for (metrics, says) in [
        (taken.as_str(), "cannot listen for metrics on"),
        ("nowhere", "--metrics-listen \"nowhere\" is not an address"),
    ] {
        let mut serve = Command::new(CAIRN)
            .args(["kv", "serve", "--id", "1", "--peers", &peers])
            .args(["--metrics-listen", metrics, "--data-dir"])
            .arg(&data_dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = common::wait_exit(&mut serve, Duration::from_secs(10));
        let mut stderr = String::new();
        serve
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("--metrics-listen HOST:PORT"), "{stderr}");
        assert!(!data_dir.exists(), "nothing is created before the bind");
    }
}

#[test]
fn a_coordinator_serves_its_job_progress() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "a few words\n").unwrap();
    let ports = free_ports(2);
    let metrics = format!("127.0.0.1:{}", ports[1]);
    let args = ["--app", "wc", "--metrics-listen", &metrics, "input.txt"];
    let (child, _url) = common::coordinator(dir.path(), &args, &format!("127.0.0.1:{}", ports[0]));
    let _coordinator = Processes(vec![child]);
    let samples = scrape(&metrics).unwrap();
    assert_eq!(samples["cairn_mr_maps_total"], 1.0, "{samples:#?}");
    assert_eq!(samples["cairn_mr_maps_done"], 0.0, "{samples:#?}");
    assert_eq!(samples["cairn_mr_done"], 0.0, "{samples:#?}");
}
