//! `cairn fs serve-master` and `cairn fs serve-chunk`: one master node
//! of the store's Raft group, or one chunkserver (its replicas under
//! --data-dir, its disk's free space probed for the masters), each run
//! until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use cairn_fs::{ChunkServer, ChunkServerConfig, DiskSpace, FsSettings, MasterServer};
use clap::Args;

use super::DEFAULT_MASTERS;
use crate::config::Config;
use crate::kv::{ServeArgs, prepare_node, run_until_stopped};

#[derive(Debug, Args)]
pub(crate) struct ServeChunkArgs {
    /// The URL the masters and clients reach this chunkserver at.
    #[arg(long, value_parser = crate::kv::parse_endpoint)]
    url: String,
    /// The address to listen on (default: the host and port of --url).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Every master node, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = crate::kv::parse_endpoint,
          default_value = DEFAULT_MASTERS)]
    masters: Vec<String>,
    /// The most space the replicas may take (bytes, or with K, M, G, T);
    /// less if the disk under --data-dir has less free.
    #[arg(long, default_value = "1T", value_parser = crate::fs_admin::parse_bytes)]
    capacity: u64,
    /// Bytes per second each clone (re-replication, balancing) reads from
    /// its source (with K, M, G; 0: no limit). At most 2 clones run on a
    /// chunkserver at once.
    #[arg(long, default_value = "200M", value_parser = crate::fs_admin::parse_bytes)]
    clone_rate: u64,
    /// Bytes per second the background scrub verifies of idle replicas
    /// (with K, M, G; 0 turns the scrub off).
    #[arg(long, default_value = "4M", value_parser = crate::fs_admin::parse_bytes)]
    scrub_rate: u64,
}

pub(super) async fn serve_master(args: ServeArgs, config: &Config) -> anyhow::Result<()> {
    let mut prepared = prepare_node(&args, config).await?;
    let id = prepared.id;
    let server = MasterServer::start(prepared.node_config.clone(), prepared.disk.clone())
        .map_err(|e| anyhow::anyhow!("master {id} cannot start: {e}"))?;
    let (addr, task) = serve_node!(server, prepared.listen)?;
    let metrics = prepared.serve_metrics(server.node(), &format!("master {id}"))?;
    tracing::info!(
        "file-store master {id} serving on {addr}, data in {}",
        prepared.data_dir.display()
    );
    let outcome = run_until_stopped(server.node(), &format!("master {id}")).await;
    server.node().shutdown().await;
    task.abort();
    metrics.inspect(|task| task.abort());
    outcome
}

pub(super) async fn serve_chunk(args: ServeChunkArgs, config: &Config) -> anyhow::Result<()> {
    let (data_dir, disk, _lock) = crate::kv::open_data_dir(config)?;
    let listen = match args.listen {
        Some(listen) => listen,
        None => crate::kv::listen_of(&args.url)?,
    };
    let probe_dir = data_dir.clone();
    let config = ChunkServerConfig {
        url: args.url.clone(),
        masters: args.masters,
        dir: "chunks".into(),
        settings: FsSettings {
            capacity_bytes: args.capacity,
            clone_bytes_per_sec: args.clone_rate,
            ..FsSettings::default()
        },
        observer: None,
        clock: Default::default(),
        space: Some(DiskSpace {
            label: std::path::absolute(&data_dir)
                .unwrap_or_else(|_| data_dir.clone())
                .display()
                .to_string(),
            probe: Arc::new(move || crate::fs_admin::free_space(&probe_dir)),
        }),
        scrub_bytes_per_sec: args.scrub_rate,
    };
    let server = ChunkServer::start(config, disk)
        .with_context(|| format!("opening the replicas in {}", data_dir.display()))?;
    match server.serve_local_reads(&data_dir) {
        Ok(socket) => tracing::info!("short-circuit reads on {}", socket.display()),
        Err(error) => tracing::warn!(
            "no short-circuit reads ({error}): clients on this machine read through the RPC"
        ),
    }
    let (addr, task) = serve_node!(server, listen)?;
    tracing::info!(
        "chunkserver {} serving on {addr}, replicas in {}",
        args.url,
        data_dir.display()
    );
    crate::kv::wait_for_stop_signal().await;
    task.abort();
    Ok(())
}
