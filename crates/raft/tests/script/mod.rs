//! The golden-script runner: a script is a text file of commands, each
//! followed by the output it must produce, in the datadriven style of
//! etcd-io/raft's `testdata/*.txt` and toydb's `src/raft/testscripts`.
//!
//! ```text
//! # Comments and blank lines are kept as they are.
//! campaign 1
//! ----
//! 1: hard-state term=1 vote=1 commit=0
//! 1: send 1->2 RequestVote term=1 last=0@0
//! ```
//!
//! A command's output runs from the `----` line to the next blank line (so
//! output never holds a blank line; an empty output is written `ok`). A
//! command written `!command` must panic, and its output is the panic
//! message. The runner executes every command, compares the whole output
//! with the file and, if anything differs, fails with a line diff; with
//! `UPDATE_GOLDEN=1` it rewrites the file with what the commands produced
//! instead, so a deliberate change is reviewed as a `git diff`.
//!
//! The commands themselves live in `commands.rs`; how a `Ready` is printed
//! in `render.rs`.

mod commands;
mod render;

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use commands::Script;

/// One piece of a script file.
enum Block {
    /// Comments and blank lines, kept verbatim.
    Text(String),
    /// A command, its line number, and the output the file expects.
    Command {
        line: String,
        number: usize,
        expected: Vec<String>,
    },
}

/// Splits a script into its blocks.
fn parse(text: &str, path: &Path) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            blocks.push(Block::Text(line.to_string()));
            continue;
        }
        let separator = lines.next().map(|(_, l)| l.trim());
        assert_eq!(
            separator,
            Some("----"),
            "{}:{}: a command must be followed by a `----` line",
            path.display(),
            number + 1
        );
        let mut expected = Vec::new();
        for (_, output) in lines.by_ref() {
            if output.trim().is_empty() {
                break;
            }
            expected.push(output.to_string());
        }
        blocks.push(Block::Command {
            line: line.to_string(),
            number: number + 1,
            expected,
        });
    }
    blocks
}

/// Runs one command; a `!` in front means it must panic.
fn run_command(script: &mut Script, line: &str, location: &str) -> Vec<String> {
    let (must_panic, command) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    // An expected panic is not reported on stderr; an unexpected one is,
    // and is raised again with the script's file and line.
    let hook = must_panic.then(|| {
        let hook = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        hook
    });
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| script.execute(command, location)));
    if let Some(hook) = hook {
        panic::set_hook(hook);
    }
    match (outcome, must_panic) {
        (Ok(output), false) if output.is_empty() => vec!["ok".to_string()],
        (Ok(output), false) => output,
        (Ok(_), true) => panic!("{location}: `{command}` was expected to panic and did not"),
        (Err(payload), true) => vec![format!("panic: {}", panic_message(&*payload))],
        (Err(payload), false) => panic!(
            "{location}: `{command}` panicked: {}",
            panic_message(&*payload)
        ),
    }
}

/// A panic's message, on one line.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string());
    message.replace('\n', " / ")
}

/// Runs the script at `path`. Returns the file rewritten with the actual
/// outputs, and a description of every difference (empty when it passes).
pub(crate) fn run_file(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // Paths relative to the crate, as a reader finds them.
    let shown = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path);
    let mut script = Script::default();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    for block in parse(&text, path) {
        match block {
            Block::Text(text) => {
                rewritten.push_str(&text);
                rewritten.push('\n');
            }
            Block::Command {
                line,
                number,
                expected,
            } => {
                let location = format!("{}:{number}", shown.display());
                let actual = run_command(&mut script, line.trim(), &location);
                if actual != expected {
                    failures.push(format!(
                        "{location}: `{}`\n{}",
                        line.trim(),
                        diff(&expected, &actual)
                    ));
                }
                rewritten.push_str(&format!("{line}\n----\n{}\n\n", actual.join("\n")));
            }
        }
    }
    (format!("{}\n", rewritten.trim_end()), failures)
}

/// A line diff of the expected and actual output: `-` lines the file
/// expects and did not get, `+` lines produced that it does not expect.
fn diff(expected: &[String], actual: &[String]) -> String {
    // The longest common subsequence, by dynamic programming (outputs are
    // short).
    let (n, m) = (expected.len(), actual.len());
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if expected[i] == actual[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push_str(&format!("  {}\n", expected[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || common[i + 1][j] >= common[i][j + 1]) {
            out.push_str(&format!("- {}\n", expected[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", actual[j]));
            j += 1;
        }
    }
    out
}
