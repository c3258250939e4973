//! `cairn fs setrep N PATH [--wait]`: sets how many replicas a file's
//! chunks should have. The leader's healer then clones the missing ones or
//! deletes the extra ones in the background; `--wait` polls until every
//! chunk of PATH has exactly N good replicas (as the leader names them to
//! readers), printing progress, and gives up at `--wait-timeout`.

use std::time::Duration;

use anyhow::bail;
use cairn_fs::{Client, FsPath, MAX_REPLICATION};
use clap::Args;

use crate::fs::{MastersArgs, client, path};
use crate::progress::print_stdout;

/// How often `--wait` looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub(crate) struct SetrepArgs {
    /// How many replicas (1 to 16; at most the number of chunkservers).
    #[arg(value_parser = clap::value_parser!(u32).range(1..=MAX_REPLICATION as i64))]
    goal: u32,
    /// The file (a directory is refused: give each file).
    #[arg(value_parser = crate::fs_admin::StorePath)]
    path: String,
    /// Wait until every chunk has exactly that many replicas.
    #[arg(long)]
    wait: bool,
    /// Seconds `--wait` waits before giving up.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    wait_timeout: u64,
    #[command(flatten)]
    masters: MastersArgs,
}

/// How many of the chunks of `target` have `goal` good replicas, of how
/// many.
async fn at_goal(client: &Client, target: &FsPath, goal: u32) -> anyhow::Result<(usize, usize)> {
    let entry = client.stat(target).await?;
    let mut done = 0;
    for index in 0..entry.chunks.len() {
        let located = client.locate(target, index as u64, false).await?;
        if located.replicas.len() == goal as usize {
            done += 1;
        }
    }
    Ok((done, entry.chunks.len()))
}

pub(crate) async fn setrep(args: SetrepArgs) -> anyhow::Result<()> {
    let target = path(&args.path)?;
    let mut client = client(&args.masters)?;
    client.set_replication(&target, args.goal).await?;
    let report = |done: usize, total: usize| {
        if args.masters.json {
            print_stdout(&format!(
                "{}\n",
                serde_json::json!({"path": args.path, "replication": args.goal, "chunks": total, "at_goal": done})
            ));
        } else {
            print_stdout(&format!(
                "{}: replication {}, {done} of {total} chunks there\n",
                args.path, args.goal
            ));
        }
    };
    if !args.wait {
        let (done, total) = at_goal(&client, &target, args.goal).await?;
        report(done, total);
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout);
    let mut waited = false;
    loop {
        let (done, total) = at_goal(&client, &target, args.goal).await?;
        if done == total {
            if waited {
                eprintln!();
            }
            report(done, total);
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{done} of {total} chunks of {} have {} replicas after {}s; the store keeps healing: check that at least {} chunkservers are live (`cairn fs df`), then run setrep --wait again",
                args.path,
                args.goal,
                args.wait_timeout,
                args.goal
            );
        }
        eprint!("\r{done} of {total} chunks at {} replicas", args.goal);
        waited = true;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
