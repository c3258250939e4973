//! `cairn bench overload`: many more concurrent clients than a cluster
//! serves at once, for a while, then a check that it still serves.
//!
//! N client tasks (10,000 by default) each do puts and gets (half each)
//! against the leader, one request outstanding, as fast as answers come.
//! One TCP connection per client would need N file descriptors on each
//! side, so the clients share `--connections` HTTP/2 connections per node
//! (64 by default; a connection multiplexes its clients' requests as
//! streams). Answers are counted as ok, `overloaded` (RESOURCE_EXHAUSTED
//! from a node's request bound; the client then backs off, 50 ms doubling
//! to 1 s), not-leader redirects, and other errors (by gRPC code). Every
//! `PROGRESS_INTERVAL` a line reports the rates and the resident memory
//! (VmRSS from /proc) of the node processes given by `--pids`. At the end a
//! fresh clerk must put and get within `RECOVERY_DEADLINE`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use cairn_rpc::LEADER_URL_KEY;
use cairn_rpc::kv::kv_client::KvClient;
use cairn_rpc::kv::{GetRequest, Op, WriteRequest};
use cairn_rpc::tonic::transport::{Channel, Endpoint};
use cairn_rpc::tonic::{Code, Status};
use clap::Args;
use rand::Rng;

/// How often a progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the nodes' memory is sampled.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// The deadline of one request.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause after an `overloaded` answer; it doubles up to
/// `MAX_BACKOFF` and resets after an answer.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long the cluster has, after the load, to serve a put and a get.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct OverloadArgs {
    /// The cluster's nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = crate::kv::DEFAULT_ENDPOINTS)]
    endpoints: Vec<String>,
    /// Concurrent clients, each with one request outstanding.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// HTTP/2 connections per node that the clients share.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Process ids of the nodes, to sample their memory (VmRSS).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
}

/// Answers counted across every client.
#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    overloaded: AtomicU64,
    not_leader: AtomicU64,
    /// Other errors by gRPC code.
    other: [AtomicU64; 17],
}

impl Counts {
    fn others(&self) -> u64 {
        self.other.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn answers(&self) -> u64 {
        self.ok.load(Relaxed) + self.overloaded.load(Relaxed) + self.not_leader.load(Relaxed)
    }
}

/// What the load tasks share.
struct Shared {
    endpoints: Vec<String>,
    /// `connections` channels per node.
    channels: Vec<Vec<Channel>>,
    leader: AtomicUsize,
    counts: Counts,
    value: Bytes,
    keys: usize,
    end: Instant,
}

pub(crate) fn run(args: OverloadArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.connections == 0 || args.keys == 0 || args.endpoints.is_empty() {
        bail!("--clients, --connections, --keys and --endpoints must not be zero or empty");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(load(args))
}

async fn load(args: OverloadArgs) -> anyhow::Result<()> {
    let endpoints: Vec<String> = args.endpoints.iter().map(|e| url(e)).collect();
    let mut channels = Vec::new();
    for endpoint in &endpoints {
        let endpoint = Endpoint::from_shared(endpoint.clone())
            .with_context(|| format!("{endpoint} is not a URL; use http://HOST:PORT"))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        channels.push(
            (0..args.connections)
                .map(|_| endpoint.connect_lazy())
                .collect(),
        );
    }
    let shared = Arc::new(Shared {
        endpoints,
        channels,
        leader: AtomicUsize::new(0),
        counts: Counts::default(),
        value: Bytes::from(vec![b'v'; args.value_size]),
        keys: args.keys,
        end: Instant::now() + Duration::from_secs(args.seconds),
    });
    println!(
        "{} clients over {} HTTP/2 connections per node to {} nodes for {} s; sampling RSS of pids {:?}",
        args.clients,
        args.connections,
        shared.endpoints.len(),
        args.seconds,
        args.pids
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|client| tokio::spawn(client_loop(shared.clone(), client)))
        .collect();
    let peak_rss = monitor(&shared, &args.pids, started).await;
    for task in tasks {
        task.await.context("a client task failed")?;
    }
    let elapsed = started.elapsed();
    let recovered = recovery_check(&args.endpoints).await;
    report(&args, &shared.counts, elapsed, &peak_rss, recovered)
}

fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// One client: puts and gets to the leader until the end.
async fn client_loop(shared: Arc<Shared>, client: usize) {
    let mut rng = cairn_rpc::seeded_rng();
    let client_id = rng.gen_range(1..u64::MAX);
    let (mut seq, mut backoff) = (0u64, FIRST_BACKOFF);
    while Instant::now() < shared.end {
        let node = shared.leader.load(Relaxed) % shared.endpoints.len();
        let connections = &shared.channels[node];
        let mut stub = KvClient::new(connections[client % connections.len()].clone());
        let key = Bytes::from(format!("key{}", rng.gen_range(0..shared.keys)));
        let answer = if rng.gen_bool(0.5) {
            stub.get(GetRequest { key }).await.map(drop)
        } else {
            seq += 1;
            let request = WriteRequest {
                client_id,
                seq,
                op: Op::Put.into(),
                key,
                value: shared.value.clone(),
                ..Default::default()
            };
            stub.write(request).await.map(drop)
        };
        let counts = &shared.counts;
        match answer {
            Ok(()) => {
                counts.ok.fetch_add(1, Relaxed);
                backoff = FIRST_BACKOFF;
            }
            Err(status) if is_overloaded(&status) => {
                counts.overloaded.fetch_add(1, Relaxed);
                tokio::time::sleep(
                    backoff.min(shared.end.saturating_duration_since(Instant::now())),
                )
                .await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                counts.not_leader.fetch_add(1, Relaxed);
                follow_hint(&shared, node, &status);
            }
            Err(status) => {
                counts.other[status.code() as usize].fetch_add(1, Relaxed);
            }
        }
    }
}

fn is_overloaded(status: &Status) -> bool {
    status.code() == Code::ResourceExhausted && status.message().starts_with("overloaded:")
}

/// Moves every client to the leader a follower named, or to the next node.
fn follow_hint(shared: &Shared, node: usize, status: &Status) {
    let hint = status
        .metadata()
        .get(LEADER_URL_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|leader| shared.endpoints.iter().position(|e| *e == url(leader)));
    let next = hint.unwrap_or((node + 1) % shared.endpoints.len());
    let _ = shared.leader.compare_exchange(node, next, Relaxed, Relaxed);
}

/// Samples the nodes' memory and prints progress until the end; returns
/// the peak RSS (KiB) per pid.
async fn monitor(shared: &Shared, pids: &[u32], started: Instant) -> BTreeMap<u32, u64> {
    let mut peak = BTreeMap::new();
    let (mut last_print, mut last_answers) = (Instant::now(), 0u64);
    while Instant::now() < shared.end {
        tokio::time::sleep(
            RSS_SAMPLE_INTERVAL.min(shared.end.saturating_duration_since(Instant::now())),
        )
        .await;
        let mut now_rss = Vec::new();
        for &pid in pids {
            let rss = rss_kib(pid);
            if let Some(rss) = rss {
                let entry = peak.entry(pid).or_insert(0);
                *entry = (*entry).max(rss);
            }
            now_rss.push(rss.map_or("gone".to_string(), |kib| format!("{} MiB", kib / 1024)));
        }
        if last_print.elapsed() >= PROGRESS_INTERVAL {
            let counts = &shared.counts;
            let answers = counts.answers() + counts.others();
            let rate = (answers - last_answers) as f64 / last_print.elapsed().as_secs_f64();
            println!(
                "{:>4.0}s  {rate:>8.0} answers/s  ok {}  overloaded {}  not-leader {}  other {}  rss [{}]",
                started.elapsed().as_secs_f64(),
                counts.ok.load(Relaxed),
                counts.overloaded.load(Relaxed),
                counts.not_leader.load(Relaxed),
                counts.others(),
                now_rss.join(", ")
            );
            (last_print, last_answers) = (Instant::now(), answers);
        }
    }
    peak
}

/// VmRSS of a process in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a fresh clerk puts and gets within `RECOVERY_DEADLINE`; the
/// time it took, or the error.
async fn recovery_check(endpoints: &[String]) -> Result<Duration, String> {
    let config = cairn_kv::ClientConfig {
        call_timeout: Duration::from_secs(2),
        deadline: RECOVERY_DEADLINE,
    };
    let started = Instant::now();
    let mut clerk = cairn_kv::Client::new(endpoints, config).map_err(|e| e.to_string())?;
    clerk
        .put(b"overload-check", b"ok")
        .await
        .map_err(|e| e.to_string())?;
    match clerk.get(b"overload-check").await {
        Ok(Some(value)) if &value[..] == b"ok" => Ok(started.elapsed()),
        Ok(other) => Err(format!("read back {other:?} instead of \"ok\"")),
        Err(error) => Err(error.to_string()),
    }
}

fn report(
    args: &OverloadArgs,
    counts: &Counts,
    elapsed: Duration,
    peak_rss: &BTreeMap<u32, u64>,
    recovered: Result<Duration, String>,
) -> anyhow::Result<()> {
    let answers = counts.answers() + counts.others();
    let ok = counts.ok.load(Relaxed);
    let overloaded = counts.overloaded.load(Relaxed);
    let others: Vec<String> = counts
        .other
        .iter()
        .enumerate()
        .filter(|(_, c)| c.load(Relaxed) > 0)
        .map(|(code, c)| format!("{:?} {}", Code::from(code as i32), c.load(Relaxed)))
        .collect();
    println!("clients        {}", args.clients);
    println!("connections    {} per node", args.connections);
    println!("seconds        {:.1}", elapsed.as_secs_f64());
    println!("ok ops/s       {:.0}", ok as f64 / elapsed.as_secs_f64());
    println!(
        "overloaded     {:.1}% of {answers} answers",
        100.0 * overloaded as f64 / answers.max(1) as f64
    );
    println!("not-leader     {}", counts.not_leader.load(Relaxed));
    println!(
        "other errors   {}",
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    );
    for (pid, kib) in peak_rss {
        println!("peak RSS       pid {pid}: {} MiB", kib / 1024);
    }
    match recovered {
        Ok(took) => {
            println!("after the load a put and a get succeeded in {took:.2?}");
            Ok(())
        }
        Err(error) => bail!(
            "after the load the cluster did not serve a put and a get within {RECOVERY_DEADLINE:?}: {error}"
        ),
    }
}
