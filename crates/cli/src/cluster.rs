//! `cairn cluster`: a local key/value cluster — N `cairn kv serve`
//! processes on 127.0.0.1 (or, with `--sharded`, shard controllers and
//! replica groups), a live status line, a clean stop on Ctrl-C, and the
//! data kept for the next run.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_kv::{Client, ClientConfig};
use clap::Args;
use tokio::process::{Child, Command};

use crate::config::Config;

pub(crate) mod local;
mod mr_workers;
mod shape;
mod status;

use status::{fs_status_line, sharded_status_line, status_line};

/// `eprint!` that ignores a closed or failing stderr: the launcher's
/// messages are for a person, and losing them must not stop the cluster
/// (`eprint!` panics on a broken pipe, and the nodes would go with it).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// How many nodes (3 or 5 tolerate 1 or 2 failures).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Node N listens on 127.0.0.1:(BASE_PORT + N).
    #[arg(long, default_value_t = 7700)]
    base_port: u16,
    /// A sharded cluster: --nodes shard controllers on BASE_PORT + N, and
    /// --groups replica groups of --nodes servers, server N of group G on
    /// BASE_PORT + 10 G + N. `cairn kv` then works against the controllers.
    #[arg(long)]
    sharded: bool,
    /// With --sharded: how many replica groups.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=9))]
    groups: u64,
    /// A file store (`cairn fs`): --nodes masters on BASE_PORT + N and
    /// --chunkservers chunkservers on BASE_PORT + 10 + N.
    #[arg(long, conflicts_with = "sharded")]
    fs: bool,
    /// With --fs: how many chunkservers (3 give every chunk its 3 replicas).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    chunkservers: u64,
    /// With --fs: also N MapReduce workers, one beside each chunkserver in
    /// turn, shuffle server N on BASE_PORT + 20 + N, serving job after job
    /// of the coordinator on BASE_PORT + 20 (`cairn mr coordinator --listen
    /// 127.0.0.1:BASE_PORT+20 ...` submits one).
    #[arg(long, default_value_t = 0, requires = "fs",
          value_parser = clap::value_parser!(u64).range(0..=9))]
    mr_workers: u64,
    /// Every Raft node (key/value node, controller, group server, master)
    /// serves its metrics at http://127.0.0.1:(its port + 100)/metrics.
    #[arg(long)]
    metrics: bool,
}

/// With `--metrics`: how far above its gRPC port a node serves metrics.
const METRICS_PORT_OFFSET: u64 = 100;

/// What a member process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kv,
    Controller,
    Group(u64),
    Master,
    Chunk,
    MrWorker,
}

struct Member {
    id: u64,
    kind: Kind,
    /// The file-name stem of its data directory and log.
    name: String,
    url: String,
    dir: PathBuf,
    /// The `cairn` arguments that start it.
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    /// "exited (...)" or "down" when the process is not running (reaping
    /// it if it just exited); `None` while it runs.
    fn gone(&mut self) -> Option<String> {
        if let Some(child) = &mut self.child
            && let Ok(Some(exit)) = child.try_wait()
        {
            self.child = None;
            return Some(format!(
                "{}: exited ({exit}; see {}.log)",
                self.label(),
                self.name
            ));
        }
        self.child
            .is_none()
            .then(|| format!("{}: down", self.label()))
    }

    /// Where it serves its metrics (`--metrics-listen`), if it does.
    fn metrics_listen(&self) -> Option<&str> {
        let flag = self.args.iter().position(|a| a == "--metrics-listen")?;
        self.args.get(flag + 1).map(String::as_str)
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::Kv => self.id.to_string(),
            Kind::Controller => format!("c{}", self.id),
            Kind::Group(gid) => format!("g{gid}.{}", self.id),
            Kind::Master => format!("m{}", self.id),
            Kind::Chunk => format!("cs{}", self.id),
            Kind::MrWorker => format!("w{}", self.id),
        }
    }
}

/// The environment variable through which `cairn cluster` tells the nodes
/// it starts its process id.
pub(crate) const LAUNCHER_PID_VARIABLE: &str = "CAIRN_LAUNCHER_PID";

/// In a node started by `cairn cluster`: asks the kernel for SIGTERM when
/// the launcher dies (a parent-death signal, so a SIGKILLed launcher
/// leaves no orphans holding the ports), and exits at once if it is already
/// gone. Does nothing in a process started any other way.
pub(crate) fn exit_with_launcher() -> anyhow::Result<()> {
    let Ok(launcher) = std::env::var(LAUNCHER_PID_VARIABLE) else {
        return Ok(());
    };
    let launcher: i32 = launcher
        .parse()
        .with_context(|| format!("{LAUNCHER_PID_VARIABLE}={launcher:?} is not a process id; unset it (only `cairn cluster` sets it)"))?;
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Signal, getppid, set_parent_process_death_signal};
        set_parent_process_death_signal(Some(Signal::TERM))
            .context("asking for a signal when the launcher exits")?;
        // The launcher may have died before the request above took effect.
        if getppid().map(|pid| pid.as_raw_nonzero().get()) != Some(launcher) {
            bail!(
                "the `cairn cluster` that started this node (pid {launcher}) is gone; start the cluster again"
            );
        }
    }
    Ok(())
}

/// The address of the first member's port, or metrics port, that another
/// process holds.
fn port_in_use(members: &[Member]) -> Option<String> {
    members.iter().find_map(|member| {
        let addr = member.url.trim_start_matches("http://");
        std::iter::once(addr)
            .chain(member.metrics_listen())
            .find(|addr| std::net::TcpListener::bind(addr).is_err())
            .map(str::to_string)
    })
}

/// `--metrics`: every Raft node gets `--metrics-listen` on its port +
/// [`METRICS_PORT_OFFSET`].
fn serve_metrics(members: &mut [Member]) {
    for member in members {
        let raft_node = matches!(
            member.kind,
            Kind::Kv | Kind::Controller | Kind::Group(_) | Kind::Master
        );
        let port = member
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u64>().ok());
        if let (true, Some(port)) = (raft_node, port) {
            let addr = format!("127.0.0.1:{}", port + METRICS_PORT_OFFSET);
            member.args.extend(["--metrics-listen".into(), addr]);
        }
    }
}

/// Starts a member's process, its stderr appended to `<name>.log` in
/// `data_dir` and its pid written to `<name>.pid` there. It is killed when its `Child` is dropped, and exits by
/// itself when this process dies (see `exit_with_launcher`), so it never
/// lingers holding its port.
fn spawn(member: &mut Member, exe: &Path, data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(&member.dir)
        .with_context(|| format!("creating {}", member.dir.display()))?;
    let log_path = data_dir.join(format!("{}.log", member.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = Command::new(exe)
        .args(&member.args)
        .arg("--data-dir")
        .arg(&member.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .env(LAUNCHER_PID_VARIABLE, std::process::id().to_string())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", member.name))?;
    // Beside the log: what an operator (or a script) signals to stop it.
    if let Some(pid) = child.id() {
        let pid_path = data_dir.join(format!("{}.pid", member.name));
        std::fs::write(&pid_path, format!("{pid}\n"))
            .with_context(|| format!("writing {}", pid_path.display()))?;
    }
    member.child = Some(child);
    Ok(())
}

/// The members of a plain cluster: `nodes` key/value nodes.
fn kv_members(args: &ClusterArgs, data_dir: &Path) -> Vec<Member> {
    let url = |id: u64| format!("http://127.0.0.1:{}", u64::from(args.base_port) + id);
    let peers: Vec<String> = (1..=args.nodes)
        .map(|id| format!("{id}={}", url(id)))
        .collect();
    (1..=args.nodes)
        .map(|id| Member {
            id,
            kind: Kind::Kv,
            name: format!("node{id}"),
            url: url(id),
            dir: data_dir.join(format!("node{id}")),
            args: vec![
                "kv".into(),
                "serve".into(),
                "--id".into(),
                id.to_string(),
                "--peers".into(),
                peers.join(","),
            ],
            child: None,
        })
        .collect()
}

/// The members of a file store: the masters, then the chunkservers.
fn fs_members(args: &ClusterArgs, data_dir: &Path) -> Vec<Member> {
    let url = |port: u64| format!("http://127.0.0.1:{}", u64::from(args.base_port) + port);
    let peers: Vec<String> = (1..=args.nodes)
        .map(|id| format!("{id}={}", url(id)))
        .collect();
    let masters: Vec<String> = (1..=args.nodes).map(url).collect();
    let mut members: Vec<Member> = (1..=args.nodes)
        .map(|id| Member {
            id,
            kind: Kind::Master,
            name: format!("master{id}"),
            url: url(id),
            dir: data_dir.join(format!("master{id}")),
            args: vec![
                "fs".into(),
                "serve-master".into(),
                "--id".into(),
                id.to_string(),
                "--peers".into(),
                peers.join(","),
            ],
            child: None,
        })
        .collect();
    members.extend((1..=args.chunkservers).map(|id| Member {
        id,
        kind: Kind::Chunk,
        name: format!("chunk{id}"),
        url: url(10 + id),
        dir: data_dir.join(format!("chunk{id}")),
        args: vec![
            "fs".into(),
            "serve-chunk".into(),
            "--url".into(),
            url(10 + id),
            "--masters".into(),
            masters.join(","),
        ],
        child: None,
    }));
    let chunkservers: Vec<String> = (1..=args.chunkservers).map(|id| url(10 + id)).collect();
    members.extend(mr_workers::members(args, data_dir, &chunkservers));
    members
}

/// The members of a sharded cluster: the controllers, then each group.
fn sharded_members(args: &ClusterArgs, data_dir: &Path) -> Vec<Member> {
    let base = u64::from(args.base_port);
    let ctrl_url = |id: u64| format!("http://127.0.0.1:{}", base + id);
    let controllers: Vec<String> = (1..=args.nodes).map(ctrl_url).collect();
    let ctrl_peers: Vec<String> = (1..=args.nodes)
        .map(|id| format!("{id}={}", ctrl_url(id)))
        .collect();
    let mut members: Vec<Member> = (1..=args.nodes)
        .map(|id| Member {
            id,
            kind: Kind::Controller,
            name: format!("ctrl{id}"),
            url: ctrl_url(id),
            dir: data_dir.join(format!("ctrl{id}")),
            args: vec![
                "shardctl".into(),
                "serve".into(),
                "--id".into(),
                id.to_string(),
                "--peers".into(),
                ctrl_peers.join(","),
            ],
            child: None,
        })
        .collect();
    for gid in 1..=args.groups {
        let url = |id: u64| format!("http://127.0.0.1:{}", base + 10 * gid + id);
        let peers: Vec<String> = (1..=args.nodes)
            .map(|id| format!("{id}={}", url(id)))
            .collect();
        for id in 1..=args.nodes {
            members.push(Member {
                id,
                kind: Kind::Group(gid),
                name: format!("group{gid}-node{id}"),
                url: url(id),
                dir: data_dir.join(format!("group{gid}-node{id}")),
                args: vec![
                    "shardkv".into(),
                    "serve".into(),
                    "--gid".into(),
                    gid.to_string(),
                    "--id".into(),
                    id.to_string(),
                    "--peers".into(),
                    peers.join(","),
                    "--controllers".into(),
                    controllers.join(","),
                ],
                child: None,
            });
        }
    }
    members
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
    let highest = if args.sharded {
        u32::from(args.base_port) + 10 * args.groups as u32 + args.nodes as u32
    } else if args.fs {
        u32::from(args.base_port) + 20 + args.mr_workers as u32
    } else {
        u32::from(args.base_port) + args.nodes as u32
    };
    let highest = highest
        + if args.metrics {
            METRICS_PORT_OFFSET as u32
        } else {
            0
        };
    if highest > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for every node; pick a lower one",
            args.base_port
        );
    }
    if args.sharded && args.nodes > 9 {
        bail!("--sharded takes at most 9 --nodes per group");
    }
    let mut members = if args.sharded {
        sharded_members(&args, data_dir)
    } else if args.fs {
        fs_members(&args, data_dir)
    } else {
        kv_members(&args, data_dir)
    };
    if args.metrics {
        serve_metrics(&mut members);
    }
    if !args.fs {
        // A file store's masters check their peers against their stored
        // identity themselves; its directories do not collide with these.
        shape::check_same_shape(&args, data_dir)?;
    }
    if let Some(addr) = port_in_use(&members) {
        bail!("{addr} is in use (is another cairn cluster running?); stop it or pass --base-port");
    }
    let reused = data_dir.join(&members[0].name).exists();
    for member in &mut members {
        spawn(member, &exe, data_dir)?;
    }
    let endpoints: Vec<String> = members
        .iter()
        .filter(|m| matches!(m.kind, Kind::Kv | Kind::Controller | Kind::Master))
        .map(|m| m.url.clone())
        .collect();
    print_banner(&members, data_dir, reused, &endpoints);
    if args.sharded {
        join_groups(&members, &endpoints).await?;
    }
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
                let line = if args.sharded {
                    sharded_status_line(&endpoints, &mut members).await
                } else if args.fs {
                    fs_status_line(&mut members).await
                } else {
                    status_line(&client, &mut members).await
                };
                if tty {
                    say!("\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                } else if line != last_line {
                    say!("{line}\n");
                }
                last_line = line;
            }
        }
    }
    if tty {
        say!("\n");
    }
    say!("stopping {} nodes...\n", members.len());
    stop(&mut members).await;
    say!(
        "stopped; the data stays in {} for the next `cairn cluster`\n",
        data_dir.display()
    );
    Ok(())
}

fn print_banner(members: &[Member], data_dir: &Path, reused: bool, endpoints: &[String]) {
    let groups = members
        .iter()
        .filter_map(|m| match m.kind {
            Kind::Group(gid) => Some(gid),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let chunkservers = members.iter().filter(|m| m.kind == Kind::Chunk).count();
    let what = if groups > 0 {
        format!("a sharded cluster of {groups} groups and their controllers")
    } else if chunkservers > 0 {
        let masters = members.iter().filter(|m| m.kind == Kind::Master).count();
        format!("a file store of {masters} masters and {chunkservers} chunkservers")
    } else {
        format!("{} nodes", members.len())
    };
    let mut out = format!(
        "cairn cluster: {what} on 127.0.0.1, data in {}{}\n",
        data_dir.display(),
        if reused { " (reused)" } else { "" }
    );
    for member in members {
        let role = match member.kind {
            Kind::Kv => format!("node {}", member.id),
            Kind::Controller => format!("controller {}", member.id),
            Kind::Group(gid) => format!("group {gid} server {}", member.id),
            Kind::Master => format!("master {}", member.id),
            Kind::Chunk => format!("chunkserver {}", member.id),
            Kind::MrWorker => format!("mr worker {}", member.id),
        };
        let pid = member
            .child
            .as_ref()
            .and_then(Child::id)
            .map_or_else(|| "-".to_string(), |pid| pid.to_string());
        out.push_str(&format!(
            "  {role:<18} {}  pid {pid:<7}  log {}\n",
            member.url,
            data_dir.join(format!("{}.log", member.name)).display()
        ));
    }
    let metrics: Vec<String> = members
        .iter()
        .filter_map(|m| Some(format!("http://{}/metrics", m.metrics_listen()?)))
        .collect();
    if !metrics.is_empty() {
        out.push_str(&format!(
            "\nMetrics (Prometheus text format; a node's port + {METRICS_PORT_OFFSET}):\n  {}\n",
            metrics.join("\n  ")
        ));
    }
    let default = endpoints.join(",") == crate::kv::DEFAULT_ENDPOINTS;
    let flag = if default {
        String::new()
    } else {
        format!(" --endpoints {}", endpoints.join(","))
    };
    if chunkservers > 0 {
        let flag = flag.replace("--endpoints", "--masters");
        out.push_str(&format!(
            "\nTry, in another terminal:\n  cairn fs mkdir -p /docs{flag}\n  cairn fs put README.md /docs/readme{flag}\n  cairn fs ls -l -R /{flag}\n  cairn fs cat /docs/readme{flag}\n"
        ));
        out.push_str(&mr_workers::try_line(members, &flag));
        out.push_str("\nCtrl-C stops every node.\n\n");
    } else {
        out.push_str(&format!(
            "\nTry, in another terminal:\n  cairn kv put greeting hello{flag}\n  cairn kv get greeting{flag}\n  cairn kv status{flag}\n\nCtrl-C stops every node.\n\n"
        ));
    }
    say!("{out}");
}

/// Adds the replica groups the controllers do not know yet (a reused
/// cluster already has them).
async fn join_groups(members: &[Member], controllers: &[String]) -> anyhow::Result<()> {
    // Just started: the controllers may not listen yet.
    let mut client = cairn_shardctrler::Client::new(
        controllers,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )?
    .wait_while_refused();
    let config = client
        .query(None)
        .await
        .context("the shard controllers did not answer; see ctrl*.log")?;
    let mut groups: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for member in members {
        if let Kind::Group(gid) = member.kind
            && !config.groups.contains_key(&gid)
        {
            groups.entry(gid).or_default().push(member.url.clone());
        }
    }
    if !groups.is_empty() {
        let num = client
            .join(&groups)
            .await
            .context("joining the replica groups")?;
        say!(
            "joined groups {:?}: configuration {num}\n\n",
            groups.keys().collect::<Vec<_>>()
        );
    }
    Ok(())
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
