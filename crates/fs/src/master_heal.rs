//! The leader heals the store (GFS §4.3): each heartbeat interval it looks
//! at every chunk and starts the clones [`Healing::plan`] picks; the
//! deletions of stale, orphaned and extra replicas ride on the heartbeat
//! replies (`master_chunks/reports.rs`, [`ChunkTable::deletions`]). A new leader
//! does neither until it has led for [`FsSettings::heal_after`], so that
//! every live chunkserver has reported to it.
//!
//! ## A clone, and why it never misses an acknowledged write
//!
//! 1. The chunk is taken like a grant (`begin`: a client's lease request
//!    waits meanwhile), and only if no lease, grant or clone of it is in
//!    progress as far as the leader knows.
//! 2. Its version is raised through the log (`GrantVersion`, naming the
//!    good replicas) and every good replica stores the new version, told
//!    of no primary (`SetVersion` with an empty primary): nobody may
//!    mutate the chunk at that version, ever. A later lease raises it
//!    again.
//! 3. The target copies the chunk from a replica that stored the new
//!    version, at that version (`CloneReplica`), and installs it whole.
//! 4. It counts once the target answers with the right length (the
//!    target's heartbeats then report it at the new version).
//!
//! An acknowledged mutation was made by every replica its lease named (a
//! primary answers success only then), and every replica at the old
//! version was one of them. After step 2 the source refuses any mutation
//! at the old version (its version moved on), so whatever was
//! acknowledged is on the source before the copy is read, and nothing can
//! be acknowledged afterwards at the version the clone carries. A client
//! that writes meanwhile gets a new lease and version, which makes the
//! clone stale: it is then deleted like any stale replica, and the chunk
//! cloned again. The busy check of step 1 only avoids disturbing writers;
//! correctness rests on step 2.

use std::time::Duration;

use cairn_rpc::fs::CloneRequest;
use cairn_rpc::fs::chunk_client::ChunkClient;
use tokio::time::Instant;
use tonic::Status;

use crate::chunk_table::ReportedChunks;
use crate::chunkserver::MAX_MESSAGE_BYTES;
use crate::healer::{CloneOrder, HealingStatus};
use crate::master::{MasterServer, REQUEST_DEADLINE};
use crate::master_chunks::stopped;
use crate::master_state::MasterState;
use crate::namespace::ChunkHandle;

/// How long a clone may take end to end (one chunk's copy).
pub(crate) const CLONE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the namespace says of `handles` (one chunkserver's report).
pub(crate) fn reported_chunks(
    state: &MasterState,
    handles: &[ChunkHandle],
    goal: usize,
) -> ReportedChunks {
    let namespace = state.namespace();
    let mut reported = ReportedChunks {
        decommissioning: state.decommissioning().clone(),
        ..ReportedChunks::default()
    };
    for &handle in handles {
        match namespace.chunk(handle) {
            Ok(meta) => {
                reported
                    .referenced
                    .insert(handle, (meta.version, meta.goal_or(goal)));
            }
            Err(_) if handle < namespace.next_handle() && !namespace.references(handle) => {
                reported.orphans.insert(handle);
            }
            Err(_) => {}
        }
    }
    reported
}

/// Heals every heartbeat interval while this node leads (spawned with
/// the node; ends with its runtime).
pub(crate) async fn run(master: MasterServer) {
    loop {
        tokio::time::sleep(master.settings.heartbeat_interval).await;
        if let Err(status) = master.heal_round().await {
            tracing::debug!(%status, "healing round skipped");
        }
    }
}

impl MasterServer {
    /// What the healer is doing and has done (on the leader).
    pub async fn healing_status(&self) -> Option<HealingStatus> {
        self.table.with(|t| t.healing.status()).await.ok()
    }

    /// One round: plan the clones and start them.
    async fn heal_round(&self) -> Result<(), Status> {
        let term = self.leading()?;
        let now = Instant::now();
        let settled = self
            .table
            .with(move |t| {
                t.observe_term(term, now);
                t.settled(now)
            })
            .await
            .map_err(stopped)?;
        if !settled {
            return Ok(());
        }
        let goal = self.settings.replication;
        let (chunks, decommissioning): (Vec<(ChunkHandle, u64, usize)>, _) = self
            .node()
            .read(
                move |s: &MasterState| {
                    let chunks = s
                        .namespace()
                        .chunks()
                        .map(|(handle, meta)| (handle, meta.version, meta.goal_or(goal)))
                        .collect();
                    (chunks, s.decommissioning().clone())
                },
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        let per_server = self.settings.clones_per_server;
        let now = Instant::now();
        let orders = self
            .table
            .with(move |t| {
                t.set_decommissioning(decommissioning);
                let health = t.health(&chunks, now);
                let orders = t.healing.plan(&health, &t.loads(now), per_server, now);
                let mut orders: Vec<CloneOrder> = orders
                    .into_iter()
                    .filter(|order| t.begin(order.handle, now))
                    .collect();
                if orders.is_empty() {
                    orders = t.balance_orders(&health, per_server, now);
                }
                t.healing.start(&orders);
                orders
            })
            .await
            .map_err(stopped)?;
        for order in orders {
            let master = self.clone();
            tokio::spawn(async move { master.clone_chunk(order).await });
        }
        Ok(())
    }

    /// Carries out one clone and records how it ended.
    async fn clone_chunk(&self, order: CloneOrder) {
        let handle = order.handle;
        let result = tokio::time::timeout(CLONE_TIMEOUT, self.clone_steps(&order)).await;
        let succeeded = match result {
            Ok(Ok(())) => true,
            Ok(Err(status)) => {
                tracing::info!(handle, target = %order.target, %status, "clone failed; retried later elsewhere");
                false
            }
            Err(_) => {
                tracing::info!(handle, target = %order.target, "clone timed out; retried later elsewhere");
                false
            }
        };
        let avoid_for = self.settings.heal_after() * 4;
        let _ = self
            .table
            .with(move |t| {
                t.grant_done(handle, None);
                t.move_cloned(handle, succeeded);
                t.healing
                    .finish(handle, succeeded, Instant::now(), avoid_for)
            })
            .await;
    }

    /// Steps 2-4 of a clone (see the module's doc).
    async fn clone_steps(&self, order: &CloneOrder) -> Result<(), Status> {
        let handle = order.handle;
        let raised = self
            .raise_version(handle, order.version, &order.good, "", &[])
            .await?;
        // The planned source if it stored the version, else the longest
        // replica that did (they hold every acknowledged byte alike).
        let Some((source, length)) = raised
            .stored
            .iter()
            .find(|(url, _)| *url == order.source)
            .or_else(|| raised.stored.iter().max_by_key(|(_, length)| *length))
            .cloned()
        else {
            return Err(Status::unavailable(format!(
                "no replica of chunk {handle} stored version {} ({}); retry",
                raised.version,
                raised.errors.join("; ")
            )));
        };
        let request = CloneRequest {
            handle,
            version: raised.version,
            length,
            source,
        };
        let peer = self
            .clone_peers
            .get(&order.target)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reply = peer
            .call(request, |c, r| async move {
                ChunkClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .clone_replica(r)
                    .await
            })
            .await
            .map_err(|e| Status::unavailable(format!("{}: {e}", order.target)))?;
        if reply.length != length {
            return Err(Status::data_loss(format!(
                "{} cloned {} bytes of chunk {handle}, not {length}",
                order.target, reply.length
            )));
        }
        let (target, version, now) = (order.target.clone(), raised.version, Instant::now());
        self.table
            .with(move |t| t.record_replica(&target, handle, version, &reply, now))
            .await
            .map_err(stopped)?;
        tracing::info!(handle, version, length, target = %order.target, "chunk re-replicated");
        Ok(())
    }
}
