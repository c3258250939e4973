//! The file store on the simulator with skewed chunkserver clocks: scenario
//! X2 of `reference/gfs.md` §5.2. Leases are durations measured on each
//! node's own clock, so an offset of half a lease changes nothing, and a
//! rate difference is safe while the primary's clock runs at least
//! `(lease - margin) / (lease + margin)` as fast as the master's
//! (`cairn_fs::Clock` explains the bound; `docs/fs.md` states the
//! assumption).
#![cfg(madsim)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use cairn_fs::Clock;
use common::*;
use tokio::time::sleep;

const DEADLINE: Duration = Duration::from_secs(60);

/// X2: four chunkservers, one with its clock half a lease ahead, one half
/// a lease behind, one running 15% slow (inside the bound) and one 50%
/// fast. Writers keep writing three files while each file's primary is cut
/// off from the masters past its lease, and then the master leader is
/// killed. No two replicas ever accept mutations as primary of one chunk
/// at overlapping times, and every write succeeds.
#[madsim::test]
async fn leases_stay_safe_with_skewed_chunkserver_clocks() {
    let lease = settings().lease;
    let cluster = Cluster::start_with_clocks(vec![
        Clock::skewed(lease / 2, false, 1_000_000),
        Clock::skewed(lease / 2, true, 1_000_000),
        Clock::skewed(Duration::ZERO, false, 850_000),
        Clock::skewed(Duration::ZERO, false, 1_500_000),
    ]);
    const FILES: u64 = 3;
    let mut setup = cluster.client("setup", DEADLINE);
    let setup = cluster
        .run("setup", async move {
            for f in 0..FILES {
                let file = path(&format!("/f{f}"));
                setup.create(&file).await.unwrap();
                setup.write(&file, 0, &pattern(4096, f)).await.unwrap();
            }
            setup
        })
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for f in 0..FILES {
        let node = format!("writer{f}");
        let mut client = cluster.client(&node, DEADLINE);
        let stop = stop.clone();
        let work = async move {
            let mut round = 0;
            while !stop.load(SeqCst) {
                let data = pattern(1024, f * 1000 + round);
                let file = path(&format!("/f{f}"));
                if let Err(error) = client.write(&file, 0, &data).await {
                    return Err(format!("writer {f}: {error}"));
                }
                round += 1;
                sleep(Duration::from_millis(20)).await;
            }
            Ok(round)
        };
        writers.push(cluster.world.lock().unwrap().spawn(&node, work));
    }
    let mut setup = setup;
    for _ in 0..2 {
        let (client, primaries) = cluster
            .run("setup", async move {
                let mut primaries = Vec::new();
                for f in 0..FILES {
                    let located = setup.locate(&path(&format!("/f{f}")), 0, true).await;
                    if let Some(primary) = located.ok().and_then(|l| l.primary) {
                        primaries.push(host(&primary));
                    }
                }
                (setup, primaries)
            })
            .await;
        setup = client;
        for primary in &primaries {
            cluster.cut_from_masters(primary, false);
        }
        sleep(lease + lease / 2).await;
        for primary in &primaries {
            cluster.cut_from_masters(primary, true);
        }
        sleep(Duration::from_millis(500)).await;
        if let Some(leader) = cluster.leader() {
            cluster.restart_master(leader);
        }
        sleep(lease).await;
    }
    stop.store(true, SeqCst);
    for writer in writers {
        match writer.await {
            Ok(Ok(rounds)) if rounds > 0 => {}
            Ok(Ok(_)) => cluster.fail("a writer never wrote".into()),
            Ok(Err(error)) => cluster.fail(error),
            Err(error) => cluster.fail(format!("a writer did not finish: {error}")),
        }
    }
    let primaries = cluster.accepted.lock().unwrap().len();
    if primaries == 0 {
        cluster.fail("no mutation was accepted".into());
    }
    cluster.check_no_split_brain();
}

/// A primary cut off from the masters while a client that never asks the
/// master again keeps sending it writes (push, then write, straight to the
/// chunkservers at the old version) and another client writes normally.
/// Every chunkserver measures leases by `clock`. Fails on split brain.
async fn cut_off_primary_under_hammering(clock: Clock) {
    use cairn_rpc::fs::chunk_client::ChunkClient;
    use cairn_rpc::fs::{PushRequest, WriteRequest};
    use cairn_rpc::{ClientOptions, RpcClient};
    let lease = settings().lease;
    let cluster = Cluster::start_with_clocks(vec![clock; 3]);
    let client = cluster.client("client", DEADLINE);
    let (client, old) = cluster.run("client", file_with_a_primary(client)).await;
    let primary = old.primary.clone().unwrap();
    cluster.cut_from_masters(&host(&primary), false);
    cluster.world.lock().unwrap().add_client("stale");
    let hammer = {
        let (primary, old) = (primary.clone(), old.clone());
        cluster.world.lock().unwrap().spawn("stale", async move {
            let peer = RpcClient::new(primary, ClientOptions::default()).unwrap();
            for data_id in 1..=(lease.as_millis() as u64 * 2 / 20) {
                let push = PushRequest {
                    client_id: 77,
                    data_id,
                    data: pattern(512, data_id).into(),
                    chain: old.replicas.clone(),
                };
                let pushed = peer
                    .call(
                        push,
                        |c, r| async move { ChunkClient::new(c).push(r).await },
                    )
                    .await;
                if pushed.is_ok() {
                    let write = WriteRequest {
                        handle: old.handle,
                        version: old.version,
                        offset: 0,
                        client_id: 77,
                        data_id,
                    };
                    let _ = peer
                        .call(
                            write,
                            |c, r| async move { ChunkClient::new(c).write(r).await },
                        )
                        .await;
                }
                sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (_, new) = cluster
        .run(
            "client",
            keep_writing(client, lease.as_millis() as u64 * 3 / 100),
        )
        .await;
    if hammer.await.is_err() {
        cluster.fail("the stale writer did not finish".into());
    }
    if new.primary.as_deref() == Some(primary.as_str()) || new.version <= old.version {
        cluster.fail(format!("no new lease after the cut: {new:?}"));
    }
    cluster.check_no_split_brain();
}

/// X2, clocks half a lease ahead: a stale primary stops in time.
#[madsim::test]
async fn a_stale_primary_half_a_lease_ahead_stops_in_time() {
    cut_off_primary_under_hammering(Clock::skewed(settings().lease / 2, false, 1_000_000)).await;
}

/// X2, clocks half a lease behind: a stale primary stops in time.
#[madsim::test]
async fn a_stale_primary_half_a_lease_behind_stops_in_time() {
    cut_off_primary_under_hammering(Clock::skewed(settings().lease / 2, true, 1_000_000)).await;
}

/// X2, clocks running 15% slow (inside the bound of 82%): a stale primary
/// stops in time.
#[madsim::test]
async fn a_stale_primary_with_a_slow_clock_inside_the_bound_stops_in_time() {
    cut_off_primary_under_hammering(Clock::skewed(Duration::ZERO, false, 850_000)).await;
}
