//! [`fsck`]: the store's health, checked now (what `cairn fs fsck` prints),
//! and [`file_checksum`]: a file's CRC32C composed from its chunks'.
//!
//! The walk: list the namespace under a path; ask the master leader, per
//! chunk, for the replicas it heard of and the chunk's goal (`Fsck`); ask
//! every live chunkserver named to verify its replica now (`Inspect`: each
//! block against its checksum, a CRC32C of the bytes); then compare. A
//! replica counts toward the goal only if it verified in this run at the
//! version reads are served at: a heartbeat is never taken for health.
//!
//! A chunk is *missing* (no good replica), *under-replicated* (fewer good
//! replicas than its goal), has *stale* replicas (an older version: they
//! missed mutations), *corrupt* ones (blocks failing their checksums, or
//! data that cannot be read: the chunkserver sets them aside), or is
//! *diverged* (good replicas whose length or checksum differ). Otherwise it
//! is healthy. Chunks are checked [`CHUNKS_PER_ROUND`] at a time, each
//! chunkserver's inspections running alongside the others'.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::{EntryInfo, FsckChunk, InspectReplica, InspectRequest};

use crate::client::{Client, ClientError};
use crate::namespace::ChunkHandle;
use crate::path::FsPath;
use crate::peers::Peers;

/// How many chunks one round of the walk checks (one `Fsck` request).
pub const CHUNKS_PER_ROUND: usize = 256;
/// How many replicas one `Inspect` call verifies (each up to a chunk).
const INSPECT_BATCH: usize = 8;
/// How long one `Inspect` call may take (it reads its replicas whole).
pub(crate) const INSPECT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What fsck found of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaState {
    /// Verified now at the version reads are served at: counts.
    Good,
    /// At an older version than reads are served at.
    Stale,
    /// These blocks fail their checksums (the replica is now set aside).
    Corrupt(Vec<u64>),
    /// Its data could not be read (the message says why).
    Unreadable(String),
    /// The master heard of it, but its chunkserver holds none now.
    Gone,
    /// Its chunkserver is dead or did not answer.
    Unreachable(String),
}

/// One replica as fsck saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHealth {
    pub url: String,
    pub state: ReplicaState,
    /// As verified now (or, if it could not be, as last reported).
    pub version: u64,
    pub length: u64,
    /// CRC32C of its bytes, if it verified.
    pub crc32c: Option<u32>,
}

/// What is wrong with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    Missing,
    UnderReplicated,
    Stale,
    Corrupt,
    Diverged,
}

impl Problem {
    pub const ALL: [Problem; 5] = [
        Problem::Missing,
        Problem::UnderReplicated,
        Problem::Stale,
        Problem::Corrupt,
        Problem::Diverged,
    ];

    /// Its name in fsck's output.
    pub fn name(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::UnderReplicated => "under-replicated",
            Problem::Stale => "stale",
            Problem::Corrupt => "corrupt",
            Problem::Diverged => "diverged",
        }
    }

    /// Whether it makes fsck fail (a stale replica alone does not: the
    /// chunk may still have its good replicas).
    pub fn fails(self) -> bool {
        self != Problem::Stale
    }
}

/// One chunk as fsck saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHealth {
    pub index: u64,
    pub handle: ChunkHandle,
    /// The version reads are served at.
    pub version: u64,
    pub goal: u64,
    pub replicas: Vec<ReplicaHealth>,
    /// Empty: healthy.
    pub problems: Vec<Problem>,
}

impl ChunkHealth {
    /// How many replicas verified now.
    pub fn good(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Good)
            .count()
    }
}

/// One file as fsck saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHealth {
    pub path: String,
    /// Its size as of the chunkservers' last heartbeats.
    pub length: u64,
    pub chunks: Vec<ChunkHealth>,
}

/// Everything fsck found under a path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    pub files: Vec<FileHealth>,
    pub directories: usize,
}

impl FsckReport {
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkHealth> {
        self.files.iter().flat_map(|f| f.chunks.iter())
    }

    /// How many chunks have `problem`.
    pub fn count(&self, problem: Problem) -> usize {
        self.chunks()
            .filter(|c| c.problems.contains(&problem))
            .count()
    }

    pub fn healthy_chunks(&self) -> usize {
        self.chunks().filter(|c| c.problems.is_empty()).count()
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.length).sum()
    }

    /// Nothing below its goal, missing, corrupt or diverged.
    pub fn is_healthy(&self) -> bool {
        self.chunks()
            .all(|c| c.problems.iter().all(|problem| !problem.fails()))
    }
}

/// Checks every file under `root` now. `progress` hears (chunks checked,
/// chunks in all) after each round.
pub async fn fsck(
    client: &mut Client,
    root: &FsPath,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<FsckReport, ClientError> {
    let (entries, directories) = walk(client, root).await?;
    let peers = Peers::new(INSPECT_CALL_TIMEOUT);
    // (file number, chunk index, handle) for every chunk, in order.
    let all: Vec<(usize, u64, ChunkHandle)> = entries
        .iter()
        .enumerate()
        .flat_map(|(file, entry)| {
            let chunks = entry.chunks.iter().enumerate();
            chunks.map(move |(index, chunk)| (file, index as u64, chunk.handle))
        })
        .collect();
    let mut files: Vec<FileHealth> = entries
        .iter()
        .map(|e| FileHealth {
            path: e.path.clone(),
            length: e.length,
            chunks: Vec::new(),
        })
        .collect();
    for (round, chunks) in all.chunks(CHUNKS_PER_ROUND).enumerate() {
        let handles = chunks.iter().map(|&(_, _, handle)| handle).collect();
        let known = client.master().fsck(handles).await?.chunks;
        let inspected = inspect_all(&peers, &known).await;
        for (&(file, index, _), chunk) in chunks.iter().zip(&known) {
            if chunk.known {
                files[file].chunks.push(judge(index, chunk, &inspected));
            }
        }
        progress(
            (round * CHUNKS_PER_ROUND + chunks.len()).min(all.len()),
            all.len(),
        );
    }
    Ok(FsckReport { files, directories })
}

/// Every file under `root` (or `root` itself), and how many directories.
async fn walk(client: &Client, root: &FsPath) -> Result<(Vec<EntryInfo>, usize), ClientError> {
    let mut files = BTreeMap::new();
    let mut directories = 0;
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in client.list(&dir).await? {
            if !entry.directory {
                files.insert(entry.path.clone(), entry);
            } else if entry.path == dir.as_str() {
                continue;
            } else {
                directories += 1;
                let path = FsPath::parse(&entry.path)
                    .map_err(|e| ClientError::Refused(format!("{}: {e}", entry.path)))?;
                pending.push(path);
            }
        }
    }
    Ok((files.into_values().collect(), directories))
}

/// (chunkserver URL, handle) -> what the chunkserver answered.
type Inspected = BTreeMap<(String, ChunkHandle), Result<InspectReplica, String>>;

/// Asks every live chunkserver named in `chunks` to verify its replicas,
/// the chunkservers at once, each one batch after another.
async fn inspect_all(peers: &Peers, chunks: &[FsckChunk]) -> Inspected {
    let mut wanted: BTreeMap<&str, Vec<ChunkHandle>> = BTreeMap::new();
    for chunk in chunks {
        for replica in chunk.replicas.iter().filter(|r| r.live) {
            wanted.entry(&replica.url).or_default().push(chunk.handle);
        }
    }
    let calls = wanted.into_iter().map(|(url, handles)| async move {
        let mut found = Vec::new();
        for batch in handles.chunks(INSPECT_BATCH) {
            let answer = inspect(peers, url, batch.to_vec()).await;
            for &handle in batch {
                let one = match &answer {
                    Ok(replicas) => replicas
                        .iter()
                        .find(|r| r.handle == handle)
                        .cloned()
                        .ok_or_else(|| format!("{url} did not answer for chunk {handle}")),
                    Err(error) => Err(error.clone()),
                };
                found.push(((url.to_string(), handle), one));
            }
        }
        found
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One `Inspect` call.
pub(crate) async fn inspect(
    peers: &Peers,
    url: &str,
    handles: Vec<ChunkHandle>,
) -> Result<Vec<InspectReplica>, String> {
    let peer = peers.get(url).map_err(|e| e.to_string())?;
    peer.call(InspectRequest { handles }, |c, r| async move {
        ChunkClient::new(c).inspect(r).await
    })
    .await
    .map(|reply| reply.replicas)
    .map_err(|e| e.to_string())
}

/// Judges one chunk from what the master knows and what its chunkservers
/// found now.
fn judge(index: u64, chunk: &FsckChunk, inspected: &Inspected) -> ChunkHealth {
    let replicas: Vec<ReplicaHealth> = chunk
        .replicas
        .iter()
        .map(|known| {
            let mut health = ReplicaHealth {
                url: known.url.clone(),
                state: ReplicaState::Unreachable(
                    "its chunkserver has not reported within the dead-after period".into(),
                ),
                version: known.version,
                length: known.length,
                crc32c: None,
            };
            if let Some(answer) = inspected.get(&(known.url.clone(), chunk.handle)) {
                health.state = match answer {
                    Ok(replica) => replica_state(replica, chunk.serving_version, &mut health),
                    Err(error) => ReplicaState::Unreachable(error.clone()),
                };
            }
            health
        })
        .collect();
    let mut health = ChunkHealth {
        index,
        handle: chunk.handle,
        version: chunk.serving_version,
        goal: chunk.goal,
        replicas,
        problems: Vec::new(),
    };
    health.problems = problems(&health);
    health
}

/// A replica's state from its inspection (filling in its version, length
/// and checksum).
fn replica_state(
    replica: &InspectReplica,
    serving: u64,
    health: &mut ReplicaHealth,
) -> ReplicaState {
    if !replica.present {
        return ReplicaState::Gone;
    }
    (health.version, health.length) = (replica.version, replica.length);
    if !replica.corrupt_blocks.is_empty() {
        ReplicaState::Corrupt(replica.corrupt_blocks.clone())
    } else if !replica.error.is_empty() {
        ReplicaState::Unreadable(replica.error.clone())
    } else if replica.version < serving {
        ReplicaState::Stale
    } else {
        health.crc32c = Some(replica.crc32c);
        ReplicaState::Good
    }
}

/// What is wrong with a chunk, judged from its replicas.
fn problems(chunk: &ChunkHealth) -> Vec<Problem> {
    let good: Vec<&ReplicaHealth> = chunk
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Good)
        .collect();
    let any = |f: fn(&ReplicaState) -> bool| chunk.replicas.iter().any(|r| f(&r.state));
    let mut found = Vec::new();
    if good.is_empty() {
        found.push(Problem::Missing);
    } else if (good.len() as u64) < chunk.goal {
        found.push(Problem::UnderReplicated);
    }
    if any(|s| *s == ReplicaState::Stale) {
        found.push(Problem::Stale);
    }
    if any(|s| matches!(s, ReplicaState::Corrupt(_) | ReplicaState::Unreadable(_))) {
        found.push(Problem::Corrupt);
    }
    if good
        .windows(2)
        .any(|w| (w[0].length, w[0].crc32c) != (w[1].length, w[1].crc32c))
    {
        found.push(Problem::Diverged);
    }
    found
}
