//! The [`Disk`] and [`DiskFile`] traits.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    Write,
    /// Read and write; created empty if missing.
    Create,
    /// Read and write; created if missing, emptied if present.
    Truncate,
}

/// A directory tree of files. Paths are relative to the disk's root.
pub trait Disk: Send + Sync + Debug {
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the files in a directory, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Creates `path` and its missing parents and makes them durable: syncs
    /// the parent of every directory it created, and `path`'s own parent,
    /// so that a power loss right after cannot take the directory (and
    /// what is later written into it) away.
    fn create_dir_durable(&self, path: &Path) -> io::Result<()> {
        let mut created = Vec::new();
        let mut current = path;
        while !current.as_os_str().is_empty() && !self.exists(current) {
            created.push(current);
            current = current.parent().unwrap_or(Path::new(""));
        }
        self.create_dir_all(path)?;
        for dir in created.iter().rev() {
            self.sync_dir(dir.parent().unwrap_or(Path::new("")))?;
        }
        if created.is_empty() {
            self.sync_dir(path.parent().unwrap_or(Path::new("")))?;
        }
        Ok(())
    }

    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut file = self.open(path, OpenMode::Read)?;
        let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
        let mut data = vec![0; len];
        file.read_exact_at(0, &mut data)?;
        Ok(data)
    }
}

/// An open file.
pub trait DiskFile: Send + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at or past the end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, extending the file if needed (a gap
    /// reads as zeros). Not durable until [`sync`](Self::sync).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file. Not durable until
    /// [`sync`](Self::sync).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes every earlier write to this file durable.
    fn sync(&mut self) -> io::Result<()>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`, failing with `UnexpectedEof` if the file
    /// ends first.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ends {} bytes short", buf.len() - done),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Reads exactly `length` bytes at `offset` into a new buffer, failing
    /// with `UnexpectedEof` if the file ends first. Implementations that
    /// can fill a buffer without zeroing it first (real files) override
    /// this: a hot read then costs one copy out of the page cache.
    fn read_exact_vec_at(&mut self, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        let mut data = vec![0; length];
        self.read_exact_at(offset, &mut data)?;
        Ok(data)
    }

    /// Appends `data` at the end; returns the offset it was written at.
    fn append(&mut self, data: &[u8]) -> io::Result<u64> {
        let offset = self.len()?;
        self.write_at(offset, data)?;
        Ok(offset)
    }
}

/// Replaces `path` with `data` so that a crash leaves either the old content
/// or the new, never a mix: write a temporary file, sync it, rename it over
/// `path`, sync the directory.
pub fn write_atomic(disk: &dyn Disk, path: &Path, data: &[u8]) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let mut file = disk.open(&temp, OpenMode::Truncate)?;
    file.write_at(0, data)?;
    file.sync()?;
    drop(file);
    disk.rename(&temp, path)?;
    disk.sync_dir(path.parent().unwrap_or(Path::new("")))
}

/// Removes the files in `dir` whose names end in `suffix` (the temporary
/// files a crash left behind), then syncs the directory if it removed any.
/// Returns every name `dir` held; an error comes with the path it concerns.
pub(crate) fn remove_temp_files(
    disk: &dyn Disk,
    dir: &Path,
    suffix: &str,
) -> Result<Vec<String>, (PathBuf, io::Error)> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |error| (path, error)
    };
    let names = disk.list(dir).map_err(at(dir))?;
    let mut removed = false;
    for name in names.iter().filter(|name| name.ends_with(suffix)) {
        let path = dir.join(name);
        disk.remove_file(&path).map_err(at(&path))?;
        removed = true;
    }
    if removed {
        disk.sync_dir(dir).map_err(at(dir))?;
    }
    Ok(names)
}
