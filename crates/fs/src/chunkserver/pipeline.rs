//! The primary's write path (GFS §3.1, §3.3): each chunk's mutations
//! wait in a queue of their own ([`MAX_QUEUED_MUTATIONS`]); one task per
//! chunk takes every mutation waiting (up to [`MAX_BATCH`]) as a batch,
//! checks the lease, numbers them, and makes them locally (one write, one
//! sync) while every secondary applies the same batch (group commit).
//! Only then does it take the next batch, so every replica applies the
//! chunk's mutations in the same order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use cairn_rpc::RpcError;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::fs::{ApplyBatchRequest, MutationReply};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Response, Status};

use super::state::{DISK_FULL, Mutation, MutationKind, Prepared, Refusal, status_of};
use super::{ChunkServer, Inner, MAX_BATCH, MAX_QUEUED_MUTATIONS, heartbeat, stopped};
use crate::namespace::ChunkHandle;

/// How often the primary tries a secondary's apply before giving up.
const APPLY_ATTEMPTS: usize = 3;

/// Names this chunkserver and its disk in a disk-full refusal (and
/// remembers the disk is full until a write succeeds).
pub(super) fn name_disk<T>(inner: &Inner, result: Result<T, Status>) -> Result<T, Status> {
    match result {
        Ok(answer) => {
            inner.disk_full.store(false, Ordering::Relaxed);
            Ok(answer)
        }
        Err(status) if status.message().starts_with(DISK_FULL) => {
            inner.disk_full.store(true, Ordering::Relaxed);
            Err(Status::resource_exhausted(format!(
                "chunkserver {}: {} (disk {})",
                inner.url,
                status.message(),
                inner.disk
            )))
        }
        Err(status) => Err(status),
    }
}

/// Makes a batch of one chunk's mutations as primary: numbers them in
/// their order, then makes them (one write, one sync) locally and on every
/// secondary at once. Answers each mutation of the batch.
async fn mutate_batch(
    inner: &Arc<Inner>,
    batch: &[Mutation],
) -> Vec<Result<MutationReply, Status>> {
    let handle = batch[0].handle;
    let everyone = |status: Status| batch.iter().map(|_| Err(status.clone())).collect();
    let mut asked = false;
    let now = loop {
        let now = inner.clock.now();
        match inner.state.with(move |s| s.lease_live(handle, now)).await {
            Err(error) => return everyone(stopped(error)),
            Ok(Err(status)) => return everyone(status),
            Ok(Ok(true)) => break now,
            Ok(Ok(false)) if !asked => {
                asked = true;
                heartbeat::heartbeat_round(inner).await;
            }
            Ok(Ok(false)) => {
                return everyone(Status::failed_precondition(format!(
                    "the lease on chunk {handle} has expired here and the master did not extend it; ask the master for the current primary"
                )));
            }
        }
    };
    let requests: Vec<_> = batch
        .iter()
        .map(|m| (m.version, m.kind, m.data_key))
        .collect();
    let prepared = match inner
        .state
        .with(move |s| s.prepare_batch(handle, &requests, now))
        .await
    {
        Ok(prepared) => prepared,
        Err(error) => return everyone(stopped(error)),
    };
    let made: Vec<&Prepared> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
    let outcome = match made.first() {
        Some(first) => make_everywhere(inner, handle, first.apply.version, &made).await,
        None => Ok(()),
    };
    prepared
        .iter()
        .map(|p| match (p, &outcome) {
            (Err(Refusal::Status(status)), _) => Err(status.clone()),
            (Err(Refusal::NeedLease), _) => Err(Status::failed_precondition(format!(
                "the lease on chunk {handle} ended here; ask the master for the current primary"
            ))),
            (Ok(_), Err(status)) => Err(status.clone()),
            (Ok(made), Ok(())) => Ok(made.reply),
        })
        .collect()
}

/// Makes numbered mutations of one chunk locally (one batch) while every
/// secondary applies them (one batch each); gives the lease up if any
/// replica failed.
async fn make_everywhere(
    inner: &Arc<Inner>,
    handle: ChunkHandle,
    version: u64,
    made: &[&Prepared],
) -> Result<(), Status> {
    let writes: Vec<(u64, Bytes)> = made.iter().filter_map(|p| p.local.clone()).collect();
    // The local write and the secondaries' applies run at once: the order
    // is fixed already (the serial numbers), and success needs them all.
    let local = async {
        if writes.is_empty() {
            return Ok(());
        }
        let written = inner
            .state
            .with(move |s| {
                let slices: Vec<(u64, &[u8])> = writes.iter().map(|(o, b)| (*o, &b[..])).collect();
                s.mutated.insert(handle, Instant::now());
                let written = s.store.write_batch(handle, version, &slices);
                s.checked(handle, written)
            })
            .await
            .map_err(stopped)?
            .map(|_| ())
            .map_err(status_of);
        name_disk(inner, written)
    };
    let request = ApplyBatchRequest {
        mutations: made.iter().map(|p| p.apply.clone()).collect(),
    };
    let calls = made[0].secondaries.iter().map(|url| {
        let request = request.clone();
        async move { (url, apply_on(inner, url, request).await) }
    });
    let (local, applied) = futures::future::join(local, futures::future::join_all(calls)).await;
    let mut full_disk =
        matches!(&local, Err(status) if status.code() == tonic::Code::ResourceExhausted);
    let mut failures: Vec<String> = applied
        .into_iter()
        .filter_map(|(url, result)| {
            let error = result.err()?;
            full_disk |= error.to_string().contains(DISK_FULL);
            Some(format!("{url}: {error}"))
        })
        .collect();
    if let Err(status) = &local {
        failures.insert(0, format!("{}: {}", inner.url, status.message()));
    }
    if failures.is_empty() {
        return Ok(());
    }
    let _ = inner
        .state
        .with(move |s| s.relinquish(handle, version))
        .await;
    let message = format!(
        "not every replica made the mutation ({}); the primary gave up its lease on chunk {handle}: ask the master again and retry",
        failures.join("; ")
    );
    // A full disk keeps its code, so the client (and the operator) can
    // tell it from a replica that is down.
    Err(if full_disk {
        Status::resource_exhausted(message)
    } else {
        Status::unavailable(message)
    })
}

/// Has one secondary apply a batch, retrying transport failures (an apply
/// is idempotent: the serial numbers mark it).
async fn apply_on(inner: &Inner, url: &str, request: ApplyBatchRequest) -> Result<(), RpcError> {
    let peer = inner.peers.get(url)?;
    let mut last = None;
    for _ in 0..APPLY_ATTEMPTS {
        let result = peer
            .call(request.clone(), |c, r| async move {
                ChunkClient::new(c).apply_batch(r).await
            })
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(error) if error.outcome_unknown() => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Runs one chunk's mutations in order until the primary's role changes:
/// each time, every mutation waiting (up to [`MAX_BATCH`]) as one batch.
async fn pipeline(inner: Arc<Inner>, mut queue: mpsc::Receiver<Mutation>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(mutation) => batch.push(mutation),
                Err(_) => break,
            }
        }
        let results = mutate_batch(&inner, &batch).await;
        for (mutation, result) in batch.into_iter().zip(results) {
            let _ = mutation.reply.send(result);
        }
    }
}

impl ChunkServer {
    /// Queues a mutation on its chunk's pipeline and waits for it; a
    /// disk-full refusal names this chunkserver and its disk.
    pub(super) async fn submit(
        &self,
        handle: ChunkHandle,
        version: u64,
        kind: MutationKind,
        data_key: (u64, u64),
    ) -> Result<Response<MutationReply>, Status> {
        let (reply, answer) = oneshot::channel();
        let mutation = Mutation {
            handle,
            version,
            kind,
            data_key,
            reply,
        };
        let inner = self.inner.clone();
        let queue = self
            .inner
            .state
            .with(move |s| {
                // Only a primary gets a queue: a request anywhere else is
                // refused here, so requests cannot make tasks pile up.
                s.designated(handle, version)?;
                Ok::<_, Status>(
                    s.pipelines
                        .entry(handle)
                        .or_insert_with(|| {
                            let (sender, queue) = mpsc::channel(MAX_QUEUED_MUTATIONS);
                            tokio::spawn(pipeline(inner, queue));
                            sender
                        })
                        .clone(),
                )
            })
            .await
            .map_err(stopped)??;
        queue.try_send(mutation).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(format!(
                "{MAX_QUEUED_MUTATIONS} mutations already wait on chunk {handle}; retry after a pause"
            )),
            mpsc::error::TrySendError::Closed(_) => Status::unavailable(format!(
                "the primary of chunk {handle} changed; ask the master again"
            )),
        })?;
        let result = match answer.await {
            Ok(result) => result.map(Response::new),
            Err(_) => Err(Status::unavailable(format!(
                "the primary of chunk {handle} stopped before the mutation finished; ask the master again and retry"
            ))),
        };
        name_disk(&self.inner, result)
    }
}
