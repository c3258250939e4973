//! The shuffle, both sides: the Shuffle service a worker runs to serve the
//! `part-<r>` files of the map attempts it finished, a page at a time; and
//! the reducer's fetch of one such file, retried a few times before the
//! coordinator is told that the map output is lost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rpc::mapreduce::shuffle_client::ShuffleClient;
use cairn_rpc::mapreduce::shuffle_server::Shuffle;
use cairn_rpc::mapreduce::{FetchReply, FetchRequest, MapLocation};
use cairn_rpc::{ClientOptions, RpcClient};
use cairn_storage::{Disk, OpenMode};
use tonic::{Request, Response, Status};

use super::{FETCH_RETRIES, MAX_FETCH_PAGE_BYTES, WorkerConfig};
use crate::diskio::DiskWriter;
use crate::map_task::partition_path;
use crate::progress::Progress;

/// Serves `part-<r>` files of the map attempts this worker process
/// finished (never leftovers of an earlier process at the same address).
#[derive(Debug, Clone)]
pub(super) struct ShuffleService {
    pub(super) scratch: Arc<dyn Disk>,
    pub(super) dir: PathBuf,
    pub(super) finished: Arc<Mutex<std::collections::BTreeSet<(u32, u32)>>>,
}

#[tonic::async_trait]
impl Shuffle for ShuffleService {
    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchReply>, Status> {
        let request = request.into_inner();
        let finished = self
            .finished
            .lock()
            .expect("finished lock")
            .contains(&(request.map_task, request.attempt));
        if !finished {
            return Err(Status::not_found(format!(
                "this worker has no output of map {} attempt {}",
                request.map_task, request.attempt
            )));
        }
        let path = partition_path(
            &map_dir(&self.dir, request.map_task, request.attempt),
            request.partition,
        );
        let mut file = self.scratch.open(&path, OpenMode::Read).map_err(|e| {
            Status::not_found(format!(
                "map {} attempt {} partition {}: {e}",
                request.map_task, request.attempt, request.partition
            ))
        })?;
        let total = file.len().map_err(|e| Status::internal(e.to_string()))?;
        let offset = request.offset.min(total);
        let want = u64::from(request.max_bytes.clamp(1, MAX_FETCH_PAGE_BYTES)).min(total - offset);
        let mut data = vec![0; want as usize];
        file.read_exact_at(offset, &mut data)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(FetchReply { data, total }))
    }
}

pub(super) fn map_dir(root: &Path, task: u32, attempt: u32) -> PathBuf {
    root.join(format!("map-{task}-{attempt}"))
}

pub(super) async fn fetch_with_retries(
    config: &WorkerConfig,
    location: &MapLocation,
    partition: u32,
    path: &Path,
    progress: &Progress,
) -> Result<u64, String> {
    let mut last = String::new();
    for retry in 0..FETCH_RETRIES {
        if retry > 0 {
            tokio::time::sleep(Duration::from_millis(100 << retry)).await;
        }
        match fetch(config, location, partition, path, progress).await {
            Ok(bytes) => return Ok(bytes),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Copies one map output partition to `path`, a page at a time.
async fn fetch(
    config: &WorkerConfig,
    location: &MapLocation,
    partition: u32,
    path: &Path,
    progress: &Progress,
) -> Result<u64, String> {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(10),
    };
    let client = RpcClient::new(location.addr.clone(), options).map_err(|e| e.to_string())?;
    let mut file = DiskWriter::create(&*config.scratch, path).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    loop {
        let request = FetchRequest {
            map_task: location.map_task,
            attempt: location.attempt,
            partition,
            offset,
            max_bytes: MAX_FETCH_PAGE_BYTES,
        };
        let reply = client
            .call(request, |channel, request| async move {
                ShuffleClient::new(channel).fetch(request).await
            })
            .await
            .map_err(|e| e.to_string())?;
        use std::io::Write;
        file.write_all(&reply.data).map_err(|e| e.to_string())?;
        offset += reply.data.len() as u64;
        progress.advance(reply.data.len() as u64);
        if offset >= reply.total {
            return Ok(offset);
        }
        if reply.data.is_empty() {
            return Err(format!(
                "map output of task {} shrank while being fetched",
                location.map_task
            ));
        }
    }
}
