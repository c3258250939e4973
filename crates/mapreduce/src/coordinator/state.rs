//! The coordinator's bookkeeping (paper §3.2): every task's state and
//! attempts, every worker's liveness, and the scheduling decisions. Pure
//! logic: time comes in as arguments, and changes that must survive a
//! restart come out as journal [`Record`]s for the caller to persist.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_rpc::mapreduce::{MapLocation, Split, TaskKind, TaskProgress};
use tokio::time::Instant;

use super::journal::{JobRecord, Record};
use crate::app::Counters;
use locality::MapPick;

mod expiry;
mod locality;
mod replay;
mod status;

/// Scheduling settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A running attempt whose progress (input consumed, output produced)
    /// has not moved for this long is given up and run elsewhere, however
    /// alive its worker is (Hadoop's `mapreduce.task.timeout`). It counts
    /// as a failed attempt, unless its worker had fallen silent.
    pub task_timeout: Duration,
    /// A worker not heard from for this long is lost, and so is the map
    /// output on its disk.
    pub worker_timeout: Duration,
    /// A task that fails (or times out) this many times fails the job.
    pub max_attempts: u32,
    /// Start backup attempts of straggling tasks (paper §3.6).
    pub backup_tasks: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            task_timeout: Duration::from_secs(10),
            worker_timeout: Duration::from_secs(3),
            max_attempts: 4,
            backup_tasks: false,
        }
    }
}

/// A backup starts when a task has run this many times longer than the
/// median finished task of its phase (and at least [`BACKUP_MIN_RUNTIME`]).
const BACKUP_SLOWDOWN: u32 = 2;
const BACKUP_MIN_RUNTIME: Duration = Duration::from_secs(5);
/// A journal record naming a larger worker id or attempt number is
/// corrupt: a coordinator never gets near them (and counting on from them
/// would overflow).
const MAX_WORKER_ID: u64 = 1 << 48;
const MAX_ATTEMPT: u32 = 1 << 30;
/// How long a waiting worker sleeps before asking again.
const WAIT_RETRY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct Attempt {
    attempt: u32,
    worker: u64,
    started: Instant,
    last_heartbeat: Instant,
    bytes_done: u64,
    /// The progress count last reported, and when it last moved.
    progress: u64,
    progress_at: Instant,
}

impl Attempt {
    fn new(attempt: u32, worker: u64, now: Instant) -> Self {
        Self {
            attempt,
            worker,
            started: now,
            last_heartbeat: now,
            bytes_done: 0,
            progress: 0,
            progress_at: now,
        }
    }
}

#[derive(Debug, Default)]
struct Task {
    running: Vec<Attempt>,
    next_attempt: u32,
    failures: u32,
    /// (worker, attempt) of the committed attempt.
    done_by: Option<(u64, u32)>,
    runtime: Option<Duration>,
    counters: Counters,
    /// Attempts the coordinator gave up (timed out, or on a lost worker):
    /// their worker is told to abandon them. At most one per attempt made.
    given_up: Vec<u32>,
}

#[derive(Debug)]
struct Worker {
    addr: String,
    /// Where it runs (the chunkserver beside it), for locality.
    host: String,
    /// Since when it has been waiting for a data-local map task.
    waiting_for_local: Option<Instant>,
    last_seen: Instant,
    lost: bool,
    told_to_exit: bool,
}

impl Worker {
    /// A worker just registered (or replayed from the journal), seen `now`.
    fn new(addr: String, host: String, now: Instant) -> Self {
        Self {
            addr,
            host,
            waiting_for_local: None,
            last_seen: now,
            lost: false,
            told_to_exit: false,
        }
    }
}

/// What a worker should do next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Assignment {
    Map {
        task: u32,
        attempt: u32,
        split: Split,
    },
    Reduce {
        task: u32,
        attempt: u32,
        locations: Vec<MapLocation>,
    },
    Wait(Duration),
    Exit,
    /// The coordinator does not know this worker: register again.
    Reregister,
}

/// A finished attempt, as a worker reports it.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) worker: u64,
    pub(crate) kind: TaskKind,
    pub(crate) task: u32,
    pub(crate) attempt: u32,
    /// Why the attempt failed; `None` on success.
    pub(crate) error: Option<String>,
    pub(crate) counters: Counters,
}

/// The whole job's state.
#[derive(Debug)]
pub(crate) struct JobState {
    pub(crate) job: JobRecord,
    config: SchedulerConfig,
    /// The chunkservers holding each split's chunk (none for local files).
    split_hosts: Vec<Vec<String>>,
    maps: Vec<Task>,
    reduces: Vec<Task>,
    workers: BTreeMap<u64, Worker>,
    next_worker: u64,
    /// When this coordinator took the job on.
    started: Instant,
    /// How long the job ran before that (under earlier coordinators).
    elapsed_before_start: Duration,
    pub(crate) failed: Option<String>,
    pub(crate) done: bool,
    workers_lost: u32,
    task_failures: u32,
    attempts_lost: u32,
    attempts_timed_out: u32,
}

fn phase(kind: TaskKind) -> &'static str {
    if kind == TaskKind::Map {
        "map"
    } else {
        "reduce"
    }
}

impl JobState {
    pub(crate) fn new(job: JobRecord, config: SchedulerConfig, now: Instant) -> Self {
        let maps = (0..job.splits.len()).map(|_| Task::default()).collect();
        let reduces = (0..job.reduces).map(|_| Task::default()).collect();
        Self {
            job,
            config,
            split_hosts: Vec::new(),
            maps,
            reduces,
            workers: BTreeMap::new(),
            next_worker: 1,
            started: now,
            elapsed_before_start: Duration::ZERO,
            failed: None,
            done: false,
            workers_lost: 0,
            task_failures: 0,
            attempts_lost: 0,
            attempts_timed_out: 0,
        }
    }

    /// Counts the job's elapsed time from `elapsed` before `now`: a
    /// resumed job started before its coordinator did.
    pub(crate) fn started_before(&mut self, elapsed: Duration, now: Instant) {
        self.started = now;
        self.elapsed_before_start = elapsed;
    }

    fn task_mut(&mut self, map: bool, task: u32) -> &mut Task {
        if map {
            &mut self.maps[task as usize]
        } else {
            &mut self.reduces[task as usize]
        }
    }

    fn tasks_mut(&mut self, kind: TaskKind) -> &mut Vec<Task> {
        if kind == TaskKind::Map {
            &mut self.maps
        } else {
            &mut self.reduces
        }
    }

    fn all_done(tasks: &[Task]) -> bool {
        tasks.iter().all(|task| task.done_by.is_some())
    }

    pub(crate) fn finished(&self) -> bool {
        self.done || self.failed.is_some()
    }

    /// Registers a worker.
    pub(crate) fn register(&mut self, addr: String, host: String, now: Instant) -> (u64, Record) {
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers
            .insert(id, Worker::new(addr.clone(), host.clone(), now));
        (id, Record::Worker { id, addr, host })
    }

    /// Notes that `worker` is alive; false if it is unknown.
    fn touch(&mut self, worker: u64, now: Instant) -> bool {
        match self.workers.get_mut(&worker) {
            Some(known) => {
                known.last_seen = now;
                known.lost = false;
                true
            }
            None => false,
        }
    }

    /// Forgets `worker`'s running attempts (it asked for new work, so it
    /// is not running them any more, or it is lost). Returns how many.
    fn drop_attempts_of(&mut self, worker: u64) -> u32 {
        let mut dropped = 0;
        for task in self.maps.iter_mut().chain(self.reduces.iter_mut()) {
            let Task {
                running, given_up, ..
            } = task;
            running.retain(|attempt| {
                let keep = attempt.worker != worker;
                if !keep {
                    given_up.push(attempt.attempt);
                    dropped += 1;
                }
                keep
            });
        }
        dropped
    }

    /// Picks the next task for `worker`.
    pub(crate) fn assign(&mut self, worker: u64, now: Instant) -> Assignment {
        if !self.touch(worker, now) {
            return Assignment::Reregister;
        }
        if self.finished() {
            if let Some(known) = self.workers.get_mut(&worker) {
                known.told_to_exit = true;
            }
            return Assignment::Exit;
        }
        self.drop_attempts_of(worker);
        let maps_done = Self::all_done(&self.maps);
        let kind = if maps_done {
            TaskKind::Reduce
        } else {
            TaskKind::Map
        };
        let idle = if maps_done {
            self.reduces
                .iter()
                .position(|task| task.done_by.is_none() && task.running.is_empty())
        } else {
            match self.pick_idle_map(worker, now) {
                MapPick::Task(index) => Some(index),
                MapPick::WaitForLocal => return Assignment::Wait(WAIT_RETRY),
                MapPick::None => None,
            }
        };
        let chosen = idle.or_else(|| self.backup_candidate(kind, worker, now));
        let Some(index) = chosen else {
            return Assignment::Wait(WAIT_RETRY);
        };
        let task = &mut self.tasks_mut(kind)[index];
        let attempt = task.next_attempt;
        task.next_attempt += 1;
        task.running.push(Attempt::new(attempt, worker, now));
        let index = index as u32;
        if kind == TaskKind::Map {
            let (path, offset, length) = self.job.splits[index as usize].clone();
            Assignment::Map {
                task: index,
                attempt,
                split: Split {
                    index,
                    path,
                    offset,
                    length,
                },
            }
        } else {
            Assignment::Reduce {
                task: index,
                attempt,
                locations: self.map_locations(),
            }
        }
    }

    /// A running task of `kind` that straggles: it has one attempt, which
    /// has run `BACKUP_SLOWDOWN` times longer than the phase's median.
    fn backup_candidate(&self, kind: TaskKind, worker: u64, now: Instant) -> Option<usize> {
        if !self.config.backup_tasks {
            return None;
        }
        let tasks = if kind == TaskKind::Map {
            &self.maps
        } else {
            &self.reduces
        };
        let mut runtimes: Vec<Duration> = tasks.iter().filter_map(|task| task.runtime).collect();
        if runtimes.is_empty() {
            return None;
        }
        runtimes.sort();
        let threshold = (runtimes[runtimes.len() / 2] * BACKUP_SLOWDOWN).max(BACKUP_MIN_RUNTIME);
        tasks.iter().position(|task| {
            task.done_by.is_none()
                && task.running.len() == 1
                && task.running[0].worker != worker
                && now.duration_since(task.running[0].started) > threshold
        })
    }

    /// Where each finished map's output is.
    pub(crate) fn map_locations(&self) -> Vec<MapLocation> {
        self.maps
            .iter()
            .enumerate()
            .filter_map(|(index, task)| {
                let (worker, attempt) = task.done_by?;
                let addr = self
                    .workers
                    .get(&worker)
                    .map(|w| w.addr.clone())
                    .unwrap_or_default();
                Some(MapLocation {
                    map_task: index as u32,
                    attempt,
                    addr,
                })
            })
            .collect()
    }

    /// A heartbeat: notes each running attempt's progress, and returns the
    /// attempts among `running` the worker should abandon (given up, or
    /// done elsewhere), or `None` if the worker is unknown. An attempt this
    /// coordinator never gave out (it restarted since) is left to finish.
    /// The caller has checked that every kind is map or reduce.
    pub(crate) fn heartbeat(
        &mut self,
        worker: u64,
        running: &[TaskProgress],
        now: Instant,
    ) -> Option<Vec<(TaskKind, u32, u32)>> {
        if !self.touch(worker, now) {
            return None;
        }
        let mut abort = Vec::new();
        for report in running {
            let kind = report.kind();
            let Some(task) = self.tasks_mut(kind).get_mut(report.task as usize) else {
                continue;
            };
            let entry = task
                .running
                .iter_mut()
                .find(|a| a.attempt == report.attempt && a.worker == worker);
            match entry {
                Some(entry) => {
                    entry.last_heartbeat = now;
                    entry.bytes_done = report.bytes_done;
                    if report.progress != entry.progress {
                        entry.progress = report.progress;
                        entry.progress_at = now;
                    }
                }
                None if task.done_by.is_some() || task.given_up.contains(&report.attempt) => {
                    abort.push((kind, report.task, report.attempt));
                }
                None => {}
            }
        }
        Some(abort)
    }

    /// An attempt finished. Returns whether it was committed, and the
    /// records to journal.
    pub(crate) fn complete(&mut self, completion: Completion, now: Instant) -> (bool, Vec<Record>) {
        let Completion {
            worker,
            kind,
            task: index,
            attempt,
            error,
            counters,
        } = completion;
        self.touch(worker, now);
        let Some(task) = self.tasks_mut(kind).get_mut(index as usize) else {
            return (false, Vec::new());
        };
        let started = task
            .running
            .iter()
            .find(|a| a.attempt == attempt)
            .map(|a| a.started);
        task.running.retain(|a| a.attempt != attempt);
        if let Some(error) = error {
            tracing::warn!(
                task = index,
                attempt,
                worker,
                "{} task failed: {error}",
                phase(kind)
            );
            return (
                false,
                self.count_failure(kind, index, &error)
                    .into_iter()
                    .collect(),
            );
        }
        if task.done_by.is_some() {
            return (false, Vec::new());
        }
        task.done_by = Some((worker, attempt));
        task.runtime = started.map(|started| now.duration_since(started));
        task.counters = counters;
        task.running.clear();
        if kind == TaskKind::Map {
            self.count_locality(worker, index);
        }
        let counters = self.tasks_mut(kind)[index as usize].counters.clone();
        let mut records = vec![Record::TaskDone {
            map: kind == TaskKind::Map,
            task: index,
            attempt,
            worker,
            counters: counters.iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }];
        if Self::all_done(&self.reduces) && Self::all_done(&self.maps) {
            self.done = true;
            records.push(Record::JobDone);
        }
        (true, records)
    }

    /// Whether a successful attempt of reduce task `index` would be
    /// committed now: the task is not done, nor the job over.
    pub(crate) fn reduce_open(&self, index: u32) -> bool {
        !self.finished()
            && self
                .reduces
                .get(index as usize)
                .is_some_and(|task| task.done_by.is_none())
    }

    /// A reducer could not fetch `map`'s output of `attempt`: run it again.
    pub(crate) fn fetch_failed(&mut self, map: u32, attempt: u32) -> Option<Record> {
        let task = self.maps.get_mut(map as usize)?;
        match task.done_by {
            Some((_, done)) if done == attempt && !self.done => {
                task.done_by = None;
                task.counters = Counters::default();
                tracing::warn!(
                    map,
                    attempt,
                    "map output unreachable; running the map again"
                );
                Some(Record::MapLost { task: map })
            }
            _ => None,
        }
    }

    /// A failed attempt of task `index`: fails the job (returning the
    /// record to journal) when the task has failed `max_attempts` times.
    fn count_failure(&mut self, kind: TaskKind, index: u32, error: &str) -> Option<Record> {
        let max_attempts = self.config.max_attempts;
        let task = &mut self.tasks_mut(kind)[index as usize];
        task.failures += 1;
        let failures = task.failures;
        self.task_failures += 1;
        if failures < max_attempts || self.failed.is_some() {
            return None;
        }
        let message = format!(
            "{} task {index} failed {failures} times; last error: {error}",
            phase(kind)
        );
        self.failed = Some(message.clone());
        Some(Record::JobFailed { error: message })
    }

    /// Whether every live worker has been told to exit.
    pub(crate) fn all_workers_released(&self) -> bool {
        self.workers.values().all(|w| w.lost || w.told_to_exit)
    }
}

/// `mr-out-<r>`, or `part-r-NNNNN` with Hadoop names.
pub fn output_name(hadoop_names: bool, r: u32) -> String {
    if hadoop_names {
        format!("part-r-{r:05}")
    } else {
        format!("mr-out-{r}")
    }
}

#[cfg(test)]
mod tests;
