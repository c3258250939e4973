//! The command line: every command and flag, and the dispatch to them.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory as _, Parser, Subcommand};

use crate::config::{Config, ConfigOverrides, Source};

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
    /// Where Cairn keeps its data (default ./cairn-data). Used by `cluster`,
    /// the `serve` commands, `mr run|coordinator|worker` and `bench fs` (its
    /// run's directory goes inside); other commands refuse the flag.
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
    /// Print the effective configuration, where each value came from (flag,
    /// environment variable, file or default) and every CAIRN_* variable
    /// set. `--help` lists every key the --config file may hold.
    #[command(after_long_help = crate::config::FILE_HELP)]
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
    /// The GFS-style file store: run a master node (`serve-master`) or a
    /// chunkserver (`serve-chunk`), or use a store (`put`, `get`, `cat`,
    /// `ls`, `mkdir`, `rm`, `mv`, `stat`, `append`, `status`).
    #[command(subcommand)]
    Fs(crate::fs::FsCommand),
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

/// The commands that read or write under `--data-dir`, as their names on
/// the command line; the others refuse the flag (the global flag is
/// accepted everywhere by the parser, so a misplaced one would otherwise be
/// silently ignored).
const DATA_DIR_COMMANDS: [&str; 12] = [
    "config",
    "bench fs",
    "cluster",
    "kv serve",
    "kv snapshot restore",
    "shardctl serve",
    "shardkv serve",
    "fs serve-master",
    "fs serve-chunk",
    "mr run",
    "mr coordinator",
    "mr worker",
];

/// The command's name as typed, e.g. `kv get`.
pub(crate) fn command_name(matches: &ArgMatches) -> String {
    let mut names = Vec::new();
    let mut current = matches;
    while let Some((name, sub)) = current.subcommand() {
        names.push(name.to_string());
        current = sub;
    }
    names.join(" ")
}

/// Refuses `--data-dir` on the command line of a command that does not use
/// it (the environment variable stays allowed: it is set for every
/// command at once).
pub(crate) fn check_data_dir(matches: &ArgMatches) -> Result<(), String> {
    let command = command_name(matches);
    if value_source(matches, "data_dir") == Some(ValueSource::CommandLine)
        && !DATA_DIR_COMMANDS.contains(&command.as_str())
    {
        return Err(format!(
            "`cairn {command}` does not use --data-dir (only {} do); remove the flag",
            DATA_DIR_COMMANDS.map(|c| format!("`{c}`")).join(", ")
        ));
    }
    Ok(())
}

/// Where a global argument's value came from. Global arguments are
/// recorded in the matches of the subcommand they were typed after, so
/// this looks at every level.
fn value_source(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    let mut found = matches.value_source(id);
    let mut current = matches;
    while let Some((_, sub)) = current.subcommand() {
        if let Some(source) = sub.value_source(id) {
            found = Some(found.map_or(source, |f| f.max(source)));
        }
        current = sub;
    }
    found
}

/// Every `CAIRN_*` variable some flag reads, with the flag it sets, from
/// the parser's own definition (so the list cannot fall behind).
pub(crate) fn known_environment() -> Vec<(String, String)> {
    fn walk(command: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for arg in command.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                let env = env.to_string_lossy().into_owned();
                let flag = if arg.is_global_set() || path.is_empty() {
                    format!("--{long}")
                } else {
                    format!("--{long} of `cairn {path}`")
                };
                if !out.iter().any(|(known, _)| *known == env) {
                    out.push((env, flag));
                }
            }
        }
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            walk(sub, path.trim(), out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), "", &mut out);
    out.sort();
    out.push((
        crate::cluster::LAUNCHER_PID_VARIABLE.to_string(),
        crate::config::INTERNAL_VARIABLE.to_string(),
    ));
    out
}

/// The configuration from the global flags (and their environment
/// variables), the optional file and the defaults.
pub(crate) fn resolve_config(global: &GlobalArgs, matches: &ArgMatches) -> anyhow::Result<Config> {
    let source = |id: &str, env: &str| match value_source(matches, id) {
        Some(ValueSource::EnvVariable) => Source::Env(env.to_string()),
        _ => Source::Flag,
    };
    let overrides = ConfigOverrides {
        data_dir: global
            .data_dir
            .clone()
            .map(|dir| (dir, source("data_dir", "CAIRN_DATA_DIR"))),
        log_level: global
            .log_level
            .clone()
            .map(|level| (level, source("log_level", "CAIRN_LOG_LEVEL"))),
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
                let environment =
                    Config::describe_environment(std::env::vars(), &known_environment());
                crate::progress::print_stdout(&format!("{}\n{environment}", config.describe()));
            }
            Ok(())
        }
        Command::Mr(command) => crate::mr::run(command, &config),
        Command::Bench(command) => crate::bench::run(command, &config),
        Command::Cluster(args) => crate::cluster::run(args, &config),
        Command::Kv(command) => crate::kv::run(command, &config),
        Command::Shardctl(command) => crate::shardctl::run(command, &config),
        Command::Shardkv(command) => crate::shardkv::run(command, &config),
        Command::Fs(command) => crate::fs::run(command, &config),
    }
}
