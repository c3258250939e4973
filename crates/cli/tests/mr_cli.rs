//! `cairn mr` as a new user meets it: the README's across-machines recipe
//! twice in the same directory, a different job refused while one is
//! unfinished, `--advertise`, `mr status` before any input is processed and
//! across a coordinator restart, a worker started before its coordinator,
//! a mapper that prints nothing, and flags checked when they are read.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{CAIRN, Processes, status, wait_exit, wait_for, worker};

/// Three small input files in `dir`.
fn inputs(dir: &Path) -> Vec<String> {
    (0..3)
        .map(|i| {
            let path = dir.join(format!("in-{i}.txt"));
            let text: String = (0..200)
                .map(|line| format!("the quick brown fox {i} jumps over line {line}\n"))
                .collect();
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        })
        .collect()
}

/// A running command whose stderr lines arrive on a channel.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `text`; returns it.
    fn wait_line(&mut self, text: &str, deadline: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.seen.iter().find(|line| line.contains(text)) {
                return line.clone();
            }
            let left = deadline.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no line with {text:?} within {deadline:?}; the output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

fn coordinator_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(CAIRN);
    command
        .current_dir(dir)
        .args(["--data-dir", "data", "mr", "coordinator"])
        .args(args);
    command
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(CAIRN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// The README's recipe: `cairn mr coordinator --listen 0.0.0.0:PORT ...`
/// (here with --advertise, so that the test does not depend on this
/// machine's hostname resolving), two workers, `cairn mr status`, and the
/// job's end. Returns the job's id.
fn recipe(dir: &Path, port: u16, files: &[String], extra: &[&str]) -> String {
    let listen = format!("0.0.0.0:{port}");
    let advertise = format!("http://127.0.0.1:{port}");
    let mut args = vec![
        "--listen",
        &listen,
        "--advertise",
        &advertise,
        "--app",
        "wc",
    ];
    args.extend(["--linger", "10s"]);
    args.extend(extra);
    args.extend(files.iter().map(String::as_str));
    let mut coordinator = Watched::spawn(&mut coordinator_command(dir, &args));
    let line = coordinator.wait_line("coordinator listening on", Duration::from_secs(20));
    assert_eq!(line, format!("coordinator listening on {advertise}"));
    let job = status(&advertise).expect("the coordinator answers")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut processes = Processes(vec![
        worker(dir, &advertise, "a"),
        worker(dir, &advertise, "b"),
    ]);
    for process in &mut processes.0 {
        assert!(wait_exit(process, Duration::from_secs(60)).success());
    }
    let exit = wait_exit(&mut coordinator.child, Duration::from_secs(30));
    assert!(
        exit.success(),
        "coordinator: {exit}\n{}",
        coordinator.seen.join("\n")
    );
    job
}

#[test]
fn the_across_machines_recipe_runs_twice_in_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let port = common::free_ports(1)[0];
    let first = recipe(dir.path(), port, &files, &[]);
    let output = std::fs::read_to_string(dir.path().join("mr-output/mr-out-0")).unwrap();
    std::fs::remove_dir_all(dir.path().join("mr-output")).unwrap();
    let second = recipe(dir.path(), port, &files, &[]);
    assert_ne!(first, second, "the second run is a new job");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mr-output/mr-out-0")).unwrap(),
        output,
        "the second run wrote the same output again"
    );
    assert!(
        dir.path()
            .join("data/mr-coordinator/journal.finished")
            .exists()
    );
    // A different job after a finished one starts as well.
    recipe(dir.path(), port, &files, &["--reduces", "3"]);
    assert!(dir.path().join("mr-output/mr-out-2").exists());
}

#[test]
fn a_different_job_than_an_unfinished_one_is_refused_with_how_to_resume_or_discard() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let mut args = vec!["--app", "wc"];
    args.extend(files.iter().map(String::as_str));
    let (first, url) = common::coordinator(dir.path(), &args, "127.0.0.1:0");
    let mut processes = Processes(vec![first]);
    let job = status(&url).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    processes.0[0].kill().unwrap();
    processes.0[0].wait().unwrap();

    let mut other = vec![
        "mr",
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--app",
        "indexer",
    ];
    other.extend(files.iter().map(String::as_str));
    let mut with_data_dir = vec!["--data-dir", "data"];
    with_data_dir.extend(other);
    let refused = run(dir.path(), &with_data_dir);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    for expected in [
        format!("job {job}, which is not finished"),
        "the app: \"wc\" there, \"indexer\" here".to_string(),
        format!("To resume job {job}"),
        "--app wc --reduces 10 --output mr-output".to_string(),
        "to discard it, remove data/mr-coordinator".to_string(),
    ] {
        assert!(message.contains(&expected), "{expected:?} in:\n{message}");
    }
    // The unfinished job is still there to resume.
    let (again, url) = common::coordinator(dir.path(), &args, "127.0.0.1:0");
    processes.0.push(again);
    assert_eq!(status(&url).unwrap()["job_id"], job.as_str());
}

#[test]
fn status_has_no_rate_before_input_is_processed_and_keeps_elapsed_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let mut args = vec!["--app", "wc"];
    args.extend(files.iter().map(String::as_str));
    let (first, url) = common::coordinator(dir.path(), &args, "127.0.0.1:0");
    let mut processes = Processes(vec![first]);
    let before = wait_for(&url, "a second has passed", Duration::from_secs(20), |s| {
        s["elapsed_ms"].as_u64() >= Some(1000)
    });
    let text = run(dir.path(), &["mr", "status", &url]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("processed, at —"),
        "no rate before any input is processed:\n{text}"
    );
    processes.0[0].kill().unwrap();
    processes.0[0].wait().unwrap();
    let listen = url.strip_prefix("http://").unwrap().to_string();
    let (again, _) = common::coordinator(dir.path(), &args, &listen);
    processes.0[0] = again;
    let after = status(&url).expect("the restarted coordinator answers");
    assert_eq!(after["job_id"], before["job_id"]);
    assert!(
        after["elapsed_ms"].as_u64() >= before["elapsed_ms"].as_u64(),
        "elapsed time goes on across the restart: {} then {}",
        before["elapsed_ms"],
        after["elapsed_ms"]
    );
}

#[test]
fn a_worker_says_what_it_waits_for_and_when_it_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let port = common::free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}");
    let mut waiting = Watched::spawn(
        Command::new(CAIRN)
            .current_dir(dir.path())
            .args(["mr", "worker", "--coordinator", &url])
            .args(["--coordinator-timeout", "1m", "--work-dir", "work"]),
    );
    let line = waiting.wait_line("waiting for the coordinator", Duration::from_secs(20));
    assert!(line.contains(&url), "{line}");
    assert!(line.contains("retrying for up to 60s"), "{line}");

    let mut args = vec!["--app", "wc"];
    args.extend(files.iter().map(String::as_str));
    let listen = format!("127.0.0.1:{port}");
    let (coordinator, _) = common::coordinator(dir.path(), &args, &listen);
    let mut processes = Processes(vec![coordinator]);
    waiting.wait_line("connected to the coordinator", Duration::from_secs(20));
    waiting.wait_line("registered with the coordinator", Duration::from_secs(20));
    assert!(wait_exit(&mut waiting.child, Duration::from_secs(60)).success());
    assert!(wait_exit(&mut processes.0[0], Duration::from_secs(30)).success());
}

#[test]
fn a_coordinator_on_every_interface_advertises_this_machines_name() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let mut args = vec!["--listen", "0.0.0.0:0", "--app", "wc"];
    args.extend(files.iter().map(String::as_str));
    let mut coordinator = Watched::spawn(&mut coordinator_command(dir.path(), &args));
    let line = coordinator.wait_line("coordinator listening on", Duration::from_secs(20));
    let url = line.strip_prefix("coordinator listening on ").unwrap();
    assert!(
        url.starts_with("http://") && !url.contains("0.0.0.0"),
        "{line}"
    );
    coordinator.wait_line("listening on every interface", Duration::from_secs(5));
    let start_workers = coordinator.wait_line("start workers with", Duration::from_secs(5));
    assert!(start_workers.contains(url), "{start_workers}");
    let _ = coordinator.child.kill();
    let _ = coordinator.child.wait();
}

#[test]
fn a_mapper_that_prints_nothing_reports_no_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs(dir.path());
    let mut args = vec![
        "mr",
        "run",
        "--mapper",
        "cat >/dev/null",
        "--reducer",
        "cat",
    ];
    args.extend(["--workers", "1", "--reduces", "2"]);
    args.extend(files.iter().map(String::as_str));
    let output = run(dir.path(), &args);
    assert!(output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    let value = |name: &str| -> u64 {
        report
            .lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in the report:\n{report}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("map.input.records"), 600);
    assert_eq!(value("map.output.records"), 0);
    assert_eq!(value("reduce.output.records"), 0);
    assert!(
        report.contains("note: the maps read 600 input records but emitted no pairs"),
        "{report}"
    );
}

#[test]
fn flags_are_checked_when_read() {
    let dir = tempfile::tempdir().unwrap();
    for (args, reason) in [
        (
            &[
                "mr",
                "coordinator",
                "--advertise",
                "ftp://host:1",
                "--app",
                "wc",
                "x",
            ][..],
            "ftp:// is not supported",
        ),
        (
            &[
                "mr",
                "coordinator",
                "--advertise",
                "http://0.0.0.0:7070",
                "--app",
                "wc",
                "x",
            ],
            "every interface",
        ),
        (
            &["mr", "worker", "--coordinator", "nonsense"],
            "has no port",
        ),
        (
            &[
                "mr",
                "worker",
                "--coordinator",
                "h:1",
                "--advertise",
                "h:99999",
            ],
            "not a port",
        ),
        (
            &[
                "mr",
                "worker",
                "--coordinator",
                "h:1",
                "--coordinator-timeout",
                "10x",
            ],
            "unknown unit",
        ),
        (&["mr", "status", "http://host"], "has no port"),
    ] {
        let output = run(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
