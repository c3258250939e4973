//! The one task that owns the job's state and its journal. The gRPC
//! handlers, the expiry ticker and the committer do not share them behind
//! locks: each sends the owner a change to make, as a message with a
//! oneshot reply (the model is `rsm`'s driver loop). The owner applies one
//! change at a time and journals its records before it answers, so the
//! journal holds the events in exactly the order the state went through
//! them, and nothing is answered before it is durable.
//!
//! A journal that cannot be written stops the owner: continuing would
//! promise a resume it cannot deliver. Every later request is refused with
//! [`Stopped`], which the ticker returns to the binary to report; the
//! library never exits the process.

use cairn_rpc::mapreduce::StatusReply;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::journal::{Journal, Record};
use super::state::JobState;

/// Changes waiting for the owner; when full, the senders (the workers'
/// RPCs, the ticker) wait for room.
const MAX_QUEUED_CHANGES: usize = 256;

/// Why the coordinator stopped serving its job: its journal could not be
/// written. Restarting it resumes from the journal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the coordinator cannot write its journal ({0}); it stopped. Restart it once the disk is \
     fixed: it resumes from the journal"
)]
pub struct Stopped(String);

/// What the owner hands each change: the state and a way to journal.
#[derive(Debug)]
pub(super) struct Owned {
    pub(super) state: JobState,
    journal: Journal,
}

impl Owned {
    /// Journals `records`, in order, each synced before the next.
    pub(super) fn persist(&mut self, records: &[Record]) -> Result<(), Stopped> {
        for record in records {
            self.journal.append(record).map_err(|error| {
                tracing::error!("cannot write the journal: {error}");
                Stopped(error.to_string())
            })?;
        }
        Ok(())
    }
}

/// A change for the owner to make; it answers through its own reply.
type Change = Box<dyn FnOnce(&mut Owned, &Option<Stopped>) -> Option<Stopped> + Send>;

/// The senders' side of the owner task; the task ends when every handle is
/// dropped.
#[derive(Debug)]
pub(super) struct OwnerHandle {
    changes: mpsc::Sender<Change>,
    status: watch::Receiver<StatusReply>,
}

impl OwnerHandle {
    /// Starts the task that owns `state` and `journal`.
    pub(super) fn start(state: JobState, journal: Journal) -> Self {
        let (changes, mut queue) = mpsc::channel::<Change>(MAX_QUEUED_CHANGES);
        let (publish, status) = watch::channel(state.status(Instant::now()));
        let mut owned = Owned { state, journal };
        tokio::spawn(async move {
            let mut stopped = None;
            while let Some(change) = queue.recv().await {
                if let Some(reason) = change(&mut owned, &stopped) {
                    stopped = Some(reason);
                }
                let mut status = owned.state.status(Instant::now());
                if let Some(reason) = &stopped {
                    status.error = reason.to_string();
                }
                publish.send_replace(status);
            }
        });
        Self { changes, status }
    }

    /// Has the owner apply `change` and returns its answer; a change that
    /// fails to journal stops the owner, and so does every later one.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Owned) -> Result<T, Stopped> + Send + 'static,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        let message: Change = Box::new(move |owned, stopped| {
            let result = match stopped {
                Some(reason) => Err(reason.clone()),
                None => change(owned),
            };
            let failed = result.as_ref().err().cloned();
            let _ = reply.send(result);
            failed
        });
        let gone = || Stopped("the coordinator's owner task has ended".into());
        self.changes.send(message).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The job's progress after the last change (its error says why, if
    /// the coordinator stopped).
    pub(super) fn status(&self) -> StatusReply {
        self.status.borrow().clone()
    }
}
