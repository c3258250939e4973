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
}

impl JobRecord {
    /// Equal apart from the job id.
    pub(crate) fn same_job(&self, other: &JobRecord) -> bool {
        JobRecord {
            job_id: String::new(),
            ..self.clone()
        } == JobRecord {
            job_id: String::new(),
            ..other.clone()
        }
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
