//! The file store's data path on the simulator, under failures: scenarios
//! F1, F3, F4, M3, M4, M6 and X1 of `reference/gfs.md` §5.2 (chunkservers
//! crashing during appends, a secondary missing a mutation, a stale
//! replica rejoining, the master leader killed while a primary holds a
//! lease, a primary cut off from the master, a higher version reported,
//! every process losing power), a corrupt replica, and appends on an
//! unreliable network, each also checked for split brain: no two replicas
//! ever accept mutations as primary of one chunk at overlapping times.
//! F2, F9 and M7 are in `failover.rs`, X2 in `clock_skew.rs`.
#![cfg(madsim)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rpc::fs::ApplyRequest;
use cairn_rpc::fs::chunk_client::ChunkClient;
use cairn_rpc::{ClientOptions, RpcClient, RpcError};
use common::*;
use tokio::time::{Instant, sleep};
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(60);

/// F1: two of the three replicas crash during record appends and come back
/// later. No acknowledged record is lost; replicas that missed a version are
/// never named to readers.
#[madsim::test]
async fn appends_survive_chunkserver_crashes_and_stale_replicas_are_not_served() {
    const WRITERS: u32 = 4;
    let cluster = Cluster::start(3);
    let mut setup = cluster.client("setup", DEADLINE);
    cluster
        .run("setup", async move {
            setup.create(&path("/log")).await.unwrap()
        })
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let node = format!("writer{writer}");
        let mut client = cluster.client(&node, DEADLINE);
        let (stop, progress) = (stop.clone(), progress.clone());
        let work = async move {
            let mut acked = Vec::new();
            let mut seq = 0;
            while !stop.load(SeqCst) {
                let length = 100 + ((writer * 131 + seq * 977) % 9000) as usize;
                match client
                    .append(&path("/log"), &record(writer, seq, length))
                    .await
                {
                    Ok(offset) => {
                        acked.push((writer, seq, offset));
                        progress.fetch_add(1, SeqCst);
                    }
                    Err(error) => return Err(format!("writer {writer} record {seq}: {error}")),
                }
                seq += 1;
            }
            Ok(acked)
        };
        handles.push(cluster.world.lock().unwrap().spawn(&node, work));
    }
    cairn_testkit::wait_until("appends to start", Duration::from_secs(30), || {
        progress.load(SeqCst) >= 12
    })
    .await;
    cluster.kill(&cs_name(1));
    sleep(Duration::from_millis(300)).await;
    cluster.kill(&cs_name(2));
    sleep(Duration::from_secs(5)).await;
    cluster.restart(&cs_name(1));
    cluster.restart(&cs_name(2));
    sleep(Duration::from_secs(2)).await;
    stop.store(true, SeqCst);
    let mut acked = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(Ok(records)) => acked.extend(records),
            Ok(Err(error)) => cluster.fail(error),
            Err(error) => cluster.fail(format!("a writer did not finish: {error}")),
        }
    }
    if acked.len() < 20 {
        cluster.fail(format!("only {} records acknowledged", acked.len()));
    }
    let reader = cluster.client("reader", DEADLINE);
    let cluster = Arc::new(cluster);
    let checker = cluster.clone();
    let stale = cluster
        .run("reader", async move {
            let entry = reader.stat(&path("/log")).await.unwrap();
            let mut stale = 0;
            for (index, chunk) in entry.chunks.iter().enumerate() {
                for i in 0..3 {
                    if let Ok((_, version)) = reader.read_replica(&cs_url(i), chunk.handle, 0, 0, 0).await
                        && version < chunk.version
                    {
                        stale += 1;
                    }
                }
                let located = reader.locate(&path("/log"), index as u64, false).await.unwrap();
                // Every replica the master names is at the latest version
                // (or later: the healer may raise it for a clone meanwhile).
                for url in &located.replicas {
                    let (_, version) = reader
                        .read_replica(url, chunk.handle, 0, 0, 0)
                        .await
                        .unwrap();
                    if version < located.version {
                        checker.fail(format!(
                            "the master named {url} for chunk {} at version {version}, not {}",
                            chunk.handle, located.version
                        ));
                    }
                }
                // Every acknowledged record in this chunk is whole on each.
                for url in &located.replicas {
                    let (bytes, _) = reader
                        .read_replica(url, chunk.handle, chunk.version, 0, CHUNK_BYTES)
                        .await
                        .unwrap();
                    for &(writer, seq, offset) in &acked {
                        if offset / CHUNK_BYTES != index as u64 {
                            continue;
                        }
                        let at = (offset % CHUNK_BYTES) as usize;
                        let found = bytes.get(at..).and_then(parse_record);
                        if found.map(|f| (f.0, f.1)) != Some((writer, seq)) {
                            checker.fail(format!(
                                "record ({writer}, {seq}) acknowledged at {offset} is not on {url} ({found:?})"
                            ));
                        }
                    }
                    for (writer, seq, _) in scan_records(&bytes) {
                        if writer >= WRITERS {
                            checker.fail(format!("{url} holds a record from writer {writer}, who never wrote"));
                        }
                        let _ = seq;
                    }
                }
            }
            stale
        })
        .await;
    // The leader's healer replaces stale replicas by clones (healing.rs),
    // so they may be gone by now: then clones show the crashes left some.
    let masters: Vec<_> = cluster
        .masters
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    let mut clones = 0;
    for master in masters {
        clones += master.healing_status().await.map_or(0, |s| s.history.len());
    }
    if stale == 0 && clones == 0 {
        cluster.fail("no replica missed a version: the crashes did not test stale replicas".into());
    }
    cluster.check_no_split_brain();
}

/// Record appends on the unreliable network (lost requests and replies,
/// delays): retries may leave duplicates and padding, but every
/// acknowledged record is whole at its offset on every up-to-date replica.
#[madsim::test]
async fn appends_on_an_unreliable_network_lose_no_acknowledged_record() {
    const WRITERS: u32 = 6;
    const RECORDS: u32 = 15;
    let cluster = Cluster::start(4);
    let mut setup = cluster.client("setup", DEADLINE);
    cluster
        .run("setup", async move {
            setup.create(&path("/log")).await.unwrap()
        })
        .await;
    cluster.world.lock().unwrap().set_reliable(false);
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let node = format!("writer{writer}");
        let mut client = cluster.client(&node, DEADLINE);
        let work = async move {
            let mut acked = Vec::new();
            for seq in 0..RECORDS {
                let length = 100 + ((writer * 131 + seq * 977) % 20_000) as usize;
                match client
                    .append(&path("/log"), &record(writer, seq, length))
                    .await
                {
                    Ok(offset) => acked.push((writer, seq, offset)),
                    Err(error) => return Err(format!("writer {writer} record {seq}: {error}")),
                }
            }
            Ok(acked)
        };
        handles.push(cluster.world.lock().unwrap().spawn(&node, work));
    }
    let mut acked = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(Ok(records)) => acked.extend(records),
            Ok(Err(error)) => cluster.fail(error),
            Err(error) => cluster.fail(format!("a writer did not finish: {error}")),
        }
    }
    cluster.world.lock().unwrap().set_reliable(true);
    let reader = cluster.client("reader", DEADLINE);
    let missing = cluster
        .run("reader", async move {
            let entry = reader.stat(&path("/log")).await.unwrap();
            let mut missing = Vec::new();
            for (index, chunk) in entry.chunks.iter().enumerate() {
                let located = reader
                    .locate(&path("/log"), index as u64, false)
                    .await
                    .unwrap();
                for url in &located.replicas {
                    let (bytes, _) = reader
                        .read_replica(url, chunk.handle, chunk.version, 0, CHUNK_BYTES)
                        .await
                        .unwrap();
                    for &(writer, seq, offset) in &acked {
                        if offset / CHUNK_BYTES != index as u64 {
                            continue;
                        }
                        let at = (offset % CHUNK_BYTES) as usize;
                        let found = bytes.get(at..).and_then(parse_record);
                        if found.map(|f| (f.0, f.1)) != Some((writer, seq)) {
                            missing.push(format!("({writer}, {seq}) at {offset} on {url}"));
                        }
                    }
                    for (writer, seq, _) in scan_records(&bytes) {
                        if writer >= WRITERS || seq >= RECORDS {
                            missing.push(format!("{url} holds ({writer}, {seq}), never sent"));
                        }
                    }
                }
            }
            missing
        })
        .await;
    if !missing.is_empty() {
        cluster.fail(format!("acknowledged records not found: {missing:?}"));
    }
    cluster.check_no_split_brain();
}

/// F4: a replica that missed a version comes back while every holder of
/// the latest version is down. It is never made primary nor read from: the
/// client gets an error instead, and the data once a good replica returns.
#[madsim::test]
async fn a_stale_replica_that_rejoins_is_never_primary_nor_read() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let (old, new) = (pattern(5000, 1), pattern(5000, 2));
    let (first, second) = (old.clone(), new.clone());
    let mut client = cluster
        .run("client", async move {
            client.create(&path("/f")).await.unwrap();
            client.write(&path("/f"), 0, &first).await.unwrap();
            client
        })
        .await;
    cluster.kill(&cs_name(2));
    client = cluster
        .run("client", async move {
            client.write(&path("/f"), 0, &second).await.unwrap();
            client
        })
        .await;
    cluster.kill(&cs_name(0));
    cluster.kill(&cs_name(1));
    cluster.restart(&cs_name(2));
    let rejoined = Instant::now();
    let mut impatient = cluster.client("impatient", Duration::from_secs(5));
    let (wrote, read) = cluster
        .run("impatient", async move {
            sleep(Duration::from_millis(500)).await;
            let wrote = impatient.write(&path("/f"), 0, b"stale?").await;
            let read = impatient.read(&path("/f"), 0, 5000).await;
            (wrote, read)
        })
        .await;
    if wrote.is_ok() {
        cluster.fail("a write succeeded with only a stale replica up".into());
    }
    match read {
        Ok(bytes) if bytes == old => cluster.fail("the stale replica's bytes were served".into()),
        Ok(bytes) => cluster.fail(format!(
            "a read returned {} bytes with only a stale replica up",
            bytes.len()
        )),
        Err(_) => {}
    }
    let stale_url = cs_url(2);
    let accepted = cluster.accepted.lock().unwrap().clone();
    if accepted
        .iter()
        .any(|(at, _, _, url)| *at >= rejoined && *url == stale_url)
    {
        cluster.fail("the stale replica accepted a mutation as primary".into());
    }
    cluster.restart(&cs_name(0));
    let back = cluster
        .run("client", async move {
            client.read(&path("/f"), 0, 5000).await.unwrap()
        })
        .await;
    if back != new {
        cluster.fail("after a good replica returned, the read is not the latest write".into());
    }
    cluster.check_no_split_brain();
}

/// M3: the master leader is killed again and again while writers keep
/// writing through a primary. The new leader takes the primary's lease over
/// (it claims it in its heartbeats) instead of freezing writes for a lease
/// period, and never names a second primary.
#[madsim::test]
async fn leases_stay_safe_and_writes_go_on_across_master_leader_kills() {
    let cluster = Cluster::start(3);
    let mut setup = cluster.client("setup", DEADLINE);
    cluster
        .run("setup", async move {
            setup.create(&path("/f")).await.unwrap();
            setup
                .write(&path("/f"), 0, &pattern(4096, 0))
                .await
                .unwrap();
        })
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut handles = Vec::new();
    for writer in 0..2u64 {
        let node = format!("writer{writer}");
        let mut client = cluster.client(&node, DEADLINE);
        let (stop, acks) = (stop.clone(), acks.clone());
        let work = async move {
            let mut round = 0;
            while !stop.load(SeqCst) {
                let data = pattern(512, writer * 1000 + round);
                if let Err(error) = client.write(&path("/f"), writer * 1024, &data).await {
                    return Err(format!("writer {writer}: {error}"));
                }
                acks.lock().unwrap().push(Instant::now());
                round += 1;
                sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        };
        handles.push(cluster.world.lock().unwrap().spawn(&node, work));
    }
    for _ in 0..3 {
        sleep(Duration::from_secs(3)).await;
        if let Some(leader) = cluster.leader() {
            cluster.restart_master(leader);
        }
    }
    sleep(Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for handle in handles {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => cluster.fail(error),
            Err(error) => cluster.fail(format!("a writer did not finish: {error}")),
        }
    }
    cluster.check_no_split_brain();
    let acks = acks.lock().unwrap().clone();
    let longest = acks
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    if longest >= settings().lease {
        cluster.fail(format!(
            "writes stopped for {longest:?} across a leader change: a whole lease period or more"
        ));
    }
}

/// M4: the primary is cut off from every master (clients still reach it).
/// It stops accepting mutations when its lease ends by its own clock; the
/// master grants a new lease, with a new version, only after the old one
/// ended by its clock; a secondary refuses the old primary's late mutation.
#[madsim::test]
async fn a_primary_cut_off_from_the_master_stops_at_lease_end() {
    let cluster = Cluster::start(3);
    let client = cluster.client("client", DEADLINE);
    let (client, old) = cluster.run("client", file_with_a_primary(client)).await;
    let primary = old.primary.clone().unwrap();
    cluster.cut_from_masters(&host(&primary), false);
    let cut = Instant::now();
    let (client, new) = cluster.run("client", keep_writing(client, 40)).await;
    let lease = settings().lease;
    let accepted = cluster.accepted.lock().unwrap().clone();
    for (at, handle, _, url) in &accepted {
        if *handle == old.handle && *url == primary && *at > cut + lease {
            cluster.fail(format!(
                "the cut-off primary accepted a mutation {:?} after the cut, past its lease",
                *at - cut
            ));
        }
    }
    if new.primary.as_deref() == Some(primary.as_str()) || new.version <= old.version {
        cluster.fail(format!("no new lease after the cut: {new:?}"));
    }
    // A late mutation from the old primary, at the old version: refused.
    let secondary = new.primary.clone().unwrap();
    let late = ApplyRequest {
        handle: old.handle,
        version: old.version,
        primary: primary.clone(),
        serial: 1_000_000,
        offset: 0,
        client_id: 1,
        data_id: 1,
        pad: true,
    };
    let refused: Result<_, RpcError> = cluster
        .run("client", async move {
            let _keep = client;
            let peer = RpcClient::new(secondary, ClientOptions::default()).unwrap();
            peer.call(
                late,
                |c, r| async move { ChunkClient::new(c).apply(r).await },
            )
            .await
        })
        .await;
    match refused {
        Err(RpcError::Rejected { status, .. }) if status.code() == Code::FailedPrecondition => {}
        other => cluster.fail(format!(
            "a late mutation of the old primary was not refused: {other:?}"
        )),
    }
    cluster.check_no_split_brain();
}

/// A flipped byte in one replica's data is caught by its checksum: the
/// replica answers an error naming the block, and the client reads the same
/// bytes from another replica (scenario F8, the detection half).
#[madsim::test]
async fn a_corrupt_replica_is_detected_and_another_is_read() {
    use cairn_storage::{Disk, OpenMode};
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let data = pattern(100_000, 5);
    let written = data.clone();
    let (client, handle) = cluster
        .run("client", async move {
            client.create(&path("/f")).await.unwrap();
            client.write(&path("/f"), 0, &written).await.unwrap();
            let handle = client.stat(&path("/f")).await.unwrap().chunks[0].handle;
            (client, handle)
        })
        .await;
    let file = std::path::PathBuf::from(format!("chunks/{handle:016x}.chunk"));
    let disk = cluster.world.lock().unwrap().disk(&cs_name(0));
    let mut chunk = disk.open(&file, OpenMode::Write).unwrap();
    let mut byte = [0u8; 1];
    chunk.read_at(70_000, &mut byte).unwrap();
    chunk.write_at(70_000, &[byte[0] ^ 0xff]).unwrap();
    chunk.sync().unwrap();
    let (direct, reads) = cluster
        .run("client", async move {
            let mut client = client;
            let direct = client
                .read_replica(&cs_url(0), handle, 0, 65_536, 100)
                .await;
            let mut reads = Vec::new();
            for _ in 0..6 {
                reads.push(client.read(&path("/f"), 0, 100_000).await);
            }
            (direct, reads)
        })
        .await;
    match direct {
        Err(RpcError::Rejected { status, .. })
            if status.code() == Code::DataLoss && status.message().contains("block 1") => {}
        other => cluster.fail(format!("the corrupt block was not reported: {other:?}")),
    }
    for read in reads {
        match read {
            Ok(bytes) if bytes == data => {}
            Ok(bytes) => cluster.fail(format!("a read returned {} wrong bytes", bytes.len())),
            Err(error) => cluster.fail(format!("a read failed: {error}")),
        }
    }
}

/// M6: a replica reports a higher version than the master's log holds (the
/// master failed after telling replicas, before its entry was seen): the
/// master adopts it, and that replica, the only one at the latest version,
/// is the only one named from then on.
#[madsim::test]
async fn the_master_adopts_a_higher_reported_version() {
    use cairn_rpc::fs::SetVersionRequest;
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let (client, chunk) = cluster
        .run("client", async move {
            client.create(&path("/f")).await.unwrap();
            client.write(&path("/f"), 0, b"before").await.unwrap();
            let chunk = client.stat(&path("/f")).await.unwrap().chunks[0];
            (client, chunk)
        })
        .await;
    let raised = chunk.version + 5;
    let request = SetVersionRequest {
        handle: chunk.handle,
        version: raised,
        primary: cs_url(1),
        secondaries: vec![],
    };
    let (version, located) = cluster
        .run("client", async move {
            let peer = RpcClient::new(cs_url(1), ClientOptions::default()).unwrap();
            peer.call(request, |c, r| async move {
                ChunkClient::new(c).set_version(r).await
            })
            .await
            .unwrap();
            let mut version = 0;
            for _ in 0..100 {
                version = client.stat(&path("/f")).await.unwrap().chunks[0].version;
                if version >= raised {
                    break;
                }
                sleep(Duration::from_millis(100)).await;
            }
            let located = client.locate(&path("/f"), 0, false).await.unwrap();
            (version, located)
        })
        .await;
    if version != raised {
        cluster.fail(format!(
            "the master's version is {version}, not the reported {raised}"
        ));
    }
    if located.replicas != vec![cs_url(1)] {
        cluster.fail(format!(
            "readers are sent to {:?}, not only {}",
            located.replicas,
            cs_url(1)
        ));
    }
}

/// X1: every process loses power at once (unsynced disk writes are lost)
/// and comes back. Every acknowledged write and record append is there;
/// writing goes on.
#[madsim::test]
async fn acknowledged_data_survives_a_whole_cluster_power_loss() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let data = pattern(300_000, 9);
    let written = data.clone();
    let (client, offsets) = cluster
        .run("client", async move {
            client.create(&path("/f")).await.unwrap();
            client.write(&path("/f"), 0, &written).await.unwrap();
            client.create(&path("/log")).await.unwrap();
            let mut offsets = Vec::new();
            for seq in 0..30 {
                offsets.push(
                    client
                        .append(&path("/log"), &record(0, seq, 3000))
                        .await
                        .unwrap(),
                );
            }
            (client, offsets)
        })
        .await;
    for i in 0..MASTERS {
        cluster.kill(&master_name(i));
    }
    for i in 0..3 {
        cluster.kill(&cs_name(i));
    }
    for i in 0..MASTERS {
        cluster.restart_master(i);
    }
    for i in 0..3 {
        cluster.restart(&cs_name(i));
    }
    let (back, records, appended) = cluster
        .run("client", async move {
            let mut client = client;
            let back = client.read(&path("/f"), 0, 300_000).await.unwrap();
            let log = client
                .read(&path("/log"), 0, 4 * CHUNK_BYTES)
                .await
                .unwrap();
            let records: Vec<(u32, u32, u64)> = offsets
                .iter()
                .enumerate()
                .map(|(seq, &offset)| {
                    let found = log.get(offset as usize..).and_then(parse_record);
                    (found.map_or(u32::MAX, |f| f.1), seq as u32, offset)
                })
                .collect();
            let appended = client.append(&path("/log"), &record(0, 99, 10)).await;
            (back, records, appended)
        })
        .await;
    if back != data {
        cluster.fail("the written file differs after the power loss".into());
    }
    for (found, seq, offset) in records {
        if found != seq {
            cluster.fail(format!(
                "record {seq} acknowledged at {offset} is gone after the power loss"
            ));
        }
    }
    if let Err(error) = appended {
        cluster.fail(format!("appending after the power loss failed: {error}"));
    }
    cluster.check_no_split_brain();
}

/// F3: a secondary misses a mutation (the primary's message to it is
/// lost). The write fails and the primary gives its lease up; the client's
/// retry, under a new lease and version, reaches every replica, so a reader
/// sent to any of them sees the acknowledged data.
#[madsim::test]
async fn a_secondary_that_missed_a_write_gets_it_from_the_retry() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let (client, before) = cluster
        .run("client", async move {
            client.create(&path("/f")).await.unwrap();
            client
                .write(&path("/f"), 0, &pattern(5000, 1))
                .await
                .unwrap();
            let located = client.locate(&path("/f"), 0, true).await.unwrap();
            (client, located)
        })
        .await;
    // The data flows client -> primary -> first secondary -> last; the cut
    // only stops the primary's apply to the last secondary.
    let primary = host(before.primary.as_deref().unwrap());
    let last = host(before.replicas.last().unwrap());
    cluster.world.lock().unwrap().cut_one_way(&primary, &last);
    let data = pattern(5000, 2);
    let written = data.clone();
    let handle = cluster.world.lock().unwrap().spawn("client", async move {
        let mut client = client;
        let result = client.write(&path("/f"), 0, &written).await;
        (client, result)
    });
    sleep(Duration::from_secs(1)).await;
    cluster.world.lock().unwrap().heal(&primary, &last);
    let (client, result) = handle.await.unwrap();
    if let Err(error) = result {
        cluster.fail(format!("the retried write failed: {error}"));
    }
    let copies = cluster
        .run("client", async move {
            let entry = client.stat(&path("/f")).await.unwrap();
            let chunk = entry.chunks[0];
            let mut copies = Vec::new();
            for i in 0..3 {
                let (bytes, version) = client
                    .read_replica(&cs_url(i), chunk.handle, chunk.version, 0, 5000)
                    .await
                    .unwrap();
                copies.push((version, bytes.to_vec()));
            }
            (chunk.version, copies)
        })
        .await;
    let (version, copies) = copies;
    if version <= before.version {
        cluster.fail("the write succeeded without a new lease: the cut did not fail it".into());
    }
    for (i, (replica_version, bytes)) in copies.iter().enumerate() {
        if *replica_version != version || *bytes != data {
            cluster.fail(format!("replica {i} does not hold the acknowledged write"));
        }
    }
    cluster.check_no_split_brain();
}
