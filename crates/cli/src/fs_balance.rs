//! `cairn fs decommission NODE [--wait]`, `cairn fs recommission NODE` and
//! `cairn fs balance [--threshold 10]`.
//!
//! Decommissioning is a mark in the master's log: the leader checks the
//! node and records it; its healer then copies the node's chunks to the
//! others, and `df`/`report` show it "decommissioned" once every chunk it
//! holds has its goal elsewhere. `--wait` polls that, with progress.
//!
//! Balancing runs on the master leader (its heal rounds plan the moves and
//! carry them out as clones); this command starts it and then asks it how
//! far it is every half second, printing progress, until it answers
//! balanced or stuck. If the leader changes, the next call starts a run on
//! the new one; if the command is stopped, the leader finishes the round
//! in progress and goes on until balanced or stuck.

use std::time::Duration;

use anyhow::bail;
use cairn_fs::MasterClient;
use cairn_rpc::fs::{BalanceReply, ServerUsage};
use clap::Args;

use crate::fs::MastersArgs;
use crate::progress::print_stdout;

/// How often `--wait` and `balance` look again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub(crate) struct DecommissionArgs {
    /// The chunkserver's URL, as `cairn fs df` lists it.
    node: String,
    /// Wait until it is drained (every chunk it holds has its goal
    /// elsewhere), printing progress.
    #[arg(long)]
    wait: bool,
    /// Seconds `--wait` waits before giving up.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    wait_timeout: u64,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RecommissionArgs {
    /// The chunkserver's URL, as `cairn fs df` lists it.
    node: String,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BalanceArgs {
    /// Every live chunkserver's used share of its capacity should end
    /// within this many percentage points of the cluster's.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    threshold: u32,
    /// Seconds to wait for the balance before giving up (it goes on).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    wait_timeout: u64,
    #[command(flatten)]
    masters: MastersArgs,
}

fn master(args: &MastersArgs) -> anyhow::Result<MasterClient> {
    Ok(MasterClient::new(
        &args.masters,
        Duration::from_secs(2),
        Duration::from_secs(args.timeout),
    )?)
}

/// A server's service state for `df` and `report`.
pub(crate) fn service_state(server: &ServerUsage) -> String {
    match (server.decommissioning, server.decommissioned) {
        (false, _) => "in service".to_string(),
        (true, true) => "decommissioned".to_string(),
        (true, false) => format!("decommissioning ({} chunks left)", server.draining_chunks),
    }
}

/// The fields of a server's service state, for JSON.
pub(crate) fn service_json(server: &ServerUsage) -> serde_json::Value {
    serde_json::json!({"decommissioning": server.decommissioning,
        "decommissioned": server.decommissioned, "draining_chunks": server.draining_chunks})
}

pub(crate) async fn decommission(args: DecommissionArgs) -> anyhow::Result<()> {
    let client = master(&args.masters)?;
    let message = client.decommission(&args.node, false).await?;
    if !args.wait {
        print_stdout(&format!("{message}\n"));
        return Ok(());
    }
    eprintln!("{message}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout);
    loop {
        let usage = client.usage().await?;
        let Some(row) = usage.servers.iter().find(|s| s.url == args.node) else {
            bail!(
                "the master no longer lists {}; check `cairn fs df`",
                args.node
            );
        };
        if row.decommissioned {
            eprintln!();
            print_stdout(&match args.masters.json {
                true => format!(
                    "{}\n",
                    serde_json::json!({"url": args.node, "decommissioned": true})
                ),
                false => format!(
                    "{} is decommissioned: every chunk it held has its goal elsewhere; it can be stopped now\n",
                    args.node
                ),
            });
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} still holds {} chunks short of their goal elsewhere after {}s; it keeps draining: check that enough chunkservers are live (`cairn fs df`), then run decommission --wait again",
                args.node,
                row.draining_chunks,
                args.wait_timeout
            );
        }
        eprint!(
            "\r{}: {} chunks left to copy   ",
            args.node, row.draining_chunks
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub(crate) async fn recommission(args: RecommissionArgs) -> anyhow::Result<()> {
    let message = master(&args.masters)?
        .decommission(&args.node, true)
        .await?;
    print_stdout(&format!("{message}\n"));
    Ok(())
}

fn render_balance(reply: &BalanceReply, json: bool) -> String {
    if json {
        let servers: Vec<serde_json::Value> = reply
            .servers
            .iter()
            .map(|s| serde_json::json!({"url": s.url, "used_percent": s.used_percent}))
            .collect();
        return format!(
            "{}\n",
            serde_json::json!({"balanced": reply.balanced, "stuck": reply.stuck,
            "message": reply.message, "mean_percent": reply.mean_percent,
            "moves_done": reply.moves_done, "servers": servers})
        );
    }
    let mut out = format!("{:<28} {:>7}\n", "chunkserver", "used %");
    for s in &reply.servers {
        out.push_str(&format!("{:<28} {:>7.1}\n", s.url, s.used_percent));
    }
    out.push_str(&format!(
        "mean {:.1}%, {} replicas moved: {}\n",
        reply.mean_percent, reply.moves_done, reply.message
    ));
    out
}

pub(crate) async fn balance(args: BalanceArgs) -> anyhow::Result<()> {
    let client = master(&args.masters)?;
    let mut reply = client.balance(args.threshold, true).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout);
    while !reply.balanced && !reply.stuck {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "not balanced after {}s ({} replicas moved, {} moving); the master goes on: run balance again to follow it",
                args.wait_timeout,
                reply.moves_done,
                reply.moves_in_flight
            );
        }
        eprint!(
            "\r{} replicas moved, {} moving; mean {:.1}%   ",
            reply.moves_done, reply.moves_in_flight, reply.mean_percent
        );
        tokio::time::sleep(POLL_INTERVAL).await;
        reply = client.balance(args.threshold, false).await?;
    }
    eprintln!();
    print_stdout(&render_balance(&reply, args.masters.json));
    if reply.stuck {
        bail!(
            "the store is not balanced and no move can help: {}",
            reply.message
        );
    }
    Ok(())
}
