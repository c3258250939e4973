//! [`MemDisk`]: an in-memory [`Disk`] that loses unsynced writes at a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;

use crate::{Disk, DiskFile, OpenMode};

/// An in-memory disk with a crash model. Cloning gives another handle on the
/// same disk, which is how a simulated node's disk outlives the node.
///
/// Every file keeps its durable bytes (as of its last sync) and its current
/// bytes, plus the list of writes since the last sync. [`crash`](Self::crash)
/// resets every file to its durable bytes; the last unsynced write of a file,
/// if it starts within the durable bytes, survives as a random prefix (from
/// nothing to all of it): a torn write.
///
/// Directory entries are durable only once their directory is synced
/// ([`Disk::sync_dir`]), as on a real file system: a crash undoes every
/// create, rename and remove (of files and directories) made since the
/// last sync of the directory holding the entry, and whatever lies under a
/// directory whose own entry was lost.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every crash; handles from an older generation fail.
    generation: u64,
    next_inode: u64,
    names: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    dirs: BTreeSet<PathBuf>,
    /// The names and directories as of their parent directory's last sync.
    durable_names: BTreeMap<PathBuf, u64>,
    durable_dirs: BTreeSet<PathBuf>,
    crashes: u64,
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// The last unsynced write, if the last unsynced change was a write.
    last_write: Option<(u64, Vec<u8>)>,
    dirty: bool,
    /// The lowest offset changed since the last sync: a sync copies only
    /// from there, so syncing an appended-to file costs what was appended.
    dirty_from: usize,
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power loss: every unsynced write is lost, except that the
    /// last unsynced write of each file may survive in part. Handles opened
    /// before the crash stop working.
    pub fn crash(&self, rng: &mut impl Rng) {
        let mut state = self.lock();
        state.generation += 1;
        state.crashes += 1;
        state.recover_entries();
        for inode in state.inodes.values_mut() {
            let mut survivor = inode.durable.clone();
            if let Some((offset, data)) = inode.last_write.take() {
                let offset = offset as usize;
                if offset <= survivor.len() {
                    let kept = rng.gen_range(0..=data.len());
                    let end = offset + kept;
                    if survivor.len() < end {
                        survivor.resize(end, 0);
                    }
                    survivor[offset..end].copy_from_slice(&data[..kept]);
                }
            }
            inode.durable = survivor.clone();
            inode.current = survivor;
            inode.dirty = false;
        }
    }

    /// Replaces the disk with an empty one, durably (a machine whose disk
    /// was swapped or wiped). Handles opened before stop working.
    pub fn wipe(&self) {
        let mut state = self.lock();
        let generation = state.generation + 1;
        let crashes = state.crashes;
        *state = State {
            generation,
            crashes,
            ..State::default()
        };
    }

    /// How many times this disk crashed.
    pub fn crashes(&self) -> u64 {
        self.lock().crashes
    }

    /// The total size of all files, in bytes (current, not durable).
    pub fn used_bytes(&self) -> u64 {
        let state = self.lock();
        state.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    /// The current size of one file, if it exists.
    pub fn file_size(&self, path: &Path) -> Option<u64> {
        let state = self.lock();
        let inode = state.names.get(path)?;
        Some(state.inodes[inode].current.len() as u64)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves State consistent before it can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Whether every directory above `path` is in `dirs` (the root always is).
fn reachable(path: &Path, dirs: &BTreeSet<PathBuf>) -> bool {
    path.ancestors()
        .skip(1)
        .filter(|dir| !dir.as_os_str().is_empty())
        .all(|dir| dirs.contains(dir))
}

impl State {
    /// At a crash: only durable entries remain, and only those whose whole
    /// chain of parent directories is durable too.
    fn recover_entries(&mut self) {
        let dirs: BTreeSet<PathBuf> = self
            .durable_dirs
            .iter()
            .filter(|dir| reachable(dir, &self.durable_dirs))
            .cloned()
            .collect();
        let names: BTreeMap<PathBuf, u64> = self
            .durable_names
            .iter()
            .filter(|(path, inode)| reachable(path, &dirs) && self.inodes.contains_key(inode))
            .map(|(path, &inode)| (path.clone(), inode))
            .collect();
        let live: BTreeSet<u64> = names.values().copied().collect();
        self.inodes.retain(|inode, _| live.contains(inode));
        self.durable_dirs = dirs.clone();
        self.durable_names = names.clone();
        self.dirs = dirs;
        self.names = names;
    }

    /// Drops the files no name refers to, durable or current (a removed
    /// file comes back at a crash until its directory was synced).
    fn forget_unnamed_inodes(&mut self) {
        let named: BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes.retain(|inode, _| named.contains(inode));
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        let parent = parent_of(path);
        if parent.as_os_str().is_empty() || self.dirs.contains(&parent) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", parent.display()),
            ))
        }
    }
}

impl Disk for MemDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.lock();
        let inode = match (state.names.get(path).copied(), mode) {
            (Some(inode), OpenMode::Truncate) => {
                let file = state.inodes.get_mut(&inode).expect("named inode exists");
                file.current.clear();
                file.last_write = None;
                file.dirty = true;
                inode
            }
            (Some(inode), _) => inode,
            (None, OpenMode::Read | OpenMode::Write) => return Err(not_found(path)),
            (None, OpenMode::Create | OpenMode::Truncate) => {
                state.check_parent(path)?;
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::default());
                state.names.insert(path.to_path_buf(), inode);
                inode
            }
        };
        Ok(Box::new(MemFile {
            disk: self.clone(),
            inode,
            generation: state.generation,
            writable: mode != OpenMode::Read,
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let mut current = PathBuf::new();
        for part in path.components() {
            current.push(part);
            state.dirs.insert(current.clone());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !dir.as_os_str().is_empty() && !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        // BTreeMap order is sorted by path, hence by name within a directory.
        Ok(state
            .names
            .keys()
            .filter(|p| parent_of(p) == dir)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        state.forget_unnamed_inodes();
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        let doomed: Vec<PathBuf> = state
            .names
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for name in doomed {
            state.names.remove(&name);
        }
        state.dirs.retain(|dir| !dir.starts_with(path));
        state.forget_unnamed_inodes();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_parent(to)?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        state.forget_unnamed_inodes();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        state.names.contains_key(path) || state.dirs.contains(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if !dir.as_os_str().is_empty() && !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let state = &mut *state;
        state.durable_names.retain(|path, _| parent_of(path) != dir);
        for (path, &inode) in &state.names {
            if parent_of(path) == dir {
                state.durable_names.insert(path.clone(), inode);
            }
        }
        state.durable_dirs.retain(|path| parent_of(path) != dir);
        for path in &state.dirs {
            if parent_of(path) == dir {
                state.durable_dirs.insert(path.clone());
            }
        }
        state.forget_unnamed_inodes();
        Ok(())
    }
}

#[derive(Debug)]
struct MemFile {
    disk: MemDisk,
    inode: u64,
    generation: u64,
    writable: bool,
    path: PathBuf,
}

impl MemFile {
    fn with<T>(&self, write: bool, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        if write && !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: opened read-only", self.path.display()),
            ));
        }
        let mut state = self.disk.lock();
        if state.generation != self.generation {
            return Err(io::Error::other(format!(
                "{}: handle opened before a crash",
                self.path.display()
            )));
        }
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| not_found(&self.path))?;
        Ok(f(inode))
    }
}

impl DiskFile for MemFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.with(false, |inode| {
            let start = (offset as usize).min(inode.current.len());
            let n = buf.len().min(inode.current.len() - start);
            buf[..n].copy_from_slice(&inode.current[start..start + n]);
            n
        })
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(true, |inode| {
            let start = offset as usize;
            let end = start + data.len();
            if inode.current.len() < end {
                inode.current.resize(end, 0);
            }
            inode.current[start..end].copy_from_slice(data);
            inode.last_write = Some((offset, data.to_vec()));
            inode.dirty_from = if inode.dirty {
                inode.dirty_from.min(start)
            } else {
                start
            };
            inode.dirty = true;
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(false, |inode| inode.current.len() as u64)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(true, |inode| {
            let len = len as usize;
            let changed_from = len.min(inode.current.len());
            inode.current.resize(len, 0);
            inode.last_write = None;
            inode.dirty_from = if inode.dirty {
                inode.dirty_from.min(changed_from)
            } else {
                changed_from
            };
            inode.dirty = true;
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(false, |inode| {
            if inode.dirty {
                let from = inode
                    .dirty_from
                    .min(inode.durable.len())
                    .min(inode.current.len());
                inode.durable.truncate(from);
                inode.durable.extend_from_slice(&inode.current[from..]);
                inode.last_write = None;
                inode.dirty = false;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::write_atomic;

    /// Appends to `path` (created if missing, its name made durable).
    fn write(disk: &MemDisk, path: &str, data: &[u8], sync: bool) {
        let path = Path::new(path);
        let mut file = disk.open(path, OpenMode::Create).unwrap();
        disk.sync_dir(&parent_of(path)).unwrap();
        file.append(data).unwrap();
        if sync {
            file.sync().unwrap();
        }
    }

    #[test]
    fn synced_writes_survive_a_crash() {
        let disk = MemDisk::new();
        write(&disk, "a", b"hello", true);
        disk.crash(&mut StdRng::seed_from_u64(1));
        assert_eq!(disk.read(Path::new("a")).unwrap(), b"hello");
    }

    #[test]
    fn unsynced_writes_are_lost_or_torn_at_the_tail() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let disk = MemDisk::new();
            write(&disk, "log", b"durable|", true);
            write(&disk, "log", b"lost-one|", false);
            write(&disk, "log", b"maybe-torn", false);
            disk.crash(&mut StdRng::seed_from_u64(seed));
            let data = disk.read(Path::new("log")).unwrap();
            assert!(
                data.starts_with(b"durable|"),
                "synced prefix kept: {data:?}"
            );
            // The first unsynced write is never kept; the last is kept only
            // where it begins, which is past the end of the durable bytes.
            assert!(!data.windows(9).any(|w| w == b"lost-one|"));
            outcomes.insert(data.len());
        }
        assert!(
            outcomes.contains(&8),
            "sometimes everything unsynced is lost"
        );
        assert!(
            outcomes.len() == 1,
            "a write past a lost one cannot survive: {outcomes:?}"
        );
    }

    #[test]
    fn a_single_unsynced_append_can_be_torn() {
        let mut lengths = BTreeSet::new();
        for seed in 0..200 {
            let disk = MemDisk::new();
            write(&disk, "log", b"durable|", true);
            write(&disk, "log", b"0123456789", false);
            disk.crash(&mut StdRng::seed_from_u64(seed));
            let data = disk.read(Path::new("log")).unwrap();
            assert_eq!(&b"durable|0123456789"[..data.len()], &data[..]);
            lengths.insert(data.len());
        }
        assert!(lengths.contains(&8) && lengths.contains(&18), "{lengths:?}");
        assert!(lengths.len() > 3, "torn lengths in between: {lengths:?}");
    }

    #[test]
    fn handles_from_before_a_crash_fail() {
        let disk = MemDisk::new();
        let mut file = disk.open(Path::new("a"), OpenMode::Create).unwrap();
        disk.sync_dir(Path::new("")).unwrap();
        disk.crash(&mut StdRng::seed_from_u64(1));
        assert!(file.append(b"late write").is_err());
        assert_eq!(disk.read(Path::new("a")).unwrap(), b"");
    }

    #[test]
    fn atomic_write_is_all_or_nothing() {
        let disk = MemDisk::new();
        disk.create_dir_durable(Path::new("d")).unwrap();
        write_atomic(&disk, Path::new("d/state"), b"one").unwrap();
        write_atomic(&disk, Path::new("d/state"), b"two").unwrap();
        disk.crash(&mut StdRng::seed_from_u64(3));
        assert_eq!(disk.read(Path::new("d/state")).unwrap(), b"two");
        assert_eq!(
            disk.list(Path::new("d")).unwrap(),
            vec!["state".to_string()]
        );
    }

    #[test]
    fn a_new_name_is_lost_at_a_crash_until_its_directory_is_synced() {
        let create_synced_file = |disk: &MemDisk| {
            let mut file = disk
                .open(Path::new("data/raft/log"), OpenMode::Create)
                .unwrap();
            file.append(b"synced data").unwrap();
            file.sync().unwrap();
        };
        let disk = MemDisk::new();
        disk.create_dir_all(Path::new("data/raft")).unwrap();
        create_synced_file(&disk);
        disk.crash(&mut StdRng::seed_from_u64(1));
        assert!(!disk.exists(Path::new("data")), "no directory was synced");
        disk.create_dir_durable(Path::new("data/raft")).unwrap();
        create_synced_file(&disk);
        disk.crash(&mut StdRng::seed_from_u64(1));
        assert!(disk.exists(Path::new("data/raft")));
        assert!(
            !disk.exists(Path::new("data/raft/log")),
            "log's entry unsynced"
        );
        create_synced_file(&disk);
        disk.sync_dir(Path::new("data/raft")).unwrap();
        disk.crash(&mut StdRng::seed_from_u64(1));
        assert_eq!(
            disk.read(Path::new("data/raft/log")).unwrap(),
            b"synced data"
        );
    }

    #[test]
    fn renames_and_removes_are_undone_until_the_directory_is_synced() {
        let disk = MemDisk::new();
        disk.create_dir_durable(Path::new("d")).unwrap();
        write(&disk, "d/a", b"one", true);
        disk.sync_dir(Path::new("d")).unwrap();
        disk.rename(Path::new("d/a"), Path::new("d/b")).unwrap();
        disk.crash(&mut StdRng::seed_from_u64(2));
        assert_eq!(disk.list(Path::new("d")).unwrap(), vec!["a".to_string()]);
        disk.remove_file(Path::new("d/a")).unwrap();
        disk.crash(&mut StdRng::seed_from_u64(2));
        assert_eq!(
            disk.read(Path::new("d/a")).unwrap(),
            b"one",
            "remove undone"
        );
        disk.remove_file(Path::new("d/a")).unwrap();
        disk.sync_dir(Path::new("d")).unwrap();
        disk.crash(&mut StdRng::seed_from_u64(2));
        assert!(disk.list(Path::new("d")).unwrap().is_empty());
    }

    #[test]
    fn missing_files_and_directories_are_errors() {
        let disk = MemDisk::new();
        assert!(disk.open(Path::new("nope"), OpenMode::Read).is_err());
        assert!(disk.open(Path::new("no/dir"), OpenMode::Create).is_err());
        assert!(disk.remove_file(Path::new("nope")).is_err());
    }
}
