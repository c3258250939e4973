//! The client's streaming writer and reader on the simulator: several
//! mutations and reads in flight, in order, across chunks, and through a
//! chunkserver's death.
#![cfg(madsim)]

mod common;

use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// Writes `data` at 0 of `file` through a writer, in buffers of `buffer`
/// bytes; returns what the writer says it wrote.
async fn stream_in(client: &mut cairn_fs::Client, file: &str, data: &[u8], buffer: usize) -> u64 {
    let mut writer = client.writer(&path(file), 0);
    for piece in data.chunks(buffer) {
        writer.write(piece).await.unwrap();
    }
    writer.finish().await.unwrap()
}

/// A writer fed odd-sized buffers across five and a half chunks leaves the
/// file equal to them on every replica, and a reader gives it back whole
/// and in order, ending at the file's end.
#[madsim::test]
async fn a_streamed_file_reads_back_equal_on_every_replica() {
    let cluster = Cluster::start(4);
    let mut client = cluster.client("client", DEADLINE);
    let data = pattern(11 * CHUNK_BYTES as usize / 2, 3);
    let expected = data.clone();
    let work = async move {
        client.create(&path("/s")).await.unwrap();
        let written = stream_in(&mut client, "/s", &data, 77_777).await;
        let mut reader = client.reader(&path("/s"), 0, u64::MAX);
        let mut back = Vec::new();
        let mut pieces = 0;
        while let Some(bytes) = reader.next().await.unwrap() {
            back.extend_from_slice(&bytes);
            pieces += 1;
        }
        drop(reader);
        (client, written, back, pieces)
    };
    let (client, written, back, pieces) = cluster.run("client", work).await;
    assert_eq!(written, expected.len() as u64, "the writer's count");
    if back != expected {
        cluster.fail(format!(
            "read back {} bytes in {pieces} pieces, not the {} written",
            back.len(),
            expected.len()
        ));
    }
    let replicas = cluster
        .run("client", async move {
            let entry = client.stat(&path("/s")).await.unwrap();
            let mut all = Vec::new();
            for chunk in entry.chunks {
                all.push(cluster_replicas(&client, chunk.handle).await);
            }
            all
        })
        .await;
    assert_eq!(replicas.len(), 6, "five and a half chunks: six");
    for (index, copies) in replicas.iter().enumerate() {
        assert_eq!(copies.len(), 3, "chunk {index} has three replicas");
        let from = index * CHUNK_BYTES as usize;
        let to = (from + CHUNK_BYTES as usize).min(expected.len());
        for copy in copies {
            if copy[..] != expected[from..to] {
                cluster.fail(format!("a replica of chunk {index} differs from the data"));
            }
        }
    }
}

/// Fails unless what was read back is what was written.
fn same(cluster: &Cluster, back: &[u8], expected: &[u8]) {
    if back != expected {
        cluster.fail(format!(
            "read back {} bytes, not the {} written",
            back.len(),
            expected.len()
        ));
    }
}

/// Every replica of `handle` on the four chunkservers that answers.
async fn cluster_replicas(client: &cairn_fs::Client, handle: u64) -> Vec<Vec<u8>> {
    let mut copies = Vec::new();
    for i in 0..4 {
        if let Ok((bytes, _)) = client
            .read_replica(&cs_url(i), handle, 0, 0, CHUNK_BYTES)
            .await
        {
            copies.push(bytes.to_vec());
        }
    }
    copies
}

/// A reader that cached a chunkserver's location carries on from the other
/// replicas when that chunkserver dies part-way through the file.
#[madsim::test]
async fn a_reader_carries_on_when_a_replica_dies() {
    let cluster = Cluster::start(4);
    let mut client = cluster.client("client", DEADLINE);
    let data = pattern(4 * CHUNK_BYTES as usize, 5);
    let expected = data.clone();
    let world = cluster.world.clone();
    let work = async move {
        client.create(&path("/r")).await.unwrap();
        client.write(&path("/r"), 0, &data).await.unwrap();
        let mut reader = client.reader(&path("/r"), 0, u64::MAX);
        let mut back = reader.next().await.unwrap().unwrap().to_vec();
        // Every chunk has three replicas on four servers: this one holds
        // some of them, which the reader has already located.
        world.lock().unwrap().kill(&cs_name(1));
        while let Some(bytes) = reader.next().await.unwrap() {
            back.extend_from_slice(&bytes);
        }
        back
    };
    let back = cluster.run("client", work).await;
    same(&cluster, &back, &expected);
}

/// A writer whose chunkserver dies mid-stream retries the pieces that
/// failed (a new primary once the lease ends) and the file reads back
/// whole.
#[madsim::test]
async fn a_streamed_write_survives_a_chunkserver_dying() {
    let cluster = Cluster::start(5);
    let mut client = cluster.client("client", DEADLINE);
    let data = pattern(6 * CHUNK_BYTES as usize, 9);
    let expected = data.clone();
    let world = cluster.world.clone();
    let work = async move {
        client.create(&path("/w")).await.unwrap();
        let half = data.len() / 2;
        let mut writer = client.writer(&path("/w"), 0);
        writer.write(&data[..half]).await.unwrap();
        world.lock().unwrap().kill(&cs_name(2));
        writer.write(&data[half..]).await.unwrap();
        let written = writer.finish().await.unwrap();
        let back = client
            .read(&path("/w"), 0, data.len() as u64)
            .await
            .unwrap();
        (written, back)
    };
    let (written, back) = cluster.run("client", work).await;
    assert_eq!(written, expected.len() as u64, "the writer's count");
    same(&cluster, &back, &expected);
    cluster.check_no_split_brain();
}

/// A client keeps the read locations the master gave it for a lease
/// period: once a chunk was read, further `read` calls of it go straight to
/// its replicas, and succeed with the client cut from every master; a chunk
/// it has not located yet cannot be read then (the cut is real).
#[madsim::test]
async fn repeated_reads_need_no_master_within_a_lease() {
    let cluster = Cluster::start(3);
    let mut writer = cluster.client("writer", DEADLINE);
    let data = pattern(2 * CHUNK_BYTES as usize, 5);
    let expected = data.clone();
    cluster
        .run("writer", async move {
            writer.create(&path("/r")).await.unwrap();
            writer.write(&path("/r"), 0, &data).await.unwrap();
        })
        .await;
    let mut reader = cluster.client("reader", Duration::from_secs(3));
    let first = cluster
        .run("reader", async move {
            let first = reader.read(&path("/r"), 0, 1024).await.unwrap();
            (reader, first)
        })
        .await;
    let (mut reader, first) = first;
    assert_eq!(first[..], expected[..1024], "the first read");
    cluster.cut_from_masters("reader", false);
    let piece = CHUNK_BYTES / 8;
    let (back, beyond) = cluster
        .run("reader", async move {
            let mut back = Vec::new();
            for i in 0..8 {
                back.extend(reader.read(&path("/r"), i * piece, piece).await.unwrap());
            }
            let beyond = reader.read(&path("/r"), CHUNK_BYTES, piece).await;
            (back, beyond)
        })
        .await;
    same(&cluster, &back, &expected[..CHUNK_BYTES as usize]);
    assert!(
        beyond.is_err(),
        "chunk 1 was read with every master cut off: {beyond:?}"
    );
}
