//! `cairn kv snapshot save|restore`: backups of a key/value cluster, and
//! the disaster recovery that starts a new cluster from one.
//!
//! `save` asks the cluster's leader for a consistent snapshot (the
//! `Backup.Save` stream: a read barrier, then the state as applied) and
//! writes it as a backup file (`cairn_rsm::BackupFile`: kind, index,
//! term, data, CRC-32C) through a temporary file that is synced and
//! renamed only once the leader's checksum matched: FILE is whole or
//! absent. With `--from-data-dir` it reads a stopped node's data
//! directory instead, for when no quorum is left. `restore` checks a file
//! whole before it writes anything, then writes an empty data directory
//! as a new one-node cluster and prints the `cairn kv serve` command that
//! starts it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_kv::{BACKUP_KIND, KvStore};
use cairn_rpc::backup::backup_client::BackupClient;
use cairn_rpc::backup::save_chunk::Part;
use cairn_rpc::backup::{SaveRequest, SnapshotHeader};
use cairn_rpc::tonic::{Code, Streaming};
use cairn_rsm::{BackupChecksum, BackupFile, BackupHeader, StateSnapshot};
use cairn_storage::RealDisk;
use clap::{Args, Subcommand};

use super::ClientArgs;
use super::serve::{listen_address, lock_data_dir, parse_peers};
use crate::config::Config;
use crate::progress::print_stdout;

/// The directory under `--data-dir` a key/value node keeps its Raft data
/// in (as `kv serve` does).
const RAFT_DIR: &str = "raft";

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Write a consistent backup of the cluster's data to FILE.
    ///
    /// The leader takes it after a read barrier: it holds every write
    /// acknowledged before the command started. FILE appears only when
    /// the whole backup arrived and its checksum matched. With
    /// --from-data-dir DIR it reads a stopped node's data directory
    /// instead (when the cluster lost its quorum for good).
    Save(SaveArgs),
    /// Start a new one-node cluster from a backup, in an empty --data-dir.
    ///
    /// E.g. `cairn kv snapshot restore backup.cairn --data-dir /var/lib/cairn-new --id 1
    /// --peers 1=http://10.0.0.9:7701`; it prints the `cairn kv serve` command that starts the
    /// node. The new cluster never talks to the old one's nodes; grow it by membership change.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SaveArgs {
    /// The backup file to write (replaced if it exists, only once the new
    /// backup is complete).
    file: PathBuf,
    /// Read the data directory of a stopped node (its --data-dir) instead
    /// of asking the cluster: its snapshot and its whole log (the recovery
    /// when the cluster lost its quorum for good). It lacks the last
    /// acknowledged writes if that node was behind the leader.
    #[arg(long, value_name = "DIR")]
    from_data_dir: Option<PathBuf>,
    /// With --from-data-dir: apply the node's log only up to the commit
    /// index it stored, not to its end. A node stores its commit index a
    /// few entries late (a follower learns of a commit a heartbeat after
    /// the leader acknowledged it), so this leaves out acknowledged writes;
    /// the whole log (the default) may instead hold a few writes that were
    /// never committed (their clients saw an error or a timeout).
    #[arg(long, requires = "from_data_dir")]
    committed_only: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup file (from `cairn kv snapshot save`).
    file: PathBuf,
    /// The new node's id.
    #[arg(long)]
    id: u64,
    /// The new node as ID=URL: a restored cluster starts with one node.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<String>,
    /// The address the node will listen on, HOST:PORT (as `kv serve
    /// --listen`; default: its URL's).
    #[arg(long)]
    listen: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: SnapshotCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save(args) => save(args).await,
        SnapshotCommand::Restore(args) => restore(args, config),
    }
}

async fn save(args: SaveArgs) -> anyhow::Result<()> {
    let (header, checksum, note) = match &args.from_data_dir {
        Some(dir) => {
            let (snapshot, note) = snapshot_of_stopped_node(dir, !args.committed_only)?;
            let header = header_of(&snapshot);
            let checksum = write_backup(&args.file, &header, |out| out.write_all(&snapshot.data))?;
            (header, checksum, Some(note))
        }
        None => {
            let deadline = Duration::from_secs(args.client.timeout);
            let (header, checksum) = tokio::time::timeout(deadline, save_from_leader(&args))
                .await
                .with_context(|| {
                    format!(
                        "no backup after {}s; check that the cluster has a leader (`cairn kv \
                         status`) or pass a longer --timeout",
                        args.client.timeout
                    )
                })??;
            (header, checksum, None)
        }
    };
    let checksum = hex(&checksum);
    if args.client.json {
        let answer = serde_json::json!({
            "file": args.file.display().to_string(), "index": header.index, "term": header.term,
            "bytes": header.size, "crc32c": checksum, "note": note,
        });
        print_stdout(&format!("{answer}\n"));
    } else {
        print_stdout(&format!(
            "saved {}: index {}, term {}, {} bytes of data, crc32c {checksum}\n",
            args.file.display(),
            header.index,
            header.term,
            header.size
        ));
        if let Some(note) = note {
            print_stdout(&format!("{note}\n"));
        }
    }
    Ok(())
}

fn header_of(snapshot: &StateSnapshot) -> BackupHeader {
    BackupHeader {
        kind: BACKUP_KIND.into(),
        index: snapshot.index,
        term: snapshot.term,
        size: snapshot.data.len() as u64,
    }
}

/// The state in a stopped node's data directory, and a note on what it
/// may lack.
fn snapshot_of_stopped_node(
    dir: &Path,
    whole_log: bool,
) -> anyhow::Result<(StateSnapshot, String)> {
    if !dir.is_dir() {
        bail!(
            "--from-data-dir {} is not a directory; pass the --data-dir of a stopped node",
            dir.display()
        );
    }
    let _lock = lock_data_dir(dir)?;
    let disk = Arc::new(RealDisk::new(dir).with_context(|| format!("opening {}", dir.display()))?);
    let read =
        cairn_rsm::snapshot_of_data_dir(disk, Path::new(RAFT_DIR), KvStore::new(), whole_log)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut note = if whole_log {
        format!(
            "read from a stopped node's data directory, its whole log (to index {}): it lacks \
             the last acknowledged writes if that node was behind the leader, and may hold \
             writes that were never committed",
            read.snapshot.index
        )
    } else {
        format!(
            "read from a stopped node's data directory, up to the commit index it stored ({}): \
             it lacks the last acknowledged writes if that node was behind the leader",
            read.snapshot.index
        )
    };
    if read.last_index > read.snapshot.index {
        note.push_str(&format!(
            "; its log holds entries up to {} that it did not know committed, left out (drop \
             --committed-only to apply them)",
            read.last_index
        ));
    }
    Ok((read.snapshot, note))
}

/// Asks each endpoint in turn, following a leader hint, for the backup
/// stream, and writes it to the file.
async fn save_from_leader(args: &SaveArgs) -> anyhow::Result<(BackupHeader, [u8; 4])> {
    let mut candidates: Vec<String> = args.client.endpoints.iter().map(|e| url(e)).collect();
    let mut errors = Vec::new();
    let mut at = 0;
    while at < candidates.len() {
        let endpoint = candidates[at].clone();
        at += 1;
        match open_stream(&endpoint).await {
            Ok(stream) => return receive(&args.file, stream).await,
            Err(status) => {
                if let Some(leader) = leader_hint(&status)
                    && !candidates[at..].contains(&leader)
                {
                    candidates.insert(at, leader);
                }
                errors.push(format!("{endpoint}: {}", status.message()));
            }
        }
    }
    bail!(
        "no leader answered with a backup ({}); check the cluster with `cairn kv status` and \
         pass its nodes in --endpoints",
        errors.join("; ")
    )
}

fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// The leader a not-leader answer names.
fn leader_hint(status: &cairn_rpc::tonic::Status) -> Option<String> {
    if status.code() != Code::FailedPrecondition {
        return None;
    }
    let leader = status.metadata().get(cairn_rpc::LEADER_URL_KEY)?;
    Some(url(leader.to_str().ok()?))
}

async fn open_stream(
    endpoint: &str,
) -> Result<Streaming<cairn_rpc::backup::SaveChunk>, cairn_rpc::tonic::Status> {
    let mut client = BackupClient::connect(endpoint.to_string())
        .await
        .map_err(|e| cairn_rpc::tonic::Status::unavailable(format!("cannot connect: {e}")))?;
    let response = client.save(SaveRequest {}).await?;
    Ok(response.into_inner())
}

/// Reads the stream (header, data, checksum) into the backup file.
async fn receive(
    file: &Path,
    mut stream: Streaming<cairn_rpc::backup::SaveChunk>,
) -> anyhow::Result<(BackupHeader, [u8; 4])> {
    let header = match next_part(&mut stream).await? {
        Part::Header(header) => checked_header(header)?,
        _ => bail!("the leader's backup did not start with its header; retry"),
    };
    let bar = crate::progress::bytes_bar(Some(header.size), false);
    let mut chunks = Vec::new();
    let crc = loop {
        match next_part(&mut stream).await? {
            Part::Data(data) => {
                bar.inc(data.len() as u64);
                chunks.push(data);
            }
            Part::Crc32c(crc) => break crc,
            Part::Header(_) => bail!("the leader's backup had two headers; retry"),
        }
    };
    bar.finish_and_clear();
    let received: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let mut data_checksum = BackupChecksum::default();
    chunks.iter().for_each(|chunk| data_checksum.update(chunk));
    let data_crc = u32::from_le_bytes(data_checksum.finish());
    if received != header.size || data_crc != crc {
        bail!(
            "the backup arrived damaged ({received} of {} bytes, checksum {data_crc:08x} for \
             {crc:08x}); nothing was written: retry",
            header.size
        );
    }
    let checksum = write_backup(file, &header, |out| {
        chunks.iter().try_for_each(|chunk| out.write_all(chunk))
    })?;
    Ok((header, checksum))
}

async fn next_part(stream: &mut Streaming<cairn_rpc::backup::SaveChunk>) -> anyhow::Result<Part> {
    match stream.message().await {
        Ok(Some(chunk)) => chunk
            .part
            .context("the leader sent an empty backup message; retry"),
        Ok(None) => bail!("the backup stream ended early; nothing was written: retry"),
        Err(status) => bail!(
            "the backup stream failed ({}); nothing was written: retry",
            status.message()
        ),
    }
}

fn checked_header(header: SnapshotHeader) -> anyhow::Result<BackupHeader> {
    if header.kind != BACKUP_KIND {
        bail!(
            "the endpoints sent a backup of a {:?} service, not a key/value one; pass a \
             key/value cluster's nodes in --endpoints",
            header.kind
        );
    }
    Ok(BackupHeader {
        kind: header.kind,
        index: header.index,
        term: header.term,
        size: header.size,
    })
}

/// Writes the backup file through a temporary file next to it, synced
/// and renamed (and the directory synced): `file` is whole or untouched.
/// Returns the file's checksum.
fn write_backup(
    file: &Path,
    header: &BackupHeader,
    data: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> anyhow::Result<[u8; 4]> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<[u8; 4]> {
        let mut out = Hashing {
            file: std::fs::File::create(&temp)?,
            checksum: BackupChecksum::default(),
        };
        out.write_all(&header.encode())?;
        data(&mut out)?;
        let checksum = out.checksum.finish();
        out.file.write_all(&checksum)?;
        out.file.sync_all()?;
        std::fs::rename(&temp, file)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(checksum)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        anyhow::anyhow!(
            "cannot write {}: {e}; check the directory exists and has room",
            file.display()
        )
    })
}

/// A file writer that keeps the backup checksum of what it wrote.
struct Hashing {
    file: std::fs::File,
    checksum: BackupChecksum,
}

impl std::io::Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.checksum.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn hex(bytes: &[u8; 4]) -> String {
    format!("{:08x}", u32::from_le_bytes(*bytes))
}

/// `restore`: the file checked whole, then the new data directory.
fn restore(args: RestoreArgs, config: &Config) -> anyhow::Result<()> {
    let peers = parse_peers(&args.peers)?;
    let url = match (peers.get(&args.id), peers.len()) {
        (Some(url), 1) => url.clone(),
        _ => bail!(
            "a restored cluster starts with one node: pass --peers {}=http://HOST:PORT only (add \
             the others by membership change once it runs)",
            args.id
        ),
    };
    if let Some(listen) = &args.listen {
        listen_address(listen)
            .with_context(|| format!("--listen {listen:?}: pass HOST:PORT, e.g. 0.0.0.0:7701"))?;
    }
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read the backup {}", args.file.display()))?;
    let backup = BackupFile::decode(&bytes, BACKUP_KIND)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let data_dir = &config.data_dir.0;
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "--data-dir {} is not empty; restore into a new, empty directory (a restore never \
             overwrites data)",
            data_dir.display()
        );
    }
    let disk = Arc::new(
        RealDisk::new(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?,
    );
    let _lock = lock_data_dir(data_dir)?;
    let snapshot = StateSnapshot {
        index: backup.header.index,
        term: backup.header.term,
        data: backup.data,
    };
    let cluster = cairn_rsm::restore_data_dir(
        disk,
        Path::new(RAFT_DIR),
        "cairn",
        args.id,
        &snapshot,
        KvStore::new(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut serve = format!(
        "cairn kv serve --data-dir {} --id {} --peers {}={url}",
        data_dir.display(),
        args.id,
        args.id
    );
    if let Some(listen) = &args.listen {
        serve.push_str(&format!(" --listen {listen}"));
    }
    if args.json {
        let answer = serde_json::json!({
            "data_dir": data_dir.display().to_string(), "cluster": cluster,
            "index": snapshot.index, "term": snapshot.term, "serve": serve,
        });
        print_stdout(&format!("{answer}\n"));
    } else {
        print_stdout(&format!(
            "restored index {} (term {}) into {} as a new one-node cluster ({cluster}); start it \
             with:\n  {serve}\n",
            snapshot.index,
            snapshot.term,
            data_dir.display()
        ));
    }
    Ok(())
}
