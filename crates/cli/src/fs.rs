//! `cairn fs`: the GFS-style file store — run a master node
//! (`serve-master`) or a chunkserver (`serve-chunk`), and use a store
//! (`put`, `get`, `cat`, `ls`, `mkdir`, `rm`, `undelete`, `mv`, `stat`,
//! `append`, `status`, `df`, `safemode`, `setrep`, `snapshot`; `fsck`, `report`,
//! `checksum` in `fs_health.rs`; `decommission`, `recommission`, `balance`
//! in `fs_balance.rs`). The serve commands are in `fs/serve.rs`; `put`,
//! `get`, `cat` and `append` in `fs/transfer.rs`; `ls`, `stat` and
//! `status` in `fs/show.rs`.

mod serve;
mod show;
mod transfer;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use cairn_fs::{Client, FsPath, FsSettings};
use clap::{Args, Subcommand};

pub(crate) use serve::ServeChunkArgs;
use serve::{serve_chunk, serve_master};
use show::{ls, stat, status};
use transfer::{append, get, put};

use crate::config::Config;
use crate::kv::ServeArgs;

/// The masters of the store `cairn cluster --fs` starts.
pub(crate) const DEFAULT_MASTERS: &str = crate::kv::DEFAULT_ENDPOINTS;

#[derive(Debug, Subcommand)]
pub(crate) enum FsCommand {
    /// Run a master node: one of a Raft group (3 tolerate 1 failure) that
    /// keeps the namespace and the chunk versions.
    ServeMaster(ServeArgs),
    /// Run a chunkserver: it keeps chunk replicas under --data-dir and
    /// reports them to every master.
    ServeChunk(ServeChunkArgs),
    /// Copy a local file into the store (written as PATH._COPYING_, then
    /// renamed, so PATH never holds a partial copy).
    Put(PutArgs),
    /// Copy a file of the store to a local file (`-` for standard output).
    Get(GetArgs),
    /// Print a file of the store.
    Cat(PathArgs),
    /// List a directory (or show a file).
    Ls(LsArgs),
    /// Create a directory (-p: with its parents; an existing one is fine).
    Mkdir(MkdirArgs),
    /// Delete a file, or a directory (-r: with everything in it). It is
    /// kept in the trash for the retention (3 days): `ls --trash` lists it,
    /// `undelete` restores it; --skip-trash deletes at once.
    Rm(RmArgs),
    /// Restore the latest deletion of PATH (within the retention), where
    /// it was; refused if something is at PATH now.
    Undelete(PathArgs),
    /// Move or rename a file or directory, atomically.
    Mv(MvArgs),
    /// Copy a file or directory to a new path at once: the copy shares the
    /// chunks, and the first write to a shared chunk (on either side)
    /// copies it on its chunkservers (copy-on-write).
    Snapshot(MvArgs),
    /// Show a file's chunks (handle, version, replicas) or a directory.
    Stat(PathArgs),
    /// Append each line of standard input as one record (GFS record
    /// append: atomic, at least once, at an offset the store picks).
    Append(PathArgs),
    /// Show every master's role, term and commit index (and, in text, the
    /// chunkservers being decommissioned).
    Status(MastersArgs),
    /// Show every chunkserver's capacity, used and free space, chunk count
    /// and whether it is alive, with totals (as of their last heartbeats).
    Df(MastersArgs),
    /// Check every chunk under PATH now: each replica verified by its
    /// chunkserver and compared (version, length, checksum); lists the
    /// chunks missing, under-replicated, stale, corrupt or diverged, with a
    /// summary; exits 1 if anything is below its goal, missing, corrupt or
    /// diverged.
    Fsck(crate::fs_health::FsckArgs),
    /// Show every chunkserver: capacity, used, free, chunks, seconds since
    /// its last heartbeat, live, and what its background scrub verified and
    /// set aside.
    Report(MastersArgs),
    /// Print a file's CRC32C, composed from its chunks' (each verified on
    /// a replica now): equal for equal content.
    Checksum(PathArgs),
    /// Show or change the master leader's safemode: after it becomes
    /// leader it places, leases and deletes nothing until the chunkservers
    /// have reported enough chunks (or a timeout passes).
    Safemode(SafemodeArgs),
    /// Set how many replicas a file's chunks should have; the master
    /// clones or deletes replicas to match (--wait: until it has).
    Setrep(crate::fs_heal::SetrepArgs),
    /// Drain a chunkserver before it is taken away: it takes no new
    /// chunks, and its chunks are copied to the others; `df` shows it
    /// decommissioned when it can be stopped (--wait: until then).
    Decommission(crate::fs_balance::DecommissionArgs),
    /// Take a decommissioning chunkserver back into service.
    Recommission(crate::fs_balance::RecommissionArgs),
    /// Move replicas until every live chunkserver's used share is within
    /// --threshold percentage points of the cluster's (as HDFS's
    /// balancer), showing progress.
    Balance(crate::fs_balance::BalanceArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SafemodeArgs {
    /// get: show it; enter: hold it until leave; leave: end it now.
    #[arg(value_enum)]
    action: crate::fs_safemode::SafemodeAction,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MastersArgs {
    /// The store's master nodes, comma-separated (default: the store of
    /// `cairn cluster --fs`).
    #[arg(long, value_delimiter = ',', value_parser = crate::kv::parse_endpoint,
          env = "CAIRN_FS_MASTERS", default_value = DEFAULT_MASTERS)]
    pub(crate) masters: Vec<String>,
    /// Seconds an operation may take, retries included.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: u64,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Read every byte through the chunkservers' Read RPC, never through
    /// file descriptors that chunkservers on this machine hand over
    /// (short-circuit reads, on by default).
    #[arg(long, env = "CAIRN_FS_NO_SHORT_CIRCUIT")]
    pub(crate) no_short_circuit: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PathArgs {
    /// A path in the store (absolute: /dir/file).
    #[arg(value_parser = crate::fs_admin::StorePath)]
    pub(crate) path: String,
    #[command(flatten)]
    pub(crate) masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The local file (`-` for standard input).
    local: PathBuf,
    /// Where in the store.
    #[arg(value_parser = crate::fs_admin::StorePath)]
    path: String,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The file in the store.
    #[arg(value_parser = crate::fs_admin::StorePath)]
    path: String,
    /// The local file to write (`-` for standard output).
    local: PathBuf,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// The directory (default /).
    #[arg(default_value = "/", value_parser = crate::fs_admin::StorePath)]
    path: String,
    /// Long listing: kind, size and chunk count (sizes as of the
    /// chunkservers' last heartbeats).
    #[arg(short = 'l')]
    long: bool,
    /// Recursive.
    #[arg(short = 'R')]
    recursive: bool,
    /// List the deletions of PATH and below that can still be restored
    /// (`undelete`), and until when.
    #[arg(long, conflicts_with_all = ["long", "recursive"])]
    trash: bool,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MkdirArgs {
    #[arg(value_parser = crate::fs_admin::StorePath)]
    path: String,
    #[arg(short = 'p')]
    parents: bool,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    #[arg(value_parser = crate::fs_admin::StorePath)]
    path: String,
    #[arg(short = 'r')]
    recursive: bool,
    /// Delete at once instead of keeping it in the trash for undelete.
    #[arg(long)]
    skip_trash: bool,
    #[command(flatten)]
    masters: MastersArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MvArgs {
    #[arg(value_parser = crate::fs_admin::StorePath)]
    from: String,
    /// The new path (nothing there yet, nor inside FROM).
    #[arg(value_parser = crate::fs_admin::StorePath)]
    to: String,
    #[command(flatten)]
    masters: MastersArgs,
}

pub(crate) fn run(command: FsCommand, config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dispatch(command, config))
}

pub(crate) fn path(text: &str) -> anyhow::Result<FsPath> {
    FsPath::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

pub(crate) fn client(args: &MastersArgs) -> anyhow::Result<Client> {
    let mut client = Client::new(
        &args.masters,
        FsSettings::default(),
        Duration::from_secs(args.timeout),
    )
    .map_err(|e| anyhow::anyhow!("{e}; pass --masters http://HOST:PORT,..."))?;
    client.set_short_circuit(!args.no_short_circuit);
    Ok(client)
}

async fn dispatch(command: FsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        FsCommand::ServeMaster(args) => serve_master(args, config).await,
        FsCommand::ServeChunk(args) => serve_chunk(args, config).await,
        FsCommand::Put(args) => {
            crate::fs_admin::check_put_source(&args.local)?;
            put(args).await
        }
        FsCommand::Get(args) => {
            crate::fs_admin::check_get_target(&args.local)?;
            get(args).await
        }
        FsCommand::Cat(args) => {
            let get = GetArgs {
                path: args.path,
                local: "-".into(),
                masters: args.masters,
            };
            self::get(get).await
        }
        FsCommand::Ls(args) if args.trash => crate::fs_trash::list(&args.path, &args.masters).await,
        FsCommand::Ls(args) => ls(args).await,
        FsCommand::Mkdir(args) => {
            client(&args.masters)?
                .mkdir(&path(&args.path)?, args.parents)
                .await?;
            Ok(())
        }
        FsCommand::Rm(args) => {
            crate::fs_admin::check_rm(&args.path)?;
            let (mut client, target) = (client(&args.masters)?, path(&args.path)?);
            if args.skip_trash {
                client
                    .delete_skipping_trash(&target, args.recursive)
                    .await?;
            } else {
                client.delete(&target, args.recursive).await?;
            }
            Ok(())
        }
        FsCommand::Undelete(args) => crate::fs_trash::undelete(&args.path, &args.masters).await,
        FsCommand::Mv(args) => {
            crate::fs_admin::check_mv(&args.from, &args.to)?;
            client(&args.masters)?
                .rename(&path(&args.from)?, &path(&args.to)?, false)
                .await?;
            Ok(())
        }
        FsCommand::Snapshot(args) => {
            crate::fs_admin::check_mv(&args.from, &args.to)?;
            client(&args.masters)?
                .snapshot(&path(&args.from)?, &path(&args.to)?)
                .await?;
            Ok(())
        }
        FsCommand::Stat(args) => stat(args).await,
        FsCommand::Append(args) => append(args).await,
        FsCommand::Status(args) => status(args).await,
        FsCommand::Df(args) => crate::fs_admin::df(&args.masters, args.json).await,
        FsCommand::Fsck(args) => crate::fs_health::fsck(args).await,
        FsCommand::Report(args) => crate::fs_health::report(args).await,
        FsCommand::Checksum(args) => crate::fs_health::checksum(args).await,
        FsCommand::Safemode(args) => {
            let MastersArgs {
                masters,
                timeout,
                json,
                ..
            } = args.masters;
            let timeout = Duration::from_secs(timeout);
            crate::fs_safemode::safemode(&masters, timeout, args.action, json).await
        }
        FsCommand::Setrep(args) => crate::fs_heal::setrep(args).await,
        FsCommand::Decommission(args) => crate::fs_balance::decommission(args).await,
        FsCommand::Recommission(args) => crate::fs_balance::recommission(args).await,
        FsCommand::Balance(args) => crate::fs_balance::balance(args).await,
    }
}
