//! Writes and record appends (GFS §3.1, §3.3): the chunk's primary and
//! secondaries asked of the master (cached until the lease ends), the data
//! pushed along the chain of replicas, then the primary asked to commit
//! it; any failure drops the cached location and retries from the start
//! with a new data id.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::{AppendRequest, MutationReply, PushRequest, WriteRequest};
use tokio::time::Instant;

use super::retry::{Backoff, Failure, classify};
use super::{ChunkLocation, Client, ClientError};
#[cfg(doc)]
use crate::chunkserver::MAX_READ_BYTES;
use crate::file_writer::FileWriter;
use crate::path::FsPath;
use crate::peers::chunk_stub;

impl Client {
    pub(crate) async fn mutation_location(
        &mut self,
        path: &FsPath,
        index: u64,
    ) -> Result<ChunkLocation, ClientError> {
        // This client's reads of the chunk then ask the master again: a
        // replica that misses this mutation keeps the old version, which a
        // read at the old version would accept.
        self.reads.forget(path, index);
        if let Some(location) = self.mutations.get(path, index) {
            return Ok(location);
        }
        let reply = self.master.locate(path, index, true, true).await?;
        // Never cached past a lease of ours (nor an absurd answer).
        let valid = Duration::from_millis(reply.valid_ms).min(self.settings.lease);
        let until = Instant::now() + valid;
        let location = ChunkLocation::from_reply(reply);
        self.mutations.insert(path, index, location.clone(), until);
        Ok(location)
    }

    pub(crate) fn forget(&mut self, path: &FsPath, index: u64) {
        self.mutations.forget(path, index);
    }

    /// Writes `data` at `offset` of the file, adding chunks as needed. Each
    /// piece (within a chunk, at most [`MAX_READ_BYTES`]) is one mutation,
    /// several in flight at once: a failure part-way leaves some pieces
    /// written and others not.
    pub async fn write(
        &mut self,
        path: &FsPath,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let mut writer = self.writer(path, offset);
        writer.write(data).await?;
        writer.finish().await?;
        Ok(())
    }

    /// A writer of the file at `path` from `offset` on, which keeps several
    /// mutations in flight; call [`FileWriter::finish`] at the end.
    pub fn writer(&mut self, path: &FsPath, offset: u64) -> FileWriter<'_> {
        FileWriter::new(self, path.clone(), offset)
    }

    /// Appends `record` atomically, at least once, at an offset the store
    /// picks (GFS record append); returns that offset in the file.
    pub async fn append(&mut self, path: &FsPath, record: &[u8]) -> Result<u64, ClientError> {
        let max = self.settings.max_record_bytes();
        if record.len() as u64 > max {
            return Err(ClientError::RecordTooLarge {
                len: record.len() as u64,
                max,
            });
        }
        let entry = self.master.stat(path).await?;
        let mut index = (entry.chunks.len() as u64).saturating_sub(1);
        loop {
            let reply = self
                .mutate(path, index, None, Bytes::copy_from_slice(record))
                .await?;
            if !reply.padded {
                return Ok(index * self.settings.chunk_bytes + reply.offset);
            }
            index += 1;
        }
    }

    /// One mutation of chunk `index`: a write at `within`, or an append.
    pub(crate) async fn mutate(
        &mut self,
        path: &FsPath,
        index: u64,
        within: Option<u64>,
        data: Bytes,
    ) -> Result<MutationReply, ClientError> {
        let what = match within {
            Some(at) => format!(
                "writing {} bytes at {at} of chunk {index} of {path}",
                data.len()
            ),
            None => format!("appending {} bytes to {path}", data.len()),
        };
        let mut backoff = Backoff::new(what, self.deadline);
        loop {
            let location = self.mutation_location(path, index).await?;
            match self.attempt(&location, within, data.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry(last)) => {
                    self.forget(path, index);
                    backoff.wait(&mut self.rng, last).await?;
                }
            }
        }
    }

    /// One attempt at a mutation, as a task of its own (it borrows
    /// nothing): push the data along the replicas, then ask the primary to
    /// commit it.
    pub(crate) fn attempt(
        &mut self,
        location: &ChunkLocation,
        within: Option<u64>,
        data: Bytes,
    ) -> impl Future<Output = Result<MutationReply, Failure>> + Send + 'static {
        self.next_data_id += 1;
        let (client_id, data_id) = (self.client_id, self.next_data_id);
        let first = location
            .primary
            .as_ref()
            .ok_or_else(|| Failure::Retry("the master named no primary".into()))
            .and_then(|primary| {
                self.peers
                    .get(primary)
                    .map_err(|e| Failure::Retry(e.to_string()))
            });
        let push = PushRequest {
            client_id,
            data_id,
            data,
            chain: location.replicas.clone(),
        };
        let (handle, version) = (location.handle, location.version);
        async move {
            let first = first?;
            first
                .call(push, |c, r| async move { chunk_stub(c).push(r).await })
                .await
                .map_err(classify)?;
            let result = match within {
                Some(offset) => {
                    let request = WriteRequest {
                        handle,
                        version,
                        offset,
                        client_id,
                        data_id,
                    };
                    first
                        .call(
                            request,
                            |c, r| async move { ChunkClient::new(c).write(r).await },
                        )
                        .await
                }
                None => {
                    let request = AppendRequest {
                        handle,
                        version,
                        client_id,
                        data_id,
                    };
                    first
                        .call(request, |c, r| async move {
                            ChunkClient::new(c).append(r).await
                        })
                        .await
                }
            };
            result.map_err(classify)
        }
    }
}
