//! [`LocalCluster`]: the processes of `cairn cluster` (a key/value
//! cluster, or a file store's masters and chunkservers) started by a
//! program for its own use — the benchmarks — on free ports, in a
//! directory it names, and stopped when it is done.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rand::Rng as _;
use tokio::process::Child;

use super::{ClusterArgs, Kind, Member, fs_members, kv_members, port_in_use, spawn, stop};

/// How many base ports are tried before giving up.
const PORT_ATTEMPTS: usize = 50;
/// Base ports are picked below the usual ephemeral range (32768 and up),
/// where outgoing connections take their local ports.
const LOWEST_BASE_PORT: u16 = 20_000;
const HIGHEST_BASE_PORT: u16 = 32_000;

/// Child processes serving a cluster on 127.0.0.1. Dropping it kills them
/// (and they exit by themselves if this process dies); [`stop`](Self::stop)
/// asks them to stop first.
pub(crate) struct LocalCluster {
    members: Vec<Member>,
    data_dir: PathBuf,
}

impl LocalCluster {
    /// `nodes` key/value nodes (`cairn kv serve`), as `cairn cluster`
    /// starts them, with their data and logs under `data_dir`.
    pub(crate) fn start_kv(data_dir: &Path, nodes: u64) -> anyhow::Result<Self> {
        Self::start(data_dir, |base_port| ClusterArgs {
            nodes,
            base_port,
            sharded: false,
            groups: 0,
            fs: false,
            chunkservers: 0,
            mr_workers: 0,
            metrics: false,
        })
    }

    /// A file store of `masters` masters and `chunkservers` chunkservers,
    /// as `cairn cluster --fs` starts it, under `data_dir`.
    pub(crate) fn start_fs(
        data_dir: &Path,
        masters: u64,
        chunkservers: u64,
    ) -> anyhow::Result<Self> {
        Self::start(data_dir, |base_port| ClusterArgs {
            nodes: masters,
            base_port,
            sharded: false,
            groups: 0,
            fs: true,
            chunkservers,
            mr_workers: 0,
            metrics: false,
        })
    }

    fn start(data_dir: &Path, shape: impl Fn(u16) -> ClusterArgs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the cairn executable")?;
        let mut rng = cairn_rpc::seeded_rng();
        let mut members = None;
        for _ in 0..PORT_ATTEMPTS {
            let args = shape(rng.gen_range(LOWEST_BASE_PORT..HIGHEST_BASE_PORT));
            let candidate = if args.fs {
                fs_members(&args, data_dir)
            } else {
                kv_members(&args, data_dir)
            };
            if port_in_use(&candidate).is_none() {
                members = Some(candidate);
                break;
            }
        }
        let Some(members) = members else {
            bail!(
                "found no free run of ports between {LOWEST_BASE_PORT} and {HIGHEST_BASE_PORT} in {PORT_ATTEMPTS} tries; stop what holds them, then retry"
            );
        };
        let mut cluster = Self {
            members,
            data_dir: data_dir.to_path_buf(),
        };
        for member in &mut cluster.members {
            spawn(member, &exe, data_dir)?;
        }
        Ok(cluster)
    }

    /// The URLs clients use: the key/value nodes, or the masters.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| matches!(m.kind, Kind::Kv | Kind::Master))
            .map(|m| m.url.clone())
            .collect()
    }

    /// The process ids of the members still running.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().and_then(Child::id))
            .collect()
    }

    /// An error naming the first member that exited, and its log.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        for member in &mut self.members {
            if let Some(gone) = member.gone() {
                let log = self.data_dir.join(format!("{}.log", member.name));
                bail!(
                    "{gone}; read {} for why (a port taken meanwhile: run again)",
                    log.display()
                );
            }
        }
        Ok(())
    }

    /// Asks every member to stop, kills those still running after 5 s, and
    /// waits for them.
    pub(crate) async fn stop(mut self) {
        stop(&mut self.members).await;
    }
}
