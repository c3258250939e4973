//! The `cairn` binary: one command for every Cairn system.
//!
//! `main` parses the command line ([`cli`]), sets up logging (`RUST_LOG`, or
//! `--log-level`), resolves the configuration ([`config`]: flags, then
//! `CAIRN_*` environment variables, then an optional TOML file, then
//! defaults) and runs the chosen command. Errors are printed once, with what
//! to do next, and turn into exit code 1 (2 for usage errors, from clap).

/// Serves a node's gRPC services on `listen`: with every serving limit
/// (`cairn_rpc::serve_routes`) in the normal build, through the plain
/// router in the simulation build (whose tonic has no `Routes` to add to).
/// Evaluates to `anyhow::Result<(SocketAddr, task)>`.
macro_rules! serve_node {
    ($server:expr, $listen:expr) => {{
        #[cfg(not(madsim))]
        let served = cairn_rpc::serve_routes(
            $server.routes(),
            $listen,
            &cairn_rpc::ServeOptions::default(),
        )
        .await;
        #[cfg(madsim)]
        let served = cairn_rpc::serve($server.router(), $listen).await;
        served
    }};
}

/// mimalloc instead of the system allocator: on a 3-node cluster on one
/// machine it took 10-18% less CPU per put and per read at 64 clients
/// (scripts/bench-vs-etcd's workloads; figures in issue 17's note).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_kv;
mod bench_raft;
mod cli;
mod cluster;
mod config;
mod coordinator_metrics;
mod fs;
mod fs_admin;
mod fs_balance;
mod fs_heal;
mod fs_health;
mod fs_safemode;
mod fs_trash;
mod kv;
mod kv_status;
mod member;
#[cfg(not(madsim))]
mod metrics_http;
#[cfg(madsim)]
#[path = "metrics_http_sim.rs"]
mod metrics_http;
mod mr;
mod probe;
mod progress;
mod shardctl;
mod shardkv;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let Err(message) = cli::check_data_dir(&matches) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let result = cluster::exit_with_launcher()
        .and_then(|()| cli::resolve_config(&cli.global, &matches))
        .and_then(|config| {
            init_logging(&config.log_level.0);
            cli::run(cli.command, config)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.is::<fs_admin::UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs go to stderr. `RUST_LOG` (full `tracing` filter syntax) wins over
/// the configured level, which applies to Cairn's own crates (`warn` for the
/// rest).
fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(format!(
            "warn,cairn={level},cairn_rpc={level},cairn_storage={level},cairn_rsm={level},cairn_kv={level},cairn_shardkv={level},cairn_shardctrler={level},cairn_mapreduce={level}"
        )),
    };
    // Colour only on a terminal: log files and pipes get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .init();
}
