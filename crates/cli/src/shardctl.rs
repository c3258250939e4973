//! `cairn shardctl`: run a shard controller node (`serve`) and change or
//! read its configurations (`join`, `leave`, `move`, `query`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_shardctrler::{Client, Config as ShardConfig, CtrlerServer, DEFAULT_SHARDS, Gid};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::kv::{ServeArgs, prepare_node, run_until_stopped};
use crate::member::{self, Group, MemberAction, TransferArgs};
use crate::progress::print_stdout;

/// The controllers a local sharded cluster (`cairn cluster --sharded`)
/// runs: the same addresses as a plain local cluster's nodes.
pub(crate) const DEFAULT_ENDPOINTS: &str = crate::kv::DEFAULT_ENDPOINTS;

#[derive(Debug, Subcommand)]
pub(crate) enum ShardctlCommand {
    /// Run one node of a shard controller cluster (data in --data-dir).
    ///
    /// Every node needs the same --peers list and the same --shards, e.g.
    /// `cairn shardctl serve --id 1 --peers 1=http://10.0.0.1:7701,2=http://10.0.0.2:7701,3=http://10.0.0.3:7701`.
    Serve(CtrlServeArgs),
    /// Add replica groups, each as GID=SERVER[,SERVER...]; shards are
    /// rebalanced, moving as few as possible.
    ///
    /// First every named group is checked: a majority of its servers must
    /// answer as servers of that group (`cairn shardkv serve --gid GID`),
    /// and none may be something else. A group joined at a wrong address
    /// would take shards that nobody serves. --force skips the check.
    Join(JoinArgs),
    /// Remove replica groups; their shards go to the others.
    Leave(LeaveArgs),
    /// Assign one shard to one group.
    Move(MoveArgs),
    /// Print a configuration (the latest without a number).
    Query(QueryArgs),
    /// The controllers' members: `member list`, `member add-learner URL`,
    /// `member promote ID`, `member remove ID` (as `cairn kv member`).
    #[command(subcommand)]
    Member(MemberAction<CtrlClientArgs>),
    /// Hand the controllers' leadership to voter ID.
    TransferLeader(TransferArgs<CtrlClientArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct CtrlServeArgs {
    #[command(flatten)]
    node: ServeArgs,
    /// The number of shards; fixed when the cluster is created, the same on
    /// every node.
    #[arg(long, default_value_t = DEFAULT_SHARDS)]
    shards: usize,
}

#[derive(Debug, Args)]
pub(crate) struct CtrlClientArgs {
    /// The controllers, comma-separated.
    #[arg(long, env = "CAIRN_SHARDCTL_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINTS)]
    endpoints: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    /// Groups as GID=SERVER[,SERVER...], e.g. 1=http://10.0.0.1:7901,http://10.0.0.2:7901.
    #[arg(required = true)]
    groups: Vec<String>,
    /// Join without checking that the groups' servers answer (their shards
    /// then wait until the group runs, or until `cairn shardctl leave GID`
    /// gives them back).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    client: CtrlClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LeaveArgs {
    /// The groups' ids.
    #[arg(required = true)]
    gids: Vec<Gid>,
    #[command(flatten)]
    client: CtrlClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MoveArgs {
    /// The shard (0 to the shard count - 1).
    shard: usize,
    /// The group that gets it.
    gid: Gid,
    #[command(flatten)]
    client: CtrlClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The configuration's number (default: the latest).
    num: Option<u64>,
    #[command(flatten)]
    client: CtrlClientArgs,
}

pub(crate) fn run(command: ShardctlCommand, config: &Config) -> anyhow::Result<()> {
    if let ShardctlCommand::Serve(args) = &command
        && args.shards == 0
    {
        bail!("--shards must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            ShardctlCommand::Serve(args) => serve(args, config).await,
            ShardctlCommand::Member(action) => {
                let group = group(action.target());
                member::run(action, &group).await
            }
            ShardctlCommand::TransferLeader(args) => {
                member::transfer_leader(args.id, &group(&args.target)).await
            }
            ShardctlCommand::Join(args) => {
                let groups = parse_groups(&args.groups)?;
                if !args.force {
                    check_groups(&groups).await?;
                }
                let num = client(&args.client)?.join(&groups).await?;
                report_change(&args.client, "joined", num);
                Ok(())
            }
            ShardctlCommand::Leave(args) => {
                let num = client(&args.client)?.leave(&args.gids).await?;
                report_change(&args.client, "left", num);
                Ok(())
            }
            ShardctlCommand::Move(args) => {
                let num = client(&args.client)?
                    .move_shard(args.shard, args.gid)
                    .await?;
                report_change(&args.client, "moved", num);
                Ok(())
            }
            ShardctlCommand::Query(args) => {
                let config = client(&args.client)?.query(args.num).await?;
                print_config(&config, args.client.json);
                Ok(())
            }
        }
    })
}

/// The controllers' group, for the membership commands.
fn group(args: &CtrlClientArgs) -> Group {
    Group {
        endpoints: args.endpoints.clone(),
        timeout: Duration::from_secs(args.timeout),
        json: args.json,
        command: ("cairn shardctl", String::new()),
    }
}

fn client(args: &CtrlClientArgs) -> anyhow::Result<Client> {
    Client::new(
        &args.endpoints,
        Duration::from_secs(2),
        Duration::from_secs(args.timeout),
    )
    .map_err(|e| anyhow::anyhow!("{e}; pass --endpoints http://HOST:PORT,..."))
}

/// Parses `GID=SERVER[,SERVER...]` arguments.
fn parse_groups(groups: &[String]) -> anyhow::Result<BTreeMap<Gid, Vec<String>>> {
    let mut map = BTreeMap::new();
    for group in groups {
        let (gid, servers) = group.split_once('=').with_context(|| {
            format!("group {group:?} is not GID=SERVER[,SERVER...] (e.g. 1=http://10.0.0.1:7901)")
        })?;
        let gid: Gid = gid
            .trim()
            .parse()
            .with_context(|| format!("group {group:?}: the gid is not a number"))?;
        let servers: Vec<String> = servers
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            bail!("group {gid} lists no servers; write {gid}=http://HOST:PORT[,...]");
        }
        if map.insert(gid, servers).is_some() {
            bail!("group {gid} is named twice");
        }
    }
    Ok(map)
}

/// How long `join` waits for each server of a group to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a listed server turned out to be.
enum Checked {
    /// A server of the group named.
    Member,
    /// Something else, or a server of another group: never joinable.
    Wrong(String),
    /// No answer.
    Unreachable(String),
}

/// Checks that a majority of each group's servers answer as servers of
/// that group, and that none is something else.
async fn check_groups(groups: &BTreeMap<Gid, Vec<String>>) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    for (&gid, servers) in groups {
        for server in servers {
            let server = server.clone();
            checks.push((gid, server.clone(), tokio::spawn(check_server(gid, server))));
        }
    }
    let mut results: BTreeMap<Gid, Vec<(String, Checked)>> = BTreeMap::new();
    for (gid, server, check) in checks {
        let checked = check
            .await
            .unwrap_or_else(|e| Checked::Unreachable(e.to_string()));
        results.entry(gid).or_default().push((server, checked));
    }
    for (gid, servers) in results {
        let fix = format!(
            "check the URLs (each server's own URL in its --peers) and that the servers run \
             (`cairn shardkv serve --gid {gid} ...`); `cairn shardctl join --force` joins the \
             group anyway (its shards then wait for it, until `cairn shardctl leave {gid}`)"
        );
        for (server, checked) in &servers {
            if let Checked::Wrong(what) = checked {
                bail!("group {gid} cannot be joined: {server} {what}; {fix}");
            }
        }
        let answered = servers
            .iter()
            .filter(|(_, c)| matches!(c, Checked::Member))
            .count();
        let silent: Vec<String> = servers
            .iter()
            .filter_map(|(_, c)| match c {
                Checked::Unreachable(error) => Some(error.clone()),
                _ => None,
            })
            .collect();
        if answered * 2 <= servers.len() {
            bail!(
                "group {gid} cannot be joined: {answered} of its {} servers answer, not a \
                 majority ({}); {fix}",
                servers.len(),
                silent.join("; ")
            );
        }
        if !silent.is_empty() {
            eprintln!(
                "warning: group {gid}: {} (joining anyway: {answered} of {} servers answer)",
                silent.join("; "),
                servers.len()
            );
        }
    }
    Ok(())
}

/// Asks `server` for its status as a shard group server.
async fn check_server(gid: Gid, server: String) -> Checked {
    use cairn_rpc::kv::StatusRequest;
    use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
    let options = cairn_rpc::ClientOptions {
        connect_timeout: CHECK_TIMEOUT,
        call_timeout: CHECK_TIMEOUT,
    };
    let client = match cairn_rpc::RpcClient::new(server, options) {
        Ok(client) => client,
        Err(error) => return Checked::Wrong(format!("is not a valid address ({error})")),
    };
    let status = client
        .call(StatusRequest {}, |c, r| async move {
            ShardKvClient::new(c).status(r).await
        })
        .await;
    match status {
        Ok(status) if status.gid == gid => Checked::Member,
        Ok(status) => Checked::Wrong(format!(
            "is a server of group {}, not of group {gid}",
            status.gid
        )),
        Err(cairn_rpc::RpcError::Rejected { status, .. })
            if status.code() == cairn_rpc::tonic::Code::Unimplemented =>
        {
            Checked::Wrong(
                "answers but is not a shard group server (a key/value node or a shard \
                 controller?)"
                    .into(),
            )
        }
        Err(error) => Checked::Unreachable(error.to_string()),
    }
}

fn report_change(args: &CtrlClientArgs, done: &str, num: u64) {
    if args.json {
        print_stdout(&format!("{}\n", serde_json::json!({ "config": num })));
    } else {
        print_stdout(&format!("{done}: configuration {num}\n"));
    }
}

fn print_config(config: &ShardConfig, json: bool) {
    if json {
        let groups: serde_json::Map<String, serde_json::Value> = config
            .groups
            .iter()
            .map(|(gid, servers)| (gid.to_string(), serde_json::json!(servers)))
            .collect();
        print_stdout(&format!(
            "{}\n",
            serde_json::json!({ "num": config.num, "shards": config.shards, "groups": groups })
        ));
        return;
    }
    let mut out = format!("configuration {}\n", config.num);
    if config.groups.is_empty() {
        out.push_str("no groups; no shard is served\n");
    }
    for (gid, servers) in &config.groups {
        let shards = config.shards_of(*gid);
        out.push_str(&format!(
            "group {gid}: {} shard{} {:?}; servers {}\n",
            shards.len(),
            if shards.len() == 1 { "" } else { "s" },
            shards,
            servers.join(", ")
        ));
    }
    print_stdout(&out);
}

async fn serve(args: CtrlServeArgs, config: &Config) -> anyhow::Result<()> {
    let mut prepared = prepare_node(&args.node, config).await?;
    let id = prepared.id;
    let server = CtrlerServer::start(
        prepared.node_config.clone(),
        prepared.disk.clone(),
        args.shards,
    )
    .map_err(|e| anyhow::anyhow!("controller {id} cannot start: {e}"))?;
    let (addr, task) = serve_node!(server, prepared.listen)?;
    let metrics = prepared.serve_metrics(server.node(), &format!("controller {id}"))?;
    tracing::info!(
        "shard controller {id} serving on {addr} ({} shards), data in {}",
        args.shards,
        prepared.data_dir.display()
    );
    let outcome = run_until_stopped(server.node(), &format!("controller {id}")).await;
    tracing::info!("controller {id} stopping");
    server.node().shutdown().await;
    task.abort();
    metrics.inspect(|task| task.abort());
    outcome
}
