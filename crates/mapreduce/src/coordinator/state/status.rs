//! What the job's state reports: its progress for `cairn mr status` and
//! the workers' status calls (tasks done and running, input consumed,
//! workers, failures), the committed attempts' counters, and output names.

use cairn_rpc::mapreduce::StatusReply;
use tokio::time::Instant;

use super::{JobState, Task, output_name};
use crate::app::Counters;

impl JobState {
    /// The committed attempts' counters, summed.
    pub(crate) fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for task in self.maps.iter().chain(self.reduces.iter()) {
            if task.done_by.is_some() {
                total.merge(&task.counters);
            }
        }
        total
    }

    /// The output file of reduce task `r`.
    pub(crate) fn output_name(&self, r: u32) -> String {
        output_name(self.job.hadoop_names, r)
    }

    pub(crate) fn status(&self, now: Instant) -> StatusReply {
        let count = |tasks: &[Task], done: bool| {
            tasks
                .iter()
                .filter(|t| {
                    if done {
                        t.done_by.is_some()
                    } else {
                        t.done_by.is_none() && !t.running.is_empty()
                    }
                })
                .count() as u32
        };
        let input_bytes_total = self.job.splits.iter().map(|s| s.2).sum();
        let input_bytes_done = self
            .maps
            .iter()
            .zip(&self.job.splits)
            .map(|(task, split)| {
                if task.done_by.is_some() {
                    split.2
                } else {
                    task.running.iter().map(|a| a.bytes_done).max().unwrap_or(0)
                }
            })
            .sum();
        StatusReply {
            job_id: self.job.job_id.clone(),
            maps_total: self.maps.len() as u32,
            maps_done: count(&self.maps, true),
            maps_running: count(&self.maps, false),
            reduces_total: self.reduces.len() as u32,
            reduces_done: count(&self.reduces, true),
            reduces_running: count(&self.reduces, false),
            input_bytes_total,
            input_bytes_done,
            workers_alive: self
                .workers
                .values()
                .filter(|w| !w.lost && !w.told_to_exit)
                .count() as u32,
            workers_lost: self.workers_lost,
            elapsed_ms: (self.elapsed_before_start + now.duration_since(self.started)).as_millis()
                as u64,
            counters: self
                .counters()
                .iter()
                .map(|(name, value)| cairn_rpc::mapreduce::Counter {
                    name: name.to_string(),
                    value,
                })
                .collect(),
            done: self.done,
            error: self.failed.clone().unwrap_or_default(),
            output_dir: self.job.output_dir.clone(),
            outputs: if self.done {
                (0..self.job.reduces).map(|r| self.output_name(r)).collect()
            } else {
                Vec::new()
            },
            task_failures: self.task_failures,
            attempts_lost: self.attempts_lost,
            attempts_timed_out: self.attempts_timed_out,
        }
    }
}
