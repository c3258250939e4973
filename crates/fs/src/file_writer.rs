//! [`FileWriter`]: a streaming write of a file, with several mutations in
//! flight.
//!
//! The bytes given to [`FileWriter::write`] are cut into pieces (within a
//! chunk, at most [`MAX_MUTATION_BYTES`]); each piece is one mutation,
//! started at once as a task of its own (push along the replicas, then
//! commit at the primary), up to [`WRITE_WINDOW`] at a time. So the next
//! pieces travel while the primary commits the earlier ones, and pieces of
//! different chunks commit at their own primaries in parallel. The primary
//! still puts one chunk's mutations in one order, the same on every
//! replica. A piece whose attempt fails is retried alone (new location,
//! backing off) when its turn comes to be settled, oldest first.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use cairn_rpc::fs::MutationReply;
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError, Failure, MAX_MUTATION_BYTES};
use crate::path::FsPath;

/// The most mutations one writer has in flight.
pub const WRITE_WINDOW: usize = 4;

/// A piece under way.
struct InFlight {
    index: u64,
    within: u64,
    data: Bytes,
    task: JoinHandle<Result<MutationReply, Failure>>,
}

/// A streaming writer, from [`Client::writer`]. Call
/// [`finish`](Self::finish) at the end: until then the last bytes may not
/// be written. Dropping it abandons what is in flight (those pieces may or
/// may not be written).
pub struct FileWriter<'a> {
    client: &'a mut Client,
    path: FsPath,
    /// Where `pending` starts in the file.
    offset: u64,
    /// Bytes not yet sent (less than a piece).
    pending: BytesMut,
    in_flight: VecDeque<InFlight>,
    /// Bytes written and acknowledged so far.
    acknowledged: u64,
}

impl<'a> FileWriter<'a> {
    pub(crate) fn new(client: &'a mut Client, path: FsPath, offset: u64) -> Self {
        Self {
            client,
            path,
            offset,
            pending: BytesMut::new(),
            in_flight: VecDeque::new(),
            acknowledged: 0,
        }
    }

    /// The bytes every replica has acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// The largest piece that may start at `offset` (the rest of its chunk,
    /// at most [`MAX_MUTATION_BYTES`]).
    fn piece_limit(&self) -> u64 {
        let chunk = self.client.settings.chunk_bytes;
        (chunk - self.offset % chunk).min(MAX_MUTATION_BYTES)
    }

    /// Takes `data` to write next; sends every whole piece, waiting when
    /// [`WRITE_WINDOW`] pieces are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.pending.extend_from_slice(data);
        loop {
            let limit = self.piece_limit();
            if (self.pending.len() as u64) < limit {
                return Ok(());
            }
            let piece = self.pending.split_to(limit as usize).freeze();
            self.send(piece).await?;
        }
    }

    /// Sends what is left and waits until every piece is written; returns
    /// the bytes written.
    pub async fn finish(mut self) -> Result<u64, ClientError> {
        while !self.pending.is_empty() {
            let limit = (self.piece_limit() as usize).min(self.pending.len());
            let piece = self.pending.split_to(limit).freeze();
            self.send(piece).await?;
        }
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(self.acknowledged)
    }

    /// Starts one piece at `self.offset`.
    async fn send(&mut self, data: Bytes) -> Result<(), ClientError> {
        while self.in_flight.len() >= WRITE_WINDOW {
            self.settle_oldest().await?;
        }
        let chunk = self.client.settings.chunk_bytes;
        let (index, within) = (self.offset / chunk, self.offset % chunk);
        let location = self.client.mutation_location(&self.path, index).await?;
        let attempt = self.client.attempt(&location, Some(within), data.clone());
        self.offset += data.len() as u64;
        self.in_flight.push_back(InFlight {
            index,
            within,
            data,
            task: tokio::spawn(attempt),
        });
        Ok(())
    }

    /// Waits for the oldest piece; retries it alone if its attempt failed.
    async fn settle_oldest(&mut self) -> Result<(), ClientError> {
        let Some(InFlight {
            index,
            within,
            data,
            task,
        }) = self.in_flight.pop_front()
        else {
            return Ok(());
        };
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(error) => Err(Failure::Retry(format!("the write's task ended: {error}"))),
        };
        match outcome {
            Ok(_) => {}
            Err(Failure::Final(error)) => return Err(error),
            Err(Failure::Retry(_)) => {
                self.client.forget(&self.path, index);
                let length = data.len() as u64;
                self.client
                    .mutate(&self.path, index, Some(within), data)
                    .await?;
                self.acknowledged += length;
                return Ok(());
            }
        }
        self.acknowledged += data.len() as u64;
        Ok(())
    }
}

impl Drop for FileWriter<'_> {
    fn drop(&mut self) {
        for piece in &self.in_flight {
            piece.task.abort();
        }
    }
}
