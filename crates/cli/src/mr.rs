//! `cairn mr`: run MapReduce jobs on one machine (`run`), on several
//! (`coordinator`, `worker`, `status`: `mr/distributed.rs`), or
//! sequentially (`seq`); `run` is in `mr/local.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cairn_mapreduce::{AppSpec, JobConfig, SchedulerConfig, store_path};
use cairn_storage::RealDisk;
use clap::{Args, Subcommand};

use crate::config::Config;

mod distributed;
mod flags;
mod local;

use distributed::{coordinator, status, worker};
pub(crate) use flags::parse_size;
use flags::{parse_advertise_url, parse_duration, parse_url};
use local::run_job;

#[derive(Debug, Subcommand)]
pub(crate) enum MrCommand {
    /// Run a job on this machine: a coordinator and N worker processes.
    ///
    /// Example: cairn mr run --app wc --workers 4 books/*.txt
    ///
    /// Output goes to --output (default ./mr-output). The job's journal and
    /// worker logs go under DATA_DIR/mr/run-PID (--data-dir, default
    /// ./cairn-data), removed when the job succeeds.
    Run(RunArgs),
    /// Run a job sequentially in this process (the reference output).
    ///
    /// Writes one file, --output: by default mr-out-0 in the current
    /// directory. Does not use --data-dir.
    Seq(SeqArgs),
    /// Coordinate a job for workers on any number of machines.
    ///
    /// Prints `coordinator listening on URL` when ready, URL being the
    /// address workers should use (--advertise); start workers with
    /// `cairn mr worker --coordinator URL`. Exits when the job is done.
    ///
    /// The job's journal is DATA_DIR/mr-coordinator/journal (--data-dir,
    /// default ./cairn-data). Restarted with the same --data-dir and job, the
    /// coordinator resumes the job; once the job is over, the next
    /// coordinator there starts a new one (the finished journal is kept as
    /// journal.finished). A different job than an unfinished one is refused.
    Coordinator(CoordinatorArgs),
    /// Work for a coordinator until its job is done.
    ///
    /// Intermediate files go under --work-dir (default
    /// DATA_DIR/mr-worker-PID, --data-dir defaulting to ./cairn-data),
    /// removed when the worker exits.
    Worker(WorkerArgs),
    /// Show a running job's progress and counters.
    ///
    /// Asks the coordinator over RPC; does not use --data-dir.
    Status(StatusArgs),
}

/// What to run.
#[derive(Debug, Args)]
pub(crate) struct AppArgs {
    /// A built-in app: wc, indexer, grep (with --pattern), or a 6.824 test
    /// app (mtiming, rtiming, jobcount, early_exit, crash, nocrash).
    #[arg(long, conflicts_with_all = ["mapper", "reducer"])]
    app: Option<String>,
    /// The regular expression for --app grep.
    #[arg(long, default_value = "")]
    pattern: String,
    /// Streaming mapper: a shell command that reads input lines on stdin and
    /// writes `key<TAB>value` lines.
    #[arg(long, requires = "reducer")]
    mapper: Option<String>,
    /// Streaming reducer: a shell command that reads `key<TAB>value` lines
    /// sorted by key and writes output lines.
    #[arg(long, requires = "mapper")]
    reducer: Option<String>,
}

impl AppArgs {
    fn spec(&self) -> anyhow::Result<AppSpec> {
        let spec = match (&self.app, &self.mapper, &self.reducer) {
            (Some(name), _, _) => AppSpec::BuiltIn {
                name: name.clone(),
                pattern: self.pattern.clone(),
            },
            (None, Some(mapper), Some(reducer)) => AppSpec::Streaming {
                mapper: mapper.clone(),
                reducer: reducer.clone(),
            },
            _ => bail!("choose an app: --app NAME (e.g. --app wc), or --mapper CMD --reducer CMD"),
        };
        spec.build()?;
        Ok(spec)
    }
}

/// The job's shape.
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Number of reduce tasks (and output files).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    reduces: u32,
    /// Input split size, e.g. 64MiB, 512KiB or a number of bytes.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    split_size: u64,
    /// Name output files part-r-00000 ... (Hadoop style) instead of mr-out-0 ...
    #[arg(long)]
    hadoop_names: bool,
    /// Give a task attempt up, and the task to another worker, after this
    /// long without progress (e.g. 10s, 2m; a bare number is seconds): no
    /// input consumed, no output produced (as Hadoop's
    /// mapreduce.task.timeout). A live worker does not
    /// keep a stuck attempt: it is killed (a streaming command with every
    /// process it started) and counts as a failed attempt. Raise it for
    /// tasks that legitimately compute this long between records.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    task_timeout: Duration,
    /// Consider a worker lost (and rerun the maps whose output it held) after
    /// this long without a heartbeat (e.g. 3s, 1500ms; a bare number is
    /// seconds); workers send one every 0.5 s.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse_duration)]
    worker_timeout: Duration,
    /// Start backup copies of straggling tasks near the end of a phase.
    #[arg(long)]
    backup_tasks: bool,
    /// The file store's masters, comma-separated, for fs:// inputs and
    /// outputs (default: the store of `cairn cluster --fs`).
    #[arg(long, value_delimiter = ',', value_parser = crate::kv::parse_endpoint,
          env = "CAIRN_FS_MASTERS", default_value = crate::fs::DEFAULT_MASTERS)]
    fs_masters: Vec<String>,
    /// An input (repeatable), as the FILES are.
    #[arg(long = "input", value_name = "PATH")]
    input: Vec<String>,
    /// Input files: local paths, or fs:///PATH in the file store (a file,
    /// a directory: its files, or a last name with * or ?, quoted).
    #[arg(required_unless_present = "input", value_name = "FILES")]
    inputs: Vec<String>,
}

impl JobArgs {
    fn config(&self, output_dir: &Path) -> anyhow::Result<JobConfig> {
        let inputs: Vec<String> = self.input.iter().chain(&self.inputs).cloned().collect();
        for input in inputs.iter().filter(|i| store_path(i).is_none()) {
            let metadata = std::fs::metadata(input)
                .with_context(|| format!("input file {input}: check the path"))?;
            if !metadata.is_file() {
                bail!("input {input} is not a file; pass files (e.g. dir/*.txt)");
            }
        }
        Ok(JobConfig {
            app: self.app.spec()?,
            inputs,
            reduces: self.reduces,
            split_bytes: self.split_size,
            output_dir: output_dir.display().to_string(),
            hadoop_names: self.hadoop_names,
            scheduler: SchedulerConfig {
                task_timeout: self.task_timeout,
                worker_timeout: self.worker_timeout,
                backup_tasks: self.backup_tasks,
                ..SchedulerConfig::default()
            },
            heartbeat_interval: Duration::from_millis(500),
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Worker processes to start (one per core is a good start).
    #[arg(long, default_value_t = default_workers(), value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: u32,
    /// Output directory: a local path, or fs:///PATH in the file store.
    #[arg(long, default_value = "mr-output")]
    output: PathBuf,
    /// No progress bar, no report: only errors.
    #[arg(long)]
    quiet: bool,
}

fn default_workers() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
}

#[derive(Debug, Args)]
pub(crate) struct SeqArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Output file (relative paths are from the current directory).
    #[arg(long, default_value = "mr-out-0")]
    output: PathBuf,
    /// Input files.
    #[arg(required = true, value_name = "FILES")]
    inputs: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CoordinatorArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Address to listen on (port 0 picks a free port; 0.0.0.0 listens on
    /// every interface, for workers on other machines).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// The URL workers use to reach this coordinator, e.g.
    /// http://host-a:7070, as the coordinator prints it. By default
    /// http://LISTEN-ADDRESS, or, listening on every interface (0.0.0.0 or
    /// ::), http://HOSTNAME:PORT with this machine's hostname.
    #[arg(long, value_name = "URL", value_parser = parse_advertise_url)]
    advertise: Option<String>,
    /// Output directory: fs:///PATH in the file store, or a local path
    /// (which must be reachable by every worker at this path).
    #[arg(long, default_value = "mr-output")]
    output: PathBuf,
    /// Stay up this long after the job ends, for workers still to be told
    /// to exit (e.g. 5s; a bare number is seconds).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    linger: Duration,
    /// Serve the job's progress (Prometheus text format) over HTTP at
    /// http://HOST:PORT/metrics. Off unless given.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The coordinator's URL, as it printed it (http://HOST:PORT, or
    /// HOST:PORT).
    #[arg(long, env = "CAIRN_MR_COORDINATOR", value_name = "URL", value_parser = parse_url)]
    coordinator: String,
    /// Address of this worker's shuffle server (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The URL other workers use to reach this one, e.g.
    /// http://host-a:7071. Needed when listening on 0.0.0.0: a worker does
    /// not guess its own name, since other workers fetch from this URL.
    #[arg(long, value_name = "URL", value_parser = parse_advertise_url)]
    advertise: Option<String>,
    /// Directory for this worker's intermediate files (removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The URL of the file store's chunkserver on this machine, as the
    /// masters know it (cairn fs stat shows replicas by it): map tasks of
    /// fs:// inputs with a replica there are given to this worker first.
    #[arg(long, value_name = "URL", value_parser = crate::kv::parse_endpoint)]
    host: Option<String>,
    /// Give up after the coordinator has been unreachable this long (e.g.
    /// 30s, 2m; a bare number is seconds). Until then the worker retries,
    /// saying every few seconds what it is waiting for.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    coordinator_timeout: Duration,
    /// Stay when the job ends (or no coordinator answers) and work for the
    /// next coordinator at the same URL, job after job, until stopped (the
    /// workers of `cairn cluster --fs --mr-workers N` do).
    #[arg(long)]
    stay: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The coordinator's URL, as it printed it (http://HOST:PORT, or
    /// HOST:PORT).
    #[arg(value_name = "URL", value_parser = parse_url)]
    coordinator: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: MrCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        MrCommand::Seq(args) => seq(args),
        MrCommand::Run(args) => runtime()?.block_on(run_job(args, config)),
        MrCommand::Coordinator(args) => runtime()?.block_on(coordinator(args, config)),
        MrCommand::Worker(args) => runtime()?.block_on(worker(args, config)),
        MrCommand::Status(args) => runtime()?.block_on(status(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn seq(args: SeqArgs) -> anyhow::Result<()> {
    let app = args.app.spec()?.build()?;
    let disk = RealDisk::new(".")?;
    let started = Instant::now();
    let counters = cairn_mapreduce::run_sequential(&*app, &disk, &args.inputs, &args.output)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(
        "sequential job done in {:.2?}: {} input bytes, {} output lines in {}",
        started.elapsed(),
        counters.get(cairn_mapreduce::counter::MAP_INPUT_BYTES),
        counters.get(cairn_mapreduce::counter::REDUCE_OUTPUT_RECORDS),
        args.output.display()
    );
    Ok(())
}
