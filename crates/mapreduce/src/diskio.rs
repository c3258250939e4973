//! `std::io` adapters over [`DiskFile`], so buffered readers and writers
//! work on real and simulated disks alike.

use std::io::{self, Read, Write};
use std::path::Path;

use cairn_storage::{Disk, DiskFile, OpenMode};

/// Writes sequentially from offset 0 of a file opened with `Truncate`.
#[derive(Debug)]
pub(crate) struct DiskWriter {
    file: Box<dyn DiskFile>,
    offset: u64,
}

impl DiskWriter {
    pub(crate) fn create(disk: &dyn Disk, path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: disk.open(path, OpenMode::Truncate)?,
            offset: 0,
        })
    }

    /// Makes the file durable.
    pub(crate) fn sync(mut self) -> io::Result<()> {
        self.file.sync()
    }
}

impl Write for DiskWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file.write_at(self.offset, data)?;
        self.offset += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads sequentially from a byte range of a file.
#[derive(Debug)]
pub(crate) struct DiskReader {
    file: Box<dyn DiskFile>,
    offset: u64,
    end: u64,
}

impl DiskReader {
    pub(crate) fn open(disk: &dyn Disk, path: &Path) -> io::Result<Self> {
        let file = disk.open(path, OpenMode::Read)?;
        let end = file.len()?;
        Ok(Self {
            file,
            offset: 0,
            end,
        })
    }
}

impl Read for DiskReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.end - self.offset).min(buf.len() as u64) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(self.offset, &mut buf[..left])?;
        self.offset += n as u64;
        Ok(n)
    }
}
