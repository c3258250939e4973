//! `cairn bench`: benchmark baselines.
//!
//! `cairn bench wordcount FILES` is the COST baseline for MapReduce word
//! count ("Scalability! But at what COST?", HotOS 2015): one thread, no
//! framework — read each file, split words exactly as the `wc` app does,
//! count them in a hash table, and write the counts sorted by word.
//!
//! `cairn bench overload` floods a key/value cluster with clients (see
//! [`overload`]).
//!
//! `cairn bench fs` measures the file store beside this machine's ceiling
//! (see [`fs`]).

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rustc_hash::FxHashMap;

mod fs;
mod overload;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Single-threaded word count: the baseline for `cairn mr run --app wc`.
    Wordcount(WordcountArgs),
    /// Proposals per second and commit latency of a 3-node Raft group in one
    /// process, in memory and on disk with fsync.
    Raft(crate::bench_raft::RaftArgs),
    /// The same key/value workload against a Cairn cluster and (with
    /// --etcd) etcd: throughput and latency percentiles.
    Kv(crate::bench_kv::KvBenchArgs),
    /// Many more concurrent clients than the cluster runs at once (10,000
    /// by default) for a while: answers or `overloaded`, the nodes' memory,
    /// and a put and a get right after.
    Overload(overload::OverloadArgs),
    /// The file store (3 masters, 3 chunkservers, replication 3) started
    /// here, beside the local disk's ceiling and `bench kv` puts, in one
    /// run: writes, hot reads, record appends and creates, with ratios and
    /// targets.
    Fs(fs::FsBenchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct WordcountArgs {
    /// Write `WORD COUNT` lines, sorted by word, to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Input files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// What a load run measured: the latency of every completed operation in
/// the measured window, and the failures.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) errors: u64,
    /// The first failure seen, warm-up included (for a run that completed
    /// nothing).
    pub(crate) first_error: Option<String>,
    latencies: Vec<std::time::Duration>,
    elapsed: std::time::Duration,
    longest_gap: std::time::Duration,
}

/// What one load task counted: the latency of each operation it started
/// in the measured window, its failures there, its first failure (warm-up
/// included), and the longest time it went without completing an
/// operation (with one client writing in a loop while the leader is
/// killed: how long the failover took, as the client saw it).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    latencies: Vec<std::time::Duration>,
    errors: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
    longest_gap: std::time::Duration,
}

impl Tally {
    /// Counts an operation started at `started`, unless before `warm_up`.
    pub(crate) fn record<T>(
        &mut self,
        started: Instant,
        warm_up: Instant,
        result: &anyhow::Result<T>,
    ) {
        if let Err(error) = result {
            self.first_error.get_or_insert_with(|| format!("{error:#}"));
        }
        if started < warm_up {
            return;
        }
        match result {
            Ok(_) => {
                let now = Instant::now();
                self.latencies.push(now - started);
                if let Some(last) = self.last_done {
                    self.longest_gap = self.longest_gap.max(now - last);
                }
                self.last_done = Some(now);
            }
            Err(_) => self.errors += 1,
        }
    }
}

impl Outcome {
    /// An empty outcome of a window of `elapsed`.
    pub(crate) fn new(elapsed: std::time::Duration) -> Self {
        Self {
            errors: 0,
            first_error: None,
            latencies: Vec::new(),
            elapsed,
            longest_gap: std::time::Duration::ZERO,
        }
    }

    /// Adds one load task's latencies and errors.
    pub(crate) fn add(&mut self, latencies: Vec<std::time::Duration>, errors: u64) {
        self.latencies.extend(latencies);
        self.errors += errors;
    }

    /// Adds one load task's tally (its first failure if none is known).
    pub(crate) fn add_tally(&mut self, tally: Tally) {
        self.add(tally.latencies, tally.errors);
        self.longest_gap = self.longest_gap.max(tally.longest_gap);
        if self.first_error.is_none() {
            self.first_error = tally.first_error;
        }
    }

    /// Sorts the latencies; call once every task was added.
    pub(crate) fn sorted(mut self) -> Self {
        self.latencies.sort_unstable();
        self
    }

    /// How many operations completed in the measured window.
    pub(crate) fn completed(&self) -> usize {
        self.latencies.len()
    }

    /// The measured window.
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        self.elapsed
    }

    /// Completed operations per second.
    pub(crate) fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which a fraction `p` of operations completed
    /// (after [`sorted`](Self::sorted)).
    pub(crate) fn percentile(&self, p: f64) -> std::time::Duration {
        if self.latencies.is_empty() {
            return std::time::Duration::ZERO;
        }
        let at = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[at]
    }

    /// The longest any one task went between two completed operations in
    /// the measured window.
    pub(crate) fn longest_gap(&self) -> std::time::Duration {
        self.longest_gap
    }

    /// A percentile in milliseconds.
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        self.percentile(p).as_secs_f64() * 1e3
    }
}

pub(crate) fn run(command: BenchCommand, config: &crate::config::Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Fs(args) => fs::run(args, config),
        BenchCommand::Wordcount(args) => wordcount(args),
        BenchCommand::Raft(args) => crate::bench_raft::run(args),
        BenchCommand::Kv(args) => crate::bench_kv::run(args),
        BenchCommand::Overload(args) => overload::run(args),
    }
}

fn wordcount(args: WordcountArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut counts: FxHashMap<Vec<u8>, u64> = FxHashMap::default();
    let mut buffer = Vec::new();
    let mut bytes = 0u64;
    let mut words = 0u64;
    for path in &args.inputs {
        buffer.clear();
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_end(&mut buffer))
            .with_context(|| format!("reading {}", path.display()))?;
        bytes += buffer.len() as u64;
        cairn_mapreduce::apps::for_each_word(&buffer, |word| {
            words += 1;
            match counts.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(word.to_vec(), 1);
                }
            }
        });
    }
    if let Some(output) = &args.output {
        let mut sorted: Vec<_> = counts.iter().collect();
        sorted.sort_unstable();
        let file = std::fs::File::create(output)
            .with_context(|| format!("creating {}", output.display()))?;
        let mut out = BufWriter::new(file);
        for (word, count) in sorted {
            out.write_all(word)?;
            writeln!(out, " {count}")?;
        }
        out.flush()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    crate::progress::print_stdout(&format!(
        "{} distinct words, {words} words, {bytes} bytes in {seconds:.3}s ({:.1} MB/s)\n",
        counts.len(),
        bytes as f64 / seconds / 1e6
    ));
    Ok(())
}
