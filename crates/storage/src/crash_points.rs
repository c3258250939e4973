//! [`CrashPoints`]: a [`MemDisk`] that numbers its I/O points and fails
//! every one from a chosen point on, for crash-point enumeration.
//!
//! A test runs a scripted scenario once to count the points (every file
//! write, truncate and sync, every create, rename and remove, every
//! directory create and sync), then once per point `k` with the disk
//! failing from `k` on: the code under test sees an I/O error there, as a
//! machine that lost power at that instant would have stopped. The test then
//! calls [`MemDisk::crash`] (unsynced data lost, the last write torn,
//! unsynced directory entries undone), recovers, and checks what survived.
//! The simulator cannot find an ordering bug inside one synchronous
//! function; this can, because it stops between any two I/O calls.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Disk, DiskFile, MemDisk, OpenMode};

/// A [`MemDisk`] with numbered I/O points; see the module documentation.
/// Cloning gives another handle on the same disk and counter.
#[derive(Debug, Clone)]
pub struct CrashPoints {
    disk: MemDisk,
    points: Arc<Mutex<Points>>,
}

#[derive(Debug, Default)]
struct Points {
    done: u64,
    fail_from: Option<u64>,
    trace: Vec<String>,
}

impl CrashPoints {
    /// Counts the I/O points of `disk`, failing none.
    pub fn new(disk: MemDisk) -> Self {
        Self {
            disk,
            points: Arc::default(),
        }
    }

    /// Fails every I/O point from the `point`-th (0-based) on; `None` fails
    /// nothing.
    pub fn fail_from(&self, point: Option<u64>) {
        self.lock().fail_from = point;
    }

    /// How many I/O points completed.
    pub fn points(&self) -> u64 {
        self.lock().done
    }

    /// What each completed point did, in order (for a failure's message).
    pub fn trace(&self) -> Vec<String> {
        self.lock().trace.clone()
    }

    /// The disk underneath (to crash it, or to recover from it).
    pub fn disk(&self) -> &MemDisk {
        &self.disk
    }

    fn lock(&self) -> MutexGuard<'_, Points> {
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Passes point `what` or fails it if the disk is failing from there on.
fn pass(points: &Mutex<Points>, what: impl FnOnce() -> String) -> io::Result<()> {
    let mut points = points.lock().unwrap_or_else(|e| e.into_inner());
    if points.fail_from.is_some_and(|from| points.done >= from) {
        return Err(io::Error::other(format!(
            "simulated power loss at I/O point {} ({})",
            points.done,
            what()
        )));
    }
    points.done += 1;
    let what = what();
    points.trace.push(what);
    Ok(())
}

impl Disk for CrashPoints {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        if matches!(mode, OpenMode::Create | OpenMode::Truncate) {
            pass(&self.points, || format!("open {} {mode:?}", path.display()))?;
        }
        let inner = self.disk.open(path, mode)?;
        Ok(Box::new(CrashFile {
            inner,
            points: self.points.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        pass(&self.points, || format!("mkdir {}", path.display()))?;
        self.disk.create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        pass(&self.points, || format!("remove {}", path.display()))?;
        self.disk.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        pass(&self.points, || format!("remove dir {}", path.display()))?;
        self.disk.remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        pass(&self.points, || {
            format!("rename {} -> {}", from.display(), to.display())
        })?;
        self.disk.rename(from, to)
    }

    fn exists(&self, path: &Path) -> bool {
        self.disk.exists(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        pass(&self.points, || format!("sync dir {}", dir.display()))?;
        self.disk.sync_dir(dir)
    }
}

#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn DiskFile>,
    points: Arc<Mutex<Points>>,
    path: PathBuf,
}

impl DiskFile for CrashFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        pass(&self.points, || {
            format!(
                "write {} bytes at {offset} of {}",
                data.len(),
                self.path.display()
            )
        })?;
        self.inner.write_at(offset, data)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        pass(&self.points, || {
            format!("truncate {} to {len}", self.path.display())
        })?;
        self.inner.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        pass(&self.points, || format!("sync {}", self.path.display()))?;
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn points_are_counted_and_fail_from_the_chosen_one() {
        let disk = CrashPoints::new(MemDisk::new());
        let mut file = disk.open(Path::new("a"), OpenMode::Create).unwrap();
        file.write_at(0, b"one").unwrap();
        file.sync().unwrap();
        assert_eq!(disk.points(), 3);
        disk.fail_from(Some(4));
        file.write_at(3, b"two").unwrap();
        let error = file.sync().unwrap_err();
        assert!(error.to_string().contains("I/O point 4"), "{error}");
        assert!(disk.sync_dir(Path::new("")).is_err(), "fails from there on");
        disk.disk().crash(&mut StdRng::seed_from_u64(1));
        assert!(
            !disk.exists(Path::new("a")),
            "the file's name was never synced"
        );
    }
}
