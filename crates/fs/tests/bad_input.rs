//! The file store on the simulator, given bad input (issue 13): files
//! deleted or renamed under a writer, records over a quarter of a chunk,
//! and a chunkserver whose chunk and metadata files were damaged while it
//! was down. Each gets a clear error, and nothing acknowledged is lost.
#![cfg(madsim)]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_fs::ClientError;
use cairn_rpc::fs::FsErrorCode;
use cairn_storage::{Disk, OpenMode};
use common::*;
use tokio::time::{Instant, sleep};

const DEADLINE: Duration = Duration::from_secs(60);

/// One client appends records to `/dir/log` (`append`), or writes them one
/// after another from its start, until it fails; another, after a second,
/// deletes the file (`rename` false) or renames it to `/dir/moved`
/// (`rename` true). Returns the writer's acknowledged (seq, offset), its
/// error and how long after the change it came, and a client to look with.
async fn change_under_a_writer(
    cluster: &Cluster,
    rename: bool,
    append: bool,
) -> (Vec<(u32, u64)>, ClientError, Duration, cairn_fs::Client) {
    let mut other = cluster.client("other", DEADLINE);
    let other = cluster
        .run("other", async move {
            other.mkdir(&path("/dir"), false).await.unwrap();
            other.create(&path("/dir/log")).await.unwrap();
            other
        })
        .await;
    let acked: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let mut writer = cluster.client("writer", DEADLINE);
    let appending = {
        let acked = acked.clone();
        cluster.world.lock().unwrap().spawn("writer", async move {
            for seq in 0.. {
                let (file, data) = (path("/dir/log"), record(0, seq, 500));
                let done = if append {
                    writer.append(&file, &data).await
                } else {
                    let offset = u64::from(seq) * data.len() as u64;
                    writer.write(&file, offset, &data).await.map(|()| offset)
                };
                match done {
                    Ok(offset) => acked.lock().unwrap().push((seq, offset)),
                    Err(error) => return (error, Instant::now()),
                }
                sleep(Duration::from_millis(10)).await;
            }
            unreachable!("the writer stops at its first error")
        })
    };
    let (other, changed) = cluster
        .run("other", async move {
            let mut other = other;
            sleep(Duration::from_secs(1)).await;
            if rename {
                other
                    .rename(&path("/dir/log"), &path("/dir/moved"), false)
                    .await
                    .unwrap();
            } else {
                other.delete(&path("/dir/log"), false).await.unwrap();
            }
            (other, Instant::now())
        })
        .await;
    let (error, failed) = match appending.await {
        Ok(outcome) => outcome,
        Err(error) => cluster.fail(format!("the writer did not finish: {error}")),
    };
    let acked = acked.lock().unwrap().clone();
    (
        acked,
        error,
        failed.saturating_duration_since(changed),
        other,
    )
}

/// A file deleted under a writer: the writer gets "not found" within a
/// lease (its cached lease may take mutations until then), and the file
/// stays deleted: a new file of that name is empty.
async fn deleted_under_a_writer(append: bool) {
    let cluster = Cluster::start(3);
    let (acked, error, after, other) = change_under_a_writer(&cluster, false, append).await;
    if code(&error) != Some(FsErrorCode::NotFound) {
        cluster.fail(format!("the writer got {error:?}, not a not-found error"));
    }
    if after > settings().lease + Duration::from_secs(1) {
        cluster.fail(format!("the writer failed only {after:?} after the delete"));
    }
    if acked.is_empty() {
        cluster.fail("nothing was written before the delete".into());
    }
    let (gone, fresh) = cluster
        .run("other", async move {
            let mut other = other;
            let gone = other.stat(&path("/dir/log")).await;
            other.create(&path("/dir/log")).await.unwrap();
            let fresh = other.stat(&path("/dir/log")).await.unwrap();
            let read = other.read(&path("/dir/log"), 0, 1 << 20).await.unwrap();
            (
                gone.map(|e| e.chunks.len()),
                (fresh.chunks.len(), read.len()),
            )
        })
        .await;
    match gone {
        Err(error) if code(&error) == Some(FsErrorCode::NotFound) => {}
        other => cluster.fail(format!("the deleted file came back: {other:?}")),
    }
    if fresh != (0, 0) {
        cluster.fail(format!(
            "a new file of the deleted name has (chunks, bytes) {fresh:?}"
        ));
    }
    cluster.check_no_split_brain();
}

/// A file renamed under a writer: the writer gets "not found" for the old
/// name, and every record it had acknowledged is in the renamed file.
async fn renamed_under_a_writer(append: bool) {
    let cluster = Cluster::start(3);
    let (acked, error, after, other) = change_under_a_writer(&cluster, true, append).await;
    if code(&error) != Some(FsErrorCode::NotFound) {
        cluster.fail(format!("the writer got {error:?}, not a not-found error"));
    }
    if after > settings().lease + Duration::from_secs(1) {
        cluster.fail(format!("the writer failed only {after:?} after the rename"));
    }
    let moved = cluster
        .run("other", async move {
            let mut other = other;
            other.read(&path("/dir/moved"), 0, 4 * CHUNK_BYTES).await
        })
        .await;
    let moved = moved.unwrap_or_else(|e| cluster.fail(format!("reading the renamed file: {e}")));
    for (seq, offset) in &acked {
        let found = moved.get(*offset as usize..).and_then(parse_record);
        if found.map(|(_, s, _)| s) != Some(*seq) {
            cluster.fail(format!(
                "record {seq} acknowledged at {offset} is not in the renamed file"
            ));
        }
    }
    cluster.check_no_split_brain();
}

#[madsim::test]
async fn appending_to_a_file_deleted_meanwhile_fails_clearly() {
    deleted_under_a_writer(true).await;
}

#[madsim::test]
async fn writing_to_a_file_deleted_meanwhile_fails_clearly() {
    deleted_under_a_writer(false).await;
}

#[madsim::test]
async fn appending_to_a_file_renamed_meanwhile_fails_clearly_and_loses_nothing() {
    renamed_under_a_writer(true).await;
}

#[madsim::test]
async fn writing_to_a_file_renamed_meanwhile_fails_clearly_and_loses_nothing() {
    renamed_under_a_writer(false).await;
}

/// A record over a quarter of a chunk is refused before any message is
/// sent; one of exactly a quarter is appended.
#[madsim::test]
async fn a_record_over_a_quarter_chunk_is_refused_before_anything_is_sent() {
    let cluster = Cluster::start(3);
    let max = settings().max_record_bytes() as usize;
    let mut client = cluster.client("client", DEADLINE);
    let client = cluster
        .run("client", async move {
            client.create(&path("/log")).await.unwrap();
            client
        })
        .await;
    let sent = cluster.world.lock().unwrap().total_rpcs();
    let (client, refused) = cluster
        .run("client", async move {
            let mut client = client;
            let refused = client.append(&path("/log"), &vec![7; max + 1]).await;
            (client, refused)
        })
        .await;
    let after = cluster.world.lock().unwrap().total_rpcs();
    match refused {
        Err(ClientError::RecordTooLarge { len, max: limit })
            if len == max as u64 + 1 && limit == max as u64 => {}
        other => cluster.fail(format!("an oversized record got {other:?}")),
    }
    if after != sent {
        cluster.fail(format!(
            "{} messages were sent for a refused record",
            after - sent
        ));
    }
    let fits = cluster
        .run("client", async move {
            let mut client = client;
            client.append(&path("/log"), &vec![7; max]).await
        })
        .await;
    if let Err(error) = fits {
        cluster.fail(format!(
            "a record of exactly a quarter chunk failed: {error}"
        ));
    }
}

/// How a replica's files on cs0 are damaged while it is down.
#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    TruncatedData,
    GarbageMeta,
    TruncatedMeta,
    MissingMeta,
    MissingData,
    FlippedByte,
}

const DAMAGES: [Damage; 7] = [
    Damage::None,
    Damage::TruncatedData,
    Damage::GarbageMeta,
    Damage::TruncatedMeta,
    Damage::MissingMeta,
    Damage::MissingData,
    Damage::FlippedByte,
];

fn damage(disk: &dyn Disk, handle: u64, how: Damage) {
    let data = PathBuf::from(format!("chunks/{handle:016x}.chunk"));
    let meta = PathBuf::from(format!("chunks/{handle:016x}.meta"));
    match how {
        Damage::None => {}
        Damage::TruncatedData => {
            let mut file = disk.open(&data, OpenMode::Write).unwrap();
            file.set_len(1000).unwrap();
            file.sync().unwrap();
        }
        Damage::GarbageMeta => {
            let mut file = disk.open(&meta, OpenMode::Write).unwrap();
            file.write_at(0, &pattern(64, handle)).unwrap();
            file.sync().unwrap();
        }
        Damage::TruncatedMeta => {
            let mut file = disk.open(&meta, OpenMode::Write).unwrap();
            file.set_len(20).unwrap();
            file.sync().unwrap();
        }
        Damage::MissingMeta => disk.remove_file(&meta).unwrap(),
        Damage::MissingData => disk.remove_file(&data).unwrap(),
        Damage::FlippedByte => {
            // In the last, partly filled block: the one an append extends.
            let mut file = disk.open(&data, OpenMode::Write).unwrap();
            let mut byte = [0u8; 1];
            file.read_at(90_000, &mut byte).unwrap();
            file.write_at(90_000, &[byte[0] ^ 0x5a]).unwrap();
            file.sync().unwrap();
        }
    }
    disk.sync_dir(std::path::Path::new("chunks")).unwrap();
}

/// One chunkserver's chunk and metadata files are damaged while it is
/// down, each file in another way. It starts, serves its intact replica,
/// never serves a damaged one (it is left out of its reports, or its
/// checksum fails), and every file still reads right and takes appends.
#[madsim::test]
async fn damaged_chunk_and_metadata_files_are_never_served() {
    const SIZE: usize = 100_000;
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", Duration::from_secs(20));
    let (client, handles) = cluster
        .run("client", async move {
            let mut handles = Vec::new();
            for (i, _) in DAMAGES.iter().enumerate() {
                let file = path(&format!("/f{i}"));
                client.create(&file).await.unwrap();
                client
                    .write(&file, 0, &pattern(SIZE, i as u64))
                    .await
                    .unwrap();
                handles.push(client.stat(&file).await.unwrap().chunks[0].handle);
            }
            (client, handles)
        })
        .await;
    cluster.kill(&cs_name(0));
    let disk = cluster.world.lock().unwrap().disk(&cs_name(0));
    for (&handle, &how) in handles.iter().zip(DAMAGES.iter()) {
        damage(&disk, handle, how);
    }
    cluster.restart(&cs_name(0));
    let outcome = cluster
        .run("client", async move {
            let mut client = client;
            sleep(Duration::from_secs(1)).await;
            let mut outcome = Vec::new();
            for (i, &handle) in handles.iter().enumerate() {
                let file = path(&format!("/f{i}"));
                let direct = client
                    .read_replica(&cs_url(0), handle, 0, 0, SIZE as u64)
                    .await
                    .map(|(bytes, _)| bytes.to_vec());
                let named = client.locate(&file, 0, false).await.unwrap().replicas;
                // What cs0 holds once named: the healer may have replaced
                // its damaged replica by a good clone in between.
                let named_holds = client
                    .read_replica(&cs_url(0), handle, 0, 0, SIZE as u64)
                    .await
                    .map(|(bytes, _)| bytes.to_vec());
                let mut reads = Vec::new();
                for _ in 0..4 {
                    reads.push(client.read(&file, 0, SIZE as u64).await);
                }
                let appended = client.append(&file, &record(0, i as u32, 100)).await;
                let whole = client.read(&file, 0, SIZE as u64).await;
                let named = (named, named_holds);
                outcome.push((direct, named, reads, appended, whole));
            }
            outcome
        })
        .await;
    for (i, (direct, named, reads, appended, whole)) in outcome.into_iter().enumerate() {
        let (how, expected) = (DAMAGES[i], pattern(SIZE, i as u64));
        // The leader's healer may have replaced the damaged replica by a
        // clone of a good one already (healing.rs): then it is good.
        let healed = matches!(&direct, Ok(bytes) if *bytes == expected);
        match (how, direct) {
            (_, Ok(_)) if healed => {}
            (Damage::None, other) => cluster.fail(format!(
                "cs0 does not serve its intact replica: {:?}",
                other.map(|b| b.len())
            )),
            (_, Ok(bytes)) => cluster.fail(format!(
                "cs0 served {} bytes of its replica with {how:?}",
                bytes.len()
            )),
            (_, Err(_)) => {}
        }
        let (named, named_holds) = named;
        let named_cs0 = named.contains(&cs_url(0));
        let healed_when_named = matches!(&named_holds, Ok(bytes) if *bytes == expected);
        if !healed_when_named && !matches!(how, Damage::None | Damage::FlippedByte) && named_cs0 {
            cluster.fail(format!("readers are sent to cs0's replica with {how:?}"));
        }
        for read in reads {
            match read {
                Ok(bytes) if bytes == expected => {}
                Ok(bytes) => cluster.fail(format!(
                    "reading the file with {how:?} on cs0 gave {} wrong bytes",
                    bytes.len()
                )),
                Err(error) => cluster.fail(format!(
                    "reading the file with {how:?} on cs0 failed: {error}"
                )),
            }
        }
        if let Err(error) = appended {
            cluster.fail(format!(
                "appending to the file with {how:?} on cs0 failed: {error}"
            ));
        }
        match whole {
            Ok(bytes) if bytes == expected => {}
            other => cluster.fail(format!(
                "after the append, the file with {how:?} on cs0 reads {:?}",
                other.map(|b| b.len())
            )),
        }
    }
}
