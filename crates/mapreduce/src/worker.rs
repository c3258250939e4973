//! The worker: registers with the coordinator, serves its map output to
//! reducers (the Shuffle service), and runs tasks one at a time until told
//! to exit. A heartbeat task reports the running attempt's [`Progress`]
//! every interval, so that a long task that keeps consuming input or
//! producing output is never given to another worker; when the coordinator
//! gives an attempt up (it made no progress for the task timeout, or was
//! done elsewhere), the heartbeat cancels it: its streaming processes are
//! killed and its result is never reported.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
use cairn_rpc::mapreduce::shuffle_server::ShuffleServer;
use cairn_rpc::mapreduce::{
    CompleteTaskRequest, Counter, GetTaskRequest, HeartbeatRequest, JobSpec, RegisterRequest,
    TaskKind, TaskProgress,
};
use cairn_rpc::{ClientOptions, RpcClient, RpcError};
use cairn_storage::Disk;

mod attempt;
mod shuffle;

use attempt::{Abandoned, MapAttempt, ReduceAttempt, run_map, run_reduce};
use shuffle::ShuffleService;

use crate::App;
use crate::app::Counters;
use crate::apps::AppSpec;
use crate::link::Link;
use crate::map_task::SplitBuffer;
use crate::progress::Progress;
use crate::serve::serve;

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
    let mut split_buffer = SplitBuffer::default();
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
                run_map(config, app.clone(), &job, attempt, &mut split_buffer).await
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
