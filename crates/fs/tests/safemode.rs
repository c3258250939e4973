//! The file store on the simulator, scenario M2 of `reference/gfs.md`
//! §5.2: a cold start. Every master and chunkserver stops; the masters
//! start first, then the chunkservers one by one. The new leader, having
//! heard no chunk report, is in safemode — reads are served, but it places
//! and leases nothing — until the chunks reported reach the threshold (and
//! a short extension passes), or, with a chunkserver that never returns,
//! until the timeout. An operator's enter holds safemode until their leave.
//! And scenario M5: metadata read from a follower (a shadow master) while
//! the leader is down is served at a read index or refused, never older
//! than a write the client saw acknowledged.
#![cfg(madsim)]

mod common;

use std::time::Duration;

use cairn_fs::{Client, FsSettings, MasterClient};
use cairn_rpc::fs::SafemodeReply;
use common::*;
use tokio::time::{Instant, sleep};

const DEADLINE: Duration = Duration::from_secs(60);
/// The chunks of `/f`, one replica each, spread over the chunkservers.
const CHUNKS: u64 = 6;
const CHUNKSERVERS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(8);
/// How long the chunkservers' reports may take to change what the leader
/// says (a few heartbeats).
const SETTLE: Duration = Duration::from_secs(3);

fn one_replica() -> FsSettings {
    FsSettings {
        replication: 1,
        safemode_timeout: TIMEOUT,
        ..settings()
    }
}

/// The leader's safemode after an operator's `enter` or `leave`, if asked.
async fn safemode(cluster: &Cluster, enter: bool, leave: bool) -> SafemodeReply {
    let urls: Vec<String> = (0..MASTERS).map(master_url).collect();
    cluster
        .run("admin", async move {
            let master = MasterClient::new(&urls, Duration::from_secs(1), DEADLINE).unwrap();
            master.safemode(enter, leave).await.unwrap()
        })
        .await
}

/// Polls the leader's safemode until `done` holds (failing after `within`).
async fn safemode_until(
    cluster: &Cluster,
    within: Duration,
    what: &str,
    done: impl Fn(&SafemodeReply) -> bool,
) -> SafemodeReply {
    let deadline = Instant::now() + within;
    loop {
        let reply = safemode(cluster, false, false).await;
        if done(&reply) {
            return reply;
        }
        if Instant::now() >= deadline {
            cluster.fail(format!(
                "{what} did not happen within {within:?}: {reply:?}"
            ));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `/f`, `CHUNKS` chunks, and returns the chunkserver holding each
/// (pausing between chunks so the reports spread them).
async fn write_spread(cluster: &Cluster, mut client: Client) -> (Client, Vec<String>) {
    let (client, holders) = cluster
        .run("client", async move {
            client.create(&path("/f")).await.unwrap();
            let mut holders = Vec::new();
            for i in 0..CHUNKS {
                let data = pattern(CHUNK_BYTES as usize, i);
                client
                    .write(&path("/f"), i * CHUNK_BYTES, &data)
                    .await
                    .unwrap();
                let located = client.locate(&path("/f"), i, true).await.unwrap();
                holders.push(located.primary.unwrap_or_default());
                sleep(Duration::from_millis(300)).await;
            }
            (client, holders)
        })
        .await;
    for i in 0..CHUNKSERVERS {
        if !holders.contains(&cs_url(i)) {
            cluster.fail(format!(
                "no chunk of /f was placed on {}: {holders:?}",
                cs_url(i)
            ));
        }
    }
    (client, holders)
}

/// Stops every node, then starts the masters alone and waits for a leader.
async fn cold_start_masters(cluster: &Cluster) -> Instant {
    for i in 0..CHUNKSERVERS {
        cluster.kill(&cs_name(i));
    }
    for i in 0..MASTERS {
        cluster.kill(&master_name(i));
        cluster.masters.lock().unwrap()[i] = None;
    }
    sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    for i in 0..MASTERS {
        cluster.restart(&master_name(i));
    }
    while cluster.leader().is_none() {
        sleep(Duration::from_millis(100)).await;
    }
    started
}

/// A write to a new file with a short deadline: refused while in safemode,
/// with a message that says so.
async fn write_refused(cluster: &Cluster, file: &'static str) {
    let mut creator = cluster.client("creator", DEADLINE);
    let mut writer = cluster.client("writer", Duration::from_secs(2));
    let result = cluster
        .run("writer", async move {
            creator.create(&path(file)).await.unwrap();
            writer.write(&path(file), 0, b"while in safemode").await
        })
        .await;
    match result {
        Err(error) if error.to_string().contains("safemode") => {}
        other => cluster.fail(format!(
            "a write in safemode answered {other:?}, not a refusal naming safemode"
        )),
    }
}

#[madsim::test]
async fn a_cold_start_stays_in_safemode_until_the_reports_meet_the_threshold() {
    let cluster = Cluster::start_with_settings(CHUNKSERVERS, one_replica());
    cluster.world.lock().unwrap().add_client("admin");
    let client = cluster.client("client", DEADLINE);
    let (client, holders) = write_spread(&cluster, client).await;
    cold_start_masters(&cluster).await;
    let on = safemode(&cluster, false, false).await;
    assert!(on.on, "a leader with no report is in safemode: {on:?}");
    write_refused(&cluster, "/g").await;
    let mut reported = 0;
    for i in 0..CHUNKSERVERS - 1 {
        cluster.restart(&cs_name(i));
        reported += holders.iter().filter(|h| **h == cs_url(i)).count() as u64;
        let reply = safemode_until(&cluster, SETTLE, "the count of reports", |r| {
            r.reported_chunks == reported && r.total_chunks == CHUNKS
        })
        .await;
        assert!(
            reply.on,
            "{reported} of {CHUNKS} chunks reported: {reply:?}"
        );
    }
    // Reads are served in safemode, from the chunkservers that reported.
    let (index, _) = holders
        .iter()
        .enumerate()
        .find(|(_, h)| **h == cs_url(0))
        .unwrap();
    let offset = index as u64 * CHUNK_BYTES;
    let mut reader = client;
    let read = cluster
        .run("client", async move {
            reader.read(&path("/f"), offset, 1000).await
        })
        .await
        .unwrap();
    assert_eq!(read, pattern(CHUNK_BYTES as usize, index as u64)[..1000]);
    cluster.restart(&cs_name(CHUNKSERVERS - 1));
    let off = safemode_until(&cluster, SETTLE, "leaving safemode", |r| !r.on).await;
    assert!(off.reason.contains("threshold"), "{off:?}");
    assert_eq!(off.reported_chunks, CHUNKS);
    let mut writer = cluster.client("client2", DEADLINE);
    cluster
        .run("client2", async move {
            writer.create(&path("/h")).await.unwrap();
            writer
                .write(&path("/h"), 0, b"after safemode")
                .await
                .unwrap();
        })
        .await;
}

#[madsim::test]
async fn a_chunkserver_that_never_returns_ends_safemode_at_the_timeout() {
    let cluster = Cluster::start_with_settings(CHUNKSERVERS, one_replica());
    cluster.world.lock().unwrap().add_client("admin");
    let client = cluster.client("client", DEADLINE);
    let (_, holders) = write_spread(&cluster, client).await;
    let started = cold_start_masters(&cluster).await;
    for i in 0..CHUNKSERVERS - 1 {
        cluster.restart(&cs_name(i));
    }
    let reported = holders
        .iter()
        .filter(|h| **h != cs_url(CHUNKSERVERS - 1))
        .count() as u64;
    let waiting = safemode_until(&cluster, SETTLE, "the count of reports", |r| {
        r.reported_chunks == reported
    })
    .await;
    assert!(waiting.on, "{waiting:?}");
    let first_seen = Instant::now();
    let off = safemode_until(&cluster, TIMEOUT + SETTLE, "the timeout", |r| !r.on).await;
    let left = Instant::now();
    assert!(off.reason.contains("timeout"), "{off:?}");
    if left < started + TIMEOUT || left > first_seen + TIMEOUT + Duration::from_secs(1) {
        cluster.fail(format!(
            "safemode ended {:?} after the masters started (the timeout is {TIMEOUT:?})",
            left - started
        ));
    }
    let mut writer = cluster.client("client2", DEADLINE);
    cluster
        .run("client2", async move {
            writer.create(&path("/h")).await.unwrap();
            writer
                .write(&path("/h"), 0, b"after the timeout")
                .await
                .unwrap();
        })
        .await;
}

#[madsim::test]
async fn an_operator_enters_and_leaves_safemode() {
    let cluster = Cluster::start(CHUNKSERVERS);
    cluster.world.lock().unwrap().add_client("admin");
    let mut client = cluster.client("client", DEADLINE);
    let client = cluster
        .run("client", async move {
            client.create(&path("/f")).await.unwrap();
            client.write(&path("/f"), 0, b"before").await.unwrap();
            client
        })
        .await;
    let entered = safemode(&cluster, true, false).await;
    assert!(entered.on && entered.manual, "{entered:?}");
    sleep(Duration::from_secs(40)).await;
    let held = safemode(&cluster, false, false).await;
    assert!(
        held.on && held.manual,
        "a manual enter outlasts the timeout: {held:?}"
    );
    write_refused(&cluster, "/g").await;
    let mut reader = client;
    let read = cluster
        .run("client", async move {
            reader.read(&path("/f"), 0, 100).await.unwrap()
        })
        .await;
    assert_eq!(read, b"before");
    let left = safemode(&cluster, false, true).await;
    assert!(!left.on && !left.manual, "{left:?}");
    let mut writer = cluster.client("client2", DEADLINE);
    cluster
        .run("client2", async move {
            writer.create(&path("/h")).await.unwrap();
            writer.write(&path("/h"), 0, b"after leave").await.unwrap();
        })
        .await;
}

/// M5: a stat sent to one follower alone, while the leader is down and
/// after a new one is elected, either finds every file whose creation was
/// acknowledged or is refused; never an older namespace.
#[madsim::test]
async fn a_follower_serves_metadata_at_a_read_index_or_refuses() {
    let cluster = Cluster::start(CHUNKSERVERS);
    cluster.world.lock().unwrap().add_client("admin");
    let mut client = cluster.client("client", DEADLINE);
    let client = cluster
        .run("client", async move {
            client.create(&path("/a")).await.unwrap();
            client
        })
        .await;
    let leader = cluster.leader().unwrap();
    let follower = (leader + 1) % MASTERS;
    cluster.kill(&master_name(leader));
    cluster.masters.lock().unwrap()[leader] = None;
    let shadow = vec![master_url(follower)];
    let stat = |file: &'static str, deadline: Duration| {
        let shadow = shadow.clone();
        async move {
            let master = MasterClient::new(&shadow, Duration::from_millis(500), deadline).unwrap();
            master.stat(&path(file)).await
        }
    };
    // While no leader is elected, and after: found, or refused.
    let mut found = false;
    for _ in 0..30 {
        match cluster
            .run("admin", stat("/a", Duration::from_millis(500)))
            .await
        {
            Ok(entry) => {
                assert_eq!(entry.path, "/a");
                found = true;
            }
            Err(error) if cairn_fs::MasterError::code(&error).is_none() => {}
            Err(error) => cluster.fail(format!("a follower answered a stale namespace: {error}")),
        }
        sleep(Duration::from_millis(100)).await;
    }
    if !found {
        cluster.fail("the follower never answered once a new leader was elected".into());
    }
    let mut client = client;
    cluster
        .run("client", async move {
            client.create(&path("/b")).await.unwrap();
        })
        .await;
    match cluster.run("admin", stat("/b", DEADLINE)).await {
        Ok(entry) => assert_eq!(entry.path, "/b"),
        Err(error) => cluster.fail(format!("a follower missed an acknowledged create: {error}")),
    }
}
