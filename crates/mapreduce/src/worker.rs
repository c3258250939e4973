//! The worker: registers with the coordinator, serves its map output to
//! reducers (the Shuffle service), and runs tasks one at a time until told
//! to exit. A heartbeat task reports the running attempt's [`Progress`]
//! every interval, so that a long task that keeps consuming input or
//! producing output is never given to another worker; when the coordinator
//! gives an attempt up (it made no progress for the task timeout, or was
//! done elsewhere), the heartbeat cancels it: its streaming processes are
//! killed and its result is never reported.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
use cairn_rpc::mapreduce::shuffle_client::ShuffleClient;
use cairn_rpc::mapreduce::shuffle_server::{Shuffle, ShuffleServer};
use cairn_rpc::mapreduce::{
    CompleteTaskRequest, Counter, FetchFailureRequest, FetchReply, FetchRequest, GetTaskRequest,
    HeartbeatRequest, JobSpec, MapLocation, RegisterRequest, Split, TaskKind, TaskProgress,
};
use cairn_rpc::{ClientOptions, RpcClient, RpcError};
use cairn_storage::{Disk, OpenMode};
use tonic::{Request, Response, Status};

use crate::app::{Counters, counter};
use crate::apps::AppSpec;
use crate::diskio::DiskWriter;
use crate::link::Link;
use crate::map_task::{SplitSource, partition_path, run_map_task};
use crate::progress::Progress;
use crate::reduce_task::{ReduceTarget, run_reduce_task};
use crate::serve::serve;
use crate::store::store_path;
use crate::{App, AppError};

/// The largest page a Fetch returns (under gRPC's 4 MiB message limit).
pub const MAX_FETCH_PAGE_BYTES: u32 = 1024 * 1024;
/// Fetch attempts at one map output before reporting it to the coordinator.
const FETCH_RETRIES: u32 = 3;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator's URL, `http://host:port`.
    pub coordinator: String,
    /// Where the shuffle server listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The URL reducers use to reach this worker; by default
    /// `http://<listen address>`.
    pub advertise: Option<String>,
    /// The local disk for map output and fetched partitions.
    pub scratch: Arc<dyn Disk>,
    /// A directory on `scratch` for this worker; it works in a fresh
    /// subdirectory, removed when the job is done.
    pub scratch_dir: PathBuf,
    /// Where input files are read and output files written.
    pub shared: Arc<dyn Disk>,
    /// How long to keep trying to reach a coordinator that does not answer.
    pub coordinator_timeout: Duration,
    /// The app for jobs whose app is [`AppSpec::Library`] (a Rust [`App`]
    /// compiled into the worker program); `None` for built-in and streaming
    /// apps only.
    pub app: Option<Arc<dyn App>>,
    /// Where this worker runs, for locality-aware scheduling: the URL of
    /// the chunkserver beside it (as the masters know it). `None`: the
    /// machine's hostname, which matches no chunkserver.
    pub host: Option<String>,
}

/// Why a worker stopped before the job was done.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "no answer from the coordinator at {addr} for {}s ({last}); is the job over, or the coordinator \
         down? (--coordinator-timeout sets how long a worker waits)",
        .after.as_secs()
    )]
    CoordinatorGone {
        addr: String,
        after: Duration,
        last: RpcError,
    },
    #[error("cannot start the shuffle server: {0}")]
    Listen(std::io::Error),
    #[error("the coordinator's job cannot run here: {0}")]
    App(#[from] crate::apps::AppSpecError),
    #[error(
        "the shuffle server listens on {0}, which reducers cannot reach; pass --advertise http://HOST:PORT"
    )]
    Unadvertisable(SocketAddr),
}

/// What a worker did.
#[derive(Debug, Default, Clone)]
pub struct WorkerSummary {
    pub maps: u32,
    pub reduces: u32,
    pub failures: u32,
}

/// The attempt running now and its progress, as heartbeats report it.
#[derive(Debug, Default)]
struct Running {
    current: Mutex<Option<(TaskProgress, Progress)>>,
}

/// Serves `part-<r>` files of the map attempts this worker process
/// finished (never leftovers of an earlier process at the same address).
#[derive(Debug, Clone)]
struct ShuffleService {
    scratch: Arc<dyn Disk>,
    dir: PathBuf,
    finished: Arc<Mutex<std::collections::BTreeSet<(u32, u32)>>>,
}

#[tonic::async_trait]
impl Shuffle for ShuffleService {
    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchReply>, Status> {
        let request = request.into_inner();
        let finished = self
            .finished
            .lock()
            .expect("finished lock")
            .contains(&(request.map_task, request.attempt));
        if !finished {
            return Err(Status::not_found(format!(
                "this worker has no output of map {} attempt {}",
                request.map_task, request.attempt
            )));
        }
        let path = partition_path(
            &map_dir(&self.dir, request.map_task, request.attempt),
            request.partition,
        );
        let mut file = self.scratch.open(&path, OpenMode::Read).map_err(|e| {
            Status::not_found(format!(
                "map {} attempt {} partition {}: {e}",
                request.map_task, request.attempt, request.partition
            ))
        })?;
        let total = file.len().map_err(|e| Status::internal(e.to_string()))?;
        let offset = request.offset.min(total);
        let want = u64::from(request.max_bytes.clamp(1, MAX_FETCH_PAGE_BYTES)).min(total - offset);
        let mut data = vec![0; want as usize];
        file.read_exact_at(offset, &mut data)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(FetchReply { data, total }))
    }
}

fn map_dir(root: &Path, task: u32, attempt: u32) -> PathBuf {
    root.join(format!("map-{task}-{attempt}"))
}

/// A reduce attempt given back because a map output it needs was lost;
/// asking for a new task tells the coordinator so.
#[derive(Debug)]
struct Abandoned;

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reduce abandoned: a map output it needs is lost")
    }
}

impl std::error::Error for Abandoned {}

/// Runs a worker until the job is done.
pub async fn run_worker(mut config: WorkerConfig) -> Result<WorkerSummary, WorkerError> {
    // A directory of this process's own, so that files an earlier worker
    // left in the same place are never mixed in (and it is all this worker
    // removes when done).
    let incarnation: u32 = rand::Rng::r#gen(&mut cairn_rpc::seeded_rng());
    config.scratch_dir = config.scratch_dir.join(format!("worker-{incarnation:08x}"));
    let finished = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let shuffle = ShuffleService {
        scratch: config.scratch.clone(),
        dir: config.scratch_dir.clone(),
        finished: finished.clone(),
    };
    config
        .scratch
        .create_dir_all(&config.scratch_dir)
        .map_err(WorkerError::Listen)?;
    let router = tonic::transport::Server::builder().add_service(ShuffleServer::new(shuffle));
    let (bound, server) = serve(router, config.listen)
        .await
        .map_err(WorkerError::Listen)?;
    let advertise = match &config.advertise {
        Some(url) => url.clone(),
        None if bound.ip().is_unspecified() => return Err(WorkerError::Unadvertisable(bound)),
        None => format!("http://{bound}"),
    };
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(10),
    };
    let client = RpcClient::new(config.coordinator.clone(), options).map_err(|last| {
        WorkerError::CoordinatorGone {
            addr: config.coordinator.clone(),
            after: Duration::ZERO,
            last,
        }
    })?;
    let link = Arc::new(Link::new(client, config.coordinator_timeout));
    let result = work(&config, &link, &advertise, &finished).await;
    server.abort();
    if let Err(error) = config.scratch.remove_dir_all(&config.scratch_dir) {
        tracing::debug!("cleaning {}: {error}", config.scratch_dir.display());
    }
    result
}

async fn register(
    link: &Link,
    advertise: &str,
    host: Option<&String>,
) -> Result<(u64, JobSpec), WorkerError> {
    let request = RegisterRequest {
        shuffle_addr: advertise.to_string(),
        host: host
            .cloned()
            .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_default()),
        pid: std::process::id(),
    };
    let reply = link
        .call(request, |channel, request| async move {
            CoordinatorClient::new(channel).register(request).await
        })
        .await?;
    Ok((reply.worker_id, reply.job.unwrap_or_default()))
}

async fn work(
    config: &WorkerConfig,
    link: &Arc<Link>,
    advertise: &str,
    finished: &Mutex<std::collections::BTreeSet<(u32, u32)>>,
) -> Result<WorkerSummary, WorkerError> {
    let (mut worker_id, mut job) = register(link, advertise, config.host.as_ref()).await?;
    tracing::info!(
        "registered with the coordinator at {} as worker {worker_id} of job {}; shuffle server at {advertise}",
        link.client.addr(),
        job.job_id
    );
    let mut app = app_of(&job, config.app.as_ref())?;
    let running = Arc::new(Running::default());
    let worker_cell = Arc::new(AtomicU64::new(worker_id));
    let heartbeats = tokio::spawn(heartbeat_loop(
        link.clone(),
        worker_cell.clone(),
        running.clone(),
        job.heartbeat_interval_ms,
    ));
    let mut summary = WorkerSummary::default();
    let mut progress;
    let outcome = loop {
        let request = GetTaskRequest { worker_id };
        let reply = match link
            .call(request, |channel, request| async move {
                CoordinatorClient::new(channel).get_task(request).await
            })
            .await
        {
            Ok(reply) => reply,
            Err(error) => break Err(error),
        };
        if reply.reregister {
            (worker_id, job) = match register(link, advertise, config.host.as_ref()).await {
                Ok(registered) => registered,
                Err(error) => break Err(error),
            };
            app = app_of(&job, config.app.as_ref())?;
            worker_cell.store(worker_id, Ordering::SeqCst);
            tracing::info!(
                worker = worker_id,
                "registered again (the coordinator restarted)"
            );
            continue;
        }
        let kind = TaskKind::try_from(reply.kind).unwrap_or(TaskKind::Wait);
        let (task, attempt) = (reply.task, reply.attempt);
        let result = match kind {
            TaskKind::Exit => break Ok(summary),
            TaskKind::Wait => {
                tokio::time::sleep(Duration::from_millis(reply.retry_after_ms.clamp(10, 5000)))
                    .await;
                continue;
            }
            TaskKind::Map => {
                progress = running.start(kind, task, attempt);
                let split = reply.split.unwrap_or_default();
                let attempt = MapAttempt {
                    task,
                    attempt,
                    split,
                    progress: progress.clone(),
                };
                run_map(config, app.clone(), &job, attempt).await
            }
            TaskKind::Reduce => {
                progress = running.start(kind, task, attempt);
                let attempt = ReduceAttempt {
                    worker_id,
                    task,
                    attempt,
                    locations: reply.locations,
                    progress: progress.clone(),
                };
                run_reduce(config, link, app.clone(), &job, attempt).await
            }
        };
        running.finish();
        if progress.is_cancelled() {
            tracing::info!(
                task,
                attempt,
                "{kind:?} attempt cancelled: the coordinator gave it up; its result is dropped"
            );
            continue;
        }
        if result.as_ref().is_err_and(|error| error.is::<Abandoned>()) {
            tracing::info!(
                task,
                attempt,
                "reduce given back: a map output it needs is being rebuilt"
            );
            continue;
        }
        let (error, counters) = match result {
            Ok(counters) => {
                if kind == TaskKind::Map {
                    finished
                        .lock()
                        .expect("finished lock")
                        .insert((task, attempt));
                    summary.maps += 1
                } else {
                    summary.reduces += 1
                }
                (String::new(), counters)
            }
            Err(error) => {
                summary.failures += 1;
                tracing::warn!(task, attempt, "{kind:?} task failed: {error}");
                (error.to_string(), Counters::default())
            }
        };
        let request = CompleteTaskRequest {
            worker_id,
            kind: kind as i32,
            task,
            attempt,
            error,
            counters: counters
                .iter()
                .map(|(name, value)| Counter {
                    name: name.to_string(),
                    value,
                })
                .collect(),
        };
        if let Err(error) = link
            .call(request, |channel, request| async move {
                CoordinatorClient::new(channel).complete_task(request).await
            })
            .await
        {
            break Err(error);
        }
    };
    heartbeats.abort();
    outcome
}

fn app_of(job: &JobSpec, library: Option<&Arc<dyn App>>) -> Result<Arc<dyn App>, WorkerError> {
    if let Some(name) = job.app.strip_prefix(crate::apps::LIBRARY_PREFIX) {
        return library.cloned().ok_or_else(|| {
            WorkerError::App(crate::apps::AppSpecError::LibraryApp(name.to_string()))
        });
    }
    let spec = if job.app == "streaming" {
        AppSpec::Streaming {
            mapper: job.mapper.clone(),
            reducer: job.reducer.clone(),
        }
    } else {
        AppSpec::BuiltIn {
            name: job.app.clone(),
            pattern: job.pattern.clone(),
        }
    };
    Ok(spec.build()?)
}

impl Running {
    /// Starts reporting a new attempt; returns its progress.
    fn start(&self, kind: TaskKind, task: u32, attempt: u32) -> Progress {
        let progress = Progress::new();
        let report = TaskProgress {
            kind: kind as i32,
            task,
            attempt,
            ..TaskProgress::default()
        };
        *self.current.lock().expect("running lock") = Some((report, progress.clone()));
        progress
    }

    fn finish(&self) {
        *self.current.lock().expect("running lock") = None;
    }

    /// The running attempt's report. A bounded wait (a shuffle fetch, with
    /// its own deadline and retries) counts as progress.
    fn snapshot(&self) -> Vec<TaskProgress> {
        let current = self.current.lock().expect("running lock");
        current
            .as_ref()
            .map(|(report, progress)| {
                if progress.in_bounded_wait() {
                    progress.advance(1);
                }
                TaskProgress {
                    bytes_done: progress.input_bytes(),
                    progress: progress.count(),
                    ..*report
                }
            })
            .into_iter()
            .collect()
    }

    /// Cancels the running attempt if it is among `abort`.
    fn cancel_if_among(&self, abort: &[TaskProgress]) {
        let current = self.current.lock().expect("running lock");
        let Some((report, progress)) = current.as_ref() else {
            return;
        };
        let same = |other: &TaskProgress| {
            (other.kind, other.task, other.attempt) == (report.kind, report.task, report.attempt)
        };
        if abort.iter().any(same) && !progress.is_cancelled() {
            tracing::warn!(
                task = report.task,
                attempt = report.attempt,
                "the coordinator gave the running attempt up (no progress for the task timeout, or done elsewhere); killing it"
            );
            progress.cancel();
        }
    }
}

async fn heartbeat_loop(
    link: Arc<Link>,
    worker: Arc<AtomicU64>,
    running: Arc<Running>,
    interval_ms: u64,
) {
    let interval = Duration::from_millis(interval_ms.clamp(50, 10_000));
    loop {
        tokio::time::sleep(interval).await;
        let request = HeartbeatRequest {
            worker_id: worker.load(Ordering::SeqCst),
            running: running.snapshot(),
        };
        let reply = link
            .client
            .call(request, |channel, request| async move {
                CoordinatorClient::new(channel).heartbeat(request).await
            })
            .await;
        match reply {
            Ok(reply) => running.cancel_if_among(&reply.abort),
            Err(error) => tracing::debug!("heartbeat failed: {error}"),
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    // The simulator runs everything on one thread in virtual time: the task
    // runs inline there.
    #[cfg(madsim)]
    return f();
    #[cfg(not(madsim))]
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::from(format!("task panicked: {e}")))?
}

/// A map attempt to run.
#[derive(Debug)]
struct MapAttempt {
    task: u32,
    attempt: u32,
    split: Split,
    progress: Progress,
}

async fn run_map(
    config: &WorkerConfig,
    app: Arc<dyn App>,
    job: &JobSpec,
    attempt: MapAttempt,
) -> Result<Counters, AppError> {
    let (scratch, shared) = (config.scratch.clone(), config.shared.clone());
    let dir = map_dir(&config.scratch_dir, attempt.task, attempt.attempt);
    let reduces = job.reduces;
    let MapAttempt {
        split, progress, ..
    } = attempt;
    let read = match store_path(&split.path) {
        Some(_) => {
            let mut client = crate::store::connect(&job.fs_masters)?;
            let reading = crate::store::read_store_split(&mut client, &split);
            Some(progress.bounded_wait(reading).await?)
        }
        None => None,
    };
    let output = run_blocking(move || {
        let input = match read {
            Some(contents) => SplitSource::Read(contents),
            None => SplitSource::Disk(&*shared),
        };
        run_map_task(&*app, input, &*scratch, &dir, &split, reduces, &progress)
    })
    .await?;
    Ok(output.counters)
}

/// A reduce attempt to run.
#[derive(Debug)]
struct ReduceAttempt {
    worker_id: u64,
    task: u32,
    attempt: u32,
    locations: Vec<MapLocation>,
    progress: Progress,
}

async fn run_reduce(
    config: &WorkerConfig,
    link: &Link,
    app: Arc<dyn App>,
    job: &JobSpec,
    reduce: ReduceAttempt,
) -> Result<Counters, AppError> {
    let ReduceAttempt {
        worker_id,
        task,
        attempt,
        mut locations,
        progress,
    } = reduce;
    let dir = config.scratch_dir.join(format!("reduce-{task}-{attempt}"));
    config.scratch.create_dir_all(&dir)?;
    let mut counters = Counters::default();
    let mut runs = Vec::new();
    locations.sort_by_key(|location| location.map_task);
    for location in locations {
        let path = dir.join(format!("map-{}", location.map_task));
        let fetched = progress
            .bounded_wait(fetch_with_retries(
                config, &location, task, &path, &progress,
            ))
            .await;
        match fetched {
            Ok(bytes) => counters.add(counter::SHUFFLE_BYTES, bytes),
            Err(error) => {
                let report = FetchFailureRequest {
                    worker_id,
                    reduce_task: task,
                    map_task: location.map_task,
                    map_attempt: location.attempt,
                    error: error.to_string(),
                };
                link.call(report, |c, r| async move {
                    CoordinatorClient::new(c).report_fetch_failure(r).await
                })
                .await
                .map_err(|e| e.to_string())?;
                // The map runs again; this worker may be needed for it,
                // so it gives the reduce back instead of waiting.
                config.scratch.remove_dir_all(&dir).ok();
                return Err(Box::new(Abandoned));
            }
        }
        runs.push(path);
    }
    let name = crate::coordinator::output_name(job.hadoop_names, task);
    let in_store = store_path(&job.output_dir).is_some();
    // Output for the store is written here first, then copied to the
    // attempt's temporary file there, which the coordinator commits.
    let (output_dir, shared) = if in_store {
        (dir.clone(), config.scratch.clone())
    } else {
        (PathBuf::from(&job.output_dir), config.shared.clone())
    };
    let temp_name = format!(".{name}.attempt-{worker_id}-{attempt}.tmp");
    let scratch = config.scratch.clone();
    let (work_dir, local_output) = (dir.clone(), output_dir.join(&name));
    let (reduce_progress, target_path) = (progress.clone(), local_output.clone());
    let reduce_counters = run_blocking(move || {
        let target = ReduceTarget {
            disk: &*shared,
            path: target_path,
            temp_path: output_dir.join(&temp_name),
        };
        run_reduce_task(&*app, &*scratch, &work_dir, runs, &target, &reduce_progress)
    })
    .await?;
    counters.merge(&reduce_counters);
    if in_store {
        let temp = crate::store::temp_output(&job.output_dir, &name, worker_id, attempt);
        let mut client = crate::store::connect(&job.fs_masters)?;
        let upload = crate::store::upload(
            &mut client,
            &*config.scratch,
            &local_output,
            &temp,
            &progress,
        );
        progress.bounded_wait(upload).await?;
    }
    if let Err(error) = config.scratch.remove_dir_all(&dir) {
        tracing::debug!("cleaning {}: {error}", dir.display());
    }
    Ok(counters)
}

async fn fetch_with_retries(
    config: &WorkerConfig,
    location: &MapLocation,
    partition: u32,
    path: &Path,
    progress: &Progress,
) -> Result<u64, String> {
    let mut last = String::new();
    for retry in 0..FETCH_RETRIES {
        if retry > 0 {
            tokio::time::sleep(Duration::from_millis(100 << retry)).await;
        }
        match fetch(config, location, partition, path, progress).await {
            Ok(bytes) => return Ok(bytes),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Copies one map output partition to `path`, a page at a time.
async fn fetch(
    config: &WorkerConfig,
    location: &MapLocation,
    partition: u32,
    path: &Path,
    progress: &Progress,
) -> Result<u64, String> {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(10),
    };
    let client = RpcClient::new(location.addr.clone(), options).map_err(|e| e.to_string())?;
    let mut file = DiskWriter::create(&*config.scratch, path).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    loop {
        let request = FetchRequest {
            map_task: location.map_task,
            attempt: location.attempt,
            partition,
            offset,
            max_bytes: MAX_FETCH_PAGE_BYTES,
        };
        let reply = client
            .call(request, |channel, request| async move {
                ShuffleClient::new(channel).fetch(request).await
            })
            .await
            .map_err(|e| e.to_string())?;
        use std::io::Write;
        file.write_all(&reply.data).map_err(|e| e.to_string())?;
        offset += reply.data.len() as u64;
        progress.advance(reply.data.len() as u64);
        if offset >= reply.total {
            return Ok(offset);
        }
        if reply.data.is_empty() {
            return Err(format!(
                "map output of task {} shrank while being fetched",
                location.map_task
            ));
        }
    }
}
