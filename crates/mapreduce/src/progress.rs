//! A running attempt's progress, and the means to stop it.
//!
//! A task is timed out on *progress*, not on its worker's liveness (as
//! Hadoop's `mapreduce.task.timeout`): the engine advances a [`Progress`]
//! whenever the attempt consumes input (bytes handed to a streaming mapper,
//! records read by a reducer) or produces output (records emitted, bytes
//! written), the worker's heartbeats carry it, and the coordinator gives the
//! attempt up when it has not moved for the task timeout. The worker then
//! cancels the attempt: the streaming commands it started are killed with
//! their whole process group, and its result is never reported.

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How far a running attempt has got: a handle, cloned to share it
/// between the code running the attempt and the heartbeats that report it.
///
/// Map and reduce functions need not touch it: emitting and reading records
/// advance it. One that works for long stretches without either (Hadoop's
/// `progress()` case) calls [`advance`](Self::advance), e.g. once per input
/// record it consumes, and may stop early when
/// [`is_cancelled`](Self::is_cancelled).
#[derive(Debug, Default, Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Grows with every record or byte consumed or produced.
    count: AtomicU64,
    /// Input bytes consumed (map tasks), for the job's status.
    input_bytes: AtomicU64,
    /// Waits in progress that are bounded by their own deadlines.
    bounded_waits: AtomicU32,
    cancelled: AtomicBool,
    /// Process groups of the child processes running for this attempt.
    process_groups: Mutex<Vec<u32>>,
}

impl Progress {
    /// A fresh attempt's progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports `units` of work done (records or bytes consumed or produced).
    pub fn advance(&self, units: u64) {
        self.shared.count.fetch_add(units, Ordering::Relaxed);
    }

    /// Whether the coordinator gave this attempt up: its result will be
    /// ignored, so the work may stop.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// The progress count the heartbeats report.
    pub(crate) fn count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// `bytes` more input consumed.
    pub(crate) fn consume_input(&self, bytes: u64) {
        self.shared.input_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.advance(bytes);
    }

    /// The whole input, `total` bytes, has been consumed.
    pub(crate) fn finish_input(&self, total: u64) {
        let before = self.shared.input_bytes.fetch_max(total, Ordering::Relaxed);
        self.advance(total.saturating_sub(before));
    }

    pub(crate) fn input_bytes(&self) -> u64 {
        self.shared.input_bytes.load(Ordering::Relaxed)
    }

    /// Whether the attempt is waiting on something that has its own
    /// deadline and retry limit (a shuffle fetch): such a wait cannot hang,
    /// so heartbeats count it as progress.
    pub(crate) fn in_bounded_wait(&self) -> bool {
        self.shared.bounded_waits.load(Ordering::SeqCst) > 0
    }

    /// Runs `future`, which must end by its own deadline, as a bounded wait.
    pub(crate) async fn bounded_wait<F: Future>(&self, future: F) -> F::Output {
        struct Waiting<'a>(&'a AtomicU32);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.shared.bounded_waits.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.shared.bounded_waits);
        future.await
    }

    /// Gives the attempt up: marks it cancelled and kills the process group
    /// of every child process it runs (and of any started later).
    pub(crate) fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::SeqCst);
        let groups = self
            .shared
            .process_groups
            .lock()
            .expect("process group lock");
        for group in groups.iter() {
            kill_process_group(*group);
        }
    }

    /// Tracks `child`, which leads its own process group, until the guard
    /// is dropped: cancelling the attempt kills the group.
    pub(crate) fn track_child(&self, child: &Child) -> TrackedChild<'_> {
        let group = child.id();
        self.shared
            .process_groups
            .lock()
            .expect("process group lock")
            .push(group);
        if self.is_cancelled() {
            kill_process_group(group);
        }
        TrackedChild {
            progress: self,
            group,
        }
    }
}

/// A child process whose group is killed if the attempt is cancelled.
#[derive(Debug)]
pub(crate) struct TrackedChild<'a> {
    progress: &'a Progress,
    group: u32,
}

impl Drop for TrackedChild<'_> {
    fn drop(&mut self) {
        let mut groups = self
            .progress
            .shared
            .process_groups
            .lock()
            .expect("process group lock");
        groups.retain(|group| *group != self.group);
    }
}

/// SIGKILLs every process in `group`: the streaming command's shell and
/// whatever it started, so that nothing of a cancelled attempt lingers.
fn kill_process_group(group: u32) {
    // Group 1 would mean every process we may signal: never that.
    let pid = i32::try_from(group)
        .ok()
        .filter(|pid| *pid > 1)
        .and_then(rustix::process::Pid::from_raw);
    let Some(pid) = pid else {
        tracing::warn!(group, "not killing an invalid process group");
        return;
    };
    if let Err(error) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        // ESRCH: the group has exited already.
        tracing::debug!(group, "killing the process group: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_and_records_advance_the_count() {
        let progress = Progress::new();
        progress.consume_input(10);
        progress.advance(1);
        assert_eq!((progress.count(), progress.input_bytes()), (11, 10));
        progress.finish_input(25);
        assert_eq!((progress.count(), progress.input_bytes()), (26, 25));
        progress.finish_input(25);
        assert_eq!(progress.count(), 26, "finishing twice adds nothing");
    }
}
