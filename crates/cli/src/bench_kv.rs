//! `cairn bench kv`: the same key/value workload against a Cairn cluster
//! (a plain one, or a sharded one through its controllers: found out by
//! asking) and, with `--etcd`, against etcd (through etcd's v3 gRPC API),
//! with throughput and latency percentiles side by side. A run that
//! completes no operation fails, with the first error seen.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use cairn_kv::{Client, ClientConfig};
use cairn_rpc::etcd::kv_client::KvClient as EtcdKv;
use cairn_rpc::etcd::maintenance_client::MaintenanceClient;
use cairn_rpc::etcd::{PutRequest, RangeRequest, StatusRequest};
use cairn_rpc::{ClientOptions, RpcClient};
use clap::{Args, ValueEnum};

use crate::bench::{Outcome, Tally};
use rand::Rng;

#[derive(Debug, Args)]
pub(crate) struct KvBenchArgs {
    /// The Cairn cluster's nodes (or, for a sharded cluster, its shard
    /// controllers), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = crate::kv::DEFAULT_ENDPOINTS)]
    endpoints: Vec<String>,
    /// Also run the workload against etcd at these endpoints
    /// (http://HOST:PORT, comma-separated); clients talk to etcd's leader,
    /// and to the next member when a call fails (as etcd's own client
    /// does).
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Skip Cairn (measure etcd only).
    #[arg(long)]
    etcd_only: bool,
    /// Concurrent clients, each with one request outstanding.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Distinct keys, chosen uniformly at random.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Key size in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Seconds measured (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// put, get (linearizable) or mixed (half each).
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// One JSON object per system instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Put,
    Get,
    Mixed,
}

#[derive(Debug, Clone)]
enum Target {
    Cairn(Vec<String>),
    /// A sharded Cairn cluster, by its controllers.
    Sharded(Vec<String>),
    /// etcd's members, its leader first.
    Etcd(Vec<String>),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Cairn(_) | Target::Sharded(_) => "cairn",
            Target::Etcd(_) => "etcd",
        }
    }

    /// A plain cluster, or a sharded one if the endpoints are shard
    /// controllers (they answer the key/value `Status` "unimplemented").
    async fn cairn(endpoints: &[String]) -> anyhow::Result<Self> {
        let client = Client::new(endpoints, ClientConfig::default())?;
        for index in 0..client.endpoints() {
            match client.status(index).await {
                Ok(_) => break,
                Err(cairn_rpc::RpcError::Rejected { status, .. })
                    if status.code() == cairn_rpc::tonic::Code::Unimplemented =>
                {
                    return Ok(Target::Sharded(endpoints.to_vec()));
                }
                Err(_) => {}
            }
        }
        Ok(Target::Cairn(endpoints.to_vec()))
    }
}

/// One client's connection to either system.
enum Session {
    Cairn(Client),
    Sharded(Box<cairn_shardkv::Client>),
    Etcd(EtcdSession),
}

/// A client of etcd's members: it calls one member and moves on to the
/// next when a call fails or takes over a second, until its deadline
/// (Cairn's clerk does the same in `cairn_kv::Client`). The second
/// matters when the leader dies: an etcd follower holds a proposal it
/// forwarded to the dead leader for its whole request timeout (5 s), so a
/// client that waited that long would make etcd's failover look slower
/// than it is.
struct EtcdSession {
    members: Vec<RpcClient>,
    at: usize,
}

impl EtcdSession {
    const DEADLINE: Duration = Duration::from_secs(10);

    fn open(urls: &[String]) -> anyhow::Result<Self> {
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(1),
        };
        let members = urls
            .iter()
            .map(|url| RpcClient::new(url.clone(), options.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Self { members, at: 0 })
    }

    async fn call<Req, Resp, F, Fut>(&mut self, request: Req, f: F) -> anyhow::Result<Resp>
    where
        Req: prost::Message + Clone,
        Resp: prost::Message,
        F: Fn(cairn_rpc::tonic::transport::Channel, cairn_rpc::tonic::Request<Req>) -> Fut + Clone,
        Fut: std::future::Future<
                Output = Result<cairn_rpc::tonic::Response<Resp>, cairn_rpc::tonic::Status>,
            >,
    {
        let deadline = Instant::now() + Self::DEADLINE;
        loop {
            match self.members[self.at].call(request.clone(), f.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(error) if Instant::now() >= deadline => return Err(error.into()),
                Err(_) => self.at = (self.at + 1) % self.members.len(),
            }
        }
    }
}

impl Session {
    fn open(target: &Target) -> anyhow::Result<Self> {
        let config = ClientConfig {
            call_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(10),
        };
        Ok(match target {
            Target::Cairn(endpoints) => Session::Cairn(Client::new(endpoints, config)?),
            Target::Sharded(controllers) => {
                let config = cairn_shardkv::ClientConfig {
                    deadline: Duration::from_secs(10),
                    ..cairn_shardkv::ClientConfig::default()
                };
                let client =
                    cairn_shardkv::Client::new(controllers, cairn_shardkv::shard_of, config)?;
                Session::Sharded(Box::new(client))
            }
            Target::Etcd(members) => Session::Etcd(EtcdSession::open(members)?),
        })
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Session::Cairn(client) => {
                client.put(key, value).await?;
            }
            Session::Sharded(client) => {
                client.put(key, value).await?;
            }
            Session::Etcd(client) => {
                let request = PutRequest {
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::copy_from_slice(value),
                    ..Default::default()
                };
                client
                    .call(request, |c, r| async move { EtcdKv::new(c).put(r).await })
                    .await?;
            }
        }
        Ok(())
    }

    async fn get(&mut self, key: &[u8]) -> anyhow::Result<()> {
        match self {
            Session::Cairn(client) => {
                client.get(key).await?;
            }
            Session::Sharded(client) => {
                client.get(key).await?;
            }
            Session::Etcd(client) => {
                let request = RangeRequest {
                    key: Bytes::copy_from_slice(key),
                    ..Default::default()
                };
                client
                    .call(request, |c, r| async move { EtcdKv::new(c).range(r).await })
                    .await?;
            }
        }
        Ok(())
    }
}

pub(crate) fn run(args: KvBenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.keys == 0 || args.key_size == 0 {
        bail!("--clients, --keys and --key-size must be above zero");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut targets = Vec::new();
        if !args.etcd_only {
            targets.push(Target::cairn(&args.endpoints).await?);
        }
        if !args.etcd.is_empty() {
            let leader = etcd_leader(&args.etcd).await?;
            let mut members = vec![leader.clone()];
            members.extend(args.etcd.iter().filter(|url| **url != leader).cloned());
            targets.push(Target::Etcd(members));
        }
        if targets.is_empty() {
            bail!("--etcd-only needs --etcd ENDPOINTS");
        }
        if !args.json {
            println!(
                "workload {:?}, {} clients, {} keys of {} B, values of {} B, {} s after a 1 s warm-up",
                args.workload, args.clients, args.keys, args.key_size, args.value_size, args.seconds
            );
            println!("{:<6} {:>12} {:>10} {:>10} {:>10} {:>8}", "system", "ops/s", "p50", "p99", "p999", "errors");
        }
        let mut results = Vec::new();
        for target in &targets {
            let outcome = measure(target, &args).await?;
            print_result(target.name(), &outcome, &args);
            if outcome.completed() == 0 {
                bail!("{}", nothing_completed(target, &outcome, &args));
            }
            results.push((target.name(), outcome));
        }
        if let [(_, cairn), (_, etcd)] = &results[..]
            && !args.json
        {
            println!(
                "cairn/etcd: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x (below 1 is faster)",
                cairn.rate() / etcd.rate().max(1e-9),
                cairn.percentile_ms(0.5) / etcd.percentile_ms(0.5).max(1e-9),
                cairn.percentile_ms(0.99) / etcd.percentile_ms(0.99).max(1e-9),
            );
        }
        Ok(())
    })
}

/// Puts by `clients` clients for `seconds` (after the 1 s warm-up)
/// against the Cairn cluster at `endpoints`, every other setting at this
/// benchmark's defaults: the reference `cairn bench fs` sets file creates
/// beside. Fails if no put completed.
pub(crate) async fn put_outcome(
    endpoints: &[String],
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    use clap::{Args as _, FromArgMatches as _};
    let command = KvBenchArgs::augment_args(clap::Command::new("kv"));
    let matches = command
        .try_get_matches_from([
            "kv".to_string(),
            format!("--endpoints={}", endpoints.join(",")),
            format!("--clients={clients}"),
            format!("--seconds={seconds}"),
        ])
        .context("building the key/value workload's settings")?;
    let args = KvBenchArgs::from_arg_matches(&matches)?;
    let target = Target::Cairn(endpoints.to_vec());
    let outcome = measure(&target, &args).await?;
    if outcome.completed() == 0 {
        bail!("{}", nothing_completed(&target, &outcome, &args));
    }
    Ok(outcome)
}

/// The etcd member that leads (clients of the benchmark talk to it, as
/// Cairn's clerks talk to Cairn's leader).
async fn etcd_leader(endpoints: &[String]) -> anyhow::Result<String> {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(2),
    };
    let mut first_error = None;
    for url in endpoints {
        let client = RpcClient::new(url.clone(), options.clone())?;
        match client
            .call(StatusRequest {}, |c, r| async move {
                MaintenanceClient::new(c).status(r).await
            })
            .await
        {
            Ok(status) => {
                let member = status.header.map(|h| h.member_id).unwrap_or_default();
                if member != 0 && member == status.leader {
                    return Ok(url.clone());
                }
            }
            Err(error) => {
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    match first_error {
        Some(error) if endpoints.len() == 1 => {
            bail!("etcd at {} did not answer: {error}", endpoints[0])
        }
        _ => {
            tracing::warn!(
                "no etcd member reported itself leader; using {}",
                endpoints[0]
            );
            Ok(endpoints[0].clone())
        }
    }
}

/// Why a run that completed nothing failed, and what to check.
fn nothing_completed(target: &Target, outcome: &Outcome, args: &KvBenchArgs) -> String {
    let (what, check) = match target {
        Target::Cairn(endpoints) | Target::Sharded(endpoints) => (
            format!("cairn at {}", endpoints.join(",")),
            format!(
                "check that the cluster runs and has a leader: `cairn kv status --endpoints {}`",
                endpoints.join(",")
            ),
        ),
        Target::Etcd(members) => (
            format!("etcd at {}", members.join(",")),
            "check that etcd runs and has a leader".to_string(),
        ),
    };
    let first = outcome
        .first_error
        .as_deref()
        .map_or(String::new(), |e| format!("; the first error: {e}"));
    format!(
        "no operation completed against {what} in {} s ({} errors{first}); {check}",
        args.seconds, outcome.errors
    )
}

fn key(index: usize, size: usize) -> Vec<u8> {
    let digits = format!("{index}");
    let mut key = vec![b'k'; size.saturating_sub(digits.len())];
    key.extend_from_slice(digits.as_bytes());
    key
}

async fn measure(target: &Target, args: &KvBenchArgs) -> anyhow::Result<Outcome> {
    let value = vec![b'v'; args.value_size];
    if args.workload != Workload::Put {
        preload(target, args, &value).await?;
    }
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let mut session = Session::open(target)?;
        let (value, keys, key_size, workload) =
            (value.clone(), args.keys, args.key_size, args.workload);
        tasks.push(tokio::spawn(async move {
            let mut rng = cairn_rpc::seeded_rng();
            let mut tally = Tally::default();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let key = key(rng.gen_range(0..keys), key_size);
                let read = match workload {
                    Workload::Put => false,
                    Workload::Get => true,
                    Workload::Mixed => rng.gen_bool(0.5),
                };
                let result = if read {
                    session.get(&key).await
                } else {
                    session.put(&key, &value).await
                };
                tally.record(started, warm_up, &result);
            }
            tally
        }));
    }
    let mut outcome = Outcome::new(Duration::from_secs(args.seconds));
    for task in tasks {
        outcome.add_tally(task.await.context("a client task failed")?);
    }
    let outcome = outcome.sorted();
    Ok(outcome)
}

/// Writes every key once, so that reads find values.
async fn preload(target: &Target, args: &KvBenchArgs, value: &[u8]) -> anyhow::Result<()> {
    let workers = args.clients.min(64);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let mut session = Session::open(target)?;
        let (value, keys, key_size) = (value.to_vec(), args.keys, args.key_size);
        tasks.push(tokio::spawn(async move {
            for index in (worker..keys).step_by(workers) {
                session.put(&key(index, key_size), &value).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await
            .context("a preload task failed")?
            .with_context(|| format!("preloading {}", target.name()))?;
    }
    Ok(())
}

fn print_result(name: &str, outcome: &Outcome, args: &KvBenchArgs) {
    let rate = outcome.rate();
    if args.json {
        let row = serde_json::json!({
            "system": name,
            "workload": format!("{:?}", args.workload).to_lowercase(),
            "clients": args.clients,
            "ops_per_sec": rate,
            "p50_ms": outcome.percentile_ms(0.5),
            "p99_ms": outcome.percentile_ms(0.99),
            "p999_ms": outcome.percentile_ms(0.999),
            "longest_gap_ms": outcome.longest_gap().as_secs_f64() * 1e3,
            "errors": outcome.errors,
        });
        println!("{row}");
    } else {
        println!(
            "{name:<6} {rate:>12.0} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8}",
            outcome.percentile_ms(0.5),
            outcome.percentile_ms(0.99),
            outcome.percentile_ms(0.999),
            outcome.errors
        );
    }
}
