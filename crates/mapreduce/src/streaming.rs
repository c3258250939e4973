//! Streaming apps (Hadoop Streaming conventions): the mapper and reducer are
//! shell commands. The mapper reads its split's lines on stdin; each stdout
//! line is a pair, the key up to the first tab and the value after it (no
//! tab: the whole line is the key, the value empty). The reducer reads its
//! partition as `key<TAB>value` lines sorted by key, one process per reduce
//! task, and its stdout lines are the output. A stderr line
//! `reporter:counter:GROUP,NAME,N` adds N to a user counter; other stderr
//! lines are passed through.
//!
//! Each command runs in a process group of its own. Input handed to it and
//! lines it writes advance the attempt's [`Progress`]; when the coordinator
//! gives the attempt up, the whole group is SIGKILLed, so nothing the
//! command started (a `sleep` under its shell, a pipeline) outlives it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::app::{Counters, user_counter};
use crate::progress::Progress;
use crate::{App, AppError, Emit, MapInput, ReduceOutput, Values};

/// A streaming app: `sh -c MAPPER` and `sh -c REDUCER`.
#[derive(Debug)]
pub(crate) struct Streaming {
    mapper: String,
    reducer: String,
}

impl Streaming {
    pub(crate) fn new(mapper: String, reducer: String) -> Self {
        Self { mapper, reducer }
    }
}

/// Input is handed to a streaming command in pieces of this size, each
/// advancing the attempt's progress once written.
const FEED_CHUNK_BYTES: usize = 64 * 1024;

/// A running command with stdin fed from `feed` on a thread, stderr
/// parsed for counters on another, and stdout handed to `read_stdout`. The
/// command leads its own process group, killed if `progress` is cancelled.
fn run_command(
    role: &str,
    command: &str,
    progress: &Progress,
    feed: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    read_stdout: impl FnOnce(&mut dyn BufRead) -> Result<(), AppError>,
) -> Result<Counters, AppError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the {role} `{command}`: {e}"))?;
    let tracked = progress.track_child(&child);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let counters = Arc::new(Mutex::new(Counters::default()));
    let result = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let result = feed(&mut stdin);
            drop(stdin);
            match result {
                // The command may exit without reading all its input.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other,
            }
        });
        let counters_seen = counters.clone();
        scope.spawn(move || parse_stderr(stderr, &counters_seen));
        let mut reader = BufReader::with_capacity(256 * 1024, stdout);
        let read = read_stdout(&mut reader);
        // Drain what is left so the command never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        let written = writer.join().expect("the stdin feeder does not panic");
        read.and(written.map_err(AppError::from))
    });
    let status = child.wait()?;
    drop(tracked);
    if progress.is_cancelled() {
        return Err(format!("the {role} was killed: its attempt was cancelled").into());
    }
    result?;
    if !status.success() {
        return Err(format!("the {role} `{command}` failed: {status}").into());
    }
    let counters = counters.lock().expect("counter lock").clone();
    Ok(counters)
}

fn parse_stderr(stderr: impl Read, counters: &Mutex<Counters>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { return };
        let parsed = line.strip_prefix("reporter:counter:").and_then(|rest| {
            let mut parts = rest.splitn(3, ',');
            let group = parts.next()?;
            let name = parts.next()?;
            let amount = parts.next()?.trim().parse::<u64>().ok()?;
            Some((group.to_string(), name.to_string(), amount))
        });
        match parsed {
            Some((group, name, amount)) => counters
                .lock()
                .expect("counter lock")
                .add(&user_counter(&group, &name), amount),
            None if line.starts_with("reporter:") => {}
            None => eprintln!("{line}"),
        }
    }
}

fn split_pair(line: &[u8]) -> (&[u8], &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    match line.iter().position(|byte| *byte == b'\t') {
        Some(tab) => (&line[..tab], &line[tab + 1..]),
        None => (line, &[]),
    }
}

impl App for Streaming {
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        let (contents, progress) = (input.contents, input.progress);
        let counters = run_command(
            "mapper",
            &self.mapper,
            progress,
            move |stdin| {
                for chunk in contents.chunks(FEED_CHUNK_BYTES) {
                    stdin.write_all(chunk)?;
                    progress.consume_input(chunk.len() as u64);
                }
                Ok(())
            },
            |stdout| {
                let mut line = Vec::new();
                while stdout.read_until(b'\n', &mut line)? > 0 {
                    let (key, value) = split_pair(&line);
                    output.emit(key, value);
                    line.clear();
                }
                Ok(())
            },
        )?;
        for (name, value) in counters.iter() {
            let name = name.strip_prefix("user.").unwrap_or(name);
            let (group, name) = name.split_once('.').unwrap_or((name, ""));
            output.count(group, name, value);
        }
        Ok(())
    }

    fn reduce(
        &self,
        _: &[u8],
        _: &mut Values<'_>,
        _: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        Err("a streaming reducer reads whole partitions (reduce_partition)".into())
    }

    fn reduce_partition(
        &self,
        records: &mut (dyn RecordStream + Send),
        output: &mut dyn Write,
        counters: &mut Counters,
    ) -> Option<Result<(), AppError>> {
        // A handle of its own: the feeder thread borrows the records.
        let progress = records.progress();
        let result = run_command(
            "reducer",
            &self.reducer,
            &progress,
            move |stdin| {
                let mut buffer = std::io::BufWriter::with_capacity(256 * 1024, stdin);
                while let Some((key, value)) = records.next_record()? {
                    buffer.write_all(key)?;
                    buffer.write_all(b"\t")?;
                    buffer.write_all(value)?;
                    buffer.write_all(b"\n")?;
                }
                buffer.flush()
            },
            |stdout| {
                let mut line = Vec::new();
                while stdout.read_until(b'\n', &mut line)? > 0 {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    output.write_all(&line)?;
                    counters_add_line(counters, line.len());
                    line.clear();
                }
                Ok(())
            },
        );
        Some(result.map(|user| counters.merge(&user)))
    }
}

fn counters_add_line(counters: &mut Counters, bytes: usize) {
    counters.add(crate::app::counter::REDUCE_OUTPUT_RECORDS, 1);
    counters.add(crate::app::counter::REDUCE_OUTPUT_BYTES, bytes as u64);
}

/// A sorted stream of a partition's records, for [`App::reduce_partition`].
pub trait RecordStream {
    /// The next record, or `None` at the end.
    fn next_record(&mut self) -> std::io::Result<Option<(&[u8], &[u8])>>;

    /// The attempt's progress: reading records advances it; a reducer that
    /// works long between records advances it too, and one that starts
    /// processes has them killed when the attempt is cancelled.
    fn progress(&self) -> Progress;
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;

    struct Discard;

    impl Emit for Discard {
        fn emit(&mut self, _: &[u8], _: &[u8]) {}
        fn count(&mut self, _: &str, _: &str, _: u64) {}
    }

    /// Polls `condition` every 10 ms until it holds; panics after 10 s.
    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether process `pid` is gone (or dead and not yet reaped).
    fn process_gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    fn read_pid(path: &Path) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        text.ends_with('\n').then(|| text.trim().to_string())
    }

    /// The counters of a map task running `mapper` over two input lines.
    fn map_counters(mapper: &str) -> crate::Counters {
        use cairn_storage::{MemDisk, write_atomic};
        let disk = MemDisk::new();
        write_atomic(&disk, Path::new("in"), b"a b c\nd e\n").unwrap();
        let split = cairn_rpc::mapreduce::Split {
            index: 0,
            path: "in".into(),
            offset: 0,
            length: 10,
        };
        let app = Streaming::new(mapper.into(), "cat".into());
        let output = crate::map_task::run_map_task(
            &app,
            crate::map_task::SplitSource::Disk(&disk),
            &mut crate::map_task::SplitBuffer::default(),
            &disk,
            Path::new("map"),
            &split,
            2,
            &Progress::new(),
        )
        .unwrap();
        output.counters
    }

    #[test]
    fn map_counters_report_what_the_mapper_emitted_not_what_it_read() {
        use crate::counter::{MAP_INPUT_RECORDS, MAP_OUTPUT_BYTES, MAP_OUTPUT_RECORDS};
        let listed = |counters: &crate::Counters, name: &str| {
            counters.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
        };
        let silent = map_counters("cat >/dev/null");
        assert_eq!(listed(&silent, MAP_INPUT_RECORDS), Some(2));
        assert_eq!(listed(&silent, MAP_OUTPUT_RECORDS), Some(0), "{silent:?}");
        assert_eq!(listed(&silent, MAP_OUTPUT_BYTES), Some(0), "{silent:?}");
        let words = map_counters("tr ' ' '\\n'");
        assert_eq!(listed(&words, MAP_INPUT_RECORDS), Some(2));
        assert_eq!(listed(&words, MAP_OUTPUT_RECORDS), Some(5), "{words:?}");
    }

    #[test]
    fn cancelling_kills_the_command_and_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The sleep holds none of the mapper's pipes: only killing the
        // process group ends it.
        let mapper = format!(
            "sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > {}; wait",
            pid_file.display()
        );
        let app = Streaming::new(mapper, "cat".into());
        let progress = Progress::new();
        let canceller = progress.clone();
        let watched = pid_file.clone();
        let cancelling = std::thread::spawn(move || {
            wait_for("the mapper starts its sleep", || {
                read_pid(&watched).is_some()
            });
            canceller.cancel();
        });
        let input = MapInput {
            path: "in",
            offset: 0,
            contents: b"a line\n",
            progress: &progress,
        };
        let error = app.map(&input, &mut Discard).unwrap_err();
        cancelling.join().unwrap();
        assert!(error.to_string().contains("cancelled"), "{error}");
        assert_eq!(progress.input_bytes(), 7, "the input was handed over");
        let pid = read_pid(&pid_file).unwrap();
        wait_for(&format!("the mapper's sleep (pid {pid}) is killed"), || {
            process_gone(&pid)
        });
    }
}
