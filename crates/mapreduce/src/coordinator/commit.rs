//! Completing attempts, and for jobs whose output is in the file store,
//! committing reduce output by rename (paper §3.3, "atomic rename"): each
//! reduce attempt wrote its own temporary file `OUT/_tmp/NAME.attempt-W-A`;
//! the first successful attempt of a task to report is committed by renaming
//! its file to `OUT/NAME`, and every later one (a backup, a re-execution)
//! has its file deleted (into the store's trash). Commits happen one at a
//! time (under the store client's lock) and each is journaled before the
//! next, so exactly one attempt's output exists per partition. A rename
//! that fails makes the attempt a failed one: the task runs again.

use cairn_fs::Client;
use cairn_rpc::mapreduce::TaskKind;
use tokio::time::Instant;

use super::journal::Record;
use super::state::Completion;
use super::{CoordinatorCore, store};

impl CoordinatorCore {
    /// Records a finished attempt (committing a store output first);
    /// returns whether it was committed.
    pub(super) async fn complete(&self, mut completion: Completion) -> bool {
        let Some(store) = &self.inner.store else {
            return self.record_completion(completion);
        };
        if completion.kind != TaskKind::Reduce || completion.error.is_some() {
            return self.record_completion(completion);
        }
        let mut client = store.lock().await;
        let (output_dir, name, open) = self.with_state(|state| {
            (
                state.job.output_dir.clone(),
                state.output_name(completion.task),
                state.reduce_open(completion.task),
            )
        });
        let temp = store::temp_output(&output_dir, &name, completion.worker, completion.attempt);
        if open {
            let target = store::final_output(&output_dir, &name);
            if let Err(error) = rename(&mut client, &temp, &target).await {
                completion.error = Some(format!("committing {temp} as {target}: {error}"));
            }
        } else {
            discard(&mut client, &temp, false).await;
        }
        let done = self.record_completion(completion);
        if self.with_state(|state| state.done) {
            let temp_dir = store::final_output(&output_dir, store::TEMP_DIR);
            discard(&mut client, &temp_dir, true).await;
        }
        done
    }

    /// Applies a completion to the job's state and journals it.
    fn record_completion(&self, completion: Completion) -> bool {
        let (accepted, records) =
            self.with_state(|state| state.complete(completion, Instant::now()));
        self.persist(&records);
        if records.iter().any(|r| matches!(r, Record::JobDone)) {
            tracing::debug!("job done");
        }
        accepted
    }
}

async fn rename(client: &mut Client, from: &str, to: &str) -> Result<(), cairn_fs::ClientError> {
    let (from, to) = (store::parse_store_path(from)?, store::parse_store_path(to)?);
    client.rename(&from, &to, true).await
}

/// Deletes a losing attempt's file (or the temporary directory) into the
/// trash; a failure only leaves it there.
async fn discard(client: &mut Client, path: &str, recursive: bool) {
    let deleted = match store::parse_store_path(path) {
        Ok(parsed) => client.delete(&parsed, recursive).await,
        Err(error) => Err(error),
    };
    if let Err(error) = deleted {
        tracing::debug!("cannot delete {path}: {error}");
    }
}
