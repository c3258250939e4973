//! Time passing over the job's state: attempts whose progress stopped
//! moving are given up (failed if their worker still heartbeats, lost if
//! it went silent), and workers silent for the worker timeout are lost,
//! with the map outputs only they held.

use cairn_rpc::mapreduce::TaskKind;
use tokio::time::Instant;

use super::{JobState, Record, Task, phase};
use crate::app::Counters;

impl JobState {
    /// Gives up attempts whose progress has not moved for the task timeout:
    /// a stalled one (its worker heartbeats) is a failed attempt, a silent
    /// one (its worker does not) is lost. Returns records to journal.
    fn expire_attempts(&mut self, now: Instant) -> Vec<Record> {
        let task_timeout = self.config.task_timeout;
        let mut stalled = Vec::new();
        let mut silent = 0;
        for (kind, tasks) in [
            (TaskKind::Map, &mut self.maps),
            (TaskKind::Reduce, &mut self.reduces),
        ] {
            for (index, task) in tasks.iter_mut().enumerate() {
                let Task {
                    running, given_up, ..
                } = task;
                running.retain(|attempt| {
                    if now.duration_since(attempt.progress_at) < task_timeout {
                        return true;
                    }
                    given_up.push(attempt.attempt);
                    let (task, worker) = (index, attempt.worker);
                    let heard_from = now.duration_since(attempt.last_heartbeat) < task_timeout;
                    let attempt = attempt.attempt;
                    if heard_from {
                        tracing::warn!(
                            task,
                            attempt,
                            worker,
                            "{} attempt made no progress for {task_timeout:?}; giving it up and running the task elsewhere",
                            phase(kind)
                        );
                        stalled.push((kind, index as u32));
                    } else {
                        tracing::warn!(
                            task,
                            attempt,
                            worker,
                            "{} attempt fell silent; running the task elsewhere",
                            phase(kind)
                        );
                        silent += 1;
                    }
                    false
                });
            }
        }
        self.attempts_lost += silent;
        self.attempts_timed_out += stalled.len() as u32;
        let error = format!("the attempt made no progress for {task_timeout:?} (--task-timeout)");
        stalled
            .into_iter()
            .filter_map(|(kind, index)| self.count_failure(kind, index, &error))
            .collect()
    }

    /// Expires stalled and silent attempts and lost workers. Returns records
    /// to journal.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Record> {
        let mut records = self.expire_attempts(now);
        let lost: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                !w.lost
                    && !w.told_to_exit
                    && now.duration_since(w.last_seen) >= self.config.worker_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for worker in lost {
            tracing::warn!(
                worker,
                "worker lost (no contact for {:?})",
                self.config.worker_timeout
            );
            self.workers.get_mut(&worker).expect("listed above").lost = true;
            self.workers_lost += 1;
            self.attempts_lost += self.drop_attempts_of(worker);
            if Self::all_done(&self.reduces) {
                continue;
            }
            for (index, task) in self.maps.iter_mut().enumerate() {
                if matches!(task.done_by, Some((w, _)) if w == worker) {
                    task.done_by = None;
                    task.counters = Counters::default();
                    records.push(Record::MapLost { task: index as u32 });
                }
            }
        }
        records
    }
}
