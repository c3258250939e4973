//! Seeing the store's health: `cairn fs fsck` (every chunk under a path,
//! its replicas verified now and compared; exit status 1 when anything is
//! below its goal, missing, corrupt or diverged), `cairn fs report` (per
//! chunkserver: space, chunks, last heartbeat, scrub figures) and
//! `cairn fs checksum` (a file's CRC32C from verified chunks).

use std::io::IsTerminal as _;

use anyhow::bail;
use cairn_fs::{ChunkHealth, FsckReport, Problem, ReplicaHealth, ReplicaState};
use cairn_rpc::fs::UsageReply;
use clap::Args;

use crate::fs::MastersArgs;
use crate::progress::{human_bytes, print_stdout};

/// Above this many chunks, fsck shows its progress on stderr even when it
/// is not a terminal.
const PROGRESS_ABOVE_CHUNKS: usize = 10_000;

#[derive(Debug, Args)]
pub(crate) struct FsckArgs {
    /// The directory or file to check (default /).
    #[arg(default_value = "/", value_parser = crate::fs_admin::StorePath)]
    path: String,
    /// A line per file.
    #[arg(long)]
    files: bool,
    /// A line per chunk (problem chunks are always listed).
    #[arg(long)]
    chunks: bool,
    /// A line per replica under each chunk listed.
    #[arg(long)]
    locations: bool,
    /// Check again every second until the store is healthy (the master
    /// heals it on its own), a summary line each time, then the report.
    #[arg(long)]
    watch: bool,
    /// Seconds `--watch` waits for a healthy store before giving up.
    #[arg(long, default_value_t = 600, requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..))]
    watch_timeout: u64,
    #[command(flatten)]
    masters: MastersArgs,
}

/// One line: how many chunks are unhealthy, and with what.
fn summary_line(report: &FsckReport) -> String {
    let total = report.chunks().count();
    if report.is_healthy() {
        return format!("healthy: {total} chunks, every one at its goal of good replicas");
    }
    let problems: Vec<String> = Problem::ALL
        .iter()
        .filter(|p| p.fails())
        .map(|&p| (p, report.count(p)))
        .filter(|&(_, n)| n > 0)
        .map(|(p, n)| format!("{n} {}", p.name()))
        .collect();
    format!(
        "degraded: {} of {total} chunks ({})",
        total - report.healthy_chunks(),
        problems.join(", ")
    )
}

/// `cairn fs fsck`.
pub(crate) async fn fsck(args: FsckArgs) -> anyhow::Result<()> {
    let root = crate::fs::path(&args.path)?;
    let mut client = crate::fs::client(&args.masters)?;
    let terminal = std::io::stderr().is_terminal();
    let mut progress = move |done: usize, total: usize| {
        if terminal || total > PROGRESS_ABOVE_CHUNKS {
            eprint!("\rfsck: checked {done} of {total} chunks");
            if done == total {
                eprintln!();
            }
        }
    };
    let mut report = cairn_fs::fsck(&mut client, &root, &mut progress).await?;
    if args.watch {
        let start = tokio::time::Instant::now();
        loop {
            eprintln!(
                "fsck {:>4.0}s  {}",
                start.elapsed().as_secs_f64(),
                summary_line(&report)
            );
            if report.is_healthy() || start.elapsed().as_secs() >= args.watch_timeout {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            report = cairn_fs::fsck(&mut client, &root, &mut progress).await?;
        }
    }
    if args.masters.json {
        print_stdout(&format!("{}\n", report_json(&report, &args.path)));
    } else {
        print_stdout(&render_fsck(&report, &args));
    }
    if !report.is_healthy() && args.watch {
        bail!(
            "{} is still not healthy after {} s (see the chunks listed above): check `cairn fs report` for dead or full chunkservers, and start more if fewer are live than a file's goal",
            args.path,
            args.watch_timeout
        );
    }
    if !report.is_healthy() {
        bail!(
            "{} is not healthy (see the chunks listed above); the master re-replicates what is below its goal: run fsck again later, or restart the dead chunkservers",
            args.path
        );
    }
    Ok(())
}

/// The words for a chunk's problems ("healthy" if none).
fn problem_words(problems: &[Problem]) -> String {
    if problems.is_empty() {
        return "healthy".into();
    }
    let names: Vec<&str> = problems.iter().map(|p| p.name()).collect();
    names.join(", ")
}

fn state_word(state: &ReplicaState) -> String {
    match state {
        ReplicaState::Good => "good".into(),
        ReplicaState::Stale => "stale".into(),
        ReplicaState::Corrupt(blocks) => {
            format!("corrupt (blocks {blocks:?} fail their checksums; set aside)")
        }
        ReplicaState::Unreadable(why) => format!("unreadable ({why})"),
        ReplicaState::Gone => "gone (the chunkserver holds none now)".into(),
        ReplicaState::Unreachable(why) => format!("unreachable ({why})"),
    }
}

fn replica_line(replica: &ReplicaHealth) -> String {
    let crc = replica
        .crc32c
        .map_or_else(String::new, |crc| format!(" crc32c {crc:08x}"));
    format!(
        "    {} version {} {} bytes{crc}: {}\n",
        replica.url,
        replica.version,
        replica.length,
        state_word(&replica.state)
    )
}

fn chunk_line(file: &str, chunk: &ChunkHealth) -> String {
    let bad: Vec<String> = chunk
        .replicas
        .iter()
        .filter(|r| r.state != ReplicaState::Good)
        .map(|r| format!("{} {}", r.url, state_word(&r.state)))
        .collect();
    let mut line = format!(
        "{file} chunk {} (handle {}, version {}): {}; {} of {} replicas good",
        chunk.index,
        chunk.handle,
        chunk.version,
        problem_words(&chunk.problems),
        chunk.good(),
        chunk.goal
    );
    if !bad.is_empty() {
        line.push_str(&format!("; {}", bad.join("; ")));
    }
    line.push('\n');
    line
}

/// fsck's text: the lines asked for (and every problem chunk), then the
/// summary.
fn render_fsck(report: &FsckReport, args: &FsckArgs) -> String {
    let mut out = String::new();
    for file in &report.files {
        if args.files {
            let problems: Vec<Problem> = file
                .chunks
                .iter()
                .flat_map(|c| c.problems.clone())
                .collect();
            let mut problems = problems;
            problems.sort();
            problems.dedup();
            out.push_str(&format!(
                "{} {} bytes, {} chunks: {}\n",
                file.path,
                file.length,
                file.chunks.len(),
                problem_words(&problems)
            ));
        }
        for chunk in &file.chunks {
            if args.chunks || args.locations || !chunk.problems.is_empty() {
                out.push_str(&chunk_line(&file.path, chunk));
            }
            if args.locations {
                chunk
                    .replicas
                    .iter()
                    .for_each(|r| out.push_str(&replica_line(r)));
            }
        }
    }
    out.push_str(&render_summary(report, &args.path));
    out
}

fn render_summary(report: &FsckReport, path: &str) -> String {
    let chunks = report.chunks().count();
    let mut out = format!(
        "\nStatus: {}\n Files: {}\n Directories: {}\n Chunks: {chunks}\n Bytes: {} ({})\n Healthy chunks: {}\n",
        if report.is_healthy() {
            "HEALTHY"
        } else {
            "NOT HEALTHY"
        },
        report.files.len(),
        report.directories,
        report.bytes(),
        human_bytes(report.bytes()),
        report.healthy_chunks(),
    );
    for problem in Problem::ALL {
        out.push_str(&format!(
            " {} chunks: {}\n",
            capitalized(problem.name()),
            report.count(problem)
        ));
    }
    out.push_str(&format!(
        "The store under {path} is {}.\n",
        if report.is_healthy() {
            "HEALTHY"
        } else {
            "NOT HEALTHY"
        }
    ));
    out
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn report_json(report: &FsckReport, path: &str) -> serde_json::Value {
    let files: Vec<serde_json::Value> = report
        .files
        .iter()
        .map(|f| {
            let chunks: Vec<serde_json::Value> = f.chunks.iter().map(chunk_json).collect();
            serde_json::json!({"path": f.path, "bytes": f.length, "chunks": chunks})
        })
        .collect();
    let mut counts = serde_json::Map::new();
    for problem in Problem::ALL {
        counts.insert(problem.name().into(), report.count(problem).into());
    }
    serde_json::json!({"path": path, "healthy": report.is_healthy(), "files": files,
        "summary": {"files": report.files.len(), "directories": report.directories,
        "chunks": report.chunks().count(), "bytes": report.bytes(),
        "healthy_chunks": report.healthy_chunks(), "problems": counts}})
}

fn chunk_json(chunk: &ChunkHealth) -> serde_json::Value {
    let replicas: Vec<serde_json::Value> = chunk
        .replicas
        .iter()
        .map(|r| {
            let (state, detail) = match &r.state {
                ReplicaState::Good => ("good", serde_json::Value::Null),
                ReplicaState::Stale => ("stale", serde_json::Value::Null),
                ReplicaState::Corrupt(blocks) => ("corrupt", serde_json::json!(blocks)),
                ReplicaState::Unreadable(why) => ("unreadable", serde_json::json!(why)),
                ReplicaState::Gone => ("gone", serde_json::Value::Null),
                ReplicaState::Unreachable(why) => ("unreachable", serde_json::json!(why)),
            };
            serde_json::json!({"url": r.url, "state": state, "detail": detail,
                "version": r.version, "bytes": r.length, "crc32c": r.crc32c})
        })
        .collect();
    let problems: Vec<&str> = chunk.problems.iter().map(|p| p.name()).collect();
    serde_json::json!({"index": chunk.index, "handle": chunk.handle, "version": chunk.version,
        "goal": chunk.goal, "good": chunk.good(), "problems": problems, "replicas": replicas})
}

/// `cairn fs report`: every chunkserver as the masters last heard of it.
pub(crate) async fn report(args: MastersArgs) -> anyhow::Result<()> {
    let reply = crate::fs_admin::fetch_usage(&args.masters).await?;
    print_stdout(&render_report(&reply, args.json));
    Ok(())
}

fn render_report(reply: &UsageReply, json: bool) -> String {
    if json {
        let servers: Vec<serde_json::Value> = reply
            .servers
            .iter()
            .map(|s| {
                let mut server = crate::fs_admin::server_json(s);
                server["last_heartbeat_ms"] = s.last_seen_ms.into();
                server["scrubbed_bytes"] = s.scrubbed_bytes.into();
                server["scrub_corruptions"] = s.scrub_corruptions.into();
                server
            })
            .collect();
        return format!("{}\n", serde_json::json!({"servers": servers}));
    }
    let mut out = format!(
        "{:<28} {:>10} {:>10} {:>10} {:>7} {:>10} {:<5} {:>10} {:>8}  service\n",
        "chunkserver",
        "capacity",
        "used",
        "free",
        "chunks",
        "heartbeat",
        "live",
        "scrubbed",
        "corrupt"
    );
    for s in &reply.servers {
        out.push_str(&format!(
            "{:<28} {:>10} {:>10} {:>10} {:>7} {:>9}s {:<5} {:>10} {:>8}  {}\n",
            s.url,
            human_bytes(s.capacity_bytes),
            human_bytes(s.used_bytes),
            human_bytes(s.free_bytes),
            s.chunks,
            format!("{:.1}", s.last_seen_ms as f64 / 1000.0),
            if s.live { "yes" } else { "no" },
            human_bytes(s.scrubbed_bytes),
            s.scrub_corruptions,
            crate::fs_balance::service_state(s)
        ));
    }
    out.push_str("(heartbeat: seconds since the last one; scrubbed and corrupt: what the background scrub verified and set aside since the chunkserver started)\n");
    out
}

/// `cairn fs checksum`.
pub(crate) async fn checksum(args: crate::fs::PathArgs) -> anyhow::Result<()> {
    let target = crate::fs::path(&args.path)?;
    let client = crate::fs::client(&args.masters)?;
    let sum = cairn_fs::file_checksum(&client, &target).await?;
    if args.masters.json {
        let chunks: Vec<serde_json::Value> = sum
            .chunks
            .iter()
            .map(|c| serde_json::json!({"handle": c.handle, "crc32c": format!("{:08x}", c.crc32c), "bytes": c.length, "replica": c.url}))
            .collect();
        print_stdout(&format!(
            "{}\n",
            serde_json::json!({"path": args.path, "algorithm": "CRC32C", "crc32c": format!("{:08x}", sum.crc32c), "bytes": sum.length, "chunks": chunks})
        ));
    } else {
        print_stdout(&format!(
            "CRC32C {:08x}  {} bytes  {}\n",
            sum.crc32c, sum.length, args.path
        ));
    }
    Ok(())
}
