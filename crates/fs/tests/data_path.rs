//! The file store's data path on the simulator, without failures:
//! scenarios B1-B4 of `reference/gfs.md` §5.2 (replica equality, pad-over,
//! a big write across chunks, concurrent record appends).
#![cfg(madsim)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_fs::{Client, ClientError};
use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// B1: writes and appends to one chunk leave its three replicas byte-equal
/// at one version.
#[madsim::test]
async fn replicas_are_equal_after_writes_and_appends() {
    let cluster = Cluster::start(4);
    let mut client = cluster.client("client", DEADLINE);
    let work = async move {
        client.create(&path("/f")).await.unwrap();
        client
            .write(&path("/f"), 0, &pattern(1000, 1))
            .await
            .unwrap();
        client
            .write(&path("/f"), 500, &pattern(3000, 2))
            .await
            .unwrap();
        for seq in 0..20 {
            let record = record(0, seq, 100 + seq as usize * 10);
            client.append(&path("/f"), &record).await.unwrap();
        }
        client
    };
    let client = cluster.run("client", work).await;
    let chunks = cluster
        .run("client", async move {
            (equal_replicas_owned(&client, "/f", 4).await, client)
        })
        .await
        .0;
    let mut expected = pattern(1000, 1);
    expected.truncate(500);
    expected.extend(pattern(3000, 2));
    assert_eq!(&chunks[0][..3500], &expected[..], "the written bytes");
    assert_eq!(
        scan_records(&chunks[0][3500..]).len(),
        20,
        "the appended records"
    );
    cluster.check_no_split_brain();
}

/// B2: a record that does not fit pads the chunk and lands at the next
/// chunk's start; records over a quarter chunk are refused.
#[madsim::test]
async fn a_record_that_does_not_fit_pads_the_chunk() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client("client", DEADLINE);
    let work = async move {
        client.create(&path("/log")).await.unwrap();
        let size = 60 << 10;
        let mut offsets = Vec::new();
        for seq in 0..5 {
            let record = record(1, seq, size - RECORD_OVERHEAD);
            offsets.push(client.append(&path("/log"), &record).await.unwrap());
        }
        let too_big = vec![0; (CHUNK_BYTES / 4 + 1) as usize];
        let refused = client.append(&path("/log"), &too_big).await.unwrap_err();
        (client, offsets, refused)
    };
    let (client, offsets, refused) = cluster.run("client", work).await;
    let size = 60 << 10;
    assert_eq!(offsets, vec![0, size, 2 * size, 3 * size, CHUNK_BYTES]);
    assert!(
        matches!(refused, ClientError::RecordTooLarge { .. }),
        "{refused:?}"
    );
    let chunks = cluster
        .run("client", async move {
            let chunks = equal_replicas_owned(&client, "/log", 3).await;
            (client, chunks)
        })
        .await
        .1;
    let first = &chunks[0];
    assert_eq!(
        first.len() as u64,
        CHUNK_BYTES,
        "the first chunk is padded to its end"
    );
    assert!(
        first[4 * size as usize..].iter().all(|&b| b == 0),
        "padding is zeros"
    );
    assert_eq!(parse_record(&chunks[1]).map(|r| (r.0, r.1)), Some((1, 4)));
}

/// Every replica of each chunk of `file` (on chunkservers 0..`servers`)
/// holds the same bytes at the master's version; returns the chunks' bytes.
async fn equal_replicas_owned(client: &Client, file: &str, servers: usize) -> Vec<Vec<u8>> {
    let entry = client.stat(&path(file)).await.unwrap();
    let mut chunks = Vec::new();
    for chunk in entry.chunks {
        let mut copies = Vec::new();
        for i in 0..servers {
            if let Ok((bytes, version)) = client
                .read_replica(&cs_url(i), chunk.handle, 0, 0, CHUNK_BYTES)
                .await
            {
                copies.push((version, bytes.to_vec()));
            }
        }
        assert_eq!(copies.len(), 3, "chunk {} has 3 replicas", chunk.handle);
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "chunk {}'s replicas are equal",
            chunk.handle
        );
        assert_eq!(
            copies[0].0, chunk.version,
            "chunk {}'s replicas are at the master's version",
            chunk.handle
        );
        chunks.push(copies[0].1.clone());
    }
    chunks
}

/// B3: a write of three chunks' worth starting mid-chunk reads back equal,
/// split at the chunk boundaries.
#[madsim::test]
async fn a_big_write_across_chunks_reads_back_equal() {
    let cluster = Cluster::start(4);
    let mut client = cluster.client("client", DEADLINE);
    let data = pattern(3 * CHUNK_BYTES as usize, 7);
    let expected = data.clone();
    let work = async move {
        client.create(&path("/big")).await.unwrap();
        let start = CHUNK_BYTES / 2;
        client.write(&path("/big"), start, &data).await.unwrap();
        let back = client
            .read(&path("/big"), start, data.len() as u64)
            .await
            .unwrap();
        let chunks = client.stat(&path("/big")).await.unwrap().chunks.len();
        (back, chunks)
    };
    let (back, chunks) = cluster.run("client", work).await;
    assert_eq!(
        chunks, 4,
        "half a chunk, then three chunks' worth: 4 chunks"
    );
    if back != expected {
        cluster.fail(format!(
            "read back {} bytes, not the {} written",
            back.len(),
            expected.len()
        ));
    }
}

/// B4: sixteen clients append self-validating records at once; every
/// acknowledged record is at its offset on every replica, and a reader
/// finds nothing that is not a whole record some writer sent.
#[madsim::test]
async fn concurrent_record_appends_land_whole_on_every_replica() {
    const WRITERS: u32 = 16;
    const RECORDS: u32 = 12;
    let cluster = Cluster::start(4);
    let mut setup = cluster.client("setup", DEADLINE);
    cluster
        .run("setup", async move {
            setup.create(&path("/log")).await.unwrap()
        })
        .await;
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let node = format!("writer{writer}");
        let mut client = cluster.client(&node, DEADLINE);
        let work = async move {
            let mut acked = Vec::new();
            for seq in 0..RECORDS {
                let length = 50 + ((writer * 131 + seq * 977) % 6000) as usize;
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
    let reader = cluster.client("reader", DEADLINE);
    let chunks = cluster
        .run("reader", async move {
            (equal_replicas_owned(&reader, "/log", 4).await, reader)
        })
        .await
        .0;
    check_records(&cluster, &acked, &chunks, WRITERS, RECORDS);
    cluster.check_no_split_brain();
}

/// Every acknowledged record parses at its offset in `chunks`, and a scan
/// finds only records some writer sent.
fn check_records(
    cluster: &Cluster,
    acked: &[(u32, u32, u64)],
    chunks: &[Vec<u8>],
    writers: u32,
    records: u32,
) {
    for &(writer, seq, offset) in acked {
        let (index, within) = (
            (offset / CHUNK_BYTES) as usize,
            (offset % CHUNK_BYTES) as usize,
        );
        let found = chunks
            .get(index)
            .and_then(|c| parse_record(c.get(within..)?));
        if found.map(|f| (f.0, f.1)) != Some((writer, seq)) {
            cluster.fail(format!(
                "record ({writer}, {seq}) acknowledged at {offset} is not there ({found:?})"
            ));
        }
    }
    let mut seen: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for chunk in chunks {
        for (writer, seq, _) in scan_records(chunk) {
            if writer >= writers || seq >= records {
                cluster.fail(format!(
                    "a reader found record ({writer}, {seq}), which no writer sent"
                ));
            }
            *seen.entry((writer, seq)).or_default() += 1;
        }
    }
    for &(writer, seq, _) in acked {
        assert!(seen.contains_key(&(writer, seq)));
    }
}
