//! Backups as real processes (issue 16): a 3-node key/value cluster of the
//! built `cairn` binary under load from three writers; `cairn kv snapshot
//! save`, asked of a follower (so it follows the leader hint), while they
//! write; `cairn kv snapshot restore` into a new data directory; the
//! restored node served as a one-node cluster on a new port holds every
//! write acknowledged before the backup began, with its value. Then the
//! disaster recovery path: a follower's data directory, refused while the
//! node runs, read with `--from-data-dir` (its whole log) once it is killed,
//! holds every acknowledged write.
#![cfg(not(madsim))] // real processes, real time

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_kv::{BACKUP_KIND, Client, ClientConfig, KvStore};
use cairn_rsm::{BackupFile, StateMachine as _};
use common::{CAIRN, NodeProcesses, Processes, free_ports, poll_until};

const WRITERS: usize = 3;

fn client(urls: &[String]) -> Client {
    let config = ClientConfig {
        deadline: Duration::from_secs(20),
        ..Default::default()
    };
    Client::new(urls, config).unwrap()
}

fn cairn(args: &[&str]) -> Output {
    Command::new(CAIRN).args(args).output().unwrap()
}

/// `cairn kv snapshot restore FILE --data-dir DIR --id 9 --peers PEERS`.
fn restore(file: &Path, dir: &Path, peers: &str) -> Output {
    Command::new(CAIRN)
        .args(["kv", "snapshot", "restore"])
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .args(["--id", "9", "--peers", peers])
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The 0-based index of a node that reports itself a follower of a known
/// leader (waits up to 20 s).
async fn follower(client: &Client, nodes: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for index in 0..nodes {
            if let Ok(status) = client.status(index).await
                && status.role == "follower"
                && status.leader != 0
            {
                return index;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no follower with a leader in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every one of `nodes` has applied what the leader had
/// committed when the wait began (up to 20 s).
async fn wait_applied_everywhere(client: &Client, nodes: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut target = None;
    loop {
        let mut statuses = Vec::new();
        for index in 0..nodes {
            statuses.push(client.status(index).await.ok());
        }
        let leader = statuses.iter().flatten().find(|s| s.role == "leader");
        target = target.or(leader.map(|s| s.commit));
        if let Some(target) = target
            && statuses
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.applied >= target))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not applied everywhere in 20 s: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writers that put distinct keys until stopped, each recording the
/// writes acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(urls: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..WRITERS)
            .map(|writer| {
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                let mut client = client(urls);
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let (key, value) = (format!("w{writer}-{n}"), format!("v{n}-{writer}"));
                        if client.put(key.as_bytes(), value.as_bytes()).await.is_ok() {
                            acknowledged.lock().unwrap().push((key, value));
                        }
                        n += 1;
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

    fn acknowledged(&self) -> Vec<(String, String)> {
        self.acknowledged.lock().unwrap().clone()
    }

    async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_as_a_new_cluster_with_every_acknowledged_write() {
    let mut cluster = NodeProcesses::start(&["kv", "serve", "--max-raft-state", "20000"], 3);
    let started = Instant::now();
    let probe = client(&cluster.urls);
    let follower = follower(&probe, 3).await;
    let writers = Writers::start(&cluster.urls);
    poll_until("the writers have written", Duration::from_secs(20), || {
        let written = writers.acknowledged().len();
        (written >= 300).then_some(()).ok_or(format!("{written}"))
    });

    // Every write acknowledged before the backup began must be in it.
    let before = writers.acknowledged();
    let file = cluster.dir.path().join("backup.cairn");
    let saved = tokio::task::spawn_blocking({
        let (file, endpoint) = (file.clone(), cluster.urls[follower].clone());
        move || {
            let file = file.to_str().unwrap().to_string();
            cairn(&["kv", "snapshot", "save", &file, "--endpoints", &endpoint])
        }
    })
    .await
    .unwrap();
    let written = writers.stop().await;
    assert!(written.len() >= before.len());
    assert!(saved.status.success(), "save failed: {}", text(&saved));
    assert!(
        text(&saved).contains("index") && text(&saved).contains("crc32c"),
        "{}",
        text(&saved)
    );

    // Restore into a new directory, then serve it on a new port.
    let new_dir = cluster.dir.path().join("restored");
    let url = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let peers = format!("9={url}");
    let restored = restore(&file, &new_dir, &peers);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        text(&restored)
    );
    assert!(
        text(&restored).contains("cairn kv serve --data-dir"),
        "{}",
        text(&restored)
    );
    let again = restore(&file, &new_dir, &peers);
    assert!(
        !again.status.success() && text(&again).contains("not empty"),
        "a second restore into the same directory: {}",
        text(&again)
    );
    let bytes = std::fs::read(&file).unwrap();
    let cut = cluster.dir.path().join("cut.cairn");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let untouched = cluster.dir.path().join("untouched");
    let truncated = restore(&cut, &untouched, &peers);
    assert!(
        !truncated.status.success() && text(&truncated).contains("truncated"),
        "a truncated backup: {}",
        text(&truncated)
    );
    assert!(
        !untouched.exists(),
        "a refused restore created its directory"
    );
    let log = std::fs::File::create(cluster.dir.path().join("restored.log")).unwrap();
    let _restored_node = Processes(vec![
        Command::new(CAIRN)
            .args(["kv", "serve", "--id", "9", "--peers", &peers, "--data-dir"])
            .arg(&new_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ]);
    let addr = url.trim_start_matches("http://").to_string();
    poll_until("the restored node listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr)
            .map(drop)
            .map_err(|e| e.to_string())
    });

    let mut restored = client(std::slice::from_ref(&url));
    for (key, value) in &before {
        let got = restored.get(key.as_bytes()).await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some(value.as_bytes()),
            "key {key}, acknowledged before the backup began (logs in {})",
            cluster.dir.path().display()
        );
    }
    // The restored cluster takes writes.
    restored.put(b"after", b"restore").await.unwrap();
    assert_eq!(
        restored.get(b"after").await.unwrap().as_deref(),
        Some(&b"restore"[..])
    );
    eprintln!(
        "{} writes acknowledged before the backup, {} in all; {:?} from start to check",
        before.len(),
        written.len(),
        started.elapsed()
    );

    // Disaster recovery: a node's data directory, read once it stopped.
    let id = follower as u64 + 1;
    let (lost, dir) = (cluster.dir.path().join("lost.cairn"), cluster.node_dir(id));
    let save_offline = |extra: &[&str]| {
        Command::new(CAIRN)
            .args(["kv", "snapshot", "save"])
            .arg(&lost)
            .arg("--from-data-dir")
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let running = save_offline(&[]);
    assert!(
        !running.status.success() && text(&running).contains("another cairn node is using"),
        "a running node's directory: {}",
        text(&running)
    );
    wait_applied_everywhere(&probe, 3).await;
    cluster.kill(id);
    let offline = save_offline(&[]);
    assert!(offline.status.success(), "offline save: {}", text(&offline));
    assert!(
        text(&offline).contains("stopped node"),
        "{}",
        text(&offline)
    );
    let backup = BackupFile::decode(&std::fs::read(&lost).unwrap(), BACKUP_KIND).unwrap();
    let mut store = KvStore::new();
    store.restore(&backup.data).unwrap();
    for (key, value) in &written {
        assert_eq!(
            store.get(key.as_bytes()).as_deref(),
            Some(value.as_bytes()),
            "key {key}, acknowledged, not in node {id}'s whole log"
        );
    }
}
