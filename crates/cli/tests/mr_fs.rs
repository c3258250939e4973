//! MapReduce over the file store (`fs://`), with real processes: a store
//! of 3 chunkservers, a coordinator and one worker beside each chunkserver
//! (`--host` its URL), each worker in a directory of its own, so that the
//! store is the only path they share. The word count of the corpus stored
//! in `fs://` must equal `cairn mr seq` on the local copy, most map tasks
//! must be data-local, and the output directory must hold exactly the
//! committed outputs. And the commit rule, with the workers' side played
//! by the test: of a reduce task run twice, only the attempt committed by
//! the coordinator's rename survives.

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_rpc::mapreduce::coordinator_client::CoordinatorClient;
use cairn_rpc::mapreduce::{
    CompleteTaskRequest, GetTaskReply, GetTaskRequest, RegisterRequest, TaskKind,
};
use common::fs_store::{Store, sigkill};
use common::{CAIRN, Processes, assert_same, sorted_lines, wait_exit};

const REDUCES: u32 = 3;

/// The chunkservers' URLs: `cairn cluster --fs` puts chunkserver N on
/// BASE + 10 + N, the masters on BASE + N.
fn chunkserver_urls(store: &Store) -> Vec<String> {
    let base = base_port(store);
    (1..=3)
        .map(|n| format!("http://127.0.0.1:{}", base + 10 + n))
        .collect()
}

/// The store's `--base-port`: master N is on BASE + N.
fn base_port(store: &Store) -> u16 {
    let first_master = store.masters.split(',').next().unwrap();
    let port: u16 = first_master.rsplit(':').next().unwrap().parse().unwrap();
    port - 1
}

/// The share of data-local map tasks in a report, checked to be at least
/// 90% of several.
fn check_locality(report: &str) {
    let local = counter(report, "map.tasks.data-local");
    let remote = counter(report, "map.tasks.remote");
    eprintln!("map tasks: {local} data-local, {remote} remote");
    assert!(
        local + remote > 3,
        "the corpus makes several splits: {report}"
    );
    assert!(
        local * 10 >= (local + remote) * 9,
        "fewer than 90% data-local: {report}"
    );
}

/// Starts `cairn mr coordinator` in `dir`; returns it, the URL it printed
/// and a thread collecting the rest of its standard output (the report).
fn coordinator(
    dir: &Path,
    listen: &str,
    args: &[&str],
) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = Command::new(CAIRN)
        .current_dir(dir)
        .args(["mr", "coordinator", "--listen", listen])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("coordinator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the coordinator: {line:?}"))
        .to_string();
    let rest = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    (child, url, rest)
}

/// A worker in its own directory `dir`, beside the chunkserver `host`.
fn worker(dir: &Path, url: &str, host: &str) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    Command::new(CAIRN)
        .current_dir(dir)
        .args(["mr", "worker", "--coordinator", url, "--host", host])
        .args(["--coordinator-timeout", "60", "--work-dir", "work"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The value of counter `name` in a coordinator's report.
fn counter(report: &str, name: &str) -> u64 {
    report
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(name)).then(|| words.next().unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

/// The first `count` files of the corpus in the store under /corpus, and
/// the sorted output of `cairn mr seq JOB` on the local copy.
fn corpus_and_oracle(store: &Store, job: &[&str], count: usize) -> Vec<String> {
    let mut files = common::corpus_files();
    files.truncate(count);
    store.ok(&["mkdir", "-p", "/corpus"]);
    for file in &files {
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        store.ok(&["put", file, &format!("/corpus/{name}")]);
    }
    let dir = store.dir.path();
    let mut args = vec!["mr", "seq", "--output", "expected"];
    args.extend(job);
    args.extend(files.iter().map(String::as_str));
    common::cairn(dir, &args);
    sorted_lines(&dir.join("expected"))
}

/// Starts a coordinator of `job` on `listen` over the corpus, writing to
/// fs:///out. Returns the processes (the coordinator first), its URL and
/// its report.
fn start_coordinator(
    store: &Store,
    listen: &str,
    job: &[&str],
) -> (Processes, String, std::thread::JoinHandle<String>) {
    let job_dir = store.dir.path().join("coordinator");
    std::fs::create_dir_all(&job_dir).unwrap();
    let mut args = job.to_vec();
    args.extend(["--fs-masters", &store.masters, "--output", "fs:///out"]);
    args.extend(["--input", "fs:///corpus/pg-*.txt"]);
    let (coordinator, url, report) = coordinator(&job_dir, listen, &args);
    (Processes(vec![coordinator]), url, report)
}

/// [`start_coordinator`] on any port, and a worker beside each
/// chunkserver, each in its own directory.
fn start_job(store: &Store, job: &[&str]) -> (Processes, String, std::thread::JoinHandle<String>) {
    let (mut processes, url, report) = start_coordinator(store, "127.0.0.1:0", job);
    for (i, host) in chunkserver_urls(store).iter().enumerate() {
        let machine = store.dir.path().join(format!("machine-{i}"));
        processes.0.push(worker(&machine, &url, host));
    }
    (processes, url, report)
}

/// Waits for the job to end and checks that it succeeded, that /out holds
/// exactly its `reduces` outputs (one committed attempt each, no
/// temporary files) and that they equal `expected`; returns the report.
fn finish_job(
    store: &Store,
    mut processes: Processes,
    report: std::thread::JoinHandle<String>,
    reduces: u32,
    expected: &[String],
) -> String {
    let status = wait_exit(&mut processes.0[0], Duration::from_secs(90));
    let report = report.join().unwrap();
    assert!(status.success(), "the coordinator failed: {report}");
    let listing = String::from_utf8(store.ok(&["ls", "-R", "/out"])).unwrap();
    let names: Vec<&str> = listing.lines().filter(|l| l.starts_with("/out/")).collect();
    let wanted: Vec<String> = (0..reduces).map(|r| format!("/out/mr-out-{r}")).collect();
    assert_eq!(
        names, wanted,
        "/out holds exactly the committed outputs:\n{listing}"
    );
    let mut got = Vec::new();
    for name in &wanted {
        let text = String::from_utf8(store.ok(&["cat", name])).unwrap();
        got.extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
    }
    got.sort();
    assert_same(&got, expected, "the job's output over fs://");
    report
}

/// A word count into `reduces` partitions, in splits of 128 KiB.
fn word_count(reduces: &str) -> [&str; 6] {
    [
        "--app",
        "wc",
        "--reduces",
        reduces,
        "--split-size",
        "128KiB",
    ]
}

#[test]
fn word_count_over_the_store_equals_the_sequential_run() {
    let store = Store::start();
    let expected = corpus_and_oracle(&store, &["--app", "wc"], 8);
    let reduces = REDUCES.to_string();
    let job = word_count(&reduces);
    let (processes, _, report) = start_job(&store, &job);
    let report = finish_job(&store, processes, report, REDUCES, &expected);
    check_locality(&report);
}

/// A mapper and a reducer slow enough to be interrupted.
const MAPPER: &str = "sleep 0.3; tr -cs 'A-Za-z' '\\n' | awk 'length > 0 { print $0 \"\\t1\" }'";
const REDUCER: &str = "sleep 0.5; awk -F'\\t' '{ c[$1] += $2 } END { for (k in c) print k, c[k] }'";

#[test]
fn a_job_survives_a_chunkserver_killed_mid_map_and_the_master_leader_during_reduce() {
    let store = Store::start();
    let expected = corpus_and_oracle(&store, &["--mapper", MAPPER, "--reducer", REDUCER], 4);
    let reduces = REDUCES.to_string();
    let job = [
        "--mapper",
        MAPPER,
        "--reducer",
        REDUCER,
        "--reduces",
        &reduces,
        "--split-size",
        "256KiB",
    ];
    let (processes, url, report) = start_job(&store, &job);
    common::wait_for(&url, "a map is done", Duration::from_secs(30), |s| {
        s["maps"]["done"].as_u64() >= Some(1)
    });
    assert!(sigkill(store.chunkservers[0]), "chunkserver 1 was running");
    common::wait_for(&url, "a reduce runs", Duration::from_secs(60), |s| {
        s["reduces"]["running"].as_u64() >= Some(1)
    });
    let leader = store.leader().expect("a master leads");
    assert!(
        sigkill(store.master_pids[&leader]),
        "master {leader} was running"
    );
    let report = finish_job(&store, processes, report, REDUCES, &expected);
    eprintln!("{report}");
}

#[test]
fn the_workers_of_cairn_cluster_run_job_after_job() {
    let store = Store::start_with(&["--mr-workers", "3"]);
    let expected = corpus_and_oracle(&store, &["--app", "wc"], 3);
    let listen = format!("127.0.0.1:{}", base_port(&store) + 20);
    let reduces = REDUCES.to_string();
    let job = word_count(&reduces);
    for _ in 0..2 {
        store.fs(&["rm", "-r", "--skip-trash", "/out"], b"");
        let (processes, _, report) = start_coordinator(&store, &listen, &job);
        let report = finish_job(&store, processes, report, REDUCES, &expected);
        check_locality(&report);
    }
}

/// A hand-driven worker: the test plays the workers' side of the protocol.
struct Driver {
    runtime: tokio::runtime::Runtime,
    client: CoordinatorClient<cairn_rpc::tonic::transport::Channel>,
}

impl Driver {
    fn connect(url: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime
            .block_on(CoordinatorClient::connect(url.to_string()))
            .unwrap();
        Self { runtime, client }
    }

    fn register(&mut self) -> u64 {
        let request = RegisterRequest {
            shuffle_addr: "http://127.0.0.1:1".into(),
            ..RegisterRequest::default()
        };
        let reply = self.runtime.block_on(self.client.register(request));
        reply.unwrap().into_inner().worker_id
    }

    fn get_task(&mut self, worker_id: u64) -> GetTaskReply {
        let reply = self
            .runtime
            .block_on(self.client.get_task(GetTaskRequest { worker_id }));
        reply.unwrap().into_inner()
    }

    /// Reports a successful attempt; whether the coordinator committed it.
    fn complete(&mut self, worker_id: u64, kind: TaskKind, task: &GetTaskReply) -> bool {
        let request = CompleteTaskRequest {
            worker_id,
            kind: kind as i32,
            task: task.task,
            attempt: task.attempt,
            ..CompleteTaskRequest::default()
        };
        let reply = self.runtime.block_on(self.client.complete_task(request));
        reply.unwrap().into_inner().accepted
    }
}

/// Asks for tasks as `worker` until one of `kind` comes.
fn task_of(driver: &mut Driver, worker: u64, kind: TaskKind) -> GetTaskReply {
    common::poll_until(&format!("a {kind:?} task"), Duration::from_secs(20), || {
        let reply = driver.get_task(worker);
        if reply.kind == kind as i32 {
            Ok(reply)
        } else {
            Err(format!("{reply:?}"))
        }
    })
}

#[test]
fn of_a_reduce_run_twice_only_the_committed_attempt_survives_the_renames() {
    let store = Store::start();
    let dir = store.dir.path();
    std::fs::write(dir.join("input.txt"), "one two\nthree\n").unwrap();
    store.ok(&["put", "input.txt", "/in.txt"]);
    let (coordinator, url, _report) = coordinator(
        dir,
        "127.0.0.1:0",
        &[
            "--app",
            "wc",
            "--reduces",
            "1",
            "--worker-timeout",
            "1s",
            "--linger",
            "1s",
            "--fs-masters",
            &store.masters,
            "--output",
            "fs:///out",
            "fs:///in.txt",
        ],
    );
    let mut processes = Processes(vec![coordinator]);
    let mut driver = Driver::connect(&url);
    let original = driver.register();
    let map = task_of(&mut driver, original, TaskKind::Map);
    assert!(driver.complete(original, TaskKind::Map, &map));
    let first = task_of(&mut driver, original, TaskKind::Reduce);
    // The original falls silent: it is lost, its map runs again on the
    // other worker, and so does the reduce (a re-execution).
    let other = driver.register();
    let map = task_of(&mut driver, other, TaskKind::Map);
    assert!(driver.complete(other, TaskKind::Map, &map));
    let second = task_of(&mut driver, other, TaskKind::Reduce);
    assert_ne!(first.attempt, second.attempt);
    // Both attempts wrote their output to their own temporary file.
    for (worker, attempt, text) in [(original, &first, "original"), (other, &second, "again")] {
        let local = dir.join(format!("{text}.txt"));
        std::fs::write(&local, format!("{text}\n")).unwrap();
        let temp = format!("/out/_tmp/mr-out-0.attempt-{worker}-{}", attempt.attempt);
        store.ok(&["put", local.to_str().unwrap(), &temp]);
    }
    assert!(
        driver.complete(other, TaskKind::Reduce, &second),
        "the first to report commits"
    );
    assert!(
        !driver.complete(original, TaskKind::Reduce, &first),
        "the late one does not"
    );
    assert_eq!(driver.get_task(other).kind, TaskKind::Exit as i32);
    let status = wait_exit(&mut processes.0[0], Duration::from_secs(20));
    assert!(status.success());

    assert_eq!(store.ok(&["cat", "/out/mr-out-0"]), b"again\n");
    let listing = String::from_utf8(store.ok(&["ls", "-R", "/out"])).unwrap();
    let names: Vec<&str> = listing.lines().filter(|l| l.contains("/out/")).collect();
    assert_eq!(
        names.len(),
        1,
        "only the committed output is left: {listing}"
    );
}

/// Runs `cairn ARGS` in `dir`, which must fail saying `reason`.
fn refused(dir: &Path, args: &[&str], reason: &str) {
    let output = Command::new(CAIRN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "cairn {args:?} succeeded");
    assert!(stderr.contains(reason), "cairn {args:?}: {stderr}");
}

#[test]
fn bad_store_paths_are_refused_with_the_reason() {
    let store = Store::start();
    let dir = store.dir.path();
    let job = [
        "mr",
        "run",
        "--app",
        "wc",
        "--workers",
        "1",
        "--fs-masters",
        &store.masters,
    ];
    let mut relative = job.to_vec();
    relative.extend(["--output", "fs:///out", "fs://relative"]);
    refused(dir, &relative, "is not a path in the store");
    let mut missing = job.to_vec();
    missing.extend(["--output", "fs:///out", "fs:///missing"]);
    refused(dir, &missing, "does not exist");
    let mut nothing = job.to_vec();
    nothing.extend(["--output", "fs:///out", "fs:///*.log"]);
    refused(dir, &nothing, "names no file in the store");
    let listing = String::from_utf8(store.ok(&["ls", "-R", "/"])).unwrap();
    assert!(listing.trim().is_empty(), "a refused job left {listing}");
}
