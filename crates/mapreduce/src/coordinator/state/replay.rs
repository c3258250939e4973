//! Rebuilding the job's state from its journal after a restart: each
//! record after the job's own is checked against the job (a task it has, a
//! worker id it could have given out) and applied in order.

use tokio::time::Instant;

use super::{JobState, MAX_ATTEMPT, MAX_WORKER_ID, Record, Worker};
use crate::app::Counters;

impl JobState {
    /// Rebuilds the state from a journal's records after the job record.
    /// Workers from before the restart count as alive from `now`, so their
    /// map output is used if they are. A record that does not fit the job
    /// (a task it does not have, a second job) is an error naming it.
    pub(crate) fn replay(&mut self, records: &[Record], now: Instant) -> Result<(), String> {
        for (number, record) in records.iter().enumerate() {
            self.check_fits(record)
                .map_err(|error| format!("record {} {error}", number + 2))?;
            match record {
                Record::Job(_) => {}
                Record::Worker { id, addr, host } => {
                    self.workers
                        .insert(*id, Worker::new(addr.clone(), host.clone(), now));
                    self.next_worker = self.next_worker.max(id + 1);
                }
                Record::TaskDone {
                    map,
                    task,
                    attempt,
                    worker,
                    counters,
                } => {
                    let task = self.task_mut(*map, *task);
                    task.done_by = Some((*worker, *attempt));
                    task.next_attempt = task.next_attempt.max(attempt + 1);
                    task.counters = counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
                }
                Record::MapLost { task } => {
                    let task = &mut self.maps[*task as usize];
                    task.done_by = None;
                    task.counters = Counters::default();
                }
                Record::JobDone => self.done = true,
                Record::JobFailed { error } => self.failed = Some(error.clone()),
            }
        }
        Ok(())
    }

    /// Whether a journal record after the first fits this job.
    fn check_fits(&self, record: &Record) -> Result<(), String> {
        let (map, task) = match record {
            Record::Job(_) => return Err("is a second job record".into()),
            Record::Worker { id, .. } | Record::TaskDone { worker: id, .. }
                if *id > MAX_WORKER_ID =>
            {
                return Err(format!("names worker {id}, beyond any worker id given out"));
            }
            Record::TaskDone { attempt, .. } if *attempt > MAX_ATTEMPT => {
                return Err(format!("names attempt {attempt}, beyond any attempt made"));
            }
            Record::TaskDone { map, task, .. } => (*map, *task),
            Record::MapLost { task } => (true, *task),
            Record::Worker { .. } | Record::JobDone | Record::JobFailed { .. } => return Ok(()),
        };
        let (kind, count) = if map {
            ("map", self.maps.len())
        } else {
            ("reduce", self.reduces.len())
        };
        if task as usize >= count {
            return Err(format!(
                "names {kind} task {task}, but the job has {count} {kind} tasks"
            ));
        }
        Ok(())
    }
}
