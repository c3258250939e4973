//! `cairn kv serve`: one key/value node (its id, its peers, its address
//! and data directory checked before anything starts), run until Ctrl-C or
//! SIGTERM; and the helpers every `serve` command of the CLI shares
//! (listening addresses, the data directory's lock, the stop signal).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use cairn_kv::KvServer;
use cairn_rsm::NodeConfig;
use cairn_storage::RealDisk;
use clap::Args;

use super::join::{JOINED_FILE, Joined};
use crate::config::Config;
use crate::metrics_http::MetricsListener;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// This node's id (1, 2, ...), one of the ids in --peers.
    #[arg(long)]
    id: Option<u64>,
    /// Every node of the cluster as ID=URL, comma-separated.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// The address to listen on, HOST:PORT (default: the host and port of
    /// this node's URL in --peers). A host name is resolved and the node
    /// listens on its address (IPv4 first): `localhost` is loopback only.
    /// 0.0.0.0:PORT listens on every interface.
    #[arg(long)]
    listen: Option<String>,
    /// Snapshot when the Raft log passes this many bytes (default 8388608 =
    /// 8 MiB; -1: never).
    #[arg(long, allow_negative_numbers = true, value_name = "BYTES")]
    max_raft_state: Option<i64>,
    /// Serve the node's metrics (Prometheus text format) over HTTP at
    /// http://HOST:PORT/metrics. Off unless given.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

/// `cairn kv serve`'s arguments: a node's, and how it joins a running
/// cluster instead.
#[derive(Debug, Args)]
pub(crate) struct KvServeArgs {
    #[command(flatten)]
    node: ServeArgs,
    /// Join the running cluster at these nodes (comma-separated URLs)
    /// instead of bootstrapping one: the cluster gives this node a new id
    /// and adds it as a learner. Needs --listen (the address the others
    /// reach it at) and an empty --data-dir; later starts of that data
    /// directory resume as the same node (no --join needed).
    #[arg(long, value_delimiter = ',', value_name = "URL,...", conflicts_with_all = ["id", "peers"],
          value_parser = super::parse_endpoint)]
    join: Vec<String>,
    /// With --join: ask to be promoted to voter once caught up (otherwise
    /// the operator promotes it: cairn kv member promote ID).
    #[arg(long)]
    auto_promote: bool,
}

/// Parses `ID=URL` pairs.
pub(crate) fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut map = BTreeMap::new();
    for peer in peers {
        let (id, url) = peer.split_once('=').with_context(|| {
            format!("peer {peer:?} is not ID=URL (e.g. 1=http://10.0.0.1:7701)")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("peer {peer:?}: the id is not a number"))?;
        if id == 0 {
            bail!("peer {peer:?}: node ids start at 1");
        }
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!(
                "peer {peer:?}: the URL must start with http:// (e.g. {id}=http://10.0.0.1:7701)"
            );
        }
        if map.insert(id, url.trim().to_string()).is_some() {
            bail!("node {id} appears twice in --peers");
        }
    }
    Ok(map)
}

/// Everything a node needs before its service starts: identity, peers,
/// listening address, and its locked data directory.
pub(crate) struct PreparedNode {
    pub(crate) id: u64,
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) disk: Arc<RealDisk>,
    pub(crate) node_config: NodeConfig,
    /// The metrics listener, bound (`--metrics-listen`), if asked for.
    pub(crate) metrics: Option<MetricsListener>,
    /// Held for the life of the node.
    _lock: std::fs::File,
}

/// Resolves `serve`'s flags and the `[node]` table, and locks and opens the
/// data directory.
pub(crate) async fn prepare_node(
    args: &ServeArgs,
    config: &Config,
) -> anyhow::Result<PreparedNode> {
    let node = &config.node;
    let id = args
        .id
        .or(node.id)
        .context("which node is this? pass --id N (or id in the [node] table of --config)")?;
    let peer_list = if args.peers.is_empty() {
        node.peers.clone().unwrap_or_default()
    } else {
        args.peers.clone()
    };
    if peer_list.is_empty() {
        bail!(
            "pass --peers 1=http://HOST:PORT,2=...,3=... (every node of the cluster, this one included)"
        );
    }
    let peers = parse_peers(&peer_list)?;
    let own_url = peers
        .get(&id)
        .with_context(|| format!("node {id} is not in --peers; add {id}=http://HOST:PORT"))?;
    let listen = match args.listen.clone().or(node.listen.clone()) {
        Some(listen) => listen_address(&listen)
            .with_context(|| format!("--listen {listen:?}: pass HOST:PORT, e.g. 0.0.0.0:7701"))?,
        None => listen_of(own_url).with_context(|| {
            format!(
                "cannot listen on the address of node {id}'s URL {own_url} in --peers; pass \
                 --listen HOST:PORT (0.0.0.0:PORT for every interface)"
            )
        })?,
    };
    let metrics = bind_metrics(args).await?;
    let (data_dir, disk, lock) = open_data_dir(config)?;
    let node_config = node_config(args, config, id, peers);
    Ok(PreparedNode {
        id,
        listen,
        data_dir,
        disk,
        node_config,
        metrics,
        _lock: lock,
    })
}

/// The node's settings: node `id` of `peers`, its log under `raft/`.
fn node_config(
    args: &ServeArgs,
    config: &Config,
    id: u64,
    peers: BTreeMap<u64, String>,
) -> NodeConfig {
    let mut node_config = NodeConfig::new(id, peers, "raft");
    if let Some(max) = args.max_raft_state.or(config.node.max_raft_state) {
        node_config.max_raft_state = max;
    }
    node_config
}

/// The metrics listener of `--metrics-listen`, bound, if asked for.
async fn bind_metrics(args: &ServeArgs) -> anyhow::Result<Option<MetricsListener>> {
    let Some(text) = &args.metrics_listen else {
        return Ok(None);
    };
    let addr = listen_address(text).with_context(|| {
        format!(
            "--metrics-listen {text:?} is not an address: pass --metrics-listen \
             HOST:PORT, e.g. 127.0.0.1:9701"
        )
    })?;
    Ok(Some(MetricsListener::bind(addr).await?))
}

/// A node that joins a running cluster (`--join`), or resumes as the node
/// it joined as (its data directory says so): its identity comes from the
/// cluster, not from flags. Answers the node and the members' URLs.
async fn prepare_joined(
    args: &KvServeArgs,
    config: &Config,
) -> anyhow::Result<(PreparedNode, Vec<String>)> {
    let (data_dir, disk, lock) = open_data_dir(config)?;
    let joined = match Joined::load(&*disk, &data_dir)? {
        Some(joined) if args.node.id.is_some() || !args.node.peers.is_empty() => bail!(
            "this data directory belongs to node {}, which joined cluster {}; start it with just \
             --data-dir (and --listen), without --id or --peers",
            joined.id,
            joined.cluster_id
        ),
        Some(joined) => {
            tracing::info!(
                "node {} of cluster {}: resuming (identity from the data directory)",
                joined.id,
                joined.cluster_id
            );
            joined
        }
        None => {
            let listen = args.node.listen.as_deref().context(
                "--join needs --listen HOST:PORT: the address the other nodes reach this node at",
            )?;
            if listen_address(listen)?.ip().is_unspecified() {
                bail!(
                    "--listen {listen}: give the address the other nodes reach this node at, not 0.0.0.0"
                );
            }
            let joined = super::join::join(&*disk, &args.join, &format!("http://{listen}")).await?;
            tracing::info!(
                "node {} of cluster {}: joined as a learner",
                joined.id,
                joined.cluster_id
            );
            joined
        }
    };
    let own_url = joined
        .peers
        .get(&joined.id)
        .context("the stored identity lacks this node's URL")?;
    let listen = match &args.node.listen {
        Some(listen) => listen_address(listen)?,
        None => listen_of(own_url)?,
    };
    let metrics = bind_metrics(&args.node).await?;
    let mut node_config = node_config(&args.node, config, joined.id, joined.peers.clone());
    node_config.join = Some(joined.cluster_id.clone());
    let others = joined.peers.iter().filter(|(id, _)| **id != joined.id);
    let members = others.map(|(_, url)| url.clone()).collect();
    let prepared = PreparedNode {
        id: joined.id,
        listen,
        data_dir,
        disk,
        node_config,
        metrics,
        _lock: lock,
    };
    Ok((prepared, members))
}

impl PreparedNode {
    /// Starts serving `node`'s metrics on the bound `--metrics-listen`
    /// address, if there is one, and logs where they are.
    pub(crate) fn serve_metrics<S: cairn_rsm::StateMachine>(
        &mut self,
        node: &cairn_rsm::Node<S>,
        what: &str,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(listener) = self.metrics.take() else {
            return Ok(None);
        };
        let addr = listener.local_addr()?;
        tracing::info!("{what} serves its metrics at http://{addr}/metrics");
        let node = node.clone();
        Ok(Some(listener.serve(move || {
            let node = node.clone();
            async move { node.scrape().await }
        })))
    }
}

pub(super) async fn serve(args: KvServeArgs, config: &Config) -> anyhow::Result<()> {
    let joined = !args.join.is_empty() || config.data_dir.0.join(JOINED_FILE).exists();
    let (mut prepared, members) = match joined {
        true => prepare_joined(&args, config).await?,
        false => (prepare_node(&args.node, config).await?, Vec::new()),
    };
    let id = prepared.id;
    let server = KvServer::start(prepared.node_config.clone(), prepared.disk.clone())
        .map_err(|e| anyhow::anyhow!("node {id} cannot start: {e}"))?;
    let (addr, task) = serve_node!(server, prepared.listen)?;
    let metrics = prepared.serve_metrics(server.node(), &format!("node {id}"))?;
    tracing::info!(
        "node {id} serving on {addr}, data in {}",
        prepared.data_dir.display()
    );
    let progress = joined.then(|| {
        let report = super::join::report_progress(id, members, args.auto_promote);
        tokio::spawn(report)
    });
    let outcome = run_until_stopped(server.node(), &format!("node {id}")).await;
    tracing::info!("node {id} stopping");
    server.node().shutdown().await;
    task.abort();
    metrics.inspect(|task| task.abort());
    progress.inspect(|task| task.abort());
    outcome
}

/// The address to listen on for a URL like `http://127.0.0.1:7701`: its
/// host and port, exactly (see [`listen_address`]).
pub(crate) fn listen_of(url: &str) -> anyhow::Result<SocketAddr> {
    let authority = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if authority
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        bail!("{url} has no port; write it as http://HOST:PORT");
    }
    listen_address(authority)
}

/// The socket address for `HOST:PORT`: an IP address as written, or a host
/// name's first address (IPv4 first), so that `localhost:7701` listens on
/// loopback only, as the name says, and `0.0.0.0:7701` on every interface.
pub(super) fn listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {text}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{text} resolves to no address"))
}

/// Holds an exclusive lock (flock) on the data directory itself for the
/// life of the process, so that two nodes never share one log. The lock is
/// on the directory, not on a file in it: removing a file cannot release it,
/// and the kernel drops it when the process dies, however it dies.
/// The node's `--data-dir`, created if missing, as a disk, with its lock
/// held (one process per data directory).
pub(crate) fn open_data_dir(
    config: &Config,
) -> anyhow::Result<(std::path::PathBuf, Arc<RealDisk>, std::fs::File)> {
    let data_dir = config.data_dir.0.clone();
    if data_dir.exists() && !data_dir.is_dir() {
        bail!(
            "--data-dir {} is a file, not a directory; pass a directory (it is created if missing)",
            data_dir.display()
        );
    }
    let disk = Arc::new(
        RealDisk::new(&data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?,
    );
    let lock = lock_data_dir(&data_dir)?;
    Ok((data_dir, disk, lock))
}

pub(super) fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => bail!(
            "another cairn node is using {}; stop it or pick another --data-dir",
            dir.display()
        ),
    }
}

/// Serves until Ctrl-C or SIGTERM (`Ok`), or until the node stops on its
/// own, e.g. on a disk error (`Err` with the reason: the process then exits
/// with a non-zero status instead of staying up as a node that answers
/// nothing).
pub(crate) async fn run_until_stopped<S: cairn_rsm::StateMachine>(
    node: &cairn_rsm::Node<S>,
    what: &str,
) -> anyhow::Result<()> {
    tokio::select! {
        () = wait_for_stop_signal() => Ok(()),
        reason = node.stopped() => Err(anyhow::anyhow!(
            "{what} stopped: {reason}. Everything it acknowledged is on its disk; fix the cause \
             (free disk space, check the disk and its permissions) and start it again"
        )),
    }
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_stop_signal() {
    #[cfg(all(unix, not(madsim)))]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(any(not(unix), madsim))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
