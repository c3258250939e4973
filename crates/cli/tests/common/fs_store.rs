//! A file store started by `cairn cluster --fs` in a temporary directory,
//! with the pids of its nodes (from the launcher's banner) so that a test
//! can SIGKILL them, and helpers to run `cairn fs` against it.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::CAIRN;

pub(crate) struct Store {
    pub(crate) dir: tempfile::TempDir,
    launcher: Child,
    pub(crate) masters: String,
    /// Master id -> pid, from the banner.
    pub(crate) master_pids: BTreeMap<u64, u32>,
    /// The chunkservers' pids, in order.
    pub(crate) chunkservers: Vec<u32>,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.launcher.kill(); // the nodes exit with their launcher
        let _ = self.launcher.wait();
    }
}

/// The pid after " pid " in a banner line.
fn pid_in(line: &str) -> Option<u32> {
    line.split(" pid ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Store {
    /// Starts the store; a port another process took between the choice
    /// and the launch makes it try other ports (a few times).
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the store with more `cairn cluster` flags (`--mr-workers 3`).
    pub(crate) fn start_with(flags: &[&str]) -> Self {
        for _ in 0..4 {
            match Self::try_start(flags) {
                Ok(store) => return store,
                Err(banner) if banner.contains("is in use") => {}
                Err(banner) => panic!("the store did not start:\n{banner}"),
            }
        }
        Self::try_start(flags).unwrap_or_else(|banner| panic!("the store did not start:\n{banner}"))
    }

    fn try_start(flags: &[&str]) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        // A base port with room for the masters, the chunkservers and the
        // workers (BASE + 1 .. BASE + 29).
        let base = super::cluster_base_port(29);
        let mut launcher = Command::new(CAIRN)
            .args(["cluster", "--fs", "--base-port", &base.to_string()])
            .args(flags)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(launcher.stderr.take().unwrap()).lines();
        let mut chunkservers = Vec::new();
        let mut master_pids = BTreeMap::new();
        let mut banner = String::new();
        for line in stderr.by_ref() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            let words: Vec<&str> = line.split_whitespace().collect();
            match (words.first(), words.get(1), pid_in(&line)) {
                (Some(&"chunkserver"), _, Some(pid)) => chunkservers.push(pid),
                (Some(&"master"), Some(id), Some(pid)) => {
                    master_pids.insert(id.parse().unwrap(), pid);
                }
                _ => {}
            }
            if line.contains("Ctrl-C stops every node") || line.contains("error") {
                break;
            }
        }
        let wanted = flags
            .iter()
            .position(|&f| f == "--chunkservers")
            .map_or(3, |at| flags[at + 1].parse().unwrap());
        if (chunkservers.len(), master_pids.len()) != (wanted, 3) {
            let _ = launcher.kill();
            let _ = launcher.wait();
            return Err(banner);
        }
        // The launcher's status lines are not needed here; read them so
        // that the pipe never fills.
        std::thread::spawn(move || stderr.for_each(drop));
        let masters = (1..=3)
            .map(|i| format!("http://127.0.0.1:{}", base + i))
            .collect::<Vec<_>>()
            .join(",");
        let store = Self {
            dir,
            launcher,
            masters,
            master_pids,
            chunkservers,
        };
        // The processes start listening a moment after the banner.
        super::poll_until("a master leads", Duration::from_secs(30), || {
            store.leader().ok_or_else(|| "no leader".to_string())
        });
        Ok(store)
    }

    /// `cairn fs ARGS --masters ...` with `stdin`, to completion.
    pub(crate) fn fs(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self.spawn(args, Stdio::piped());
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `cairn fs ARGS --masters ...` (output piped).
    pub(crate) fn spawn(&self, args: &[&str], stdin: Stdio) -> Child {
        Command::new(CAIRN)
            .arg("fs")
            .args(args)
            .args(["--masters", &self.masters])
            .current_dir(self.dir.path())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs a command that must succeed; its standard output.
    pub(crate) fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.fs(args, b"");
        assert!(
            out.status.success(),
            "cairn fs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A command's output as JSON (`--json` added), if it succeeds.
    pub(crate) fn json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.fs(&args, b"");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// The master leader's id, as `cairn fs status --json` names it.
    pub(crate) fn leader(&self) -> Option<u64> {
        let status = self.json(&["status"])?;
        status.as_array()?.iter().find(|m| m["role"] == "leader")?["id"].as_u64()
    }
}

/// SIGKILLs `pid`; false if there was no such process.
pub(crate) fn sigkill(pid: u32) -> bool {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The replica file of chunk `handle` under a chunkserver's data dir.
pub(crate) fn chunk_file(disk: &Path, handle: u64) -> PathBuf {
    disk.join("chunks").join(format!("{handle:016x}.chunk"))
}

/// The disks of the chunkservers holding a replica of `handle`.
pub(crate) fn holders(store: &Store, handle: u64) -> Vec<PathBuf> {
    let report = store.json(&["report"]).unwrap();
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| PathBuf::from(s["disk"].as_str().unwrap()))
        .filter(|disk| chunk_file(disk, handle).exists())
        .collect()
}
