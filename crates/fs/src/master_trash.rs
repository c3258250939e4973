//! The master's side of deletion with retention (GFS §4.4): the leader
//! stamps deletes and undeletes with its wall clock and retention, lists
//! the trash, and purges what is past its retention in the background.
//!
//! Times are stamped into the log entry by the leader when it submits it,
//! so applying the entry reads no clock and every master gets the same
//! result. Retention is measured on wall clocks (it outlives any one
//! leader, unlike a lease); a leader whose clock runs ahead purges early
//! by its skew, which is why the retention is days, not seconds.
//!
//! The purge runs on every node but acts only while it leads: every
//! [`FsSettings::purge_interval`](crate::FsSettings::purge_interval) it
//! reads, at a read index, the deletions past their retention, and submits
//! one `Purge` per deletion (at most [`MAX_PURGES_PER_ROUND`] a round). A
//! purge repeats its time, so its apply refuses a deletion not yet past
//! the retention, and a purge of a deletion already gone (purged twice by
//! a leader change, or restored meanwhile) does nothing.

use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{
    FsErrorCode, MasterCommand, Purge, TrashEntry, TrashListReply, TrashListRequest,
};
use tonic::Status;

use crate::master::{MAX_LISTING_ENTRIES, MasterServer, REQUEST_DEADLINE};
use crate::master_state::MasterState;
use crate::path::FsPath;

/// The most deletions the leader purges in one round; the rest wait for
/// the next round.
pub const MAX_PURGES_PER_ROUND: usize = 64;

/// The wall clock in ms since the Unix epoch (virtual under the
/// simulator); 0 if the clock is before 1970.
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl MasterServer {
    fn retention_ms(&self) -> u64 {
        self.settings.retention.as_millis() as u64
    }

    /// Puts this node's clock and retention into a client's delete or
    /// undelete (overwriting what the client sent).
    pub(crate) fn stamp(&self, command: &mut MasterCommand) {
        match &mut command.op {
            Some(Op::Delete(delete)) => delete.deleted_at_ms = unix_ms_now(),
            Some(Op::Undelete(undelete)) => {
                undelete.now_ms = unix_ms_now();
                undelete.retention_ms = self.retention_ms();
            }
            _ => {}
        }
    }

    /// `TrashList`: the deletions of `path` or below it, at a read index.
    pub(crate) async fn handle_trash_list(
        &self,
        request: TrashListRequest,
    ) -> Result<TrashListReply, Status> {
        let within = if request.path.is_empty() {
            FsPath::root()
        } else {
            match FsPath::from_bytes(&request.path) {
                Ok(path) => path,
                Err(error) => {
                    return Ok(TrashListReply {
                        error: FsErrorCode::InvalidPath as i32,
                        message: error.to_string(),
                        ..TrashListReply::default()
                    });
                }
            }
        };
        let retention_ms = self.retention_ms();
        self.node()
            .read(
                move |state: &MasterState| trash_list(state, &within, retention_ms),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))
    }

    /// The leader's background purge; runs as long as the node.
    pub(crate) async fn purge_expired_forever(self) {
        loop {
            tokio::time::sleep(self.settings.purge_interval()).await;
            if self.leading().is_err() {
                continue;
            }
            if let Err(error) = self.purge_expired().await {
                tracing::warn!(%error, "purging the trash failed; retrying next round");
            }
        }
    }

    /// One round: purges up to [`MAX_PURGES_PER_ROUND`] deletions past
    /// their retention.
    async fn purge_expired(&self) -> Result<(), Status> {
        let (now_ms, retention_ms) = (unix_ms_now(), self.retention_ms());
        let expired = self
            .node()
            .read(
                move |state: &MasterState| {
                    state
                        .namespace()
                        .expired(now_ms, retention_ms, MAX_PURGES_PER_ROUND)
                },
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        for trash_id in expired {
            let reply = self
                .submit_internal(Op::Purge(Purge {
                    trash_id,
                    now_ms,
                    retention_ms,
                }))
                .await?;
            if reply.error != FsErrorCode::Ok as i32 {
                tracing::warn!(trash_id, message = reply.message, "a purge was refused");
                continue;
            }
            tracing::info!(
                trash_id,
                chunks = reply.freed.len(),
                "purged a deletion past its retention"
            );
        }
        Ok(())
    }
}

/// The trash below `within`, as the wire has it.
fn trash_list(state: &MasterState, within: &FsPath, retention_ms: u64) -> TrashListReply {
    let entries: Vec<TrashEntry> = state
        .namespace()
        .trashed()
        .filter(|(_, trashed)| trashed.path.is_within(within))
        .take(MAX_LISTING_ENTRIES + 1)
        .map(|(_, trashed)| TrashEntry {
            path: trashed.path.to_string(),
            deleted_at_ms: trashed.deleted_at_ms,
            purge_at_ms: trashed.purge_at_ms(retention_ms),
            directory: trashed.is_directory(),
            files: trashed.files() as u64,
        })
        .collect();
    if entries.len() > MAX_LISTING_ENTRIES {
        return TrashListReply {
            error: FsErrorCode::DirectoryNotEmpty as i32,
            message: format!(
                "the trash below {within} holds more than {MAX_LISTING_ENTRIES} deletions; list a subdirectory"
            ),
            ..TrashListReply::default()
        };
    }
    TrashListReply {
        entries,
        ..TrashListReply::default()
    }
}
