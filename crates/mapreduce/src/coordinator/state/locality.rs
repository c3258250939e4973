//! Locality-aware scheduling of map tasks (paper §3.4) with delay
//! scheduling: a worker is given an idle map task whose split has a
//! replica on its host (the chunkserver beside it); if none is idle, a
//! worker that could ever run one locally waits up to [`LOCALITY_WAIT`]
//! for one to come free before it takes a remote one, and a remote one is
//! chosen among those no other live worker could run locally. Committed
//! maps count as data-local or remote in the job's counters.

use std::time::Duration;

use tokio::time::Instant;

use super::{JobState, Task};
use crate::app::counter;

/// How long a worker with no idle data-local map task waits for one
/// before it is given a remote one.
pub(crate) const LOCALITY_WAIT: Duration = Duration::from_millis(500);

/// Which map task a worker should run.
#[derive(Debug, PartialEq)]
pub(super) enum MapPick {
    Task(usize),
    /// Ask again shortly: a data-local task may come free.
    WaitForLocal,
    /// No map task is idle.
    None,
}

fn idle(task: &Task) -> bool {
    task.done_by.is_none() && task.running.is_empty()
}

impl JobState {
    /// The chunkservers holding each split (in split order).
    pub(crate) fn set_split_hosts(&mut self, hosts: Vec<Vec<String>>) {
        assert_eq!(hosts.len(), self.maps.len(), "one host list per split");
        self.split_hosts = hosts;
    }

    fn hosts_of(&self, index: usize) -> &[String] {
        self.split_hosts.get(index).map_or(&[], Vec::as_slice)
    }

    fn host_of(&self, worker: u64) -> &str {
        self.workers.get(&worker).map_or("", |w| w.host.as_str())
    }

    /// Picks an idle map task for `worker`, preferring a data-local one.
    pub(super) fn pick_idle_map(&mut self, worker: u64, now: Instant) -> MapPick {
        let host = self.host_of(worker).to_string();
        let is_local = |hosts: &[String]| !host.is_empty() && hosts.contains(&host);
        let idle_maps: Vec<usize> = (0..self.maps.len())
            .filter(|&i| idle(&self.maps[i]))
            .collect();
        let local = idle_maps.iter().find(|&&i| is_local(self.hosts_of(i)));
        let could_be_local = (0..self.maps.len()).any(|i| is_local(self.hosts_of(i)));
        let waiting = &mut self
            .workers
            .get_mut(&worker)
            .expect("a known worker")
            .waiting_for_local;
        if let Some(&index) = local {
            *waiting = None;
            return MapPick::Task(index);
        }
        if idle_maps.is_empty() {
            return MapPick::None;
        }
        if could_be_local && now.duration_since(*waiting.get_or_insert(now)) < LOCALITY_WAIT {
            return MapPick::WaitForLocal;
        }
        *waiting = None;
        let local_to_others = |i: usize| {
            self.workers.iter().any(|(id, w)| {
                *id != worker && !w.lost && !w.told_to_exit && self.hosts_of(i).contains(&w.host)
            })
        };
        let index = idle_maps
            .iter()
            .copied()
            .find(|&i| !local_to_others(i))
            .unwrap_or(idle_maps[0]);
        MapPick::Task(index)
    }

    /// Counts committed map task `index`, run by `worker`, as data-local
    /// or remote (splits of local files, which have no hosts, as neither).
    pub(super) fn count_locality(&mut self, worker: u64, index: u32) {
        let hosts = self.hosts_of(index as usize);
        if hosts.is_empty() {
            return;
        }
        let name = if hosts.iter().any(|h| h == self.host_of(worker)) {
            counter::DATA_LOCAL_MAPS
        } else {
            counter::REMOTE_MAPS
        };
        self.maps[index as usize].counters.add(name, 1);
    }
}
