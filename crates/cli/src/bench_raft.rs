//! `cairn bench raft`: proposals per second and commit latency of a 3-node
//! Raft group in one process — the protocol (`cairn-raft`) and the runtime
//! (`cairn-rsm`) with an in-process network, over in-memory storage (the
//! condition of openraft's published figures) and over real write-ahead-log
//! files with fsync.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use cairn_raft::{LogIndex, Role};
use cairn_rsm::{LocalNet, Node, NodeConfig, StateMachine, SubmitError};
use cairn_storage::{Disk, MemDisk, RealDisk};

use crate::bench::Outcome;
use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub(crate) struct RaftArgs {
    /// Concurrent proposers, each with one proposal outstanding.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    clients: Vec<usize>,
    /// Seconds measured per configuration (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Where the log lives.
    #[arg(long, value_enum, default_value_t = StorageChoice::Both)]
    storage: StorageChoice,
    /// Bytes per proposal.
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// Directory for the on-disk runs (emptied first; default: a temporary
    /// directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StorageChoice {
    /// In memory: no fsync.
    Memory,
    /// Write-ahead-log files with fsync per batch.
    Disk,
    /// Both, one after the other.
    Both,
}

/// Counts what it applies; nothing else.
struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Bytes {
        self.0 += 1;
        Bytes::new()
    }

    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| "a counter snapshot is 8 bytes".to_string())?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

pub(crate) fn run(args: RaftArgs) -> anyhow::Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!(
            "--clients takes a comma-separated list of counts above zero, e.g. --clients 1,64,256"
        );
    }
    if args.payload > cairn_rsm::MAX_COMMAND_BYTES {
        bail!(
            "--payload {} is over the {}-byte limit of one log entry; use a smaller payload",
            args.payload,
            cairn_rsm::MAX_COMMAND_BYTES
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let storages: &[&str] = match args.storage {
        StorageChoice::Memory => &["memory"],
        StorageChoice::Disk => &["disk"],
        StorageChoice::Both => &["memory", "disk"],
    };
    let temp = tempfile::Builder::new()
        .prefix("cairn-bench-raft")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    println!(
        "3-node Raft group in one process, in-process network; {} B proposals; {} s per row after 1 s warm-up",
        args.payload, args.seconds
    );
    println!(
        "{:<8} {:>8} {:>14} {:>10} {:>10} {:>8}",
        "storage", "clients", "proposals/s", "p50", "p99", "errors"
    );
    for &storage in storages {
        for &clients in &args.clients {
            let run_dir = dir.join(format!("{storage}-{clients}"));
            let outcome = runtime.block_on(measure(storage, clients, &args, &run_dir))?;
            let _ = std::fs::remove_dir_all(&run_dir);
            print_row(storage, clients, &outcome);
        }
    }
    Ok(())
}

fn print_row(storage: &str, clients: usize, outcome: &Outcome) {
    println!(
        "{storage:<8} {clients:>8} {:>14.0} {:>8.2}ms {:>8.2}ms {:>8}",
        outcome.rate(),
        outcome.percentile_ms(0.50),
        outcome.percentile_ms(0.99),
        outcome.errors
    );
}

async fn measure(
    storage: &str,
    clients: usize,
    args: &RaftArgs,
    dir: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let net = LocalNet::new();
    let peers: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("local://node{id}")))
        .collect();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let disk: Arc<dyn Disk> = if storage == "disk" {
            let root = dir.join(format!("node{id}"));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
            Arc::new(RealDisk::new(&root).with_context(|| format!("opening {}", root.display()))?)
        } else {
            Arc::new(MemDisk::new())
        };
        let mut config = NodeConfig::new(id, peers.clone(), "raft");
        config.max_raft_state = 64 << 20;
        nodes.push(Node::start_local(config, disk, Counter(0), &net)?);
    }
    let leader = wait_for_leader(&nodes).await?;
    let payload = Bytes::from(vec![b'x'; args.payload]);
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (node, payload) = (nodes[leader].clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = node.submit(payload.clone(), Duration::from_secs(5)).await;
                if started < warm_up {
                    continue;
                }
                match result {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(
                        SubmitError::NotLeader { .. }
                        | SubmitError::Timeout
                        | SubmitError::Shutdown
                        | SubmitError::Stopped(_)
                        | SubmitError::Overloaded
                        | SubmitError::TooLarge { .. },
                    ) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut outcome = Outcome::new(Duration::from_secs(args.seconds));
    for task in tasks {
        let (latencies, errors) = task.await.context("a proposer task failed")?;
        outcome.add(latencies, errors);
    }
    let outcome = outcome.sorted();
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(outcome)
}

async fn wait_for_leader(nodes: &[Node<Counter>]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(leader) = nodes.iter().position(|n| n.status().role == Role::Leader) {
            return Ok(leader);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("no leader was elected within 10 s; the machine may be overloaded")
}
