//! The coordinator's journal: one JSON record per line in
//! `<data-dir>/journal`, each synced before the coordinator acts on it. A
//! restarted coordinator replays it and resumes the job. A torn last line
//! (a crash mid-write) is ignored; a bad line before the last is an error
//! naming the file and line.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use cairn_storage::{Disk, DiskFile, OpenMode};
use serde::{Deserialize, Serialize};

/// What defines a job; a journal only resumes the same job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub(crate) job_id: String,
    pub(crate) app: String,
    pub(crate) pattern: String,
    pub(crate) mapper: String,
    pub(crate) reducer: String,
    pub(crate) inputs: Vec<String>,
    /// (path, offset, length) of each split.
    pub(crate) splits: Vec<(String, u64, u64)>,
    pub(crate) reduces: u32,
    pub(crate) output_dir: String,
    pub(crate) hadoop_names: bool,
    /// When the job started, in milliseconds since the Unix epoch, so that
    /// a resumed job's elapsed time counts from its real start. Journals
    /// written before this field existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_unix_ms: Option<u64>,
}

impl JobRecord {
    /// The job in the coordinator's flags, for a person to tell which job
    /// it is: `--app wc --reduces 10 --output out, inputs: 8 files, a ... h`.
    pub(crate) fn describe(&self) -> String {
        let app = match self.app.as_str() {
            "streaming" => format!("--mapper {:?} --reducer {:?}", self.mapper, self.reducer),
            "grep" => format!("--app grep --pattern {:?}", self.pattern),
            name => match name.strip_prefix(crate::apps::LIBRARY_PREFIX) {
                Some(library) => format!("the library app {library}"),
                None => format!("--app {name}"),
            },
        };
        let names = if self.hadoop_names {
            " --hadoop-names"
        } else {
            ""
        };
        let inputs = match self.inputs.as_slice() {
            [] => "none".to_string(),
            [one] => one.clone(),
            [first, .., last] => format!("{} files, {first} ... {last}", self.inputs.len()),
        };
        format!(
            "{app} --reduces {} --output {}{names}, inputs: {inputs}",
            self.reduces, self.output_dir
        )
    }

    /// What makes `other` a different job than this one (the first
    /// difference, in words), or `None` for the same job: jobs are the
    /// same when they differ at most in their ids and start times.
    pub(crate) fn difference(&self, other: &JobRecord) -> Option<String> {
        let differs = |what: &str, mine: &dyn std::fmt::Debug, theirs: &dyn std::fmt::Debug| {
            Some(format!("{what}: {mine:?} there, {theirs:?} here"))
        };
        if self.app != other.app {
            return differs("the app", &self.app, &other.app);
        }
        if (&self.pattern, &self.mapper, &self.reducer)
            != (&other.pattern, &other.mapper, &other.reducer)
        {
            return Some("the app's pattern, mapper or reducer".into());
        }
        if self.inputs != other.inputs {
            return Some(format!(
                "the input files ({} there, {} here)",
                self.inputs.len(),
                other.inputs.len()
            ));
        }
        if self.splits != other.splits {
            return Some("the input splits (the files changed, or --split-size differs)".into());
        }
        if self.reduces != other.reduces {
            return differs("--reduces", &self.reduces, &other.reduces);
        }
        if self.output_dir != other.output_dir {
            return differs("--output", &self.output_dir, &other.output_dir);
        }
        if self.hadoop_names != other.hadoop_names {
            return differs("--hadoop-names", &self.hadoop_names, &other.hadoop_names);
        }
        None
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Record {
    Job(JobRecord),
    Worker {
        id: u64,
        addr: String,
        /// Where it runs, for locality (journals from before had none).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        host: String,
    },
    TaskDone {
        map: bool,
        task: u32,
        attempt: u32,
        worker: u64,
        counters: BTreeMap<String, u64>,
    },
    MapLost {
        task: u32,
    },
    JobDone,
    JobFailed {
        error: String,
    },
}

/// The name a finished job's journal is retired to, in the same directory.
pub(crate) const FINISHED_JOURNAL: &str = "journal.finished";

/// An open journal.
#[derive(Debug)]
pub(crate) struct Journal {
    file: Box<dyn DiskFile>,
    path: PathBuf,
}

/// The records of a journal's bytes, as [`decode`] reads them.
#[derive(Debug, PartialEq)]
pub(crate) struct Decoded {
    pub(crate) records: Vec<Record>,
    /// The length of the complete, valid lines; past it is a torn last
    /// record (or nothing).
    pub(crate) valid_len: u64,
}

/// A journal line that is corrupt and not the last: what was written
/// after it cannot be trusted.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error(
    "line {line} is corrupt; the journal cannot be replayed (move the data directory away to start the job afresh)"
)]
pub(crate) struct CorruptLine {
    /// 1-based.
    pub(crate) line: usize,
}

/// Decodes a journal: one JSON record per `\n`-terminated line. The last
/// line may be torn (a crash mid-write: unterminated or unparsable) and is
/// left out; any other bad line is an error.
pub(crate) fn decode(data: &[u8]) -> Result<Decoded, CorruptLine> {
    let mut records = Vec::new();
    let mut valid_len = 0u64;
    let lines: Vec<&[u8]> = data.split_inclusive(|byte| *byte == b'\n').collect();
    for (number, line) in lines.iter().enumerate() {
        let parsed = line
            .strip_suffix(b"\n")
            .and_then(|text| serde_json::from_slice::<Record>(text).ok());
        match parsed {
            Some(record) => {
                records.push(record);
                valid_len += line.len() as u64;
            }
            None if number + 1 == lines.len() => break,
            None => return Err(CorruptLine { line: number + 1 }),
        }
    }
    Ok(Decoded { records, valid_len })
}

impl Journal {
    /// Opens (creating) the journal in `dir` and returns its records.
    pub(crate) fn open(disk: &dyn Disk, dir: &Path) -> io::Result<(Self, Vec<Record>)> {
        disk.create_dir_durable(dir)?;
        let path = dir.join("journal");
        let mut file = disk.open(&path, OpenMode::Create)?;
        // The journal's name must survive a power loss with its records.
        disk.sync_dir(dir)?;
        let len = file.len()?;
        let mut data = vec![0; len as usize];
        file.read_exact_at(0, &mut data)?;
        let decoded = decode(&data).map_err(|corrupt| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {corrupt}", path.display()),
            )
        })?;
        if decoded.valid_len < len {
            tracing::warn!(path = %path.display(), "dropping a torn last journal record");
            file.set_len(decoded.valid_len)?;
            file.sync()?;
        }
        Ok((Self { file, path }, decoded.records))
    }

    /// Retires the journal in `dir` (whose job is over) to
    /// [`FINISHED_JOURNAL`], replacing an older one, so that the next
    /// [`open`](Self::open) starts empty. A crash before the rename is
    /// durable leaves the journal in place, to be retired again.
    pub(crate) fn retire(self, disk: &dyn Disk, dir: &Path) -> io::Result<PathBuf> {
        drop(self.file);
        let retired = dir.join(FINISHED_JOURNAL);
        disk.rename(&self.path, &retired)?;
        disk.sync_dir(dir)?;
        Ok(retired)
    }

    /// Appends a record and syncs it.
    pub(crate) fn append(&mut self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.append(&line)?;
        self.file
            .sync()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests;
