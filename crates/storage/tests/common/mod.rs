//! Test helpers shared by the WAL and snapshot tests.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use cairn_storage::{Disk, DiskFile, MemDisk, OpenMode};

/// A [`MemDisk`] whose process "dies" after a budget of operations: every
/// changing operation (open, write, set_len, sync, rename, remove, directory
/// sync) spends one unit, and once the budget is spent each of them fails.
/// Crashing the inner disk afterwards models a power loss at that exact
/// point, including in the middle of a rotation, compaction or rename.
#[derive(Debug, Clone)]
pub(crate) struct FaultyDisk {
    inner: MemDisk,
    budget: Arc<AtomicI64>,
}

impl FaultyDisk {
    /// Fails from the `budget + 1`-th operation on; `None` never fails.
    pub(crate) fn new(inner: &MemDisk, budget: Option<u64>) -> Arc<Self> {
        let budget = budget.map_or(i64::MAX, |b| b as i64);
        Arc::new(Self {
            inner: inner.clone(),
            budget: Arc::new(AtomicI64::new(budget)),
        })
    }

    fn spend(budget: &AtomicI64) -> io::Result<()> {
        if budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    }
}

impl Disk for FaultyDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        Self::spend(&self.budget)?;
        let inner = self.inner.open(path, mode)?;
        Ok(Box::new(FaultyFile {
            inner,
            budget: self.budget.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.rename(from, to)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Self::spend(&self.budget)?;
        self.inner.sync_dir(dir)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn DiskFile>,
    budget: Arc<AtomicI64>,
}

impl DiskFile for FaultyFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        FaultyDisk::spend(&self.budget)?;
        self.inner.write_at(offset, data)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        FaultyDisk::spend(&self.budget)?;
        self.inner.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        FaultyDisk::spend(&self.budget)?;
        self.inner.sync()
    }
}
