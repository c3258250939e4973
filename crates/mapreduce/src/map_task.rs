//! Running one map task: read the split, call the app's map, partition and
//! buffer its output, and write one sorted run per reduce partition.
//!
//! Output is buffered in memory up to [`MAX_MAP_BUFFER_BYTES`]; past that
//! the buffer is sorted, combined and *spilled* to a run per partition, and
//! at the end the spills of each partition are merged (combining again) into
//! the task's final run `part-<r>`. Memory stays bounded whatever the split
//! emits.

use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use cairn_rpc::mapreduce::Split;
use cairn_storage::Disk;

use crate::app::{Counters, ValueSource, counter, user_counter};
use crate::diskio::{DiskReader, DiskWriter};
use crate::format::{RunReader, RunWriter};
use crate::merge::{GroupValues, Merger};
use crate::progress::Progress;
use crate::split::read_split_into;
use crate::{App, AppError, Emit, MapInput, Values};

/// Map output buffered in memory before a spill.
pub const MAX_MAP_BUFFER_BYTES: usize = 128 * 1024 * 1024;

/// A split buffer larger than this (a huge `--split-size`) is not kept.
const MAX_KEPT_SPLIT_BUFFER_BYTES: usize = 256 * 1024 * 1024;

/// A worker's split buffer, reused across its map tasks: mapping fresh
/// pages for every 64 MiB split costs more than the copy itself. One
/// worker runs one map task at a time, so it owns one buffer.
#[derive(Debug, Default)]
pub(crate) struct SplitBuffer(Vec<u8>);

impl SplitBuffer {
    /// The buffer, for a task to fill (empty, its capacity kept).
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }

    /// The buffer, to read a split into before the map task runs.
    pub(crate) fn contents(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Keeps a task's split contents as the next task's buffer, unless it
    /// is larger than [`MAX_KEPT_SPLIT_BUFFER_BYTES`].
    fn keep(&mut self, contents: Vec<u8>) {
        if contents.capacity() <= MAX_KEPT_SPLIT_BUFFER_BYTES {
            self.0 = contents;
        }
    }
}

/// What a finished map task produced.
#[derive(Debug)]
pub(crate) struct MapTaskOutput {
    pub(crate) counters: Counters,
}

/// The final run of partition `r` in a map attempt's directory.
pub(crate) fn partition_path(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("part-{partition}"))
}

/// Where a map task's split comes from.
pub(crate) enum SplitSource<'a> {
    /// A file on this disk: the task reads the split's lines.
    Disk(&'a dyn Disk),
    /// The split's lines, already read (from the file store).
    Read(Vec<u8>),
}

/// Runs a map task; its output goes under `dir` on `scratch`. `progress`
/// advances with the input consumed and every record emitted or written.
/// A split read from disk goes into `buffer`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_map_task(
    app: &dyn App,
    input: SplitSource<'_>,
    buffer: &mut SplitBuffer,
    scratch: &dyn Disk,
    dir: &Path,
    split: &Split,
    reduces: u32,
    progress: &Progress,
) -> Result<MapTaskOutput, AppError> {
    scratch.create_dir_all(dir)?;
    let contents = match input {
        SplitSource::Disk(input_disk) => {
            let mut contents = buffer.take();
            read_split_into(input_disk, split, &mut contents)
                .map_err(|e| format!("reading {} at {}: {e}", split.path, split.offset))?;
            contents
        }
        SplitSource::Read(contents) => contents,
    };
    let target = SpillTarget {
        scratch,
        dir,
        limit: MAX_MAP_BUFFER_BYTES,
    };
    let mut collector = Collector::new(app, reduces, target, progress);
    collector
        .counters
        .add(counter::MAP_INPUT_BYTES, contents.len() as u64);
    collector
        .counters
        .add(counter::MAP_INPUT_RECORDS, input_records(&contents));
    // Records in and pairs out are different numbers: a map that emits
    // nothing reports 0 pairs, not no count at all.
    collector.counters.add(counter::MAP_OUTPUT_RECORDS, 0);
    collector.counters.add(counter::MAP_OUTPUT_BYTES, 0);
    let input = MapInput {
        path: &split.path,
        offset: split.offset,
        contents: &contents,
        progress,
    };
    let mapped = app.map(&input, &mut collector);
    progress.finish_input(split.length);
    buffer.keep(contents);
    mapped?;
    if progress.is_cancelled() {
        return Err("the map attempt was cancelled".into());
    }
    collector.finish()
}

/// The input records (lines, the last one maybe unterminated) of a split.
pub(crate) fn input_records(contents: &[u8]) -> u64 {
    // memchr counts with vector instructions: a byte-at-a-time count cost
    // about a tenth of a word count's time.
    let lines = memchr::memchr_iter(b'\n', contents).count()
        + usize::from(contents.last().is_some_and(|byte| *byte != b'\n'));
    lines as u64
}

/// Where a map task's spills and final runs go.
struct SpillTarget<'a> {
    scratch: &'a dyn Disk,
    dir: &'a Path,
    /// Buffered bytes that trigger a spill.
    limit: usize,
}

/// One record in the in-memory buffer: where its key and value sit in the
/// partition's arena.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    key_len: u32,
    value_len: u32,
}

#[derive(Debug, Default)]
struct PartitionBuffer {
    arena: Vec<u8>,
    entries: Vec<Entry>,
}

impl PartitionBuffer {
    fn key(&self, entry: &Entry) -> &[u8] {
        &self.arena[entry.start as usize..][..entry.key_len as usize]
    }

    fn value(&self, entry: &Entry) -> &[u8] {
        &self.arena[(entry.start + entry.key_len) as usize..][..entry.value_len as usize]
    }
}

/// The map function's [`Emit`]: partitions, buffers and spills.
struct Collector<'a> {
    app: &'a dyn App,
    reduces: u32,
    scratch: &'a dyn Disk,
    dir: &'a Path,
    limit: usize,
    progress: &'a Progress,
    partitions: Vec<PartitionBuffer>,
    buffered: usize,
    /// Spill files per partition.
    spills: Vec<Vec<PathBuf>>,
    spill_count: usize,
    counters: Counters,
    /// The first write error; reported when the map returns.
    error: Option<io::Error>,
}

impl<'a> Collector<'a> {
    fn new(
        app: &'a dyn App,
        reduces: u32,
        target: SpillTarget<'a>,
        progress: &'a Progress,
    ) -> Self {
        Self {
            app,
            reduces,
            scratch: target.scratch,
            dir: target.dir,
            limit: target.limit,
            progress,
            partitions: (0..reduces).map(|_| PartitionBuffer::default()).collect(),
            buffered: 0,
            spills: vec![Vec::new(); reduces as usize],
            spill_count: 0,
            counters: Counters::default(),
            error: None,
        }
    }

    /// Sorts, combines and writes the buffer: as spill files, or (when
    /// `last` and nothing was spilled before) as the final runs.
    fn spill(&mut self, last: bool) -> io::Result<()> {
        let straight_to_final = last && self.spill_count == 0;
        for partition in 0..self.reduces {
            let buffer = std::mem::take(&mut self.partitions[partition as usize]);
            let path = if straight_to_final {
                partition_path(self.dir, partition)
            } else if buffer.entries.is_empty() {
                continue;
            } else {
                self.dir
                    .join(format!("spill-{}-{partition}", self.spill_count))
            };
            let mut entries = buffer.entries.clone();
            entries.sort_by(|a, b| buffer.key(a).cmp(buffer.key(b)));
            let mut writer = RunWriter::new(DiskWriter::create(self.scratch, &path)?);
            let mut i = 0;
            while i < entries.len() {
                let key = buffer.key(&entries[i]);
                let mut j = i + 1;
                while j < entries.len() && buffer.key(&entries[j]) == key {
                    j += 1;
                }
                let group = &entries[i..j];
                self.progress.advance(group.len() as u64);
                if self.app.has_combiner() {
                    let mut source = BufferValues {
                        buffer: &buffer,
                        entries: group,
                        next: 0,
                    };
                    combine_group(self.app, key, &mut source, &mut writer, &mut self.counters)?;
                } else {
                    for entry in group {
                        writer.write(key, buffer.value(entry))?;
                    }
                }
                i = j;
            }
            self.counters.add(counter::SPILLED_RECORDS, writer.records);
            writer.finish()?;
            if !straight_to_final {
                self.spills[partition as usize].push(path);
            }
        }
        if !straight_to_final {
            self.spill_count += 1;
        }
        self.buffered = 0;
        Ok(())
    }

    /// Writes the final runs and reports their sizes.
    fn finish(mut self) -> Result<MapTaskOutput, AppError> {
        if let Some(error) = self.error.take() {
            return Err(error.into());
        }
        let merge_needed = self.spill_count > 0;
        if merge_needed && self.buffered > 0 {
            self.spill(false)?;
        }
        if !merge_needed {
            self.spill(true)?;
        }
        for partition in 0..self.reduces {
            let path = partition_path(self.dir, partition);
            if merge_needed {
                self.merge_spills(partition, &path)?;
            }
            let bytes = self
                .scratch
                .open(&path, cairn_storage::OpenMode::Read)?
                .len()?;
            self.counters.add(counter::MAP_MATERIALIZED_BYTES, bytes);
        }
        Ok(MapTaskOutput {
            counters: self.counters,
        })
    }

    fn merge_spills(&mut self, partition: u32, path: &Path) -> io::Result<()> {
        let spills = std::mem::take(&mut self.spills[partition as usize]);
        let readers = spills
            .iter()
            .map(|spill| {
                Ok(RunReader::new(BufReader::with_capacity(
                    64 * 1024,
                    DiskReader::open(self.scratch, spill)?,
                )))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut merger = Merger::new(readers)?;
        let mut writer = RunWriter::new(DiskWriter::create(self.scratch, path)?);
        let mut key = Vec::new();
        while merger.advance()? {
            if self.app.has_combiner() {
                key.clear();
                key.extend_from_slice(merger.key());
                let mut source = GroupValues {
                    merger: &mut merger,
                    key: &key,
                    first: true,
                    count: 0,
                    error: None,
                    progress: self.progress,
                };
                combine_group(self.app, &key, &mut source, &mut writer, &mut self.counters)?;
                if let Some(error) = source.error {
                    return Err(error);
                }
            } else {
                self.progress.advance(1);
                writer.write(merger.key(), merger.value())?;
            }
        }
        self.counters.add(counter::SPILLED_RECORDS, writer.records);
        writer.finish()?;
        for spill in spills {
            self.scratch.remove_file(&spill)?;
        }
        Ok(())
    }
}

impl Emit for Collector<'_> {
    fn emit(&mut self, key: &[u8], value: &[u8]) {
        let partition = self.app.partition(key, self.reduces);
        let buffer = &mut self.partitions[partition as usize];
        let entry = Entry {
            start: buffer.arena.len() as u32,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
        };
        buffer.arena.extend_from_slice(key);
        buffer.arena.extend_from_slice(value);
        buffer.entries.push(entry);
        self.buffered += key.len() + value.len() + std::mem::size_of::<Entry>();
        self.counters.add(counter::MAP_OUTPUT_RECORDS, 1);
        self.progress.advance(1);
        self.counters
            .add(counter::MAP_OUTPUT_BYTES, (key.len() + value.len()) as u64);
        if self.buffered >= self.limit
            && self.error.is_none()
            && let Err(error) = self.spill(false)
        {
            self.error = Some(error);
        }
    }

    fn count(&mut self, group: &str, name: &str, delta: u64) {
        self.counters.add(&user_counter(group, name), delta);
    }
}

/// The values of one key in a sorted in-memory buffer.
struct BufferValues<'a> {
    buffer: &'a PartitionBuffer,
    entries: &'a [Entry],
    next: usize,
}

impl ValueSource for BufferValues<'_> {
    fn next_value(&mut self) -> Option<&[u8]> {
        let entry = self.entries.get(self.next)?;
        self.next += 1;
        Some(self.buffer.value(entry))
    }
}

/// Runs the combiner over one group and writes what it emits.
fn combine_group<W: io::Write>(
    app: &dyn App,
    key: &[u8],
    source: &mut dyn ValueSource,
    writer: &mut RunWriter<W>,
    counters: &mut Counters,
) -> io::Result<()> {
    struct Sink<'a, W: io::Write> {
        key: &'a [u8],
        writer: &'a mut RunWriter<W>,
        counters: &'a mut Counters,
        emitted: u64,
        error: Option<io::Error>,
    }
    impl<W: io::Write> Emit for Sink<'_, W> {
        fn emit(&mut self, key: &[u8], value: &[u8]) {
            assert_eq!(key, self.key, "a combiner must emit the key it was given");
            self.emitted += 1;
            if let Err(error) = self.writer.write(key, value) {
                self.error.get_or_insert(error);
            }
        }
        fn count(&mut self, group: &str, name: &str, delta: u64) {
            self.counters.add(&user_counter(group, name), delta);
        }
    }
    let mut counting = CountingSource {
        inner: source,
        count: 0,
    };
    let mut sink = Sink {
        key,
        writer,
        counters,
        emitted: 0,
        error: None,
    };
    app.combine(key, &mut Values::new(&mut counting), &mut sink)
        .map_err(|e| io::Error::other(format!("combiner failed: {e}")))?;
    // Values the combiner left unread still belong to the key: they are
    // consumed so the stream stays on key boundaries.
    while counting.next_value().is_some() {}
    let (emitted, error) = (sink.emitted, sink.error);
    counters.add(counter::COMBINE_INPUT_RECORDS, counting.count);
    counters.add(counter::COMBINE_OUTPUT_RECORDS, emitted);
    error.map_or(Ok(()), Err)
}

struct CountingSource<'a> {
    inner: &'a mut dyn ValueSource,
    count: u64,
}

impl ValueSource for CountingSource<'_> {
    fn next_value(&mut self) -> Option<&[u8]> {
        let value = self.inner.next_value();
        if value.is_some() {
            self.count += 1;
        }
        value
    }
}
