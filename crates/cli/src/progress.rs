//! Progress display and the final report of a MapReduce job.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use cairn_mapreduce::StatusReply;
use indicatif::{ProgressBar, ProgressStyle};

/// A live view of a job: a progress bar on a terminal, a line every few
/// seconds otherwise, nothing when quiet.
pub(crate) struct JobProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
    last_line: Instant,
    last_bytes: (Instant, u64),
    rate: f64,
}

impl JobProgress {
    pub(crate) fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(1);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            quiet,
            last_line: now,
            last_bytes: (now, 0),
            rate: 0.0,
        }
    }

    pub(crate) fn update(&mut self, status: &StatusReply) {
        let now = Instant::now();
        let (since, bytes) = self.last_bytes;
        let elapsed = now.duration_since(since).as_secs_f64();
        if elapsed >= 0.5 {
            let instant = status.input_bytes_done.saturating_sub(bytes) as f64 / elapsed;
            self.rate = if self.rate == 0.0 {
                instant
            } else {
                0.6 * self.rate + 0.4 * instant
            };
            self.last_bytes = (now, status.input_bytes_done);
        }
        let left = status
            .input_bytes_total
            .saturating_sub(status.input_bytes_done);
        let eta = if status.maps_done < status.maps_total && self.rate > 0.0 {
            format!(", maps end in ~{:.0}s", left as f64 / self.rate)
        } else {
            String::new()
        };
        // No rate before any input is processed: "0 B/s" would read as
        // a stalled job.
        let rate = if self.rate > 0.0 {
            format!("{}/s", human_bytes(self.rate as u64))
        } else {
            NO_RATE.to_string()
        };
        let locality = locality(status).map_or(String::new(), |line| format!(" | {line}"));
        let message = format!(
            "maps {}/{} reduces {}/{} | {rate}{eta} | workers {}{locality}",
            status.maps_done,
            status.maps_total,
            status.reduces_done,
            status.reduces_total,
            status.workers_alive
        );
        let total = u64::from(status.maps_total + status.reduces_total);
        let done = u64::from(status.maps_done + status.reduces_done);
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(1));
            bar.set_position(done);
            bar.set_message(message);
        } else if !self.quiet && now.duration_since(self.last_line) >= Duration::from_secs(2) {
            eprintln!("{message}");
            self.last_line = now;
        }
    }

    pub(crate) fn warn(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Shown instead of a rate while there is nothing to compute one from.
const NO_RATE: &str = "—";

/// Prints the counters and where the output is.
pub(crate) fn print_report(status: &StatusReply, wall: Option<Duration>) {
    crate::progress::print_stdout(&report(status, wall));
}

/// The value of counter `name`, if reported.
fn counter(status: &StatusReply, name: &str) -> Option<u64> {
    status
        .counters
        .iter()
        .find(|counter| counter.name == name)
        .map(|counter| counter.value)
}

/// How many committed map tasks of `fs://` inputs ran beside a replica
/// of their split, if the job has any.
pub(crate) fn locality(status: &StatusReply) -> Option<String> {
    use cairn_mapreduce::counter::{DATA_LOCAL_MAPS, REMOTE_MAPS};
    let local = counter(status, DATA_LOCAL_MAPS).unwrap_or(0);
    let remote = counter(status, REMOTE_MAPS).unwrap_or(0);
    let total = local + remote;
    (total > 0).then(|| {
        format!(
            "map tasks data-local {local}, remote {remote} ({}% local)",
            local * 100 / total
        )
    })
}

/// The report [`print_report`] prints: the job's state and elapsed time,
/// tasks, input and its rate (none until input has been processed), the
/// counters and where the output is.
pub(crate) fn report(status: &StatusReply, wall: Option<Duration>) -> String {
    use cairn_mapreduce::counter::{MAP_INPUT_RECORDS, MAP_OUTPUT_RECORDS};
    use std::fmt::Write as _;
    let mut out = String::new();
    let state = if status.done {
        "done"
    } else if !status.error.is_empty() {
        "failed"
    } else {
        "running"
    };
    let elapsed = wall.unwrap_or(Duration::from_millis(status.elapsed_ms));
    _ = writeln!(out, "job {} {state} in {:.2?}", status.job_id, elapsed);
    _ = writeln!(
        out,
        "  maps {}/{}  reduces {}/{}  workers lost {}  failed attempts {} (timed-out attempts {})  lost attempts {}",
        status.maps_done,
        status.maps_total,
        status.reduces_done,
        status.reduces_total,
        status.workers_lost,
        status.task_failures,
        status.attempts_timed_out,
        status.attempts_lost
    );
    if let Some(line) = locality(status) {
        _ = writeln!(out, "  {line}");
    }
    if status.input_bytes_total > 0 {
        let done = if status.done {
            status.input_bytes_total
        } else {
            status.input_bytes_done
        };
        let rate = if done > 0 && elapsed.as_secs_f64() > 0.0 {
            format!(
                "{}/s",
                human_bytes((done as f64 / elapsed.as_secs_f64()) as u64)
            )
        } else {
            NO_RATE.to_string()
        };
        if status.done {
            _ = writeln!(out, "  input {} at {rate}", human_bytes(done));
        } else {
            _ = writeln!(
                out,
                "  input {} of {} processed, at {rate}",
                human_bytes(done),
                human_bytes(status.input_bytes_total)
            );
        }
    }
    if !status.error.is_empty() {
        _ = writeln!(out, "  error: {}", status.error);
    }
    _ = writeln!(out, "counters:");
    for counter in &status.counters {
        _ = writeln!(out, "  {:<28} {:>16}", counter.name, counter.value);
    }
    if status.done
        && let (Some(read), Some(0)) = (
            counter(status, MAP_INPUT_RECORDS),
            counter(status, MAP_OUTPUT_RECORDS),
        )
        && read > 0
    {
        _ = writeln!(
            out,
            "note: the maps read {read} input records but emitted no pairs, so the output is \
             empty (a streaming mapper must print key<TAB>value lines on its stdout)"
        );
    }
    if status.done {
        let first = status.outputs.first().map(String::as_str).unwrap_or("");
        let last = status.outputs.last().map(String::as_str).unwrap_or("");
        _ = writeln!(
            out,
            "output: {} files in {}/ ({first} .. {last})",
            status.outputs.len(),
            status.output_dir
        );
    }
    out
}

/// The status as JSON, for scripts.
pub(crate) fn status_json(status: &StatusReply) -> String {
    let counters: serde_json::Map<String, serde_json::Value> = status
        .counters
        .iter()
        .map(|c| (c.name.clone(), c.value.into()))
        .collect();
    serde_json::json!({
        "job_id": status.job_id,
        "done": status.done,
        "error": status.error,
        "maps": {"total": status.maps_total, "done": status.maps_done, "running": status.maps_running},
        "reduces": {"total": status.reduces_total, "done": status.reduces_done, "running": status.reduces_running},
        "input_bytes": {"total": status.input_bytes_total, "done": status.input_bytes_done},
        "workers": {"alive": status.workers_alive, "lost": status.workers_lost},
        "attempts": {"failed": status.task_failures, "timed_out": status.attempts_timed_out, "lost": status.attempts_lost},
        "elapsed_ms": status.elapsed_ms,
        "counters": counters,
        "output_dir": status.output_dir,
        "outputs": status.outputs,
    })
    .to_string()
}

/// Writes to stdout, ignoring a closed pipe (`cairn ... | head`) instead of
/// panicking as `println!` would.
pub(crate) fn print_stdout(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// A bar for a transfer of `total` bytes (a spinner when the size is
/// unknown), on standard error when it is a terminal and `quiet` is off;
/// hidden otherwise.
pub(crate) fn bytes_bar(total: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    match total {
        Some(total) => {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_rpc::mapreduce::Counter;

    use super::*;

    fn running() -> StatusReply {
        StatusReply {
            job_id: "0000beef".into(),
            maps_total: 4,
            reduces_total: 2,
            input_bytes_total: 4 << 20,
            elapsed_ms: 3_000,
            ..StatusReply::default()
        }
    }

    #[test]
    fn no_rate_until_input_is_processed() {
        let report = report(&running(), None);
        assert!(
            report.contains("input 0 B of 4.0 MiB processed, at —"),
            "{report}"
        );
        let status = StatusReply {
            input_bytes_done: 3 << 20,
            maps_done: 3,
            ..running()
        };
        let report = super::report(&status, None);
        assert!(
            report.contains("input 3.0 MiB of 4.0 MiB processed, at 1.0 MiB/s"),
            "{report}"
        );
    }

    #[test]
    fn a_job_whose_maps_emitted_nothing_says_so() {
        let count = |name: &str, value| Counter {
            name: name.into(),
            value,
        };
        let status = StatusReply {
            done: true,
            maps_done: 4,
            reduces_done: 2,
            counters: vec![
                count("map.input.records", 120),
                count("map.output.records", 0),
            ],
            ..running()
        };
        let report = report(&status, None);
        assert!(
            report.contains("the maps read 120 input records but emitted no pairs"),
            "{report}"
        );
        assert!(report.contains("input 4.0 MiB at 1.3 MiB/s"), "{report}");
    }
}
