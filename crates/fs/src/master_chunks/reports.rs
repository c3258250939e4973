//! The chunkservers' reports at the master (GFS §4.1, §4.5): `Heartbeat`
//! (every node records the report; the leader adopts higher versions,
//! extends the leases claimed and lists replicas to delete), and safemode,
//! which counts the reported chunks until enough are there (`Safemode`
//! shows it, and lets an operator enter or leave it).

use std::collections::BTreeMap;

use cairn_rpc::fs::master_command::Op;
use cairn_rpc::fs::{
    AdoptVersion, HeartbeatReply, HeartbeatRequest, SafemodeReply, SafemodeRequest,
};
use tokio::time::Instant;
use tonic::Status;

use super::stopped;
use crate::master::{MasterServer, REQUEST_DEADLINE};
use crate::namespace::ChunkHandle;

impl MasterServer {
    /// While safemode waits for its threshold: counts the namespace's
    /// chunks that have a reported replica (a read index, then one pass over
    /// the reports); afterwards only logs safemode's end.
    async fn count_reports(&self, now: Instant) -> Result<(), Status> {
        let counting = self
            .table
            .with(move |t| {
                t.announce_safemode(now);
                t.safemode_counting(now)
            })
            .await
            .map_err(stopped)?;
        if !counting {
            return Ok(());
        }
        let chunks: Vec<(ChunkHandle, u64)> = self
            .node()
            .read(
                |s| {
                    // A chunk still at version 0 was never granted a lease,
                    // so it holds no acknowledged byte: waiting for its
                    // report (it may have no replica at all, if placing it
                    // failed) would only hold safemode to its timeout.
                    s.namespace()
                        .chunks()
                        .filter(|(_, m)| m.version > 0)
                        .map(|(h, m)| (h, m.version))
                        .collect()
                },
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        let now = Instant::now();
        self.table
            .with(move |t| t.count_reports(&chunks, now))
            .await
            .map_err(stopped)
    }

    /// `Safemode`: on the leader only; an operator's enter or leave, then
    /// the state.
    pub(crate) async fn handle_safemode(
        &self,
        request: SafemodeRequest,
    ) -> Result<SafemodeReply, Status> {
        if request.enter && request.leave {
            return Err(Status::invalid_argument(
                "asked to enter and to leave safemode at once; ask for one",
            ));
        }
        let term = self.leading()?;
        let now = Instant::now();
        let status = self
            .table
            .with(move |t| {
                t.observe_term(term, now);
                if request.enter || request.leave {
                    t.set_safemode(request.enter);
                }
                t.safemode_status(now)
            })
            .await
            .map_err(stopped)?;
        Ok(SafemodeReply {
            on: status.on,
            manual: status.manual,
            reason: status.reason,
            reported_chunks: status.count.reported,
            total_chunks: status.count.total,
        })
    }

    /// `Heartbeat`: every node records the report; the leader also adopts
    /// higher versions and extends the leases claimed.
    pub(crate) async fn handle_heartbeat(
        &self,
        report: HeartbeatRequest,
    ) -> Result<HeartbeatReply, Status> {
        let now = Instant::now();
        let recorded = report.clone();
        self.table
            .with(move |t| t.record_heartbeat(&recorded, now))
            .await
            .map_err(stopped)?;
        let Ok(term) = self.leading() else {
            return Ok(HeartbeatReply::default());
        };
        self.table
            .with(move |t| t.observe_term(term, now))
            .await
            .map_err(stopped)?;
        self.count_reports(now).await?;
        let handles: Vec<ChunkHandle> = report.replicas.iter().map(|r| r.handle).collect();
        // A read index begun now confirms this node still leads after the
        // report arrived (and reads the versions the extensions need, and
        // which replicas no file references).
        let goal = self.settings.replication;
        let reported = self
            .node()
            .read(
                move |s| crate::master_heal::reported_chunks(s, &handles, goal),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| self.node().error_status(e))?;
        let versions: BTreeMap<ChunkHandle, u64> = reported
            .referenced
            .iter()
            .map(|(&handle, &(version, _))| (handle, version))
            .collect();
        for replica in &report.replicas {
            if versions
                .get(&replica.handle)
                .is_some_and(|&v| replica.version > v)
            {
                tracing::info!(
                    handle = replica.handle,
                    version = replica.version,
                    "adopting a higher version a chunkserver reported"
                );
                self.submit_internal(Op::AdoptVersion(AdoptVersion {
                    handle: replica.handle,
                    version: replica.version,
                }))
                .await?;
            }
        }
        let now = Instant::now();
        let (url, claims) = (report.url, report.claims);
        let (extended, lease, delete_replicas) = self
            .table
            .with(move |t| {
                let extended = t.extend(&url, &claims, &versions, now);
                (extended, t.lease(), t.deletions(&url, &reported, now))
            })
            .await
            .map_err(stopped)?;
        Ok(HeartbeatReply {
            leader: true,
            extended,
            lease_ms: lease.as_millis() as u64,
            delete_replicas,
        })
    }
}
