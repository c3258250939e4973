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

impl Journal {
    /// Opens (creating) the journal in `dir` and returns its records.
    pub(crate) fn open(disk: &dyn Disk, dir: &Path) -> io::Result<(Self, Vec<Record>)> {
        disk.create_dir_all(dir)?;
        let path = dir.join("journal");
        let mut file = disk.open(&path, OpenMode::Create)?;
        let len = file.len()?;
        let mut data = vec![0; len as usize];
        file.read_exact_at(0, &mut data)?;
        let mut records = Vec::new();
        let mut good_len = 0u64;
        let lines: Vec<&[u8]> = data.split_inclusive(|byte| *byte == b'\n').collect();
        for (number, line) in lines.iter().enumerate() {
            let last = number + 1 == lines.len();
            let parsed = line
                .strip_suffix(b"\n")
                .and_then(|text| serde_json::from_slice::<Record>(text).ok());
            match parsed {
                Some(record) => {
                    records.push(record);
                    good_len += line.len() as u64;
                }
                None if last => {
                    tracing::warn!(path = %path.display(), "dropping a torn last journal record");
                    file.set_len(good_len)?;
                    file.sync()?;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} line {} is corrupt; the journal cannot be replayed (move the data directory away to start the job afresh)",
                            path.display(),
                            number + 1
                        ),
                    ));
                }
            }
        }
        Ok((Self { file, path }, records))
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
mod tests {
    use super::*;
    use cairn_storage::MemDisk;

    #[test]
    fn replays_and_drops_a_torn_tail() {
        let disk = MemDisk::new();
        let (mut journal, records) = Journal::open(&disk, Path::new("d")).unwrap();
        assert!(records.is_empty());
        journal
            .append(&Record::Worker {
                id: 1,
                addr: "http://a:1".into(),
            })
            .unwrap();
        journal.append(&Record::MapLost { task: 3 }).unwrap();
        let mut file = disk.open(Path::new("d/journal"), OpenMode::Write).unwrap();
        file.append(b"{\"type\":\"job_do").unwrap();
        file.sync().unwrap();
        let (mut journal, records) = Journal::open(&disk, Path::new("d")).unwrap();
        assert_eq!(records.len(), 2);
        journal.append(&Record::JobDone).unwrap();
        let (_, records) = Journal::open(&disk, Path::new("d")).unwrap();
        assert_eq!(records.last(), Some(&Record::JobDone));

        let mut file = disk.open(Path::new("d/journal"), OpenMode::Write).unwrap();
        file.write_at(0, b"garbage!").unwrap();
        file.sync().unwrap();
        let error = Journal::open(&disk, Path::new("d")).unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
    }
}
