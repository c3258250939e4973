//! A full disk under a chunkserver: a mutation that hits ENOSPC fails with
//! RESOURCE_EXHAUSTED naming the chunkserver and the disk, the chunkserver
//! then reports no free space (so the master places nothing there and
//! leaves it out of new leases), and a write that succeeds clears that.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_rpc::fs::chunk_server::Chunk as _;
use cairn_rpc::fs::{
    ApplyRequest, CreateReplicaRequest, HeartbeatRequest, PushRequest, ReplicaState,
    SetVersionRequest,
};
use cairn_storage::{Disk, DiskFile, MemDisk, OpenMode};
use tonic::{Code, Request};

use super::heartbeat::space_report;
use super::*;

/// A [`MemDisk`] whose file writes fail with ENOSPC while `full` is set.
#[derive(Debug, Clone)]
struct FillableDisk {
    disk: MemDisk,
    full: Arc<AtomicBool>,
}

#[derive(Debug)]
struct FillableFile {
    file: Box<dyn DiskFile>,
    full: Arc<AtomicBool>,
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC
}

impl DiskFile for FillableFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::Relaxed) {
            return Err(no_space());
        }
        self.file.write_at(offset, data)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }
}

impl Disk for FillableDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(FillableFile {
            file: self.disk.open(path, mode)?,
            full: self.full.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.disk.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.disk.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.disk.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn exists(&self, path: &Path) -> bool {
        self.disk.exists(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.sync_dir(dir)
    }
}

const URL: &str = "http://cs1:7700";
const PRIMARY: &str = "http://cs2:7700";

fn push(data_id: u64) -> Request<PushRequest> {
    Request::new(PushRequest {
        client_id: 1,
        data_id,
        data: bytes::Bytes::from_static(b"hello"),
        chain: vec![],
    })
}

fn apply(serial: u64, data_id: u64) -> Request<ApplyRequest> {
    Request::new(ApplyRequest {
        handle: 1,
        version: 1,
        primary: PRIMARY.into(),
        serial,
        offset: 0,
        client_id: 1,
        data_id,
        pad: false,
    })
}

fn replica(length: u64) -> Vec<ReplicaState> {
    vec![ReplicaState {
        handle: 1,
        version: 1,
        length,
    }]
}

fn free_reported(server: &ChunkServer) -> u64 {
    let mut report = HeartbeatRequest {
        replicas: replica(1 << 20),
        ..HeartbeatRequest::default()
    };
    space_report(&server.inner, &mut report);
    report.free_bytes
}

#[tokio::test]
async fn a_full_disk_fails_the_mutation_naming_the_server_and_disk() {
    let full = Arc::new(AtomicBool::new(false));
    let disk = FillableDisk {
        disk: MemDisk::new(),
        full: full.clone(),
    };
    let config = ChunkServerConfig {
        url: URL.into(),
        masters: vec![],
        dir: "chunks".into(),
        settings: FsSettings {
            capacity_bytes: 2 << 20,
            ..FsSettings::default()
        },
        observer: None,
        clock: Default::default(),
        space: Some(DiskSpace {
            label: "/data/cs1".into(),
            probe: Arc::new(|| Ok(10 << 20)),
        }),
        scrub_bytes_per_sec: 0,
    };
    let server = ChunkServer::start(config, Arc::new(disk)).unwrap();
    server
        .create_replica(Request::new(CreateReplicaRequest { handle: 1 }))
        .await
        .unwrap();
    server
        .set_version(Request::new(SetVersionRequest {
            handle: 1,
            version: 1,
            primary: PRIMARY.into(),
            secondaries: vec![URL.into()],
        }))
        .await
        .unwrap();
    assert_eq!(free_reported(&server), 1 << 20);

    full.store(true, Ordering::Relaxed);
    server.push(push(1)).await.unwrap();
    let refused = server.apply(apply(1, 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for part in [URL, "disk /data/cs1", "no space left", "free space on it"] {
        assert!(refused.message().contains(part), "{part}: {refused:?}");
    }
    assert_eq!(free_reported(&server), 0, "a full disk reports no space");

    // Space again: the retried mutation goes through, the space is back.
    full.store(false, Ordering::Relaxed);
    server.push(push(2)).await.unwrap();
    server.apply(apply(1, 2)).await.unwrap();
    assert_eq!(free_reported(&server), 1 << 20);
}

#[tokio::test]
async fn the_disk_free_space_caps_the_capacity_reported() {
    let config = ChunkServerConfig {
        url: URL.into(),
        masters: vec![],
        dir: "chunks".into(),
        settings: FsSettings::default(),
        observer: None,
        clock: Default::default(),
        space: Some(DiskSpace {
            label: "/data/cs1".into(),
            probe: Arc::new(|| Ok(1000)),
        }),
        scrub_bytes_per_sec: 0,
    };
    let server = ChunkServer::start(config, Arc::new(MemDisk::new())).unwrap();
    let mut report = HeartbeatRequest {
        replicas: replica(500),
        ..HeartbeatRequest::default()
    };
    space_report(&server.inner, &mut report);
    assert_eq!((report.capacity_bytes, report.free_bytes), (1500, 1000));
    assert_eq!(report.disk, "/data/cs1");
}
