//! The 6.824 lab's test apps (`src/mrapps/*.go`), with the same behaviour,
//! for the lab's test cases. They mark their presence with files in the
//! worker's current directory, as the originals do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::{App, AppError, Emit, MapInput, ReduceOutput, Values};

fn sorted_values(values: &mut Values<'_>) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(value) = values.next() {
        all.push(value.to_vec());
    }
    all.sort();
    all
}

fn join(values: &[Vec<u8>]) -> Vec<u8> {
    values.join(&b' ')
}

/// Whether a process runs (Linux: its `/proc` entry exists).
fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// How many workers are in `phase` now: announce ourselves with a marker
/// file, count the markers of live processes, wait a second, withdraw.
fn parallel_workers(phase: &str) -> Result<u64, AppError> {
    let marker = format!("mr-worker-{phase}-{}", std::process::id());
    std::fs::write(&marker, b"x")?;
    let prefix = format!("mr-worker-{phase}-");
    let mut running = 0;
    for entry in std::fs::read_dir(".")? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|pid| pid.parse::<u32>().ok())
            && process_alive(pid)
        {
            running += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    std::fs::remove_file(&marker)?;
    Ok(running)
}

/// `mtiming`: records when and how parallel each map ran.
#[derive(Debug)]
pub(crate) struct MapTiming;

impl App for MapTiming {
    fn map(&self, _input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let pid = std::process::id();
        let parallel = parallel_workers("map")?;
        output.emit(
            format!("times-{pid}").as_bytes(),
            format!("{now:.1}").as_bytes(),
        );
        output.emit(
            format!("parallel-{pid}").as_bytes(),
            parallel.to_string().as_bytes(),
        );
        Ok(())
    }

    fn reduce(
        &self,
        _: &[u8],
        values: &mut Values<'_>,
        out: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        out.emit(&join(&sorted_values(values)))?;
        Ok(())
    }
}

/// `rtiming`: how parallel the reduces ran.
#[derive(Debug)]
pub(crate) struct ReduceTiming;

impl App for ReduceTiming {
    fn map(&self, _input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        for key in b'a'..=b'j' {
            output.emit(&[key], b"1");
        }
        Ok(())
    }

    fn reduce(
        &self,
        _: &[u8],
        _values: &mut Values<'_>,
        out: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        let parallel = parallel_workers("reduce")?;
        out.emit(parallel.to_string().as_bytes())?;
        Ok(())
    }
}

/// `jobcount`: each map leaves a marker and takes 2-5 s; the reduce counts
/// the markers, i.e. how many map executions there were.
#[derive(Debug, Default)]
pub(crate) struct JobCount {
    calls: AtomicU64,
}

impl App for JobCount {
    fn map(&self, _input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        std::fs::write(
            format!("mr-worker-jobcount-{}-{call}", std::process::id()),
            b"x",
        )?;
        let pause = cairn_rpc::seeded_rng().gen_range(2000..5000);
        std::thread::sleep(Duration::from_millis(pause));
        output.emit(b"a", b"x");
        Ok(())
    }

    fn reduce(
        &self,
        _: &[u8],
        _values: &mut Values<'_>,
        out: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        let mut count = 0u64;
        for entry in std::fs::read_dir(".")? {
            if entry?
                .file_name()
                .to_string_lossy()
                .starts_with("mr-worker-jobcount")
            {
                count += 1;
            }
        }
        out.emit(count.to_string().as_bytes())?;
        Ok(())
    }
}

/// `early_exit`: reduces of keys naming two of the books take 3 s.
#[derive(Debug)]
pub(crate) struct EarlyExit;

impl App for EarlyExit {
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        output.emit(input.path.as_bytes(), b"1");
        Ok(())
    }

    fn reduce(
        &self,
        key: &[u8],
        values: &mut Values<'_>,
        out: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        let key = String::from_utf8_lossy(key);
        if key.contains("sherlock") || key.contains("tom") {
            std::thread::sleep(Duration::from_secs(3));
        }
        out.emit(values.count().to_string().as_bytes())?;
        Ok(())
    }
}

/// `crash` (and `nocrash`): a third of the calls exit the process, another
/// third stall for up to 10 s.
#[derive(Debug)]
pub(crate) struct Crash {
    pub(crate) crash: bool,
}

impl Crash {
    fn maybe_crash(&self) {
        if !self.crash {
            return;
        }
        let mut rng = cairn_rpc::seeded_rng();
        let roll = rng.gen_range(0..1000);
        if roll < 330 {
            // The crash test of 6.824's lab 1: a worker process that dies
            // mid-task is this app's whole point, so it exits for real.
            std::process::exit(1);
        } else if roll < 660 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..10_000)));
        }
    }
}

impl App for Crash {
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        self.maybe_crash();
        output.emit(b"a", input.path.as_bytes());
        output.emit(b"b", input.path.len().to_string().as_bytes());
        output.emit(b"c", input.contents.len().to_string().as_bytes());
        output.emit(b"d", b"xyzzy");
        Ok(())
    }

    fn reduce(
        &self,
        _: &[u8],
        values: &mut Values<'_>,
        out: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        self.maybe_crash();
        out.emit(&join(&sorted_values(values)))?;
        Ok(())
    }
}
