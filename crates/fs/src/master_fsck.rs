//! The master's side of `cairn fs fsck`: for each chunk asked, its version
//! in the log, the version reads are served at, its replication goal and
//! every replica the chunkservers reported (version, length, alive). The
//! master only says what it was told; the fsck then asks each chunkserver
//! to verify its replica now (`Inspect`), so nothing is called healthy on
//! the strength of a heartbeat.

use cairn_rpc::fs::{FsckChunk, FsckReply, FsckRequest};
use tokio::time::Instant;
use tonic::Status;

use crate::master::{MasterServer, REQUEST_DEADLINE};
use crate::master_state::MasterState;
use crate::namespace::ChunkHandle;
use crate::settings::FsSettings;

/// The most chunks one `Fsck` request names.
pub const MAX_FSCK_HANDLES: usize = 1024;

/// How many good replicas `handle` should have: its file's goal (`setrep`),
/// else the store's replication setting.
pub(crate) fn replication_goal(
    settings: &FsSettings,
    state: &MasterState,
    handle: ChunkHandle,
) -> u64 {
    let default = settings.replication;
    state
        .namespace()
        .chunk(handle)
        .map_or(default, |meta| meta.goal_or(default)) as u64
}

/// A chunk as the log has it: (known, version, granted to, goal).
type Logged = (bool, u64, Vec<String>, u64);

impl MasterServer {
    /// `Fsck`: on the leader only (its reports are the ones leases and
    /// reads go by).
    pub(crate) async fn handle_fsck(&self, request: FsckRequest) -> Result<FsckReply, Status> {
        self.leading()?;
        let handles = request.handles;
        if handles.len() > MAX_FSCK_HANDLES {
            return Err(Status::invalid_argument(format!(
                "{} chunks in one fsck request; ask for at most {MAX_FSCK_HANDLES} at a time",
                handles.len()
            )));
        }
        let settings = self.settings.clone();
        let asked = handles.clone();
        let logged: Vec<Logged> = self
            .node()
            .read(
                move |state: &MasterState| {
                    asked
                        .iter()
                        .map(|&handle| match state.namespace().chunk(handle) {
                            Ok(meta) => (
                                true,
                                meta.version,
                                state.granted_to(handle).to_vec(),
                                replication_goal(&settings, state, handle),
                            ),
                            Err(_) => (false, 0, Vec::new(), 0),
                        })
                        .collect()
                },
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        let now = Instant::now();
        let chunks = self
            .table
            .with(move |t| {
                handles
                    .iter()
                    .zip(logged)
                    .map(|(&handle, (known, version, granted, goal))| FsckChunk {
                        handle,
                        version,
                        serving_version: t
                            .read_decision(handle, version, &granted, now)
                            .map_or(version, |(_, serving)| serving),
                        goal,
                        replicas: t.replicas_known(handle, now),
                        known,
                    })
                    .collect()
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(FsckReply { chunks })
    }
}
