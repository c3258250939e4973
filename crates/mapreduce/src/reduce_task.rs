//! Running the merge-and-reduce part of a reduce task: the partition's runs
//! (already fetched to local files) are merged, grouped by key and reduced;
//! output goes to a temporary file that is renamed into place when complete,
//! so that a reader never sees partial output and, of several attempts, one
//! complete copy wins (paper §3.3).

use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use cairn_storage::Disk;

use crate::app::{Counters, LineSink, counter};
use crate::diskio::{DiskReader, DiskWriter};
use crate::format::{RunReader, RunWriter};
use crate::merge::{GroupValues, Merger};
use crate::progress::Progress;
use crate::streaming::RecordStream;
use crate::{App, AppError, ReduceOutput, Values};

/// At most this many runs are merged at once; more are merged in passes.
pub const MAX_MERGE_FANIN: usize = 64;

const READ_BUFFER_BYTES: usize = 64 * 1024;

impl<W: Write> LineSink for W {
    fn line(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            self.write_all(part)?;
        }
        Ok(())
    }
}

type DiskRuns = Vec<RunReader<BufReader<DiskReader>>>;

fn open_runs(disk: &dyn Disk, paths: &[PathBuf]) -> io::Result<DiskRuns> {
    paths
        .iter()
        .map(|path| {
            let reader = DiskReader::open(disk, path)?;
            Ok(RunReader::new(BufReader::with_capacity(
                READ_BUFFER_BYTES,
                reader,
            )))
        })
        .collect()
}

/// Merges runs in passes until at most [`MAX_MERGE_FANIN`] remain.
fn reduce_fanin(
    scratch: &dyn Disk,
    dir: &Path,
    mut runs: Vec<PathBuf>,
    progress: &Progress,
) -> io::Result<Vec<PathBuf>> {
    let mut pass = 0;
    while runs.len() > MAX_MERGE_FANIN {
        let mut next = Vec::new();
        for (i, batch) in runs.chunks(MAX_MERGE_FANIN).enumerate() {
            let path = dir.join(format!("merge-{pass}-{i}"));
            let mut merger = Merger::new(open_runs(scratch, batch)?)?;
            let mut writer = RunWriter::new(DiskWriter::create(scratch, &path)?);
            while merger.advance()? {
                progress.advance(1);
                writer.write(merger.key(), merger.value())?;
            }
            writer.finish()?;
            next.push(path);
        }
        runs = next;
        pass += 1;
    }
    Ok(runs)
}

/// Where a reduce task writes.
#[derive(Debug)]
pub(crate) struct ReduceTarget<'a> {
    pub(crate) disk: &'a dyn Disk,
    /// The final path, e.g. `out/mr-out-3`.
    pub(crate) path: PathBuf,
    /// The temporary path, unique per attempt.
    pub(crate) temp_path: PathBuf,
}

/// Merges `runs`, reduces and commits the output file. Every record read
/// or written advances `progress`; a cancelled attempt stops before its
/// output is committed.
pub(crate) fn run_reduce_task(
    app: &dyn App,
    scratch: &dyn Disk,
    work_dir: &Path,
    runs: Vec<PathBuf>,
    target: &ReduceTarget<'_>,
    progress: &Progress,
) -> Result<Counters, AppError> {
    let runs = reduce_fanin(scratch, work_dir, runs, progress)?;
    let mut merger = Merger::new(open_runs(scratch, &runs)?)?;
    let mut counters = Counters::default();
    let file = DiskWriter::create(target.disk, &target.temp_path)
        .map_err(|e| format!("creating {}: {e}", target.temp_path.display()))?;
    let mut output = BufWriter::with_capacity(256 * 1024, file);
    reduce_stream(app, &mut merger, &mut output, &mut counters, progress)?;
    if progress.is_cancelled() {
        return Err("the reduce attempt was cancelled".into());
    }
    let file = output.into_inner().map_err(|e| e.into_error())?;
    file.sync()?;
    target.disk.rename(&target.temp_path, &target.path)?;
    target
        .disk
        .sync_dir(target.path.parent().unwrap_or(Path::new("")))?;
    Ok(counters)
}

/// Reduces a merged stream into `output`: one `reduce` call per key, or
/// one `reduce_partition` call for apps that take the whole stream.
pub(crate) fn reduce_stream<R: io::BufRead + Send>(
    app: &dyn App,
    merger: &mut Merger<R>,
    output: &mut (dyn Write + Send),
    counters: &mut Counters,
    progress: &Progress,
) -> Result<(), AppError> {
    // A reduce that writes nothing reports 0 lines, not no count at all.
    counters.add(counter::REDUCE_OUTPUT_RECORDS, 0);
    counters.add(counter::REDUCE_OUTPUT_BYTES, 0);
    let output = &mut ProgressWriter {
        inner: output,
        progress,
    };
    let mut counting = CountingStream {
        inner: merger,
        records: 0,
        groups: 0,
        last_key: None,
        progress,
    };
    if let Some(result) = app.reduce_partition(&mut counting, output, counters) {
        result?;
        counters.add(counter::REDUCE_INPUT_RECORDS, counting.records);
        counters.add(counter::REDUCE_INPUT_GROUPS, counting.groups);
        return Ok(());
    }
    let merger = counting.inner;
    let mut key = Vec::new();
    let (mut records, mut groups) = (0u64, 0u64);
    while merger.advance()? {
        key.clear();
        key.extend_from_slice(merger.key());
        groups += 1;
        let mut source = GroupValues {
            merger,
            key: &key,
            first: true,
            count: 0,
            error: None,
            progress,
        };
        {
            let mut lines: &mut dyn Write = &mut *output;
            let mut reduce_output = ReduceOutput::new(&key, &mut lines, counters);
            app.reduce(&key, &mut Values::new(&mut source), &mut reduce_output)?;
        }
        while crate::app::ValueSource::next_value(&mut source).is_some() {}
        records += source.count;
        if let Some(error) = source.error {
            return Err(error.into());
        }
    }
    counters.add(counter::REDUCE_INPUT_RECORDS, records);
    counters.add(counter::REDUCE_INPUT_GROUPS, groups);
    Ok(())
}

/// Counts records and distinct keys passing to a whole-partition reducer.
struct CountingStream<'a, R: io::BufRead> {
    inner: &'a mut Merger<R>,
    records: u64,
    groups: u64,
    last_key: Option<Vec<u8>>,
    progress: &'a Progress,
}

impl<R: io::BufRead> RecordStream for CountingStream<'_, R> {
    fn next_record(&mut self) -> io::Result<Option<(&[u8], &[u8])>> {
        if self.progress.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the reduce attempt was cancelled",
            ));
        }
        if !self.inner.advance()? {
            return Ok(None);
        }
        self.records += 1;
        self.progress.advance(1);
        if self.last_key.as_deref() != Some(self.inner.key()) {
            self.groups += 1;
            self.last_key = Some(self.inner.key().to_vec());
        }
        Ok(Some((self.inner.key(), self.inner.value())))
    }

    fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

/// Output that advances the attempt's progress by the bytes written.
struct ProgressWriter<'a> {
    inner: &'a mut (dyn Write + Send),
    progress: &'a Progress,
}

impl Write for ProgressWriter<'_> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.progress.advance(written as u64);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
