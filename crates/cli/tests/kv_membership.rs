//! Replacing a node of a key/value cluster of real processes, under load
//! (issue 16): while four writers append unique tokens, one node is
//! SIGKILLed and its data wiped, a new node joins with `cairn kv serve
//! --join`, is promoted with `cairn kv member promote`, and the dead one is
//! removed with `cairn kv member remove`. At the end every acknowledged
//! append is present exactly once, no token is present twice, and every
//! live node's `member list` agrees. The joined node restarted with the
//! same command resumes as the same member; running the promotion and
//! removal again says they are made; once the joined node leads, a put
//! given only a follower reaches it. A second test joins a node with
//! `--auto-promote`, which promotes itself.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_kv::{Client, ClientConfig};
use common::{CAIRN, NodeProcesses, Processes, free_ports, poll_until};
use serde_json::Value;

const WRITERS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(20);

/// Four clerks appending `w{writer}-{n};` to two keys until stopped; the
/// tokens acknowledged are kept.
struct Writers {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Vec<String>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(runtime: &tokio::runtime::Runtime, urls: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(vec![Vec::new(); WRITERS]));
        let tasks = (0..WRITERS)
            .map(|writer| {
                let config = ClientConfig {
                    deadline: Duration::from_secs(15),
                    ..ClientConfig::default()
                };
                let mut client = Client::new(urls, config).unwrap();
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                runtime.spawn(async move {
                    let key = format!("k{}", writer % 2);
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let token = format!("w{writer}-{n};");
                        n += 1;
                        if client
                            .append(key.as_bytes(), token.as_bytes())
                            .await
                            .is_ok()
                        {
                            acknowledged.lock().unwrap()[writer].push(token);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            acknowledged,
            tasks,
        }
    }

    /// Waits until every writer has `more` acknowledged appends beyond
    /// what it had when called.
    fn wait_for_more(&self, more: usize, what: &str) {
        let start: Vec<usize> = self.counts();
        poll_until(what, DEADLINE, || {
            let now = self.counts();
            match now.iter().zip(&start).all(|(n, s)| *n >= s + more) {
                true => Ok(()),
                false => Err(format!("acknowledged per writer: {now:?} (from {start:?})")),
            }
        });
    }

    fn counts(&self) -> Vec<usize> {
        self.acknowledged
            .lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect()
    }

    fn finish(self, runtime: &tokio::runtime::Runtime) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            runtime.block_on(task).unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap();
        acknowledged.iter().flatten().cloned().collect()
    }
}

/// Runs `cairn ARGS`.
fn cairn(args: &[&str]) -> Output {
    Command::new(CAIRN).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `cairn kv member ARGS --json --endpoints ENDPOINTS`, as JSON, or what it
/// said.
fn member(args: &[&str], endpoints: &str) -> Result<Value, String> {
    let mut full = vec!["kv", "member"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--json", "--timeout", "5", "--endpoints", endpoints]);
    let output = cairn(&full);
    match output.status.success() {
        true => serde_json::from_slice(&output.stdout).map_err(|e| e.to_string()),
        false => Err(text(&output)),
    }
}

fn ids(list: &Value, field: &str) -> Vec<u64> {
    let members = list[field].as_array().cloned().unwrap_or_default();
    members
        .iter()
        .filter_map(|m| m.as_u64().or(m["id"].as_u64()))
        .collect()
}

/// Starts `cairn kv serve --join JOIN --listen LISTEN EXTRA...` on
/// `data_dir`, logging to `log`.
fn join(join: &str, listen: &str, data_dir: &Path, log: &Path, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(CAIRN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["kv", "serve", "--join", join, "--listen", listen])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn a_node_is_replaced_under_load_and_no_acknowledged_append_is_lost() {
    let mut cluster = NodeProcesses::start(&["kv", "serve"], 3);
    let listen = format!("127.0.0.1:{}", free_ports(1)[0]);
    let new_url = format!("http://{listen}");
    let mut urls = cluster.urls.clone();
    urls.push(new_url.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let writers = Writers::start(&runtime, &urls);
    writers.wait_for_more(10, "every writer has appends acknowledged");

    // Node 3 dies and its machine is wiped.
    cluster.kill(3);
    std::fs::remove_dir_all(cluster.node_dir(3)).unwrap();
    let survivors = format!("{},{}", cluster.urls[0], cluster.urls[1]);

    // A new machine joins: the cluster gives it id 4.
    let dir = cluster.dir.path().to_path_buf();
    let (data_dir, log) = (dir.join("node4"), dir.join("node4.log"));
    let mut processes = Processes::default();
    processes
        .0
        .push(join(&survivors, &listen, &data_dir, &log, &[]));
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    poll_until("node 4 is a learner of the cluster", DEADLINE, || {
        let list = member(&["list"], &survivors)?;
        match ids(&list, "learners") == [4] {
            true => Ok(()),
            false => Err(format!("{list}\n{}", logs())),
        }
    });
    poll_until("node 4 is promoted", DEADLINE, || {
        member(&["promote", "4"], &survivors).map_err(|e| format!("{e}\n{}", logs()))
    });
    let removed = member(&["remove", "3"], &survivors).unwrap();
    assert_eq!(ids(&removed, "removed"), [3], "{removed}");
    // Run again (as after a lost reply), both say the change is made.
    for (args, said) in [
        (["promote", "4"], "node 4 is already a voter"),
        (["remove", "3"], "node 3 is already removed"),
    ] {
        let mut full = vec!["kv", "member"];
        full.extend_from_slice(&args);
        full.extend_from_slice(&["--timeout", "5", "--endpoints", &survivors]);
        let again = cairn(&full);
        assert!(
            again.status.success() && text(&again).contains(said),
            "{}",
            text(&again)
        );
    }
    writers.wait_for_more(10, "writes go on after the replacement");
    let acknowledged = writers.finish(&runtime);

    // Every acknowledged token once; no token twice.
    let client = Client::new(&urls, ClientConfig::default()).unwrap();
    let mut present = Vec::new();
    for key in ["k0", "k1"] {
        let value = runtime
            .block_on(client.get(key.as_bytes()))
            .unwrap()
            .unwrap();
        let value = String::from_utf8(value.to_vec()).unwrap();
        present.extend(value.split_inclusive(';').map(String::from));
    }
    let mut sorted = present.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), present.len(), "a token was appended twice");
    for token in &acknowledged {
        assert!(present.contains(token), "acknowledged {token} is missing");
    }

    // Every live node knows the same configuration.
    let live = [
        cluster.urls[0].clone(),
        cluster.urls[1].clone(),
        new_url.clone(),
    ];
    poll_until("every live node agrees on the members", DEADLINE, || {
        let lists: Vec<Value> = live
            .iter()
            .map(|url| member(&["list", "--local"], url))
            .collect::<Result<_, _>>()?;
        let views: Vec<_> = lists
            .iter()
            .map(|l| (ids(l, "voters"), ids(l, "learners"), ids(l, "removed")))
            .collect();
        match views.iter().all(|v| *v == (vec![1, 2, 4], vec![], vec![3])) {
            true => Ok(()),
            false => Err(format!("{views:?}")),
        }
    });

    // Restarted with the same command, node 4 resumes as node 4.
    let mut node4 = processes.0.pop().unwrap();
    node4.kill().unwrap();
    node4.wait().unwrap();
    processes
        .0
        .push(join(&survivors, &listen, &data_dir, &log, &[]));
    poll_until("node 4 answers again as node 4", DEADLINE, || {
        let list = member(&["list", "--local"], &new_url)?;
        match (list["answered_by"].as_u64(), ids(&list, "voters")) {
            (Some(4), voters) if voters == [1, 2, 4] => Ok(()),
            _ => Err(format!("{list}")),
        }
    });
    let list = member(&["list"], &survivors).unwrap();
    assert_eq!(ids(&list, "voters"), [1, 2, 4], "{list}");
    assert!(ids(&list, "learners").is_empty(), "it joined again: {list}");

    // Node 4, which joined, leads: a plain put given only node 1 follows
    // node 1's hint to node 4's URL.
    let moved = cairn(&["kv", "transfer-leader", "4", "--endpoints", &survivors]);
    assert!(moved.status.success(), "{}", text(&moved));
    let put = cairn(&[
        "kv",
        "put",
        "after",
        "transfer",
        "--endpoints",
        &cluster.urls[0],
    ]);
    assert!(put.status.success(), "{}", text(&put));
    println!(
        "{} appends acknowledged across the replacement",
        acknowledged.len()
    );
}

/// `--auto-promote`: a node joined with it promotes itself once it has
/// caught up, with no operator command.
#[test]
fn a_node_joined_with_auto_promote_becomes_a_voter() {
    let cluster = NodeProcesses::start(&["kv", "serve"], 3);
    let listen = format!("127.0.0.1:{}", free_ports(1)[0]);
    let endpoints = cluster.urls.join(",");
    let (data_dir, log) = (
        cluster.dir.path().join("node4"),
        cluster.dir.path().join("node4.log"),
    );
    let mut processes = Processes::default();
    let extra = ["--auto-promote"];
    processes
        .0
        .push(join(&endpoints, &listen, &data_dir, &log, &extra));
    poll_until("node 4 promotes itself", DEADLINE, || {
        let list = member(&["list"], &endpoints)?;
        match ids(&list, "voters") == [1, 2, 3, 4] {
            true => Ok(()),
            false => Err(format!(
                "{list}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
        }
    });
}
