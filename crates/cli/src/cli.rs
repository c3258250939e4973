//! The command line: every command and flag, and the dispatch to them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigOverrides};

/// Cairn: MapReduce, Raft and a replicated key/value store in one binary.
///
/// Configuration comes from flags, then CAIRN_* environment variables, then
/// the TOML file given by --config (or CAIRN_CONFIG), then defaults. Logs go
/// to stderr; set RUST_LOG (e.g. RUST_LOG=cairn=debug) for more detail.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// A TOML configuration file (see `cairn config --help`).
    #[arg(long, global = true, env = "CAIRN_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where Cairn keeps its data.
    #[arg(long, global = true, env = "CAIRN_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Log level for Cairn's own messages: error, warn, info, debug or trace.
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, global = true, env = "CAIRN_LOG_LEVEL", value_name = "LEVEL",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub(crate) log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the effective configuration and where each value came from.
    ///
    /// The TOML file may hold any of these keys, e.g.:
    ///
    ///     data_dir = "/var/lib/cairn"
    ///     log_level = "debug"
    Config(ConfigArgs),
    /// MapReduce: run jobs here (`run`), across machines (`coordinator`,
    /// `worker`, `status`), or sequentially (`seq`).
    #[command(subcommand)]
    Mr(crate::mr::MrCommand),
    /// Start a local key/value cluster: N nodes as separate processes on
    /// 127.0.0.1, data under --data-dir (default ./cairn-data), reused on the
    /// next run. Ctrl-C stops every node.
    Cluster(crate::cluster::ClusterArgs),
    /// The replicated key/value store: run a node (`serve`) or use a
    /// cluster (`get`, `put`, `append`, `del`, `cas`, `status`).
    #[command(subcommand)]
    Kv(crate::kv::KvCommand),
    /// The shard controller, which assigns shards to replica groups: run a
    /// node (`serve`) or change and read its configurations (`join`,
    /// `leave`, `move`, `query`).
    #[command(subcommand)]
    Shardctl(crate::shardctl::ShardctlCommand),
    /// The sharded key/value store's replica groups: run a server
    /// (`serve`). Use `cairn kv` against the controllers to read and write.
    #[command(subcommand)]
    Shardkv(crate::shardkv::ShardkvCommand),
    /// Benchmarks and their baselines.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// Print the configuration as TOML only (a file you can start from).
    #[arg(long)]
    pub(crate) toml: bool,
}

/// The configuration from the global flags (and their environment
/// variables), the optional file and the defaults.
pub(crate) fn resolve_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let overrides = ConfigOverrides {
        data_dir: global.data_dir.clone(),
        log_level: global.log_level.clone(),
    };
    Config::resolve(global.config.as_deref(), overrides)
}

/// Runs the parsed command.
pub(crate) fn run(command: Command, config: Config) -> anyhow::Result<()> {
    tracing::debug!(?config, "configuration resolved");
    match command {
        Command::Config(args) => {
            if args.toml {
                crate::progress::print_stdout(&config.to_toml()?);
            } else {
                crate::progress::print_stdout(&config.describe());
            }
            Ok(())
        }
        Command::Mr(command) => crate::mr::run(command, &config),
        Command::Bench(command) => crate::bench::run(command),
        Command::Cluster(args) => crate::cluster::run(args, &config),
        Command::Kv(command) => crate::kv::run(command, &config),
        Command::Shardctl(command) => crate::shardctl::run(command, &config),
        Command::Shardkv(command) => crate::shardkv::run(command, &config),
    }
}
