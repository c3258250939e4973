//! Reads (GFS §2.7.1, §3): where a chunk is, cached for one lease
//! period; each piece from any live replica at the latest version (a
//! random one first), another on an error or a checksum failure, and the
//! master asked again after a round of failures; through a file
//! descriptor when the replica shares this machine.

use std::sync::Arc;

use bytes::Bytes;
use cairn_rpc::fs::{FsErrorCode, ReadRequest};
use cairn_rpc::{RpcClient, RpcError};
use rand::Rng;
use tokio::time::Instant;

use super::retry::Backoff;
use super::{ChunkLocation, Client, ClientError};
use crate::chunkserver::MAX_READ_BYTES;
use crate::file_reader::{FileReader, READ_WINDOW};
use crate::namespace::ChunkHandle;
use crate::path::FsPath;
use crate::peers::chunk_stub;
use crate::short_circuit::ShortCircuit;

impl Client {
    /// Reads up to `length` bytes at `offset`; fewer at the end of the
    /// file (the end of the first chunk shorter than asked, or of the last
    /// chunk).
    pub async fn read(
        &mut self,
        path: &FsPath,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut reader = self.reader(path, offset, length);
        // Room for what is asked up front (bounded: a length may mean "to
        // the end"), so the pieces are copied once, not again as it grows.
        let room = length.min(MAX_READ_BYTES * READ_WINDOW as u64);
        let mut out = Vec::with_capacity(usize::try_from(room).unwrap_or(0));
        while let Some(bytes) = reader.next().await? {
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// A reader of up to `length` bytes of the file at `path` from
    /// `offset` on (as [`read`](Self::read) ends), prefetching several
    /// pieces. It asks the master where each chunk is once, and keeps the
    /// answer while it lives (as a GFS client caches locations until the
    /// file is opened again), unless a replica fails.
    pub fn reader(&mut self, path: &FsPath, offset: u64, length: u64) -> FileReader<'_> {
        FileReader::new(self, path.clone(), offset, length)
    }

    /// Where chunk `index` is for a read, cached for one lease period (GFS
    /// §2.7.1: within it, a replica that missed another client's later
    /// mutations may serve their old bytes, never corrupt ones); `None` if
    /// the file has no such chunk (not cached: the file may grow).
    pub(crate) async fn read_location(
        &mut self,
        path: &FsPath,
        index: u64,
    ) -> Result<Option<ChunkLocation>, ClientError> {
        if let Some(location) = self.reads.get(path, index) {
            return Ok(Some(location));
        }
        let location = self.fresh_read_location(path, index).await?;
        if let Some(location) = &location {
            let until = Instant::now() + self.settings.lease;
            self.reads.insert(path, index, location.clone(), until);
        }
        Ok(location)
    }

    /// Drops the cached read location of chunk `index` of `path` (one of
    /// its replicas failed).
    pub(crate) fn forget_read(&mut self, path: &FsPath, index: u64) {
        self.reads.forget(path, index);
    }

    /// Where chunk `index` is for a read, as the master answers now.
    async fn fresh_read_location(
        &self,
        path: &FsPath,
        index: u64,
    ) -> Result<Option<ChunkLocation>, ClientError> {
        match self.master.locate(path, index, false, false).await {
            Ok(reply) => Ok(Some(ChunkLocation::from_reply(reply))),
            Err(error) if error.code() == Some(FsErrorCode::NoSuchChunk) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Reads within one chunk from any up-to-date replica, asking the
    /// master again after each round of failures; `None` if the file has
    /// no chunk `index`.
    pub(crate) async fn read_piece(
        &mut self,
        path: &FsPath,
        index: u64,
        within: u64,
        length: u64,
    ) -> Result<Option<Bytes>, ClientError> {
        let what = format!("reading {length} bytes at {within} of chunk {index} of {path}");
        let mut backoff = Backoff::new(what, self.deadline);
        loop {
            self.forget_read(path, index);
            let Some(location) = self.read_location(path, index).await? else {
                return Ok(None);
            };
            let mut errors = Vec::new();
            let n = location.replicas.len().max(1);
            let start = self.rng.gen_range(0..n);
            for i in 0..location.replicas.len() {
                let url = &location.replicas[(start + i) % n];
                match self
                    .read_replica(url, location.handle, location.version, within, length)
                    .await
                {
                    Ok((bytes, _)) => return Ok(Some(bytes)),
                    Err(error) => errors.push(format!("{url}: {error}")),
                }
            }
            backoff.wait(&mut self.rng, errors.join("; ")).await?;
        }
    }

    /// Reads from one replica (which refuses if older than `version`),
    /// checked against its checksums there; returns the bytes and the
    /// replica's version.
    pub async fn read_replica(
        &self,
        url: &str,
        handle: ChunkHandle,
        version: u64,
        offset: u64,
        length: u64,
    ) -> Result<(Bytes, u64), RpcError> {
        let peer = self.peers.get(url)?;
        read_from(
            peer,
            self.short_circuit.clone(),
            handle,
            version,
            offset,
            length,
        )
        .await
    }
}

/// Reads from the replica `peer` serves (see [`Client::read_replica`]),
/// through a file descriptor when it shares this machine ([`ShortCircuit`]).
pub(crate) async fn read_from(
    peer: Arc<RpcClient>,
    local: Arc<ShortCircuit>,
    handle: ChunkHandle,
    version: u64,
    offset: u64,
    length: u64,
) -> Result<(Bytes, u64), RpcError> {
    let request = ReadRequest {
        handle,
        version,
        offset,
        length: length.min(MAX_READ_BYTES),
    };
    if let Some(read) = local.read(&peer, request).await {
        return Ok(read);
    }
    let reply = peer
        .call(request, |c, r| async move { chunk_stub(c).read(r).await })
        .await?;
    Ok((reply.data, reply.version))
}
