//! The coordinator: a gRPC service over [`JobState`](state::JobState),
//! a ticker that expires attempts that stopped making progress and lost
//! workers, and the journal that lets a restarted coordinator resume the
//! job. One task (the [owner](owner)) holds the state and the journal; the
//! handlers and the ticker send it their changes.

mod commit;
mod journal;
mod owner;
mod resume;
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_rpc::mapreduce::coordinator_server::{Coordinator as CoordinatorRpc, CoordinatorServer};
use cairn_rpc::mapreduce::{
    CompleteTaskReply, CompleteTaskRequest, FetchFailureReply, FetchFailureRequest, GetTaskReply,
    GetTaskRequest, HeartbeatReply, HeartbeatRequest, JobSpec, MapLocationsReply,
    MapLocationsRequest, RegisterReply, RegisterRequest, StatusReply, StatusRequest, TaskKind,
    TaskProgress,
};
use cairn_storage::Disk;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

pub(crate) use journal::JobRecord;
use journal::Record;
use owner::OwnerHandle;
pub use owner::Stopped;
use resume::{ResumeError, open_journal, resume, unix_ms_now};
use state::{Assignment, Completion, JobState};
pub use state::{SchedulerConfig, output_name};

use crate::app::Counters;
use crate::apps::{AppSpec, LIBRARY_PREFIX};
use crate::split::plan_splits;
use crate::store::{self, StoreSplit};

/// How often the coordinator checks for stalled attempts and lost workers.
const TICK: Duration = Duration::from_millis(100);

/// Everything that defines a job and how to run it.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub app: AppSpec,
    /// Input files.
    pub inputs: Vec<String>,
    pub reduces: u32,
    pub split_bytes: u64,
    /// Where reduce output goes (a directory every worker can write).
    pub output_dir: String,
    pub hadoop_names: bool,
    pub scheduler: SchedulerConfig,
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{0}")]
    App(#[from] crate::apps::AppSpecError),
    #[error("cannot read the input: {0}")]
    Input(std::io::Error),
    #[error("journal: {0}")]
    Journal(std::io::Error),
    #[error(
        "{path}: {reason}; the journal cannot be replayed (move the data directory away to start the job afresh)"
    )]
    BadJournal { path: String, reason: String },
    #[error(
        "{dir} holds the journal of job {job_id}, which is not finished ({progress}), and this command \
         line names a different job ({difference}). To resume job {job_id}, start the coordinator with \
         its job again ({previous}); to discard it, remove {dir} (or run this job with another --data-dir)"
    )]
    DifferentJob {
        dir: String,
        job_id: String,
        /// What differs, e.g. `--reduces: 10 there, 4 here`.
        difference: String,
        /// How far the unfinished job got.
        progress: String,
        /// The unfinished job's app, options and inputs, in flags.
        previous: String,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("--reduces must be at least 1")]
    NoReduces,
    #[error("no input files given")]
    NoInputs,
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// A coordinator: a handle on the task that owns the job, behind the gRPC
/// service.
#[derive(Debug, Clone)]
pub struct CoordinatorCore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The task that owns the job's state and journal.
    owner: OwnerHandle,
    heartbeat_interval: Duration,
    /// The file store's masters, for workers.
    fs_masters: Vec<String>,
    /// For jobs whose output is in the store: the task that commits reduce
    /// outputs there, one at a time.
    committer: Option<commit::Committer>,
}

impl CoordinatorCore {
    /// Plans a job of local files (or resumes the one journaled in
    /// `data_dir`).
    pub fn open(
        config: &JobConfig,
        input_disk: &dyn Disk,
        data_disk: &dyn Disk,
        data_dir: PathBuf,
    ) -> Result<Self, CoordinatorError> {
        check(config)?;
        let splits = plan_splits(input_disk, &config.inputs, config.split_bytes)
            .map_err(CoordinatorError::Input)?;
        let splits = splits
            .into_iter()
            .map(|split| StoreSplit {
                split,
                hosts: Vec::new(),
            })
            .collect();
        Self::open_planned(config, splits, StoreAccess::default(), data_disk, data_dir)
    }

    /// Plans a job whose inputs or output may be in the file store
    /// (`fs://PATH`) whose masters are `fs_masters`: the master is asked
    /// where each chunk's replicas are, for locality-aware scheduling, and
    /// reduce outputs are committed by renames in the store.
    pub async fn open_with_store(
        config: &JobConfig,
        fs_masters: &[String],
        input_disk: &dyn Disk,
        data_disk: &dyn Disk,
        data_dir: PathBuf,
    ) -> Result<Self, CoordinatorError> {
        check(config)?;
        let mut client = store::connect(fs_masters)?;
        let mut splits = Vec::new();
        for input in &config.inputs {
            let planned = if store::store_path(input).is_some() {
                store::plan_store_splits(
                    &mut client,
                    std::slice::from_ref(input),
                    config.split_bytes,
                )
                .await?
            } else {
                let local =
                    plan_splits(input_disk, std::slice::from_ref(input), config.split_bytes)
                        .map_err(CoordinatorError::Input)?;
                local
                    .into_iter()
                    .map(|split| StoreSplit {
                        split,
                        hosts: Vec::new(),
                    })
                    .collect()
            };
            splits.extend(planned);
        }
        let store = if store::store_path(&config.output_dir).is_some() {
            let temp = store::final_output(&config.output_dir, store::TEMP_DIR);
            let temp = store::parse_store_path(&temp)?;
            client
                .mkdir(&temp, true)
                .await
                .map_err(store::StoreError::from)?;
            Some(client)
        } else {
            None
        };
        let store = StoreAccess {
            fs_masters: fs_masters.to_vec(),
            client: store,
        };
        Self::open_planned(config, splits, store, data_disk, data_dir)
    }

    fn open_planned(
        config: &JobConfig,
        splits: Vec<StoreSplit>,
        store: StoreAccess,
        data_disk: &dyn Disk,
        data_dir: PathBuf,
    ) -> Result<Self, CoordinatorError> {
        let hosts = splits.iter().map(|s| s.hosts.clone()).collect();
        let splits: Vec<_> = splits.into_iter().map(|s| s.split).collect();
        let (app, pattern, mapper, reducer) = match &config.app {
            AppSpec::BuiltIn { name, pattern } => {
                (name.clone(), pattern.clone(), String::new(), String::new())
            }
            AppSpec::Streaming { mapper, reducer } => (
                "streaming".into(),
                String::new(),
                mapper.clone(),
                reducer.clone(),
            ),
            AppSpec::Library { name } => (
                format!("{LIBRARY_PREFIX}{name}"),
                String::new(),
                String::new(),
                String::new(),
            ),
        };
        let mut job = JobRecord {
            job_id: String::new(),
            app,
            pattern,
            mapper,
            reducer,
            inputs: config.inputs.clone(),
            splits: splits
                .iter()
                .map(|s| (s.path.clone(), s.offset, s.length))
                .collect(),
            reduces: config.reduces,
            output_dir: config.output_dir.clone(),
            hadoop_names: config.hadoop_names,
            started_unix_ms: None,
        };
        let (mut journal, records) = open_journal(data_disk, &data_dir)?;
        let now = Instant::now();
        let wall_ms = unix_ms_now();
        let mut state = match resume(&job, &config.scheduler, &records, now, wall_ms) {
            Ok(Some(state)) => {
                tracing::info!(job = %state.job.job_id, records = records.len(), "resuming the journaled job");
                state
            }
            Ok(None) => {
                use rand::Rng;
                job.job_id = format!("{:08x}", cairn_rpc::seeded_rng().r#gen::<u32>());
                job.started_unix_ms = Some(wall_ms);
                journal
                    .append(&Record::Job(job.clone()))
                    .map_err(CoordinatorError::Journal)?;
                JobState::new(job, config.scheduler.clone(), now)
            }
            Err(ResumeError::DifferentJob(unfinished)) => {
                return Err(unfinished.into_error(&data_dir));
            }
            Err(ResumeError::Bad(reason)) => {
                return Err(CoordinatorError::BadJournal {
                    path: data_dir.join("journal").display().to_string(),
                    reason,
                });
            }
        };
        state.set_split_hosts(hosts);
        let inner = Arc::new_cyclic(|inner| Inner {
            owner: OwnerHandle::start(state, journal),
            heartbeat_interval: config.heartbeat_interval,
            fs_masters: store.fs_masters,
            committer: store
                .client
                .map(|client| commit::Committer::start(inner.clone(), client)),
        });
        Ok(Self { inner })
    }

    /// A gRPC router serving this coordinator, ready for
    /// [`serve`](crate::serve).
    pub fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder().add_service(CoordinatorServer::new(self.clone()))
    }

    /// Runs the expiry ticker until the job is finished and every worker
    /// has been told to exit, or `linger` has passed since the job finished.
    /// Fails if the coordinator stopped (its journal could not be written):
    /// the caller reports it and exits.
    pub async fn run_until_released(&self, linger: Duration) -> Result<(), Stopped> {
        let mut finished_at = None;
        loop {
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            let (released, finished) = self
                .with_state(move |owned| {
                    let records = owned.state.tick(now);
                    owned.persist(&records)?;
                    Ok((owned.state.all_workers_released(), owned.state.finished()))
                })
                .await?;
            if finished {
                let since = *finished_at.get_or_insert(now);
                if released || now.duration_since(since) >= linger {
                    return Ok(());
                }
            }
        }
    }

    /// The job's progress after the last change (updated at least every
    /// tick while [`run_until_released`](Self::run_until_released) runs).
    pub fn status(&self) -> StatusReply {
        self.inner.owner.status()
    }

    /// Has the owner task make a change to the job (and journal it).
    async fn with_state<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut owner::Owned) -> Result<T, Stopped> + Send + 'static,
    ) -> Result<T, Stopped> {
        self.inner.owner.call(change).await
    }

    /// Has the owner task apply a change that returns records, journals
    /// them, and returns the change's answer.
    async fn change<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut JobState) -> (T, Vec<Record>) + Send + 'static,
    ) -> Result<T, Stopped> {
        self.with_state(move |owned| {
            let (answer, records) = change(&mut owned.state);
            owned.persist(&records)?;
            Ok(answer)
        })
        .await
    }

    /// Has the owner task apply a change that journals nothing (an
    /// assignment, a heartbeat, a read).
    async fn apply<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut JobState) -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        self.change(move |state| (read(state), Vec::new())).await
    }

    async fn job_spec(&self) -> Result<JobSpec, Stopped> {
        let heartbeat_interval_ms = self.inner.heartbeat_interval.as_millis() as u64;
        let fs_masters = self.inner.fs_masters.clone();
        self.apply(move |state| {
            let job = &state.job;
            JobSpec {
                app: job.app.clone(),
                pattern: job.pattern.clone(),
                mapper: job.mapper.clone(),
                reducer: job.reducer.clone(),
                reduces: job.reduces,
                output_dir: job.output_dir.clone(),
                hadoop_names: job.hadoop_names,
                splits: Vec::new(),
                heartbeat_interval_ms,
                job_id: job.job_id.clone(),
                fs_masters,
            }
        })
        .await
    }
}

/// A stopped coordinator, to the worker that asked.
impl From<Stopped> for Status {
    fn from(stopped: Stopped) -> Self {
        Status::unavailable(stopped.to_string())
    }
}

/// How a coordinator reaches the file store.
#[derive(Debug, Default)]
struct StoreAccess {
    /// The masters, for workers (none for a job of local files).
    fs_masters: Vec<String>,
    /// A client, for a job whose output is in the store.
    client: Option<cairn_fs::Client>,
}

/// Refuses a job that cannot run, before anything is planned.
fn check(config: &JobConfig) -> Result<(), CoordinatorError> {
    if config.reduces == 0 {
        return Err(CoordinatorError::NoReduces);
    }
    if config.inputs.is_empty() {
        return Err(CoordinatorError::NoInputs);
    }
    if !matches!(config.app, AppSpec::Library { .. }) {
        config.app.build()?;
    }
    Ok(())
}

fn kind_of(value: i32) -> Result<TaskKind, Status> {
    match TaskKind::try_from(value) {
        Ok(kind @ (TaskKind::Map | TaskKind::Reduce)) => Ok(kind),
        _ => Err(Status::invalid_argument(format!(
            "task kind {value} is not map or reduce"
        ))),
    }
}

#[tonic::async_trait]
impl CoordinatorRpc for CoordinatorCore {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let request = request.into_inner();
        if request.shuffle_addr.is_empty() {
            return Err(Status::invalid_argument("shuffle_addr is required"));
        }
        let (addr, host) = (request.shuffle_addr.clone(), request.host.clone());
        let id = self
            .change(move |state| {
                let (id, record) = state.register(addr, host, Instant::now());
                (id, vec![record])
            })
            .await?;
        tracing::debug!(worker = id, addr = %request.shuffle_addr, host = %request.host, pid = request.pid, "worker registered");
        Ok(Response::new(RegisterReply {
            worker_id: id,
            job: Some(self.job_spec().await?),
        }))
    }

    async fn get_task(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskReply>, Status> {
        let worker = request.into_inner().worker_id;
        let assignment = self
            .apply(move |state| state.assign(worker, Instant::now()))
            .await?;
        let mut reply = GetTaskReply::default();
        match assignment {
            Assignment::Map {
                task,
                attempt,
                split,
            } => {
                tracing::debug!(worker, task, attempt, "map assigned");
                reply.kind = TaskKind::Map as i32;
                reply.task = task;
                reply.attempt = attempt;
                reply.split = Some(split);
            }
            Assignment::Reduce {
                task,
                attempt,
                locations,
            } => {
                tracing::debug!(worker, task, attempt, "reduce assigned");
                reply.kind = TaskKind::Reduce as i32;
                reply.task = task;
                reply.attempt = attempt;
                reply.locations = locations;
            }
            Assignment::Wait(after) => {
                reply.kind = TaskKind::Wait as i32;
                reply.retry_after_ms = after.as_millis() as u64;
            }
            Assignment::Exit => reply.kind = TaskKind::Exit as i32,
            Assignment::Reregister => reply.reregister = true,
        }
        Ok(Response::new(reply))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let request = request.into_inner();
        for progress in &request.running {
            kind_of(progress.kind)?;
        }
        let (worker, running) = (request.worker_id, request.running);
        let reply = match self
            .apply(move |state| state.heartbeat(worker, &running, Instant::now()))
            .await?
        {
            None => HeartbeatReply {
                abort: Vec::new(),
                reregister: true,
            },
            Some(abort) => HeartbeatReply {
                abort: abort
                    .into_iter()
                    .map(|(kind, task, attempt)| TaskProgress {
                        kind: kind as i32,
                        task,
                        attempt,
                        ..TaskProgress::default()
                    })
                    .collect(),
                reregister: false,
            },
        };
        Ok(Response::new(reply))
    }

    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<CompleteTaskReply>, Status> {
        let request = request.into_inner();
        let kind = kind_of(request.kind)?;
        let error = (!request.error.is_empty()).then_some(request.error);
        let counters: Counters = request
            .counters
            .into_iter()
            .map(|c| (c.name, c.value))
            .collect();
        let completion = Completion {
            worker: request.worker_id,
            kind,
            task: request.task,
            attempt: request.attempt,
            error,
            counters,
        };
        let accepted = self.complete(completion).await?;
        Ok(Response::new(CompleteTaskReply { accepted }))
    }

    async fn report_fetch_failure(
        &self,
        request: Request<FetchFailureRequest>,
    ) -> Result<Response<FetchFailureReply>, Status> {
        let request = request.into_inner();
        tracing::warn!(
            reducer = request.worker_id,
            map = request.map_task,
            "fetch failed: {}",
            request.error
        );
        let (map, attempt) = (request.map_task, request.map_attempt);
        self.change(move |state| ((), state.fetch_failed(map, attempt).into_iter().collect()))
            .await?;
        Ok(Response::new(FetchFailureReply {}))
    }

    async fn map_locations(
        &self,
        _: Request<MapLocationsRequest>,
    ) -> Result<Response<MapLocationsReply>, Status> {
        let locations = self.apply(|state| state.map_locations()).await?;
        Ok(Response::new(MapLocationsReply { locations }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(CoordinatorCore::status(self)))
    }
}

#[cfg(all(test, not(madsim)))]
mod tests;
