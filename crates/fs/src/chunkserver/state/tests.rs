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
        state.prepare(1, 1, &kind, (7, 1), now),
        Err(Refusal::NeedLease)
    ));
    state.extend(&[(1, 1)], now + Duration::from_secs(1));
    let first = state.prepare(1, 1, &kind, (7, 1), now).unwrap();
    assert_eq!((first.reply.offset, first.reply.padded), (0, false));
    assert_eq!(first.apply.serial, 1);
    // 200 + 200 + 200 + 200 + 200 = 1000 of 1024: the sixth pads.
    for id in 2..=5 {
        state
            .buffer
            .insert((7, id), Bytes::from(vec![1; 200]), now)
            .unwrap();
        state.prepare(1, 1, &kind, (7, id), now).unwrap();
    }
    state
        .buffer
        .insert((7, 6), Bytes::from(vec![1; 200]), now)
        .unwrap();
    let padded = state.prepare(1, 1, &kind, (7, 6), now).unwrap();
    assert!(padded.reply.padded && padded.apply.pad);
    assert_eq!(state.store.replica(1).unwrap().length, 1024);
    // After the lease ends, or once given up: refused.
    state
        .buffer
        .insert((7, 7), Bytes::from(vec![1; 10]), now)
        .unwrap();
    let later = now + Duration::from_secs(2);
    assert!(matches!(
        state.prepare(1, 1, &kind, (7, 7), later),
        Err(Refusal::NeedLease)
    ));
    state.relinquish(1, 1);
    assert!(matches!(
        state.prepare(1, 1, &kind, (7, 7), now),
        Err(Refusal::Status(_))
    ));
}
