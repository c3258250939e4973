//! `Decommission`: the leader checks that the chunkserver is known and
//! that enough live ones stay in service for every file's goal, then puts
//! the mark in the log (the master's own `Decommission` command), so that
//! it survives a change of leader; `undo` takes the mark away. The mark's
//! effects are the chunk table's (`chunk_table/decommission.rs`): no new
//! chunks there, its replicas do not count, the healer copies them
//! elsewhere. `Usage` tells when a marked server is drained.

use std::collections::BTreeSet;

use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{Decommission, DecommissionReply, DecommissionRequest, FsErrorCode};
use tokio::time::Instant;
use tonic::Status;

use crate::chunk_table::ChunkGoals;
use crate::master::{MasterServer, REQUEST_DEADLINE};
use crate::master_chunks::stopped;
use crate::master_state::MasterState;

impl MasterServer {
    /// Each chunk's latest version and goal, and the servers being
    /// decommissioned: at a read index (`linearizable`), or as this node
    /// has applied the log (for displays, on any node).
    pub(crate) async fn goals_and_decommissioning(
        &self,
        linearizable: bool,
    ) -> Result<(ChunkGoals, BTreeSet<String>), Status> {
        let goal = self.settings.replication;
        let read = move |s: &MasterState| {
            let goals = s
                .namespace()
                .chunks()
                .map(|(handle, meta)| (handle, (meta.version, meta.goal_or(goal))))
                .collect();
            (goals, s.decommissioning().clone())
        };
        let result = match linearizable {
            true => self.node().read(read, REQUEST_DEADLINE).await,
            false => self.node().inspect(read).await,
        };
        result.map_err(|e| self.node().error_status(e))
    }

    pub(crate) async fn handle_decommission(
        &self,
        request: DecommissionRequest,
    ) -> Result<DecommissionReply, Status> {
        let term = self.leading()?;
        let (goals, marked) = self.goals_and_decommissioning(true).await?;
        let largest_goal = goals.values().map(|&(_, goal)| goal).max().unwrap_or(0);
        let (url, undo, now) = (request.url.clone(), request.undo, Instant::now());
        let checked = self
            .table
            .with(move |t| {
                t.observe_term(term, now);
                match undo {
                    // A marked server may be taken back even if this
                    // leader never heard from it.
                    true if marked.contains(&url) => Ok(()),
                    // Any known server may be taken back (a no-op if it
                    // was not being decommissioned).
                    true => t.check_decommission(&url, 0, now),
                    false => t.check_decommission(&url, largest_goal, now),
                }
            })
            .await
            .map_err(stopped)?;
        if let Err((code, message)) = checked {
            return Ok(DecommissionReply {
                error: code as i32,
                message,
            });
        }
        self.submit_internal(Op::Decommission(Decommission {
            url: request.url.clone(),
            undo,
        }))
        .await?;
        let (_, marked) = self.goals_and_decommissioning(true).await?;
        self.table
            .with(move |t| t.set_decommissioning(marked))
            .await
            .map_err(stopped)?;
        let message = match undo {
            true => format!(
                "{} is back in service: it takes new chunks again",
                request.url
            ),
            false => format!(
                "{} is being decommissioned: its chunks are copied elsewhere; stop it once `cairn fs df` shows it decommissioned",
                request.url
            ),
        };
        Ok(DecommissionReply {
            error: FsErrorCode::Ok as i32,
            message,
        })
    }
}
