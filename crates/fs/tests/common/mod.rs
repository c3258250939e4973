//! The simulated file store the chunk suites share: three masters, a few
//! chunkservers, small chunks and a short lease, the primary-acceptance
//! log the split-brain check reads, and self-validating records.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_fs::{ChunkServer, ChunkServerConfig, Client, Clock, FsPath, FsSettings, MasterServer};
use cairn_rsm::NodeConfig;
#[allow(unused_imports)] // not every suite writes test bytes
pub(crate) use cairn_testkit::pattern;
use cairn_testkit::{NodeContext, World};
use tokio::time::Instant;

pub(crate) const MASTER_PORT: u16 = 7600;
pub(crate) const CHUNK_PORT: u16 = 7700;
pub(crate) const MASTERS: usize = 3;
pub(crate) const CHUNK_BYTES: u64 = 256 << 10;
/// How long deletions are kept for undelete in the suites.
pub(crate) const RETENTION: Duration = Duration::from_secs(20);

pub(crate) fn settings() -> FsSettings {
    FsSettings {
        chunk_bytes: CHUNK_BYTES,
        lease: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(100),
        replication: 3,
        capacity_bytes: 1 << 30,
        min_free_bytes: CHUNK_BYTES,
        clones_per_server: 2,
        retention: RETENTION,
        ..FsSettings::default()
    }
}

pub(crate) fn master_name(i: usize) -> String {
    format!("master{i}")
}

pub(crate) fn master_url(i: usize) -> String {
    format!("http://{}:{MASTER_PORT}", master_name(i))
}

pub(crate) fn cs_name(i: usize) -> String {
    format!("cs{i}")
}

pub(crate) fn cs_url(i: usize) -> String {
    format!("http://{}:{CHUNK_PORT}", cs_name(i))
}

pub(crate) fn path(text: &str) -> FsPath {
    FsPath::parse(text).unwrap()
}

/// The node name in a chunkserver's URL.
pub(crate) fn host(url: &str) -> String {
    url.trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The namespace's refusal code in a client error, if it is one.
pub(crate) fn code(error: &cairn_fs::ClientError) -> Option<cairn_rpc::fs::FsErrorCode> {
    match error {
        cairn_fs::ClientError::Master(error) => error.code(),
        _ => None,
    }
}

/// Creates `/f` with 2 KiB written, and returns the client with where
/// its first chunk's mutations go (its primary holds a lease).
pub(crate) async fn file_with_a_primary(mut client: Client) -> (Client, cairn_fs::ChunkLocation) {
    client.create(&path("/f")).await.unwrap();
    client
        .write(&path("/f"), 0, &pattern(2048, 1))
        .await
        .unwrap();
    let located = client.locate(&path("/f"), 0, true).await.unwrap();
    (client, located)
}

/// Overwrites the start of `/f` `rounds` times, 100 ms apart, each write
/// required to succeed; then where its mutations go.
pub(crate) async fn keep_writing(
    mut client: Client,
    rounds: u64,
) -> (Client, cairn_fs::ChunkLocation) {
    for round in 0..rounds {
        client
            .write(&path("/f"), 0, &pattern(2048, 10 + round))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let located = client.locate(&path("/f"), 0, true).await.unwrap();
    (client, located)
}

/// One acceptance of a mutation as primary: (when, handle, version, url).
pub(crate) type Acceptance = (Instant, u64, u64, String);

pub(crate) struct Cluster {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) masters: Arc<Mutex<Vec<Option<MasterServer>>>>,
    pub(crate) chunkservers: usize,
    pub(crate) accepted: Arc<Mutex<Vec<Acceptance>>>,
    /// How many acceptances there have been, to wait on.
    pub(crate) acceptances: tokio::sync::watch::Receiver<usize>,
    pub(crate) seed: u64,
    /// What every node and client of this cluster runs with.
    pub(crate) settings: FsSettings,
}

impl Cluster {
    pub(crate) fn start(chunkservers: usize) -> Self {
        Self::start_with_clocks(vec![Clock::default(); chunkservers])
    }

    /// A cluster whose chunkserver `i` measures leases by `clocks[i]`.
    pub(crate) fn start_with_clocks(clocks: Vec<Clock>) -> Self {
        Self::start_with(clocks, settings(), 0)
    }

    /// A cluster whose chunkservers scrub idle replicas at
    /// `bytes_per_sec` (the others never scrub).
    pub(crate) fn start_with_scrub(
        chunkservers: usize,
        settings: FsSettings,
        bytes_per_sec: u64,
    ) -> Self {
        Self::start_with(
            vec![Clock::default(); chunkservers],
            settings,
            bytes_per_sec,
        )
    }

    /// A cluster of `chunkservers` whose nodes and clients run with
    /// `settings`.
    pub(crate) fn start_with_settings(chunkservers: usize, settings: FsSettings) -> Self {
        Self::start_with(vec![Clock::default(); chunkservers], settings, 0)
    }

    fn start_with(clocks: Vec<Clock>, settings: FsSettings, scrub_bytes_per_sec: u64) -> Self {
        let chunkservers = clocks.len();
        cairn_testkit::init_logging();
        let mut world = World::new();
        let masters: Arc<Mutex<Vec<Option<MasterServer>>>> =
            Arc::new(Mutex::new(vec![None, None, None]));
        let peers: BTreeMap<u64, String> = (0..MASTERS)
            .map(|i| (i as u64 + 1, master_url(i)))
            .collect();
        for i in 0..MASTERS {
            let (masters, peers, settings) = (masters.clone(), peers.clone(), settings.clone());
            world.add_node(&master_name(i), move |context: NodeContext| {
                let (masters, peers, settings) = (masters.clone(), peers.clone(), settings.clone());
                async move {
                    let config = NodeConfig::new(i as u64 + 1, peers, "raft");
                    let server =
                        MasterServer::start_with(config, Arc::new(context.disk.clone()), settings)
                            .unwrap_or_else(|e| panic!("master {i} cannot start: {e}"));
                    masters.lock().unwrap()[i] = Some(server.clone());
                    if let Err(error) = server.router().serve(context.bind(MASTER_PORT)).await {
                        panic!("master {i} cannot serve: {error}");
                    }
                }
            });
        }
        let accepted: Arc<Mutex<Vec<Acceptance>>> = Arc::default();
        let (counter, acceptances) = tokio::sync::watch::channel(0usize);
        let counter = Arc::new(counter);
        for (i, clock) in clocks.into_iter().enumerate() {
            let (accepted, counter, settings) =
                (accepted.clone(), counter.clone(), settings.clone());
            world.add_node(&cs_name(i), move |context: NodeContext| {
                let (accepted, counter, settings) =
                    (accepted.clone(), counter.clone(), settings.clone());
                async move {
                    let observer: cairn_fs::PrimaryObserver =
                        Arc::new(move |handle, version, url: &str| {
                            accepted.lock().unwrap().push((
                                Instant::now(),
                                handle,
                                version,
                                url.to_string(),
                            ));
                            counter.send_modify(|n| *n += 1);
                        });
                    let config = ChunkServerConfig {
                        url: context.url(CHUNK_PORT),
                        masters: (0..MASTERS).map(master_url).collect(),
                        dir: "chunks".into(),
                        settings,
                        observer: Some(observer),
                        clock,
                        space: None,
                        scrub_bytes_per_sec,
                    };
                    let server = ChunkServer::start(config, Arc::new(context.disk.clone()))
                        .unwrap_or_else(|e| panic!("chunkserver {i} cannot start: {e}"));
                    if let Err(error) = server.router().serve(context.bind(CHUNK_PORT)).await {
                        panic!("chunkserver {i} cannot serve: {error}");
                    }
                }
            });
        }
        let seed = world.seed();
        Self {
            world: Arc::new(Mutex::new(world)),
            masters,
            chunkservers,
            accepted,
            acceptances,
            seed,
            settings,
        }
    }

    pub(crate) fn fail(&self, message: String) -> ! {
        panic!(
            "{message} (seed {}; replay with MADSIM_TEST_SEED={})",
            self.seed, self.seed
        )
    }

    /// A client on a node of its own, each operation retried for `deadline`.
    pub(crate) fn client(&self, node: &str, deadline: Duration) -> Client {
        self.world.lock().unwrap().add_client(node);
        let urls: Vec<String> = (0..MASTERS).map(master_url).collect();
        Client::new(&urls, self.settings.clone(), deadline).unwrap()
    }

    pub(crate) async fn run<F>(&self, node: &str, future: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.world.lock().unwrap().spawn(node, future);
        match handle.await {
            Ok(output) => output,
            Err(error) => self.fail(format!("the task on {node} did not finish: {error}")),
        }
    }

    pub(crate) fn leader(&self) -> Option<usize> {
        let masters = self.masters.lock().unwrap();
        (0..MASTERS).find(|&i| {
            masters[i].as_ref().is_some_and(|m| {
                let status = m.node().status();
                status.leader == Some(status.id)
            })
        })
    }

    pub(crate) fn kill(&self, node: &str) {
        self.world.lock().unwrap().kill(node);
    }

    pub(crate) fn restart(&self, node: &str) {
        self.world.lock().unwrap().restart(node);
    }

    /// Cuts (or heals, if `heal`) the links between a node and every master.
    pub(crate) fn cut_from_masters(&self, node: &str, heal: bool) {
        let world = self.world.lock().unwrap();
        for i in 0..MASTERS {
            if heal {
                world.heal(node, &master_name(i));
            } else {
                world.cut(node, &master_name(i));
            }
        }
    }

    pub(crate) fn restart_master(&self, i: usize) {
        let mut world = self.world.lock().unwrap();
        world.kill(&master_name(i));
        self.masters.lock().unwrap()[i] = None;
        world.restart(&master_name(i));
    }

    /// Fails if two chunkservers ever accepted mutations as primary of one
    /// chunk at overlapping times, or two at one version.
    pub(crate) fn check_no_split_brain(&self) {
        let accepted = self.accepted.lock().unwrap().clone();
        // (handle, version) -> (url, first, last)
        let mut tenures: BTreeMap<(u64, u64), (String, Instant, Instant)> = BTreeMap::new();
        for (at, handle, version, url) in accepted {
            let tenure = tenures
                .entry((handle, version))
                .or_insert_with(|| (url.clone(), at, at));
            if tenure.0 != url {
                self.fail(format!(
                    "split brain: {} and {url} both accepted mutations as primary of chunk {handle} at version {version}",
                    tenure.0
                ));
            }
            tenure.1 = tenure.1.min(at);
            tenure.2 = tenure.2.max(at);
        }
        let list: Vec<_> = tenures.iter().collect();
        for (i, ((handle, _), (url, first, last))) in list.iter().enumerate() {
            for ((other_handle, _), (other_url, other_first, other_last)) in &list[i + 1..] {
                if handle == other_handle
                    && url != other_url
                    && first <= other_last
                    && other_first <= last
                {
                    self.fail(format!(
                        "split brain: {url} and {other_url} accepted mutations as primaries of chunk {handle} at overlapping times"
                    ));
                }
            }
        }
    }

    /// Every chunkserver's replica of `handle` that answers: (url, version,
    /// bytes).
    pub(crate) async fn replicas_of(
        &self,
        client: &Client,
        handle: u64,
    ) -> Vec<(String, u64, Vec<u8>)> {
        let mut found = Vec::new();
        for i in 0..self.chunkservers {
            if !self.world.lock().unwrap().is_alive(&cs_name(i)) {
                continue;
            }
            if let Ok((bytes, version)) = client
                .read_replica(&cs_url(i), handle, 0, 0, CHUNK_BYTES)
                .await
            {
                found.push((cs_url(i), version, bytes.to_vec()));
            }
        }
        found
    }
}

/// Where a chunkserver keeps the data of replica `handle`.
pub(crate) fn chunk_file(handle: u64) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("chunks/{handle:016x}.chunk"))
}

/// Flips one byte of a replica's data on `disk`, at `offset` (a bit that
/// rotted on the platter: the checksums beside it no longer match).
pub(crate) fn flip(disk: &dyn cairn_storage::Disk, handle: u64, offset: u64) {
    let mut file = disk
        .open(&chunk_file(handle), cairn_storage::OpenMode::Write)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_at(offset, &mut byte).unwrap();
    file.write_at(offset, &[byte[0] ^ 0x5a]).unwrap();
    file.sync().unwrap();
}

/// Removes every file of a chunkserver's store (a wiped disk).
pub(crate) fn wipe(disk: &dyn cairn_storage::Disk) {
    let dir = std::path::Path::new("chunks");
    for name in disk.list(dir).unwrap() {
        disk.remove_file(&dir.join(name)).unwrap();
    }
    disk.sync_dir(dir).unwrap();
}

/// A self-validating record: magic, writer, sequence, payload length,
/// payload, CRC32C of all before it (GFS §2.7.2).
pub(crate) const RECORD_MAGIC: u32 = 0xC0FF_EE01;
pub(crate) const RECORD_OVERHEAD: usize = 20;

pub(crate) fn payload(writer: u32, seq: u32, length: usize) -> Vec<u8> {
    (0..length)
        .map(|i| (writer as usize * 31 + seq as usize * 7 + i) as u8)
        .collect()
}

pub(crate) fn record(writer: u32, seq: u32, length: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_OVERHEAD + length);
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&writer.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&payload(writer, seq, length));
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The record at the start of `bytes`, if one validates: (writer, seq,
/// its size).
pub(crate) fn parse_record(bytes: &[u8]) -> Option<(u32, u32, usize)> {
    let word = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    if word(0)? != RECORD_MAGIC {
        return None;
    }
    let length = word(12)? as usize;
    let size = RECORD_OVERHEAD + length;
    let body = bytes.get(..size - 4)?;
    if crc32c::crc32c(body) != word(size - 4)? {
        return None;
    }
    Some((word(4)?, word(8)?, size))
}

/// Every record a reader finds in `bytes`, skipping padding and garbage.
pub(crate) fn scan_records(bytes: &[u8]) -> Vec<(u32, u32, usize)> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Some((writer, seq, size)) => {
                found.push((writer, seq, at));
                at += size;
            }
            None => at += 1,
        }
    }
    found
}
