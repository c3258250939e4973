use std::sync::Arc;
use std::time::Duration;

use cairn_storage::MemDisk;
use tonic::Code;

use super::*;

const ME: &str = "http://cs0:1";
const OTHER: &str = "http://cs1:1";

fn server() -> ServerState {
    let store = ChunkStore::open(Arc::new(MemDisk::new()), "chunks".as_ref(), 1024).unwrap();
    ServerState {
        url: ME.into(),
        store,
        buffer: PushBuffer::default(),
        roles: BTreeMap::new(),
        pipelines: BTreeMap::new(),
        observer: None,
        mutated: BTreeMap::new(),
        incarnation: 7,
        changes: 0,
    }
}

fn told(state: &mut ServerState, version: u64, primary: &str) {
    state
        .set_version(SetVersionRequest {
            handle: 1,
            version,
            primary: primary.into(),
            secondaries: vec![],
        })
        .unwrap();
}

fn apply(version: u64, primary: &str, serial: u64, data_id: u64) -> ApplyRequest {
    ApplyRequest {
        handle: 1,
        version,
        primary: primary.into(),
        serial,
        offset: 0,
        client_id: 7,
        data_id,
        pad: false,
    }
}

#[tokio::test]
async fn a_secondary_applies_only_its_primary_at_its_version_once() {
    let now = Instant::now();
    let mut state = server();
    state.store.create(1, 0).unwrap();
    told(&mut state, 2, OTHER);
    state
        .buffer
        .insert((7, 1), Bytes::from_static(b"one"), now)
        .unwrap();
    // Another version, another sender: refused, nothing written.
    let refused = state.apply(&apply(1, OTHER, 1, 1)).unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let refused = state.apply(&apply(2, "http://cs9:1", 1, 1)).unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // The primary's mutation: applied once; its retry answers the same.
    state.apply(&apply(2, OTHER, 1, 1)).unwrap();
    state.apply(&apply(2, OTHER, 1, 1)).unwrap();
    assert_eq!(state.store.read(1, 0, 10).unwrap().0, "one");
    // An earlier serial arriving late is not applied over a later one.
    state
        .buffer
        .insert((7, 2), Bytes::from_static(b"two"), now)
        .unwrap();
    state.apply(&apply(2, OTHER, 3, 2)).unwrap();
    state
        .buffer
        .insert((7, 3), Bytes::from_static(b"old"), now)
        .unwrap();
    state.apply(&apply(2, OTHER, 2, 3)).unwrap();
    assert_eq!(state.store.read(1, 0, 10).unwrap().0, "two");
}

/// What the primary's pipeline does with a numbered mutation, here.
fn make_locally(state: &mut ServerState, prepared: &Prepared) {
    if let Some((offset, bytes)) = &prepared.local {
        state.store.write(1, 1, *offset, bytes).unwrap();
    }
}

#[tokio::test]
async fn a_primary_mutates_only_under_a_live_lease_and_pads_what_does_not_fit() {
    let now = Instant::now();
    let mut state = server();
    state.store.create(1, 0).unwrap();
    told(&mut state, 1, ME);
    state
        .buffer
        .insert((7, 1), Bytes::from(vec![1; 200]), now)
        .unwrap();
    // Named primary, but no lease confirmed yet.
    let kind = MutationKind::Append;
    assert!(matches!(
        state.prepare(1, 1, &kind, (7, 1), now, 0),
        Err(Refusal::NeedLease)
    ));
    state.extend(&[(1, 1)], now + Duration::from_secs(1));
    let first = state.prepare(1, 1, &kind, (7, 1), now, 0).unwrap();
    make_locally(&mut state, &first);
    assert_eq!((first.reply.offset, first.reply.padded), (0, false));
    assert_eq!(first.apply.serial, 1);
    // 200 + 200 + 200 + 200 + 200 = 1000 of 1024: the sixth pads.
    for id in 2..=5 {
        state
            .buffer
            .insert((7, id), Bytes::from(vec![1; 200]), now)
            .unwrap();
        let prepared = state.prepare(1, 1, &kind, (7, id), now, 0).unwrap();
        make_locally(&mut state, &prepared);
    }
    state
        .buffer
        .insert((7, 6), Bytes::from(vec![1; 200]), now)
        .unwrap();
    let padded = state.prepare(1, 1, &kind, (7, 6), now, 0).unwrap();
    assert!(padded.reply.padded && padded.apply.pad);
    make_locally(&mut state, &padded);
    assert_eq!(state.store.replica(1).unwrap().length, 1024);
    // After the lease ends, or once given up: refused.
    state
        .buffer
        .insert((7, 7), Bytes::from(vec![1; 10]), now)
        .unwrap();
    let later = now + Duration::from_secs(2);
    assert!(matches!(
        state.prepare(1, 1, &kind, (7, 7), later, 0),
        Err(Refusal::NeedLease)
    ));
    state.relinquish(1, 1);
    assert!(matches!(
        state.prepare(1, 1, &kind, (7, 7), now, 0),
        Err(Refusal::Status(_))
    ));
}

#[tokio::test]
async fn a_batch_of_appends_goes_end_to_end_and_a_secondary_applies_it_whole_or_not() {
    let now = Instant::now();
    let mut primary = server();
    primary.store.create(1, 0).unwrap();
    told(&mut primary, 1, ME);
    primary.extend(&[(1, 1)], now + Duration::from_secs(1));
    for id in 1..=3 {
        primary
            .buffer
            .insert((7, id), Bytes::from(vec![id as u8; 100]), now)
            .unwrap();
    }
    let requests: Vec<_> = (1..=3)
        .map(|id| (1, MutationKind::Append, (7, id)))
        .collect();
    let prepared: Vec<Prepared> = primary
        .prepare_batch(1, &requests, now)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Numbered before any is made: each append after the one before.
    let offsets: Vec<u64> = prepared.iter().map(|p| p.reply.offset).collect();
    assert_eq!(offsets, [0, 100, 200]);
    let serials: Vec<u64> = prepared.iter().map(|p| p.apply.serial).collect();
    assert_eq!(serials, [1, 2, 3]);

    let mut secondary = server();
    secondary.store.create(1, 0).unwrap();
    told(&mut secondary, 1, ME);
    let batch: Vec<ApplyRequest> = prepared.iter().map(|p| p.apply.clone()).collect();
    // The third's data has not arrived: nothing of the batch is applied.
    for id in 1..=2 {
        secondary
            .buffer
            .insert((7, id), Bytes::from(vec![id as u8; 100]), now)
            .unwrap();
    }
    let refused = secondary.apply_batch(&batch).unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(secondary.store.replica(1).unwrap().length, 0);
    secondary
        .buffer
        .insert((7, 3), Bytes::from(vec![3; 100]), now)
        .unwrap();
    secondary.apply_batch(&batch).unwrap();
    // A retried batch is applied once.
    secondary.apply_batch(&batch).unwrap();
    let (bytes, _) = secondary.store.read(1, 0, 1024).unwrap();
    assert_eq!(bytes.len(), 300);
    assert!(bytes[..100].iter().all(|&b| b == 1) && bytes[200..].iter().all(|&b| b == 3));
    // Serials that do not ascend are refused.
    let mut backwards = batch.clone();
    backwards.reverse();
    let refused = secondary.apply_batch(&backwards).unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

/// A primary claims its lease in heartbeats for one lease period after it
/// was named, and after each mutation; an idle chunk's claim stops, so the
/// lease runs out and the master may clone the chunk or grant a new one.
#[tokio::test]
async fn a_primary_claims_its_lease_only_while_the_chunk_is_in_use() {
    let lease = Duration::from_secs(2);
    let mut state = server();
    state.store.create(1, 0).unwrap();
    told(&mut state, 1, ME);
    let named = state.roles[&1].named;
    let claimed = |state: &ServerState, at: Instant| {
        let (report, extend) = state.heartbeat(1 << 20, at, lease);
        assert_eq!(report.claims.len(), extend.len());
        extend
    };
    assert_eq!(claimed(&state, named), vec![(1, 1)], "just named");
    assert!(
        claimed(&state, named + lease).is_empty(),
        "idle a lease period"
    );
    state.mutated.insert(1, named + lease);
    assert_eq!(
        claimed(&state, named + lease + lease / 2),
        vec![(1, 1)],
        "mutated since"
    );
    assert!(claimed(&state, named + lease * 2).is_empty(), "idle again");
    // A secondary never claims.
    told(&mut state, 2, OTHER);
    assert!(claimed(&state, Instant::now()).is_empty());
}
