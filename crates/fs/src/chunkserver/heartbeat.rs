//! The chunkserver's heartbeat (GFS §2.6.2, §3.1): each interval it
//! reports its replicas, space and scrub figures to every master, deletes
//! the replicas the leader lists, and extends the leases the leader
//! confirms, measured from when the report was sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_rpc::RpcError;
use cairn_rpc::fs::master_client::MasterClient as MasterGrpcClient;
use cairn_rpc::fs::{HeartbeatReply, HeartbeatRequest};
use tokio::time::Instant;

use super::Inner;
use crate::namespace::ChunkHandle;

/// Reports to every master each heartbeat interval, and extends the leases
/// the leader confirms.
pub(super) async fn heartbeat_loop(inner: Arc<Inner>) {
    loop {
        heartbeat_round(&inner).await;
        tokio::time::sleep(inner.settings.heartbeat_interval).await;
    }
}

/// One report to every master. A lease the leader extends lasts `lease`
/// from when the report was *sent*, less the clock margin, so it ends here
/// before it ends at the master.
pub(super) async fn heartbeat_round(inner: &Inner) {
    let sent = inner.clock.now();
    let capacity = inner.settings.capacity_bytes;
    let lease = inner.settings.lease;
    let Ok((mut request, claimed)) = inner
        .state
        .with(move |s| s.heartbeat(capacity, Instant::now(), lease))
        .await
    else {
        return;
    };
    space_report(inner, &mut request);
    inner.scrub.report(&mut request);
    let calls = inner.masters.iter().map(|master| {
        let request = request.clone();
        async move {
            master
                .call(request, |c, r| async move {
                    MasterGrpcClient::new(c).heartbeat(r).await
                })
                .await
        }
    });
    let replies: Vec<Result<HeartbeatReply, RpcError>> = futures::future::join_all(calls).await;
    for reply in replies.into_iter().flatten() {
        if reply.leader && !reply.delete_replicas.is_empty() {
            let listed = reply.delete_replicas.clone();
            let _ = inner.state.with(move |s| s.delete_listed(&listed)).await;
        }
        if !reply.leader || reply.extended.is_empty() {
            continue;
        }
        let lease = Duration::from_millis(reply.lease_ms);
        // A lease longer than ours is taken as ours (and an absurd one
        // cannot overflow the clock).
        let lease = lease.min(inner.settings.lease);
        let Some(end) = (sent + lease).checked_sub(inner.settings.clock_margin()) else {
            continue;
        };
        let confirmed: Vec<(ChunkHandle, u64)> = claimed
            .iter()
            .filter(|(handle, _)| reply.extended.contains(handle))
            .copied()
            .collect();
        let _ = inner.state.with(move |s| s.extend(&confirmed, end)).await;
    }
}

/// Fills in the space of the report: the capacity setting, lowered to
/// what the disk can hold (its free space plus what the replicas use), and
/// no free space at all while the last write found the disk full.
pub(super) fn space_report(inner: &Inner, request: &mut HeartbeatRequest) {
    let used: u64 = request.replicas.iter().map(|r| r.length).sum();
    let mut capacity = inner.settings.capacity_bytes;
    if let Some(probe) = &inner.probe {
        match probe() {
            Ok(disk_free) => capacity = capacity.min(used.saturating_add(disk_free)),
            Err(error) => {
                tracing::warn!(disk = %inner.disk, %error, "cannot measure the free space; reporting none");
                capacity = used;
            }
        }
    }
    request.capacity_bytes = capacity;
    request.free_bytes = if inner.disk_full.load(Ordering::Relaxed) {
        0
    } else {
        capacity.saturating_sub(used)
    };
    request.disk = inner.disk.clone();
}
