//! The golden scripts of `crates/raft/testdata/`: each drives a small
//! cluster command by command and pins every `Ready` the core produces
//! (what it persists, sends and applies). A change in what goes on the wire
//! fails here with a diff; `UPDATE_GOLDEN=1 cargo test -p cairn-raft --test
//! golden` rewrites the files with the new output, to review with
//! `git diff`. The format and the commands are described in `script/`.
// The crate's clippy.toml forbids files to the core; this test reads and
// writes its scripts.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness;
mod script;

use std::path::{Path, PathBuf};

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn golden_scripts() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let paths = scripts();
    assert!(!paths.is_empty(), "no scripts found in testdata/");
    let mut failures = Vec::new();
    for path in paths {
        let (rewritten, differences) = script::run_file(&path);
        if update {
            std::fs::write(&path, rewritten)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        } else {
            failures.extend(differences);
        }
    }
    assert!(
        failures.is_empty(),
        "{} command(s) printed something else than their script expects \
         (`-` expected, `+` actual). If the change is intended, rerun with \
         UPDATE_GOLDEN=1 and review the `git diff` of crates/raft/testdata/.\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
