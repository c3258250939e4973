//! Running one attempt the coordinator assigned: a map attempt reads its
//! split (from disk into the worker's buffer, or from the file store) and
//! runs the app on a blocking thread; a reduce attempt fetches its
//! partition of every map output, merges and reduces it, and writes its
//! output file (committed by the coordinator when it is in the store).

use std::path::PathBuf;
use std::sync::Arc;

use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
use cairn_rpc::mapreduce::{FetchFailureRequest, JobSpec, MapLocation, Split};

use super::WorkerConfig;
use super::shuffle::{fetch_with_retries, map_dir};
use crate::app::{Counters, counter};
use crate::link::Link;
use crate::map_task::{SplitBuffer, SplitSource, run_map_task};
use crate::progress::Progress;
use crate::reduce_task::{ReduceTarget, run_reduce_task};
use crate::store::store_path;
use crate::{App, AppError};

/// A reduce attempt given back because a map output it needs was lost;
/// asking for a new task tells the coordinator so.
#[derive(Debug)]
pub(super) struct Abandoned;

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reduce abandoned: a map output it needs is lost")
    }
}

impl std::error::Error for Abandoned {}

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
pub(super) struct MapAttempt {
    pub(super) task: u32,
    pub(super) attempt: u32,
    pub(super) split: Split,
    pub(super) progress: Progress,
}

/// Runs a map attempt, reading a split from disk into `buffer`.
pub(super) async fn run_map(
    config: &WorkerConfig,
    app: Arc<dyn App>,
    job: &JobSpec,
    attempt: MapAttempt,
    buffer: &mut SplitBuffer,
) -> Result<Counters, AppError> {
    let (scratch, shared) = (config.scratch.clone(), config.shared.clone());
    let dir = map_dir(&config.scratch_dir, attempt.task, attempt.attempt);
    let reduces = job.reduces;
    let MapAttempt {
        split, progress, ..
    } = attempt;
    let mut owned = std::mem::take(buffer);
    let from_store = match store_path(&split.path) {
        Some(_) => {
            let started = tokio::time::Instant::now();
            let mut client = crate::store::connect(&job.fs_masters)?;
            let reading = crate::store::read_store_split(&mut client, &split, owned.contents());
            progress.bounded_wait(reading).await?;
            tracing::debug!(
                bytes = owned.contents().len(),
                elapsed = ?started.elapsed(),
                "read split {} from the store",
                split.index
            );
            true
        }
        None => false,
    };
    let (owned, output) = run_blocking(move || {
        let mut owned = owned;
        let input = if from_store {
            SplitSource::Read(owned.take())
        } else {
            SplitSource::Disk(&*shared)
        };
        let output = run_map_task(
            &*app, input, &mut owned, &*scratch, &dir, &split, reduces, &progress,
        );
        Ok((owned, output))
    })
    .await?;
    *buffer = owned;
    Ok(output?.counters)
}

/// A reduce attempt to run.
#[derive(Debug)]
pub(super) struct ReduceAttempt {
    pub(super) worker_id: u64,
    pub(super) task: u32,
    pub(super) attempt: u32,
    pub(super) locations: Vec<MapLocation>,
    pub(super) progress: Progress,
}

pub(super) async fn run_reduce(
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
