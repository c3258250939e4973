//! Resuming a job from the journal in the data directory: a journal whose
//! job is over is retired first; an empty one starts a new job; otherwise
//! its records are replayed, and a job other than the one being started is
//! refused with what differs and how to resume or discard it.

use std::time::Duration;

use tokio::time::Instant;

use super::CoordinatorError;
use super::journal::{JobRecord, Journal, Record};
use super::state::{JobState, SchedulerConfig};
use cairn_storage::Disk;

/// Why a journal cannot resume the job.
#[derive(Debug, PartialEq)]
pub(super) enum ResumeError {
    /// It is the journal of another job, unfinished.
    DifferentJob(Box<Unfinished>),
    /// Its records do not describe a job (what is wrong with them).
    Bad(String),
}

/// An unfinished job in the journal that is not the job being started.
#[derive(Debug, PartialEq)]
pub(super) struct Unfinished {
    job_id: String,
    difference: String,
    progress: String,
    previous: String,
}

impl Unfinished {
    pub(super) fn into_error(self, data_dir: &std::path::Path) -> CoordinatorError {
        CoordinatorError::DifferentJob {
            dir: data_dir.display().to_string(),
            job_id: self.job_id,
            difference: self.difference,
            progress: self.progress,
            previous: self.previous,
        }
    }
}

/// Opens the journal in `data_dir` and returns its records; a journal whose
/// job is over is retired first, and the records are then those of a new,
/// empty journal.
pub(super) fn open_journal(
    data_disk: &dyn Disk,
    data_dir: &std::path::Path,
) -> Result<(Journal, Vec<Record>), CoordinatorError> {
    let (journal, records) =
        Journal::open(data_disk, data_dir).map_err(CoordinatorError::Journal)?;
    let Some((previous, outcome)) = finished_job(&records) else {
        return Ok((journal, records));
    };
    let retired = journal
        .retire(data_disk, data_dir)
        .map_err(CoordinatorError::Journal)?;
    tracing::info!(
        "the previous job in {} ({previous}) {outcome}; its journal is kept as {}; starting a new job",
        data_dir.display(),
        retired.display()
    );
    Journal::open(data_disk, data_dir).map_err(CoordinatorError::Journal)
}

/// The job id and outcome (`"is done"`, `"failed"`) of a journal whose job
/// is over, or `None` if it holds no job or one still to finish.
pub(super) fn finished_job(records: &[Record]) -> Option<(String, &'static str)> {
    let Some(Record::Job(job)) = records.first() else {
        return None;
    };
    records.iter().find_map(|record| match record {
        Record::JobDone => Some((job.job_id.clone(), "is done")),
        Record::JobFailed { .. } => Some((job.job_id.clone(), "failed")),
        _ => None,
    })
}

/// The wall clock, in milliseconds since the Unix epoch (virtual under the
/// simulator); 0 if the clock is before 1970.
pub(super) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The state of the job that a journal's records describe, or `None` for
/// an empty journal (a new job). `job` is the job being started; `now` and
/// `wall_ms` are the same moment on the monotonic and the wall clock.
pub(super) fn resume(
    job: &JobRecord,
    scheduler: &SchedulerConfig,
    records: &[Record],
    now: Instant,
    wall_ms: u64,
) -> Result<Option<JobState>, ResumeError> {
    match records.split_first() {
        None => Ok(None),
        Some((Record::Job(previous), rest)) => {
            let mut state = JobState::new(previous.clone(), scheduler.clone(), now);
            state.replay(rest, now).map_err(ResumeError::Bad)?;
            if let Some(difference) = previous.difference(job) {
                let status = state.status(now);
                return Err(ResumeError::DifferentJob(Box::new(Unfinished {
                    job_id: previous.job_id.clone(),
                    difference,
                    progress: format!(
                        "maps {}/{} and reduces {}/{} done",
                        status.maps_done,
                        status.maps_total,
                        status.reduces_done,
                        status.reduces_total
                    ),
                    previous: previous.describe(),
                })));
            }
            if let Some(started_ms) = previous.started_unix_ms {
                state.started_before(
                    Duration::from_millis(wall_ms.saturating_sub(started_ms)),
                    now,
                );
            }
            Ok(Some(state))
        }
        Some(_) => Err(ResumeError::Bad(
            "it does not start with the job's record".into(),
        )),
    }
}
