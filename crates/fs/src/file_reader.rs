//! [`FileReader`]: a streaming read of a file, prefetching.
//!
//! The reader asks the master where each chunk is once (GFS §2.7.1: a
//! client caches locations until the file is opened again, so a replica
//! that misses later mutations can serve this reader stale bytes within
//! that window, never corrupt ones), and keeps up to [`READ_WINDOW`] reads
//! of [`MAX_READ_BYTES`] in flight, each to the next replica in turn
//! (the next one on this machine, once one is known to be: short-circuit
//! reads, `short_circuit.rs`). Every replica's checksums are checked
//! before a byte is returned. A piece whose
//! read fails is read again alone (another replica, then a fresh location
//! from the master, backing off) when its turn comes; pieces come back in
//! order. The file ends at the first piece shorter than asked.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use cairn_rpc::RpcError;
use tokio::task::JoinHandle;

use crate::chunkserver::MAX_READ_BYTES;
use crate::client::{ChunkLocation, Client, ClientError, read_from};
use crate::path::FsPath;

/// The most reads one reader has in flight.
pub const READ_WINDOW: usize = 8;

/// A read under way.
struct InFlight {
    index: u64,
    within: u64,
    want: u64,
    task: JoinHandle<Result<(Bytes, u64), RpcError>>,
}

/// A streaming reader, from [`Client::reader`]: [`next`](Self::next)
/// gives the file's bytes in order, piece by piece.
pub struct FileReader<'a> {
    client: &'a mut Client,
    path: FsPath,
    /// The next byte to ask for.
    next: u64,
    /// Where the reading stops at the latest.
    end: u64,
    in_flight: VecDeque<InFlight>,
    /// Chunk index -> where it is (`None`: the file has no such chunk).
    locations: BTreeMap<u64, Option<ChunkLocation>>,
    /// Counts the reads, to spread them over the replicas.
    turn: usize,
    /// The end of the file was seen.
    ended: bool,
}

impl<'a> FileReader<'a> {
    pub(crate) fn new(client: &'a mut Client, path: FsPath, offset: u64, length: u64) -> Self {
        Self {
            client,
            path,
            next: offset,
            end: offset.saturating_add(length),
            in_flight: VecDeque::new(),
            locations: BTreeMap::new(),
            turn: 0,
            ended: false,
        }
    }

    /// The next bytes of the file; `None` at its end (or at the end of the
    /// length asked for).
    pub async fn next(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.fill().await?;
        let Some(InFlight {
            index,
            within,
            want,
            task,
        }) = self.in_flight.pop_front()
        else {
            return Ok(None);
        };
        let answer = match task.await {
            Ok(answer) => answer.map(|(bytes, _)| bytes).map_err(|e| e.to_string()),
            Err(error) => Err(format!("the read's task ended: {error}")),
        };
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(_) => {
                // Read it alone, asking the master again; later pieces of
                // this chunk use the new location.
                self.locations.remove(&index);
                self.client.forget_read(&self.path, index);
                match self
                    .client
                    .read_piece(&self.path, index, within, want)
                    .await?
                {
                    Some(bytes) => bytes,
                    None => Bytes::new(),
                }
            }
        };
        if (bytes.len() as u64) < want {
            self.stop();
        }
        Ok((!bytes.is_empty()).then_some(bytes))
    }

    /// Starts reads until [`READ_WINDOW`] are in flight.
    async fn fill(&mut self) -> Result<(), ClientError> {
        let chunk = self.client.settings.chunk_bytes;
        while !self.ended && self.in_flight.len() < READ_WINDOW && self.next < self.end {
            let (index, within) = (self.next / chunk, self.next % chunk);
            let want = (self.end - self.next)
                .min(chunk - within)
                .min(MAX_READ_BYTES);
            let location = match self.locations.get(&index) {
                Some(location) => location.clone(),
                None => {
                    let location = self.client.read_location(&self.path, index).await?;
                    self.locations.insert(index, location.clone());
                    location
                }
            };
            let Some(location) = location else {
                self.ended = true;
                break;
            };
            let task = match location.replicas.len() {
                0 => tokio::spawn(async move {
                    Err(RpcError::Unavailable {
                        addr: "(no replica)".into(),
                        reason: "the master named no live replica".into(),
                    })
                }),
                _ => {
                    self.turn = self.turn.wrapping_add(1);
                    let url = self
                        .client
                        .short_circuit
                        .pick(&location.replicas, self.turn);
                    let peer = self.client.peers.get(url);
                    let (handle, version) = (location.handle, location.version);
                    let local = self.client.short_circuit.clone();
                    tokio::spawn(async move {
                        read_from(peer?, local, handle, version, within, want).await
                    })
                }
            };
            self.in_flight.push_back(InFlight {
                index,
                within,
                want,
                task,
            });
            self.next += want;
        }
        Ok(())
    }

    /// The file ended: drops the reads past it.
    fn stop(&mut self) {
        self.ended = true;
        for piece in self.in_flight.drain(..) {
            piece.task.abort();
        }
    }
}

impl Drop for FileReader<'_> {
    fn drop(&mut self) {
        for piece in &self.in_flight {
            piece.task.abort();
        }
    }
}
