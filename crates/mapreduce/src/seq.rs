//! The sequential reference (the lab's `mrsequential`): every file is one
//! map call, all pairs are sorted in memory, and reduce runs once per key
//! into a single output file. It shares only the [`App`] with the
//! distributed engine, so comparing their outputs checks the engine.

use std::io::{self, Write};
use std::path::Path;

use cairn_rpc::mapreduce::Split;
use cairn_storage::Disk;

use crate::app::{Counters, counter, user_counter};
use crate::format::{RunReader, RunWriter};
use crate::merge::Merger;
use crate::progress::Progress;
use crate::reduce_task::reduce_stream;
use crate::split::read_split_into;
use crate::{App, AppError, Emit, MapInput};

/// Runs `app` over `inputs` and writes the output to `output` (e.g.
/// `mr-out-0`), through a temporary file. Returns the counters.
pub fn run_sequential(
    app: &dyn App,
    disk: &dyn Disk,
    inputs: &[String],
    output: &Path,
) -> Result<Counters, AppError> {
    struct Pairs {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        counters: Counters,
    }
    impl Emit for Pairs {
        fn emit(&mut self, key: &[u8], value: &[u8]) {
            self.counters.add(counter::MAP_OUTPUT_RECORDS, 1);
            self.counters
                .add(counter::MAP_OUTPUT_BYTES, (key.len() + value.len()) as u64);
            self.pairs.push((key.to_vec(), value.to_vec()));
        }
        fn count(&mut self, group: &str, name: &str, delta: u64) {
            self.counters.add(&user_counter(group, name), delta);
        }
    }
    // Nothing times the sequential run out: its progress is never read.
    let progress = Progress::new();
    let mut pairs = Pairs {
        pairs: Vec::new(),
        counters: Counters::default(),
    };
    pairs.counters.add(counter::MAP_OUTPUT_RECORDS, 0);
    pairs.counters.add(counter::MAP_OUTPUT_BYTES, 0);
    // One buffer for every file, as a worker keeps one for every split:
    // fresh pages for each file cost the kernel about a tenth of the run.
    let mut contents = Vec::new();
    for path in inputs {
        let len = disk
            .open(Path::new(path), cairn_storage::OpenMode::Read)?
            .len()?;
        let split = Split {
            index: 0,
            path: path.clone(),
            offset: 0,
            length: len,
        };
        read_split_into(disk, &split, &mut contents).map_err(|e| format!("reading {path}: {e}"))?;
        pairs
            .counters
            .add(counter::MAP_INPUT_BYTES, contents.len() as u64);
        pairs.counters.add(
            counter::MAP_INPUT_RECORDS,
            crate::map_task::input_records(&contents),
        );
        app.map(
            &MapInput {
                path,
                offset: 0,
                contents: &contents,
                progress: &progress,
            },
            &mut pairs,
        )?;
    }
    pairs.pairs.sort_by(|a, b| a.0.cmp(&b.0));
    // One sorted in-memory run, reduced by the same grouping code.
    let mut run = RunWriter::new(Vec::new());
    for (key, value) in &pairs.pairs {
        run.write(key, value)?;
    }
    let bytes = run.finish()?;
    let mut merger = Merger::new(vec![RunReader::new(io::Cursor::new(bytes))])?;
    let mut counters = pairs.counters;
    let temp = output.with_extension("tmp");
    let mut file = io::BufWriter::new(crate::diskio::DiskWriter::create(disk, &temp)?);
    reduce_stream(app, &mut merger, &mut file, &mut counters, &progress)?;
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync()?;
    disk.rename(&temp, output)?;
    Ok(counters)
}
