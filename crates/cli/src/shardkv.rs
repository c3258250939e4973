//! `cairn shardkv serve`: run one server of a sharded store's replica
//! group. Clients use `cairn kv`, which finds out by itself that the
//! endpoints it was given are shard controllers.

use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_shardkv::{ShardKvServer, shard_of};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::kv::{ServeArgs, prepare_node, run_until_stopped};
use crate::member::{self, Group, MemberAction, TransferArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum ShardkvCommand {
    /// Run one server of a replica group (data in --data-dir).
    ///
    /// Every server of the group needs the same --gid and --peers; every
    /// server of every group the same --controllers and --shards, e.g.
    /// `cairn shardkv serve --gid 1 --id 1 --peers 1=http://10.0.0.1:7711,2=...,3=...
    /// --controllers http://10.0.0.1:7701,http://10.0.0.2:7701,http://10.0.0.3:7701`.
    /// Then add the group with `cairn shardctl join 1=URL,URL,URL`.
    Serve(GroupServeArgs),
    /// A replica group's members: `member list --gid G`, `member
    /// add-learner URL --gid G`, `member promote ID --gid G`, `member
    /// remove ID --gid G` (as `cairn kv member`). The group's servers are
    /// found in the controllers' latest configuration.
    #[command(subcommand)]
    Member(MemberAction<GroupArgs>),
    /// Hand a replica group's leadership to voter ID (`--gid G`).
    TransferLeader(TransferArgs<GroupArgs>),
}

/// Which replica group a membership command is for.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// The replica group's id.
    #[arg(long)]
    gid: u64,
    /// The shard controllers, comma-separated.
    #[arg(long, env = "CAIRN_SHARDCTL_ENDPOINTS", value_delimiter = ',',
          default_value = crate::shardctl::DEFAULT_ENDPOINTS)]
    controllers: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds (at least 1).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

impl GroupArgs {
    /// The group's servers, as the controllers' latest configuration
    /// lists them.
    async fn group(&self) -> anyhow::Result<Group> {
        let timeout = Duration::from_secs(self.timeout);
        let controllers =
            cairn_shardctrler::Client::new(&self.controllers, Duration::from_secs(2), timeout)
                .map_err(|e| anyhow::anyhow!("{e}; pass --controllers http://HOST:PORT,..."))?;
        let latest = controllers.query(None).await?;
        let Some(servers) = latest.groups.get(&self.gid) else {
            let gids: Vec<String> = latest.groups.keys().map(u64::to_string).collect();
            bail!(
                "group {} is not in the controllers' latest configuration (groups: {}); check \
                 --gid, or join the group first: cairn shardctl join {}=URL,...",
                self.gid,
                if gids.is_empty() {
                    "none".into()
                } else {
                    gids.join(", ")
                },
                self.gid
            );
        };
        Ok(Group {
            endpoints: servers.clone(),
            timeout,
            json: self.json,
            command: ("cairn shardkv", format!(" --gid {}", self.gid)),
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct GroupServeArgs {
    /// The replica group's id (above 0), as given to `cairn shardctl join`.
    #[arg(long)]
    gid: u64,
    #[command(flatten)]
    node: ServeArgs,
    /// The shard controllers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = crate::shardctl::DEFAULT_ENDPOINTS)]
    controllers: Vec<String>,
    /// The number of shards: the controllers' --shards.
    #[arg(long, default_value_t = cairn_shardctrler::DEFAULT_SHARDS)]
    shards: usize,
}

pub(crate) fn run(command: ShardkvCommand, config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let args = match command {
        ShardkvCommand::Serve(args) => args,
        ShardkvCommand::Member(action) => {
            return runtime.block_on(async {
                let group = action.target().group().await?;
                member::run(action, &group).await
            });
        }
        ShardkvCommand::TransferLeader(args) => {
            return runtime.block_on(async {
                member::transfer_leader(args.id, &args.target.group().await?).await
            });
        }
    };
    if args.gid == 0 {
        bail!("--gid 0 is reserved (it means no group); use 1 or above");
    }
    if args.shards == 0 {
        bail!("--shards must be at least 1");
    }
    runtime.block_on(serve(args, config))
}

async fn serve(args: GroupServeArgs, config: &Config) -> anyhow::Result<()> {
    let mut prepared = prepare_node(&args.node, config).await?;
    let (id, gid) = (prepared.id, args.gid);
    let server = ShardKvServer::start(
        prepared.node_config.clone(),
        prepared.disk.clone(),
        gid,
        args.shards,
        shard_of,
        &args.controllers,
    )
    .map_err(|e| anyhow::anyhow!("group {gid} server {id} cannot start: {e}"))?;
    let (addr, task) = serve_node!(server, prepared.listen)?;
    let what = format!("group {gid} server {id}");
    let metrics = prepared.serve_metrics(server.node(), &what)?;
    tracing::info!(
        "group {gid} server {id} serving on {addr}, data in {}",
        prepared.data_dir.display()
    );
    let outcome = run_until_stopped(server.node(), &what).await;
    tracing::info!("group {gid} server {id} stopping");
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .ok();
    task.abort();
    metrics.inspect(|task| task.abort());
    outcome
}
