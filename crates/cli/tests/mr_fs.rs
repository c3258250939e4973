//! MapReduce over the file store (`fs://`), with real processes: a store
//! of 3 chunkservers, a coordinator and one worker beside each chunkserver
//! (`--host` its URL), each worker in a directory of its own, so that the
//! store is the only path they share. The word count of the corpus stored
//! in `fs://` must equal `cairn mr seq` on the local copy, most map tasks
//! must be data-local, and the output directory must hold exactly the
//! committed outputs.

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fs_store::Store;
use common::{CAIRN, Processes, assert_same, sorted_lines, wait_exit};

const REDUCES: u32 = 3;

/// The chunkservers' URLs: `cairn cluster --fs` puts chunkserver N on
/// BASE + 10 + N, the masters on BASE + N.
fn chunkserver_urls(store: &Store) -> Vec<String> {
    let first_master = store.masters.split(',').next().unwrap();
    let port: u16 = first_master.rsplit(':').next().unwrap().parse().unwrap();
    let base = port - 1;
    (1..=3)
        .map(|n| format!("http://127.0.0.1:{}", base + 10 + n))
        .collect()
}

/// Starts `cairn mr coordinator` in `dir`; returns it, the URL it printed
/// and a thread collecting the rest of its standard output (the report).
fn coordinator(dir: &Path, args: &[&str]) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = Command::new(CAIRN)
        .current_dir(dir)
        .args(["mr", "coordinator", "--listen", "127.0.0.1:0"])
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

#[test]
fn word_count_over_the_store_equals_the_sequential_run() {
    let store = Store::start();
    let files = common::corpus_files();
    store.ok(&["mkdir", "-p", "/corpus"]);
    for file in &files {
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        store.ok(&["put", file, &format!("/corpus/{name}")]);
    }
    let dir = store.dir.path();
    let mut args = vec!["mr", "seq", "--app", "wc", "--output", "expected"];
    args.extend(files.iter().map(String::as_str));
    common::cairn(dir, &args);
    let expected = sorted_lines(&dir.join("expected"));

    let job_dir = dir.join("coordinator");
    std::fs::create_dir_all(&job_dir).unwrap();
    let reduces = REDUCES.to_string();
    let (coordinator, url, report) = coordinator(
        &job_dir,
        &[
            "--app",
            "wc",
            "--reduces",
            &reduces,
            "--split-size",
            "128KiB",
            "--fs-masters",
            &store.masters,
            "--output",
            "fs:///out/wc",
            "--input",
            "fs:///corpus/pg-*.txt",
        ],
    );
    let mut processes = Processes(vec![coordinator]);
    for (i, host) in chunkserver_urls(&store).iter().enumerate() {
        let machine = dir.join(format!("machine-{i}"));
        processes.0.push(worker(&machine, &url, host));
    }
    let status = wait_exit(&mut processes.0[0], Duration::from_secs(60));
    let report = report.join().unwrap();
    assert!(status.success(), "the coordinator failed: {report}");

    let listing = String::from_utf8(store.ok(&["ls", "/out/wc"])).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .filter(|name| name.contains("/out/wc/"))
        .collect();
    let wanted: Vec<String> = (0..REDUCES)
        .map(|r| format!("/out/wc/mr-out-{r}"))
        .collect();
    assert_eq!(
        names, wanted,
        "the output directory holds exactly the committed outputs:\n{listing}"
    );
    let mut got = Vec::new();
    for name in &wanted {
        let text = String::from_utf8(store.ok(&["cat", name])).unwrap();
        got.extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
    }
    got.sort();
    assert_same(&got, &expected, "word count over fs://");

    let local = counter(&report, "map.tasks.data-local");
    let remote = counter(&report, "map.tasks.remote");
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
