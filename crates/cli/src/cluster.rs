//! `cairn cluster`: a local key/value cluster — N `cairn kv serve`
//! processes on 127.0.0.1, a live status line, a clean stop on Ctrl-C, and
//! the data kept for the next run.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_kv::{Client, ClientConfig};
use clap::Args;
use tokio::process::{Child, Command};

use crate::config::Config;

#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// How many nodes (3 or 5 tolerate 1 or 2 failures).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Node N listens on 127.0.0.1:(BASE_PORT + N).
    #[arg(long, default_value_t = 7700)]
    base_port: u16,
}

struct Member {
    id: u64,
    url: String,
    dir: PathBuf,
    child: Option<Child>,
}

pub(crate) fn run(args: ClusterArgs, config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(cluster(args, &config.data_dir.0))
}

async fn cluster(args: ClusterArgs, data_dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the cairn executable")?;
    let last_port = u32::from(args.base_port) + args.nodes as u32;
    if last_port > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for {} nodes; pick a lower one",
            args.base_port,
            args.nodes
        );
    }
    let mut members: Vec<Member> = (1..=args.nodes)
        .map(|id| Member {
            id,
            url: format!("http://127.0.0.1:{}", u64::from(args.base_port) + id),
            dir: data_dir.join(format!("node{id}")),
            child: None,
        })
        .collect();
    for member in &members {
        let addr = member.url.trim_start_matches("http://");
        if std::net::TcpListener::bind(addr).is_err() {
            bail!(
                "{addr} is in use (is another cairn cluster running?); stop it or pass --base-port"
            );
        }
    }
    let peers: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.id, m.url))
        .collect();
    let reused = data_dir.join("node1").exists();
    for member in &mut members {
        std::fs::create_dir_all(&member.dir)
            .with_context(|| format!("creating {}", member.dir.display()))?;
        let log_path = data_dir.join(format!("node{}.log", member.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&exe)
            .args([
                "kv",
                "serve",
                "--id",
                &member.id.to_string(),
                "--peers",
                &peers.join(","),
            ])
            .arg("--data-dir")
            .arg(&member.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node {}", member.id))?;
        member.child = Some(child);
    }
    let endpoints: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
    print_banner(&members, data_dir, reused, &endpoints);
    let client = Client::new(
        &endpoints,
        ClientConfig {
            call_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )?;
    let stopped = crate::kv::wait_for_stop_signal();
    tokio::pin!(stopped);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = ticker.tick() => {
                let line = status_line(&client, &mut members).await;
                if tty {
                    eprint!("\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                } else if line != last_line {
                    eprintln!("{line}");
                }
                last_line = line;
            }
        }
    }
    if tty {
        eprintln!();
    }
    eprintln!("stopping {} nodes...", members.len());
    stop(&mut members).await;
    eprintln!(
        "stopped; the data stays in {} for the next `cairn cluster`",
        data_dir.display()
    );
    Ok(())
}

fn print_banner(members: &[Member], data_dir: &Path, reused: bool, endpoints: &[String]) {
    let mut out = format!(
        "cairn cluster: {} nodes on 127.0.0.1, data in {}{}\n",
        members.len(),
        data_dir.display(),
        if reused { " (reused)" } else { "" }
    );
    for member in members {
        out.push_str(&format!(
            "  node {}  {}  (log: {})\n",
            member.id,
            member.url,
            data_dir.join(format!("node{}.log", member.id)).display()
        ));
    }
    let default = endpoints.join(",") == crate::kv::DEFAULT_ENDPOINTS;
    let flag = if default {
        String::new()
    } else {
        format!(" --endpoints {}", endpoints.join(","))
    };
    out.push_str(&format!(
        "\nTry, in another terminal:\n  cairn kv put greeting hello{flag}\n  cairn kv get greeting{flag}\n  cairn kv status{flag}\n\nCtrl-C stops every node.\n\n"
    ));
    eprint!("{out}");
}

async fn status_line(client: &Client, members: &mut [Member]) -> String {
    let mut parts = Vec::new();
    let mut leader = None;
    for (index, member) in members.iter_mut().enumerate() {
        if let Some(child) = &mut member.child
            && let Ok(Some(exit)) = child.try_wait()
        {
            member.child = None;
            parts.push(format!(
                "{}: exited ({exit}; see node{}.log)",
                member.id, member.id
            ));
            continue;
        }
        if member.child.is_none() {
            parts.push(format!("{}: down", member.id));
            continue;
        }
        match client.status(index).await {
            Ok(status) => {
                if status.role == "leader" {
                    leader = Some((status.id, status.term));
                }
                parts.push(format!(
                    "{}: {} commit {}",
                    status.id, status.role, status.commit
                ));
            }
            Err(_) => parts.push(format!("{}: starting", member.id)),
        }
    }
    let head = match leader {
        Some((id, term)) => format!("leader {id}, term {term}"),
        None => "no leader yet".to_string(),
    };
    format!("[{head}] {}", parts.join(" | "))
}

/// Asks every node to stop (SIGTERM; they also got the terminal's SIGINT),
/// then kills any still running after 5 s.
async fn stop(members: &mut [Member]) {
    for member in members.iter() {
        if let Some(pid) = member.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
    for member in members.iter_mut() {
        if let Some(child) = &mut member.child
            && tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
