//! `cairn fs`: the GFS-style file store — run a master node
//! (`serve-master`) or a chunkserver (`serve-chunk`), and use a store
//! (`put`, `get`, `cat`, `ls`, `mkdir`, `rm`, `undelete`, `mv`, `stat`,
//! `append`, `status`, `df`, `safemode`, `setrep`, `snapshot`; `fsck`, `report`,
//! `checksum` in `fs_health.rs`; `decommission`, `recommission`, `balance`
//! in `fs_balance.rs`).

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_fs::{
    ChunkServer, ChunkServerConfig, Client, DiskSpace, FsPath, FsSettings, MasterServer,
};
use cairn_rpc::fs::EntryInfo;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::kv::{ServeArgs, prepare_node, run_until_stopped};
use crate::progress::print_stdout;

/// The masters of the store `cairn cluster --fs` starts.
pub(crate) const DEFAULT_MASTERS: &str = crate::kv::DEFAULT_ENDPOINTS;
/// How much a command reads or writes per call.
const PIECE_BYTES: usize = 4 << 20;

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

async fn serve_master(args: ServeArgs, config: &Config) -> anyhow::Result<()> {
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

async fn serve_chunk(args: ServeChunkArgs, config: &Config) -> anyhow::Result<()> {
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

async fn put(args: PutArgs) -> anyhow::Result<()> {
    let target = path(&args.path)?;
    let copying = path(&format!("{target}._COPYING_"))?;
    let mut input: Box<dyn std::io::Read> = if args.local.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.local)
                .with_context(|| format!("cannot open {}", args.local.display()))?,
        )
    };
    let total = std::fs::metadata(&args.local).map(|m| m.len()).ok();
    let mut client = client(&args.masters)?;
    // A copy left by an interrupted put is replaced.
    let _ = client.delete(&copying, false).await;
    client.create(&copying).await?;
    let bar = crate::progress::bytes_bar(total, args.masters.json);
    let mut buffer = vec![0u8; PIECE_BYTES];
    let mut writer = client.writer(&copying, 0);
    loop {
        let n = read_full(&mut input, &mut buffer)
            .with_context(|| format!("reading {}", args.local.display()))?;
        if n == 0 {
            break;
        }
        writer.write(&buffer[..n]).await?;
        bar.set_position(writer.acknowledged());
    }
    let offset = writer.finish().await?;
    bar.set_position(offset);
    client.rename(&copying, &target, true).await?;
    bar.finish_and_clear();
    if args.masters.json {
        print_stdout(&format!(
            "{}\n",
            serde_json::json!({"path": target.as_str(), "bytes": offset})
        ));
    } else {
        eprintln!("wrote {offset} bytes to {target}");
    }
    Ok(())
}

/// Fills `buffer` as far as the input goes; returns how much it read.
fn read_full(input: &mut dyn std::io::Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        match input.read(&mut buffer[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let source = path(&args.path)?;
    let mut client = client(&args.masters)?;
    let entry = client.stat(&source).await?;
    if entry.directory {
        bail!("{source} is a directory; `cairn fs ls {source}` lists it");
    }
    let mut output: Box<dyn std::io::Write> = if args.local.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.local)
                .with_context(|| format!("cannot create {}", args.local.display()))?,
        )
    };
    let bar = crate::progress::bytes_bar(None, args.masters.json);
    let mut reader = client.reader(&source, 0, u64::MAX);
    while let Some(bytes) = reader.next().await? {
        output.write_all(&bytes).context("writing the output")?;
        bar.inc(bytes.len() as u64);
    }
    output.flush().context("writing the output")?;
    bar.finish_and_clear();
    Ok(())
}

fn describe(entry: &EntryInfo, long: bool) -> String {
    if !long {
        return format!("{}{}", entry.path, if entry.directory { "/" } else { "" });
    }
    if entry.directory {
        format!("dir   {:>12}  {:>6}  {}/", "-", "-", entry.path)
    } else {
        format!(
            "file  {:>12}  {:>6}  {}",
            entry.length,
            entry.chunks.len(),
            entry.path
        )
    }
}

async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = client(&args.masters)?;
    let mut pending = vec![path(&args.path)?];
    let mut all = Vec::new();
    while let Some(dir) = pending.pop() {
        let entries = client.list(&dir).await?;
        for entry in entries.iter().rev() {
            if args.recursive && entry.directory && entry.path != dir.as_str() {
                pending.push(path(&entry.path)?);
            }
        }
        all.extend(entries);
    }
    if args.masters.json {
        let list: Vec<_> = all.iter().map(entry_json).collect();
        print_stdout(&format!("{}\n", serde_json::Value::Array(list)));
    } else {
        if args.long {
            print_stdout(&format!("kind  {:>12}  chunks  path\n", "bytes"));
        }
        let lines: Vec<String> = all.iter().map(|e| describe(e, args.long)).collect();
        if !lines.is_empty() {
            print_stdout(&format!("{}\n", lines.join("\n")));
        }
    }
    Ok(())
}

fn entry_json(entry: &EntryInfo) -> serde_json::Value {
    serde_json::json!({
        "path": entry.path,
        "directory": entry.directory,
        "bytes": entry.length,
        "chunks": entry.chunks.iter().map(|c| serde_json::json!({"handle": c.handle, "version": c.version})).collect::<Vec<_>>(),
    })
}

async fn stat(args: PathArgs) -> anyhow::Result<()> {
    let target = path(&args.path)?;
    let client = client(&args.masters)?;
    let entry = client.stat(&target).await?;
    let mut chunks = Vec::new();
    for (index, chunk) in entry.chunks.iter().enumerate() {
        let location = client.locate(&target, index as u64, false).await?;
        chunks.push((chunk, location.replicas));
    }
    if args.masters.json {
        let mut value = entry_json(&entry);
        value["replicas"] = chunks.iter().map(|(_, r)| serde_json::json!(r)).collect();
        print_stdout(&format!("{value}\n"));
        return Ok(());
    }
    let mut out = format!(
        "{}  {}\n",
        entry.path,
        if entry.directory { "directory" } else { "file" }
    );
    if !entry.directory {
        out.push_str(&format!(
            "{} bytes ({}; as of the chunkservers' last heartbeats), {} chunks\n",
            entry.length,
            crate::progress::human_bytes(entry.length),
            chunks.len()
        ));
        for (index, (chunk, replicas)) in chunks.iter().enumerate() {
            out.push_str(&format!(
                "  chunk {index}: handle {} version {} replicas {}\n",
                chunk.handle,
                chunk.version,
                replicas.join(",")
            ));
        }
    }
    print_stdout(&out);
    Ok(())
}

async fn append(args: PathArgs) -> anyhow::Result<()> {
    let target = path(&args.path)?;
    let mut client = client(&args.masters)?;
    if client.stat(&target).await.is_err() {
        client.create(&target).await?;
    }
    let mut count = 0u64;
    for line in std::io::stdin().lock().split(b'\n') {
        let mut record = line.context("reading standard input")?;
        record.push(b'\n');
        let offset = client.append(&target, &record).await?;
        count += 1;
        if args.masters.json {
            print_stdout(&format!("{}\n", serde_json::json!({"offset": offset})));
        }
    }
    if !args.masters.json {
        eprintln!("appended {count} records to {target}");
    }
    Ok(())
}

async fn status(args: MastersArgs) -> anyhow::Result<()> {
    use cairn_rpc::fs::master_client::MasterClient as Stub;
    use cairn_rpc::kv::StatusRequest;
    let options = cairn_rpc::ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
    };
    let mut out = format!(
        "{:<28} {:>4} {:<10} {:>6} {:>7} {:>9} {:>9}\n",
        "master", "id", "role", "term", "leader", "commit", "applied"
    );
    let mut answered = 0;
    let mut rows = Vec::new();
    for endpoint in &args.masters {
        let server = cairn_rpc::RpcClient::new(endpoint.clone(), options.clone())?;
        match server
            .call(StatusRequest {}, |c, r| async move {
                Stub::new(c).status(r).await
            })
            .await
        {
            Ok(s) => {
                answered += 1;
                out.push_str(&format!(
                    "{endpoint:<28} {:>4} {:<10} {:>6} {:>7} {:>9} {:>9}\n",
                    s.id, s.role, s.term, s.leader, s.commit, s.applied
                ));
                rows.push(
                    serde_json::json!({"endpoint": endpoint, "id": s.id, "role": s.role,
                    "term": s.term, "leader": s.leader, "commit": s.commit, "applied": s.applied}),
                );
            }
            Err(error) => {
                out.push_str(&format!("{endpoint:<28} unreachable: {error}\n"));
                rows.push(serde_json::json!({"endpoint": endpoint, "error": error.to_string()}));
            }
        }
    }
    if args.json {
        print_stdout(&format!("{}\n", serde_json::Value::Array(rows)));
    } else {
        if let Ok(usage) = crate::fs_admin::fetch_usage(&args.masters).await {
            for server in usage.servers.iter().filter(|s| s.decommissioning) {
                let state = crate::fs_balance::service_state(server);
                out.push_str(&format!("chunkserver {}: {state}\n", server.url));
            }
        }
        print_stdout(&out);
    }
    if answered == 0 {
        bail!("no master answered; is the store running? (`cairn cluster --fs` starts one)");
    }
    Ok(())
}
