//! # cairn-mapreduce: MapReduce as the paper describes it
//!
//! A job (Dean & Ghemawat, OSDI 2004) runs a user's `map` over input splits
//! and `reduce` over the grouped intermediate pairs. This crate is the
//! engine behind `cairn mr`:
//!
//! 1. **Splitting (§3.1, §4.4).** [`plan_splits`] cuts input files into
//!    splits of about 64 MiB on line boundaries; each split is a map task.
//!    There are R reduce tasks (default 10, as in 6.824 lab 1).
//! 2. **The coordinator (§3.2)** ([`CoordinatorCore`]) hands tasks to
//!    workers that ask for them, tracks each task (idle, in progress with
//!    worker and start time, done) and each worker's last contact, and
//!    journals every decision that must survive its own restart.
//! 3. **Map (§3.1 steps 3-4).** A worker ([`run_worker`]) reads its split,
//!    calls [`App::map`], partitions pairs by `hash(key) mod R` (the lab's
//!    FNV-1a, so outputs compare), runs the optional combiner (§4.3), and
//!    writes one sorted run per partition to its *local* disk, spilling when
//!    its buffer fills ([`map_task`]).
//! 4. **Shuffle and reduce (§3.1 steps 5-6).** A reducer fetches its
//!    partition from every map worker over RPC (the Shuffle service; no
//!    shared file system needed), merge-sorts the runs with bounded memory,
//!    calls [`App::reduce`] once per key in increasing key order (§4.2), and
//!    writes `mr-out-<r>` through a temporary file renamed when complete.
//! 5. **Failures (§3.3).** Tasks time out on *progress*, not on their
//!    worker's liveness, as Hadoop's `mapreduce.task.timeout` does: each
//!    attempt has a [`Progress`] that advances whenever it consumes input
//!    (bytes handed to a streaming mapper, records read by a reducer,
//!    shuffle pages fetched) or produces output (records emitted, bytes
//!    written), and the worker's heartbeats carry it. An attempt whose
//!    progress has not moved for the task timeout (10 s) is given up and
//!    the task given to another worker: a hung mapper on a live,
//!    heartbeating worker is retried like a dead one. The stalled attempt
//!    counts as a failed one (a task that fails or stalls
//!    [`max_attempts`](SchedulerConfig::max_attempts) times fails the job);
//!    its worker is told on its next heartbeat, kills the attempt's
//!    streaming commands with their whole process group, and never reports
//!    its result. A lost worker's finished maps run again, since their
//!    output went with it; a reducer that cannot fetch a map output reports
//!    it and waits for the re-run. Duplicate completions are ignored, and
//!    with deterministic apps the output equals a sequential run's
//!    ([`run_sequential`]). Backup attempts for stragglers (§3.6) are
//!    available behind [`SchedulerConfig::backup_tasks`].
//!
//! 6. **Over the file store (§3.1, §3.4).** Inputs and the output may be
//!    `fs://PATH` in `cairn fs` ([`plan_store_splits`]): splits follow chunk
//!    boundaries, the coordinator prefers giving a map to a worker beside a
//!    replica of its split (waiting a bounded time for one: delay
//!    scheduling), and a reduce output is committed by a rename in the
//!    store, so exactly one attempt's output exists per partition.
//!
//! Apps are built in ([`AppSpec`]: `wc`, `indexer`, `grep`, and the lab's
//! test apps), any program in the Hadoop Streaming style (`--mapper CMD
//! --reducer CMD`), or written in Rust against the [`App`] trait by a
//! program that embeds this crate: the job names it
//! ([`AppSpec::Library`]) and each worker is given it
//! ([`WorkerConfig::app`]); [`run_sequential`] runs any `App` in process.
//!
//! ## Implementation caveats
//!
//! - Workers read input and write output through local paths or the file
//!   store (`fs://`): on several machines local paths must name a shared
//!   file system. Intermediate data never needs one.
//! - The chunk size of `fs://` inputs is the store's default (64 MiB); a
//!   store run with another chunk size gets splits that do not follow its
//!   chunks (still correct, less local). A worker's host is matched to
//!   chunkserver URLs as the master reports them, exactly.
//! - A worker runs one task at a time; run one worker per core.
//! - The coordinator is a single point of failure while it is down; it
//!   resumes the job from its journal when restarted (the paper aborts).
//!   One data directory holds one job at a time: a finished job's journal
//!   is retired by the next coordinator started there, and a different job
//!   than an unfinished one is refused.
//! - A cancelled attempt's streaming commands are killed, but Rust map and
//!   reduce code is not interrupted: it runs on (it may poll
//!   [`Progress::is_cancelled`]) and its result is dropped. Rust code that
//!   computes longer than the task timeout between records must call
//!   [`Progress::advance`] (the `MapInput::progress` handle), as Hadoop
//!   code calls `progress()`.
//! - A shuffle fetch counts as progress while it waits, since it has its
//!   own deadline and retry limit; a reduce function that stalls inside
//!   one key's values is timed out.
//! - Streaming commands run in their own process group, so a terminal's
//!   Ctrl-C reaches the worker, not them; they end when their pipes close.
//! - Bad-record skipping (§4.6) and a status web page (§4.8) are not
//!   implemented; `cairn mr status` reports
//!   progress and counters over RPC.

pub mod app;
pub mod apps;
mod coordinator;
mod diskio;
pub mod format;
mod link;
pub mod map_task;
mod merge;
mod progress;
pub mod reduce_task;
mod seq;
mod serve;
pub mod split;
mod store;
mod streaming;
mod worker;

pub use app::{App, AppError, Counters, Emit, MapInput, Progress, ReduceOutput, Values, counter};
pub use apps::{AppSpec, AppSpecError};
pub use coordinator::{
    CoordinatorCore, CoordinatorError, JobConfig, SchedulerConfig, Stopped, output_name,
};
pub use seq::run_sequential;
pub use serve::{ServerTask, serve};
pub use split::{DEFAULT_SPLIT_BYTES, plan_splits};
pub use store::{STORE_SCHEME, StoreError, StoreSplit, TEMP_DIR, plan_store_splits, store_path};
pub use worker::{MAX_FETCH_PAGE_BYTES, WorkerConfig, WorkerError, WorkerSummary, run_worker};

/// Re-exported for callers that query a coordinator.
pub use cairn_rpc::mapreduce::StatusReply;
