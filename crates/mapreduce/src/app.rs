//! The [`App`] trait: what a MapReduce job runs, and the handles through
//! which map, combine and reduce functions see their input and emit output.

use std::collections::BTreeMap;

use crate::format::partition_of;
pub use crate::progress::Progress;
pub use crate::streaming::RecordStream;

/// An error from user code: the attempt fails and the task is retried
/// elsewhere (up to the job's attempt limit).
pub type AppError = Box<dyn std::error::Error + Send + Sync>;

/// A MapReduce application (paper §2).
///
/// `map` sees one input split, `reduce` one key with an iterator over its
/// values, in increasing key order within a partition (paper §4.2). A
/// combiner, when [`has_combiner`](Self::has_combiner) says so, runs on the
/// map side over each sorted group of a spill and must be associative and
/// commutative, like the reducer it usually mirrors (§4.3).
///
/// Map and reduce must be deterministic for the job's output to equal a
/// sequential run's (§3.3): an attempt may run twice, and either copy wins.
pub trait App: Send + Sync {
    /// Calls `output.emit(key, value)` for each intermediate pair of the
    /// split. `input.contents` holds whole lines.
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError>;

    /// Calls `output.emit(value)` for each output value of `key` (usually
    /// one), or `output.write_line` for free-form lines.
    fn reduce(
        &self,
        key: &[u8],
        values: &mut Values<'_>,
        output: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError>;

    /// Whether [`combine`](Self::combine) should run on the map side.
    fn has_combiner(&self) -> bool {
        false
    }

    /// Folds one key's values of a map task into fewer values, emitted with
    /// `output.emit(key, value)`. Only called if `has_combiner` is true.
    fn combine(
        &self,
        key: &[u8],
        values: &mut Values<'_>,
        output: &mut dyn Emit,
    ) -> Result<(), AppError> {
        while let Some(value) = values.next() {
            output.emit(key, value);
        }
        Ok(())
    }

    /// Reduces a whole partition in one call, for apps that want the sorted
    /// stream rather than one call per key (a streaming reducer reads every
    /// key on its stdin). `None`, the default, means: call
    /// [`reduce`](Self::reduce) per key.
    fn reduce_partition(
        &self,
        _records: &mut (dyn RecordStream + Send),
        _output: &mut dyn std::io::Write,
        _counters: &mut Counters,
    ) -> Option<Result<(), AppError>> {
        None
    }

    /// The reduce partition of `key`, in `0..reduces`. The default is the
    /// lab's FNV-1a hash, so output files compare with the 6.824 reference.
    fn partition(&self, key: &[u8], reduces: u32) -> u32 {
        partition_of(key, reduces)
    }
}

impl std::fmt::Debug for dyn App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn App")
    }
}

/// A map task's input.
#[derive(Debug)]
pub struct MapInput<'a> {
    /// The input file's path, as given to the job.
    pub path: &'a str,
    /// The split's byte offset in the file.
    pub offset: u64,
    /// The split's bytes: whole lines.
    pub contents: &'a [u8],
    /// The attempt's progress. Emitting advances it; a map that works long
    /// without emitting advances it itself, or the task timeout gives the
    /// attempt up.
    pub progress: &'a Progress,
}

/// Where map (and combine) output goes.
pub trait Emit {
    /// Emits one intermediate pair.
    fn emit(&mut self, key: &[u8], value: &[u8]);
    /// Adds `delta` to the user counter `group.name`.
    fn count(&mut self, group: &str, name: &str, delta: u64);
}

/// A lending iterator over one key's values.
pub struct Values<'a> {
    source: &'a mut dyn ValueSource,
}

/// What [`Values`] draws from.
pub(crate) trait ValueSource {
    /// The next value of the current key, or `None` when the key's values
    /// are exhausted.
    fn next_value(&mut self) -> Option<&[u8]>;
}

impl<'a> Values<'a> {
    pub(crate) fn new(source: &'a mut dyn ValueSource) -> Self {
        Self { source }
    }

    /// The next value, or `None` after the last.
    #[allow(clippy::should_implement_trait)] // lending: values borrow the iterator
    pub fn next(&mut self) -> Option<&[u8]> {
        self.source.next_value()
    }

    /// Counts the remaining values, consuming them.
    pub fn count(&mut self) -> u64 {
        let mut count = 0;
        while self.next().is_some() {
            count += 1;
        }
        count
    }
}

impl std::fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Values")
    }
}

/// A reduce call's output: lines of the reduce task's output file.
pub struct ReduceOutput<'a> {
    key: &'a [u8],
    lines: &'a mut dyn LineSink,
    counters: &'a mut Counters,
}

/// Where reduce output lines go (the output file, or a test buffer).
pub(crate) trait LineSink {
    fn line(&mut self, parts: &[&[u8]]) -> std::io::Result<()>;
}

impl<'a> ReduceOutput<'a> {
    pub(crate) fn new(
        key: &'a [u8],
        lines: &'a mut dyn LineSink,
        counters: &'a mut Counters,
    ) -> Self {
        Self {
            key,
            lines,
            counters,
        }
    }

    /// Writes the line `KEY VALUE` (the lab's `"%v %v\n"`).
    pub fn emit(&mut self, value: &[u8]) -> std::io::Result<()> {
        self.counters.add(counter::REDUCE_OUTPUT_RECORDS, 1);
        self.counters.add(
            counter::REDUCE_OUTPUT_BYTES,
            (self.key.len() + value.len() + 2) as u64,
        );
        self.lines.line(&[self.key, b" ", value, b"\n"])
    }

    /// Writes `line` and a newline, as is.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.counters.add(counter::REDUCE_OUTPUT_RECORDS, 1);
        self.counters
            .add(counter::REDUCE_OUTPUT_BYTES, (line.len() + 1) as u64);
        self.lines.line(&[line, b"\n"])
    }

    /// Adds `delta` to the user counter `group.name`.
    pub fn count(&mut self, group: &str, name: &str, delta: u64) {
        self.counters.add(&user_counter(group, name), delta);
    }
}

impl std::fmt::Debug for ReduceOutput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReduceOutput")
            .field("key", &String::from_utf8_lossy(self.key))
            .finish()
    }
}

/// Named counters (paper §4.9), summed per committed attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    values: BTreeMap<String, u64>,
}

impl Counters {
    /// Adds `delta` to `name` (saturating at `u64::MAX`).
    pub fn add(&mut self, name: &str, delta: u64) {
        if let Some(value) = self.values.get_mut(name) {
            *value = value.saturating_add(delta);
        } else {
            self.values.insert(name.to_string(), delta);
        }
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Counters) {
        for (name, value) in &other.values {
            self.add(name, *value);
        }
    }

    /// A counter's value (0 if never counted).
    pub fn get(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// Every counter, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
    }
}

impl FromIterator<(String, u64)> for Counters {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> Self {
        let mut counters = Counters::default();
        for (name, value) in iter {
            counters.add(&name, value);
        }
        counters
    }
}

/// The user counter name for `group` and `name`.
pub(crate) fn user_counter(group: &str, name: &str) -> String {
    format!("user.{group}.{name}")
}

/// Built-in counter names.
pub mod counter {
    /// Input bytes read by map tasks.
    pub const MAP_INPUT_BYTES: &str = "map.input.bytes";
    /// Input lines read by map tasks.
    pub const MAP_INPUT_RECORDS: &str = "map.input.records";
    /// Pairs emitted by map functions.
    pub const MAP_OUTPUT_RECORDS: &str = "map.output.records";
    /// Bytes of those pairs (keys and values).
    pub const MAP_OUTPUT_BYTES: &str = "map.output.bytes";
    /// Pairs fed to the combiner.
    pub const COMBINE_INPUT_RECORDS: &str = "combine.input.records";
    /// Pairs the combiner emitted.
    pub const COMBINE_OUTPUT_RECORDS: &str = "combine.output.records";
    /// Pairs written to intermediate files, spills and final runs.
    pub const SPILLED_RECORDS: &str = "spilled.records";
    /// Bytes of intermediate files the map tasks wrote.
    pub const MAP_MATERIALIZED_BYTES: &str = "map.materialized.bytes";
    /// Bytes reducers fetched from map workers.
    pub const SHUFFLE_BYTES: &str = "reduce.shuffle.bytes";
    /// Distinct keys the reducers saw.
    pub const REDUCE_INPUT_GROUPS: &str = "reduce.input.groups";
    /// Pairs the reducers read.
    pub const REDUCE_INPUT_RECORDS: &str = "reduce.input.records";
    /// Lines the reducers wrote.
    pub const REDUCE_OUTPUT_RECORDS: &str = "reduce.output.records";
    /// Bytes the reducers wrote.
    pub const REDUCE_OUTPUT_BYTES: &str = "reduce.output.bytes";
    /// Map tasks of `fs://` inputs run on a worker beside a replica of
    /// their split.
    pub const DATA_LOCAL_MAPS: &str = "map.tasks.data-local";
    /// Map tasks of `fs://` inputs run elsewhere (read over the network).
    pub const REMOTE_MAPS: &str = "map.tasks.remote";
}
