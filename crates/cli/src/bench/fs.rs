//! `cairn bench fs`: the file store beside its ceiling, in one run on this
//! machine (issue 13).
//!
//! The ceiling: `--size` bytes written to one local file and fsynced, then
//! read back twice (the second, hot read is the one counted). The store:
//! 3 masters and 3 chunkservers started here as child processes of this
//! binary (as `cairn cluster --fs` starts them; replication 3, fsync on),
//! and clients in this process, each a [`cairn_fs::Client`] of its own on
//! a task of its own:
//!
//! - write: 1 client writes one file of `--size`; 4 clients write 4 files
//!   of a quarter each, at once;
//! - hot read: 1 client reads the first file back, 4 clients the 4 others
//!   (just written, so in the chunkservers' page cache), checking the bytes:
//!   first through the Read RPC only, then as clients read by default,
//!   short-circuit (through file descriptors of the chunkservers on this
//!   machine, which all are here);
//! - record append: 16 clients append 64 KiB records to one file until
//!   `--size` bytes are in;
//! - creates: 64 clients create empty files for `--seconds` (after a 1 s
//!   warm-up);
//! - then the store is stopped, a 3-node key/value cluster started the same
//!   way, and `cairn bench kv`'s put workload run against it by 64 clients
//!   for as long: the reference for creates.
//!
//! Reads and writes go through the client's public calls with
//! `CALL_BYTES` per call, so that a client that pipelines has room to.
//! The table gives each workload's rate, its ratio to the reference the
//! issue names and the target ratio; the GFS paper's figures follow for
//! orientation ([`report`]).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cairn_fs::{Client, FsPath, FsSettings};
use clap::Args;
use rand::{Rng as _, SeedableRng as _};

use crate::bench::{Outcome, Tally};
use crate::cluster::local::LocalCluster;
use crate::config::{Config, Source};
use report::{Reference, Row};

mod report;

/// How many bytes one read or write call moves.
const CALL_BYTES: usize = 8 << 20;
/// The size of one appended record.
const RECORD_BYTES: usize = 64 << 10;
const WRITE_CLIENTS: usize = 4;
const APPEND_CLIENTS: usize = 16;
const CREATE_CLIENTS: usize = 64;
/// The smallest `--size`: a record per append client at least.
const MIN_SIZE: u64 = 1 << 20;
/// How long one client operation may take, retries included.
const OPERATION_DEADLINE: Duration = Duration::from_secs(60);
/// How long a started store or cluster has to serve.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How often readiness is checked.
const READY_POLL: Duration = Duration::from_millis(200);
/// Unmeasured time before creates (as `bench kv` has before puts).
const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub(crate) struct FsBenchArgs {
    /// Bytes per throughput workload: the ceiling file, each write (split
    /// among the clients), each read, the record appends (e.g. 64MiB).
    #[arg(long, default_value = "1GiB", value_parser = crate::mr::parse_size)]
    size: u64,
    /// Seconds of file creates, and of key/value puts for their reference.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// One JSON object (every row, the conditions, the GFS figures)
    /// instead of the table.
    #[arg(long)]
    json: bool,
}

/// A progress line on stderr (a closed stderr is ignored: the lines are
/// for a person).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "bench fs: {line}");
}

pub(crate) fn run(args: FsBenchArgs, config: &Config) -> anyhow::Result<()> {
    if args.size < MIN_SIZE {
        bail!(
            "--size must be at least 1MiB (16 clients append 64 KiB records); pass e.g. --size 64MiB"
        );
    }
    // The global --data-dir (or CAIRN_DATA_DIR) names where the run's
    // directory goes; by default the system's temporary directory.
    let parent = match config.data_dir.1 {
        Source::Flag | Source::Env(_) => config.data_dir.0.clone(),
        Source::Default | Source::File => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("creating {}; pass --data-dir DIR", parent.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("cairn-bench-fs-")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "creating a directory in {}; pass a writable --data-dir DIR",
                parent.display()
            )
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = measure_all(&args, dir.path()) => Some(result),
            _ = crate::kv::wait_for_stop_signal() => None,
        }
    });
    // Dropping the measuring future above killed any process still
    // running; this waits for the ceiling's thread if it was running.
    drop(runtime);
    match outcome {
        Some(Ok(rows)) => {
            report::print(&rows, &args, dir.path());
            Ok(())
        }
        Some(Err(error)) => {
            let kept = dir.keep();
            Err(error.context(format!(
                "the logs and data are kept in {} (delete it when done)",
                kept.display()
            )))
        }
        None => bail!("interrupted; the store's processes were stopped and their data removed"),
    }
}

/// Every workload in order; the rows of the table.
async fn measure_all(args: &FsBenchArgs, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let data = Arc::new(pattern(CALL_BYTES));
    let size = args.size;
    let (ceiling_write, ceiling_read) = ceiling(dir.join("ceiling"), size, data.clone()).await?;
    let write_reference = Reference::new("ceiling write / 3", ceiling_write.value / 3.0);
    let read_reference = Reference::new("ceiling read", ceiling_read.value);
    let mut rows = Vec::new();
    record(&mut rows, ceiling_write);
    record(&mut rows, ceiling_read);

    say("starting the store: 3 masters and 3 chunkservers (replication 3, fsync on)");
    let mut store = LocalCluster::start_fs(&dir.join("store"), 3, 3)?;
    let masters = store.endpoints();
    say(&format!(
        "store processes: pids {:?}, masters {}",
        store.pids(),
        masters.join(",")
    ));
    store_ready(&masters, &mut store).await?;
    let quarter = size / WRITE_CLIENTS as u64;
    let quarters: Vec<(String, u64)> = (0..WRITE_CLIENTS)
        .map(|i| {
            let last = i == WRITE_CLIENTS - 1;
            let bytes = if last {
                size - quarter * i as u64
            } else {
                quarter
            };
            (format!("/bench/w4-{i}"), bytes)
        })
        .collect();
    let one = vec![("/bench/w1".to_string(), size)];
    for (files, name) in [(&one, "write 1 client"), (&quarters, "write 4 clients")] {
        say(&format!(
            "{name}: {} file(s), {} in all, {} MiB per call",
            files.len(),
            crate::progress::human_bytes(size),
            CALL_BYTES >> 20
        ));
        let (bytes, outcome) = transfer(&masters, files, data.clone(), Direction::Write).await?;
        record(
            &mut rows,
            Row::throughput(name, files.len(), bytes, outcome, &write_reference, 0.6),
        );
        store.check_running()?;
    }
    for (files, name, direction) in [
        (&one, "hot read 1 client (RPC)", Direction::ReadRpc),
        (&quarters, "hot read 4 clients (RPC)", Direction::ReadRpc),
        (&one, "hot read 1 client", Direction::Read),
        (&quarters, "hot read 4 clients", Direction::Read),
    ] {
        say(&format!(
            "{name}: what was written, {} MiB per call",
            CALL_BYTES >> 20
        ));
        let (bytes, outcome) = transfer(&masters, files, data.clone(), direction).await?;
        record(
            &mut rows,
            Row::throughput(name, files.len(), bytes, outcome, &read_reference, 0.25),
        );
        store.check_running()?;
    }
    let records = (size / RECORD_BYTES as u64).max(APPEND_CLIENTS as u64);
    say(&format!(
        "record append: {APPEND_CLIENTS} clients, {records} records of 64 KiB to one file"
    ));
    let (bytes, outcome) = append_records(&masters, records, data.clone()).await?;
    let name = "record append 16 clients";
    record(
        &mut rows,
        Row::throughput(name, APPEND_CLIENTS, bytes, outcome, &write_reference, 0.3),
    );
    store.check_running()?;
    say(&format!(
        "creates: {CREATE_CLIENTS} clients, empty files, {} s after a 1 s warm-up",
        args.seconds
    ));
    let creates = create_files(&masters, args.seconds).await?;
    say(&format!(
        "creates 64 clients: {:.1} ops/s (its reference comes next)",
        creates.rate()
    ));
    store.check_running()?;
    say("stopping the store");
    store.stop().await;
    // Its replicas are several times --size; free the disk for the rest.
    let _ = std::fs::remove_dir_all(dir.join("store"));

    say("starting a 3-node key/value cluster for the creates' reference");
    let mut kv = LocalCluster::start_kv(&dir.join("kv"), 3)?;
    let endpoints = kv.endpoints();
    say(&format!(
        "key/value processes: pids {:?}, nodes {}",
        kv.pids(),
        endpoints.join(",")
    ));
    kv_ready(&endpoints, &mut kv).await?;
    say(&format!(
        "kv put: {CREATE_CLIENTS} clients (`cairn bench kv` defaults), {} s after a 1 s warm-up",
        args.seconds
    ));
    let puts = crate::bench_kv::put_outcome(&endpoints, CREATE_CLIENTS, args.seconds).await?;
    kv.check_running()?;
    say("stopping the key/value cluster");
    kv.stop().await;
    let put_reference = Reference::new("kv put x64", puts.rate());
    record(
        &mut rows,
        Row::operations(
            "creates 64 clients",
            CREATE_CLIENTS,
            creates,
            Some((&put_reference, 0.5)),
        ),
    );
    record(
        &mut rows,
        Row::operations("kv put 64 clients", CREATE_CLIENTS, puts, None),
    );
    Ok(rows)
}

/// Announces a workload's result and adds its row.
fn record(rows: &mut Vec<Row>, row: Row) {
    say(&row.summary());
    rows.push(row);
}

/// `len` pseudo-random bytes (nothing along the way can shortcut zeros).
fn pattern(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(13).fill(&mut bytes[..]);
    bytes
}

/// The ceiling: `size` bytes written to `path` and fsynced, then read back
/// twice, the second (hot) read measured; the file is removed after.
async fn ceiling(path: PathBuf, size: u64, data: Arc<Vec<u8>>) -> anyhow::Result<(Row, Row)> {
    say(&format!(
        "ceiling: writing {} to {} and fsyncing it, then reading it back twice",
        crate::progress::human_bytes(size),
        path.display()
    ));
    // A thread of its own (not the runtime's), so that Ctrl-C is still
    // handled while it writes and syncs.
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(ceiling_on_this_thread(&path, size, &data));
    });
    result.await.context("the ceiling's thread failed")?
}

/// [`ceiling`]'s work, blocking.
fn ceiling_on_this_thread(path: &Path, size: u64, data: &[u8]) -> anyhow::Result<(Row, Row)> {
    let started = Instant::now();
    let mut file = std::fs::File::create(path).with_context(|| {
        format!(
            "creating {}; pass a writable --data-dir DIR",
            path.display()
        )
    })?;
    let mut left = size;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        file.write_all(&data[..n])
            .with_context(|| format!("writing {}; is the disk full?", path.display()))?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("fsyncing {}", path.display()))?;
    let write = Row::ceiling("ceiling write + fsync", size, started.elapsed());
    let mut buffer = vec![0u8; data.len()];
    let mut read_time = Duration::ZERO;
    for _ in 0..2 {
        let started = Instant::now();
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut got = 0u64;
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        if got != size {
            bail!(
                "read {got} bytes of {} back instead of {size}; is something else writing there?",
                path.display()
            );
        }
        read_time = started.elapsed();
    }
    let _ = std::fs::remove_file(path);
    Ok((write, Row::ceiling("ceiling read (hot)", size, read_time)))
}

fn client(masters: &[String]) -> anyhow::Result<Client> {
    Client::new(masters, FsSettings::default(), OPERATION_DEADLINE)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn fs_path(text: &str) -> anyhow::Result<FsPath> {
    FsPath::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Waits until the masters have a leader and a new chunk gets its 3
/// replicas (every chunkserver has reported in); creates `/bench`.
async fn store_ready(masters: &[String], store: &mut LocalCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let probe = fs_path("/bench/.probe")?;
    let mut client = client(masters)?;
    loop {
        store.check_running()?;
        let attempt = async {
            client.mkdir(&fs_path("/bench")?, true).await?;
            let _ = client.delete(&probe, false).await;
            client.create(&probe).await?;
            client.write(&probe, 0, b"probe").await?;
            let location = client.locate(&probe, 0, false).await?;
            anyhow::Ok(location.replicas.len())
        };
        let last = match tokio::time::timeout(READY_POLL * 10, attempt).await {
            Ok(Ok(3..)) => break,
            Ok(Ok(replicas)) => format!("a new chunk got {replicas} of 3 replicas"),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => "a probe write took over 2 s".to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "the store did not take a 3-replica write within {READY_DEADLINE:?} (last: {last}); read the master and chunk logs"
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
    client.delete(&probe, false).await?;
    client.mkdir(&fs_path("/bench/creates")?, true).await?;
    Ok(())
}

/// Waits until the key/value cluster takes a put.
async fn kv_ready(endpoints: &[String], cluster: &mut LocalCluster) -> anyhow::Result<()> {
    let config = cairn_kv::ClientConfig {
        call_timeout: Duration::from_millis(500),
        deadline: READY_POLL * 10,
    };
    let mut clerk = cairn_kv::Client::new(endpoints, config)?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        cluster.check_running()?;
        match clerk.put(b"bench-fs-ready", b"ok").await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() >= deadline => bail!(
                "the key/value cluster took no put within {READY_DEADLINE:?} (last: {error}); read the node logs"
            ),
            Err(_) => tokio::time::sleep(READY_POLL).await,
        }
    }
}

/// Runs `work` for each of `count` clients at once; the bytes they moved
/// and their calls' latencies over the wall time of the whole.
async fn each_client<F, Fut>(count: usize, work: F) -> anyhow::Result<(u64, Outcome)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(u64, Vec<Duration>)>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..count).map(|i| tokio::spawn(work(i))).collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.context("a client task failed")??);
    }
    let mut outcome = Outcome::new(started.elapsed());
    let mut bytes = 0;
    for (moved, latencies) in results {
        bytes += moved;
        outcome.add(latencies, 0);
    }
    Ok((bytes, outcome.sorted()))
}

/// Which way [`transfer`] moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Create each file and write it.
    Write,
    /// Read each file back, checking every call's bytes against what was
    /// written: short-circuit (through file descriptors of the
    /// chunkservers on this machine), the client's default.
    Read,
    /// The same through the Read RPC only.
    ReadRpc,
}

/// Each file written or read by a client of its own, `CALL_BYTES` per
/// call.
async fn transfer(
    masters: &[String],
    files: &[(String, u64)],
    data: Arc<Vec<u8>>,
    direction: Direction,
) -> anyhow::Result<(u64, Outcome)> {
    let files = files.to_vec();
    each_client(files.len(), |i| {
        let (name, size) = files[i].clone();
        let (client, data) = (client(masters), data.clone());
        async move {
            let mut client = client?;
            client.set_short_circuit(direction != Direction::ReadRpc);
            let path = fs_path(&name)?;
            if direction == Direction::Write {
                client.create(&path).await?;
            }
            let mut latencies = Vec::new();
            let mut offset = 0u64;
            while offset < size {
                let n = (size - offset).min(data.len() as u64);
                let expected = &data[..n as usize];
                let started = Instant::now();
                match direction {
                    Direction::Write => client
                        .write(&path, offset, expected)
                        .await
                        .with_context(|| format!("writing {name}"))?,
                    Direction::Read | Direction::ReadRpc => {
                        let got = client
                            .read(&path, offset, n)
                            .await
                            .with_context(|| format!("reading {name}"))?;
                        if got != expected {
                            bail!(
                                "{name} at {offset}: read {} bytes that differ from the {n} written; the store returned wrong data",
                                got.len()
                            );
                        }
                    }
                }
                latencies.push(started.elapsed());
                offset += n;
            }
            Ok((size, latencies))
        }
    })
    .await
}

/// `records` records of `RECORD_BYTES` appended to one file by
/// `APPEND_CLIENTS` clients.
async fn append_records(
    masters: &[String],
    records: u64,
    data: Arc<Vec<u8>>,
) -> anyhow::Result<(u64, Outcome)> {
    let name = "/bench/append";
    client(masters)?.create(&fs_path(name)?).await?;
    let clients = APPEND_CLIENTS as u64;
    each_client(APPEND_CLIENTS, |i| {
        let mine = records / clients + u64::from((i as u64) < records % clients);
        let (client, data) = (client(masters), data.clone());
        async move {
            let mut client = client?;
            let path = fs_path(name)?;
            let mut latencies = Vec::new();
            for _ in 0..mine {
                let started = Instant::now();
                client
                    .append(&path, &data[..RECORD_BYTES])
                    .await
                    .with_context(|| format!("appending to {name}"))?;
                latencies.push(started.elapsed());
            }
            Ok((mine * RECORD_BYTES as u64, latencies))
        }
    })
    .await
}

/// Empty files created by `CREATE_CLIENTS` clients for `seconds` after the
/// warm-up; failures are counted, not fatal (as in `bench kv`).
async fn create_files(masters: &[String], seconds: u64) -> anyhow::Result<Outcome> {
    let warm_up = Instant::now() + WARM_UP;
    let end = warm_up + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..CREATE_CLIENTS {
        let mut client = client(masters)?;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for n in 0u64.. {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = match fs_path(&format!("/bench/creates/c{i}-{n}")) {
                    Ok(path) => client.create(&path).await.map_err(anyhow::Error::from),
                    Err(error) => Err(error),
                };
                tally.record(started, warm_up, &result);
            }
            tally
        }));
    }
    let mut outcome = Outcome::new(Duration::from_secs(seconds));
    for task in tasks {
        outcome.add_tally(task.await.context("a create task failed")?);
    }
    if outcome.completed() == 0 {
        bail!(
            "no create completed in {seconds} s ({} errors; the first: {}); read the master logs",
            outcome.errors,
            outcome.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(outcome.sorted())
}
