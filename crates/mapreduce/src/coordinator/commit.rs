//! Completing attempts, and for jobs whose output is in the file store,
//! committing reduce output by rename (paper §3.3, "atomic rename"): each
//! reduce attempt wrote its own temporary file `OUT/_tmp/NAME.attempt-W-A`;
//! the first successful attempt of a task to report is committed by renaming
//! its file to `OUT/NAME`, and every later one (a backup, a re-execution)
//! has its file deleted (into the store's trash). One task, the
//! [`Committer`], owns the store client and takes the completions of reduce
//! attempts in turn, each journaled before the next, so exactly one
//! attempt's output exists per partition. A rename that fails makes the
//! attempt a failed one: the task runs again.

use std::sync::Weak;

use cairn_fs::Client;
use cairn_rpc::mapreduce::TaskKind;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::journal::Record;
use super::state::Completion;
use super::{CoordinatorCore, Inner, Stopped, store};

/// Completions waiting for the committer; when full, the workers' RPCs
/// wait for room.
const MAX_QUEUED_COMMITS: usize = 64;

/// A reduce completion to commit, and where to answer whether it was.
type Commit = (Completion, oneshot::Sender<Result<bool, Stopped>>);

/// The handle of the task that commits reduce outputs in the store; the
/// task ends when the coordinator is dropped.
#[derive(Debug)]
pub(super) struct Committer {
    queue: mpsc::Sender<Commit>,
}

impl Committer {
    /// Starts the committer of the coordinator `inner` with `client`.
    pub(super) fn start(inner: Weak<Inner>, mut client: Client) -> Self {
        let (queue, mut commits) = mpsc::channel::<Commit>(MAX_QUEUED_COMMITS);
        tokio::spawn(async move {
            while let Some((completion, answer)) = commits.recv().await {
                let Some(inner) = inner.upgrade() else { break };
                let core = CoordinatorCore { inner };
                let accepted = core.commit(&mut client, completion).await;
                let _ = answer.send(accepted);
            }
        });
        Self { queue }
    }
}

impl CoordinatorCore {
    /// Records a finished attempt (a reduce output in the store through the
    /// committer); returns whether it was committed.
    pub(super) async fn complete(&self, completion: Completion) -> Result<bool, Stopped> {
        let Some(committer) = &self.inner.committer else {
            return self.record_completion(completion).await;
        };
        if completion.kind != TaskKind::Reduce || completion.error.is_some() {
            return self.record_completion(completion).await;
        }
        let (answer, answered) = oneshot::channel();
        if committer.queue.send((completion, answer)).await.is_err() {
            return Ok(false);
        }
        answered.await.unwrap_or(Ok(false))
    }

    /// Commits (or discards) a successful reduce attempt's output file,
    /// then records the completion.
    async fn commit(
        &self,
        client: &mut Client,
        mut completion: Completion,
    ) -> Result<bool, Stopped> {
        let task = completion.task;
        let (output_dir, name, open) = self
            .apply(move |state| {
                (
                    state.job.output_dir.clone(),
                    state.output_name(task),
                    state.reduce_open(task),
                )
            })
            .await?;
        let temp = store::temp_output(&output_dir, &name, completion.worker, completion.attempt);
        if open {
            let target = store::final_output(&output_dir, &name);
            if let Err(error) = rename(client, &temp, &target).await {
                completion.error = Some(format!("committing {temp} as {target}: {error}"));
            }
        } else {
            discard(client, &temp, false).await;
        }
        let accepted = self.record_completion(completion).await?;
        if accepted && self.apply(|state| state.done).await? {
            let temp_dir = store::final_output(&output_dir, store::TEMP_DIR);
            discard(client, &temp_dir, true).await;
        }
        Ok(accepted)
    }

    /// Applies a completion to the job's state and journals it.
    async fn record_completion(&self, completion: Completion) -> Result<bool, Stopped> {
        self.change(move |state| {
            let (accepted, records) = state.complete(completion, Instant::now());
            if records.iter().any(|r| matches!(r, Record::JobDone)) {
                tracing::debug!("job done");
            }
            (accepted, records)
        })
        .await
    }
}

async fn rename(client: &mut Client, from: &str, to: &str) -> Result<(), store::StoreError> {
    let (from, to) = (store::parse_store_path(from)?, store::parse_store_path(to)?);
    Ok(client.rename(&from, &to, true).await?)
}

/// Deletes a losing attempt's file (or the temporary directory) into the
/// trash; a failure only leaves it there.
async fn discard(client: &mut Client, path: &str, recursive: bool) {
    let deleted = match store::parse_store_path(path) {
        Ok(parsed) => client.delete(&parsed, recursive).await.map_err(Into::into),
        Err(error) => Err(error),
    };
    if let Err(error) = deleted {
        tracing::debug!("cannot delete {path}: {error}");
    }
}
