//! The key/value state machine's tests: exactly-once writes, sessions, the
//! value limit, snapshots.

use super::*;

fn write(client: u64, seq: u64, op: Op, key: &str, value: &[u8]) -> Vec<u8> {
    WriteRequest {
        client_id: client,
        seq,
        op: op as i32,
        key: key.as_bytes().to_vec().into(),
        value: value.to_vec().into(),
        ..WriteRequest::default()
    }
    .encode_to_vec()
}

fn reply(bytes: Bytes) -> WriteReply {
    WriteReply::decode(bytes).unwrap()
}

/// Registers a client at `index`; returns its id.
fn register(store: &mut KvStore, index: LogIndex) -> u64 {
    let registration = WriteRequest {
        op: Op::Register as i32,
        ..WriteRequest::default()
    };
    let id = reply(store.apply(index, &registration.encode_to_vec())).client_id;
    assert_eq!(id, index, "a client's id is its registration's index");
    id
}

#[test]
fn a_retried_append_applies_once() {
    let mut store = KvStore::new();
    let client = register(&mut store, 1);
    store.apply(2, &write(client, 1, Op::Append, "k", b"a"));
    store.apply(3, &write(client, 1, Op::Append, "k", b"a"));
    store.apply(4, &write(client, 2, Op::Append, "k", b"b"));
    store.apply(5, &write(client, 2, Op::Append, "k", b"b"));
    assert_eq!(store.get(b"k").unwrap(), Bytes::from("ab"));
}

#[test]
fn snapshot_round_trip_keeps_sessions() {
    let mut store = KvStore::new();
    let (one, two) = (register(&mut store, 1), register(&mut store, 2));
    store.apply(3, &write(one, 1, Op::Put, "a", b"1"));
    store.apply(4, &write(two, 1, Op::Append, "b", b"2"));
    let mut restored = KvStore::new();
    restored.restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
    // The session survived: a retry is not applied again.
    restored.apply(5, &write(two, 1, Op::Append, "b", b"2"));
    assert_eq!(restored.get(b"b").unwrap(), Bytes::from("2"));
    assert!(restored.restore(&store.snapshot()[..5]).is_err());
}

#[test]
fn cas_and_delete() {
    let mut store = KvStore::new();
    let client = register(&mut store, 1);
    let cas = |seq, expected: Option<&str>, value: &str| {
        WriteRequest {
            client_id: client,
            seq,
            op: Op::Cas as i32,
            key: Bytes::from_static(b"k"),
            value: value.as_bytes().to_vec().into(),
            expected: expected.unwrap_or("").as_bytes().to_vec().into(),
            expect_missing: expected.is_none(),
        }
        .encode_to_vec()
    };
    assert!(reply(store.apply(2, &cas(1, None, "x"))).ok);
    assert!(!reply(store.apply(3, &cas(2, Some("y"), "z"))).ok);
    assert!(reply(store.apply(4, &cas(3, Some("x"), "z"))).ok);
    assert_eq!(store.get(b"k").unwrap(), Bytes::from("z"));
    store.apply(5, &write(client, 4, Op::Delete, "k", b""));
    assert_eq!(store.get(b"k"), None);
}

#[test]
fn sessions_are_bounded_and_an_evicted_client_is_told() {
    let mut store = KvStore::new();
    let first = register(&mut store, 1);
    store.apply(2, &write(first, 1, Op::Put, "k", b"v"));
    for index in 3..(MAX_SESSIONS as u64 + 3) {
        register(&mut store, index);
    }
    assert_eq!(store.sessions(), MAX_SESSIONS);
    // The first client was the least recently active: evicted.
    let answer = reply(store.apply(1 << 40, &write(first, 2, Op::Put, "k", b"w")));
    assert!(answer.session_expired);
    assert_eq!(store.get(b"k").unwrap(), Bytes::from("v"));
}

/// The sequence: a client's first write is applied and its reply
/// lost; MAX_SESSIONS other clients come and go; the clerk retries the
/// write. It must not apply twice.
#[test]
fn a_first_write_retried_after_its_session_was_evicted_applies_once() {
    let mut store = KvStore::new();
    let client = register(&mut store, 1);
    store.apply(2, &write(client, 1, Op::Append, "k", b"a")); // the reply is lost
    for index in 3..(MAX_SESSIONS as u64 + 3) {
        let other = register(&mut store, index);
        assert_eq!(other, index);
    }
    let retry = reply(store.apply(1 << 40, &write(client, 1, Op::Append, "k", b"a")));
    assert!(retry.session_expired, "{retry:?}");
    assert_eq!(store.get(b"k").unwrap(), Bytes::from("a"));
}

#[test]
fn a_client_that_never_registered_is_told_its_session_expired() {
    let mut store = KvStore::new();
    let answer = reply(store.apply(1, &write(12345, 1, Op::Put, "k", b"v")));
    assert!(answer.session_expired);
    assert_eq!(store.get(b"k"), None);
}

/// Appends grow a value up to the limit and no further: the one that would
/// pass it is refused (and the refusal is the answer to its retries),
/// nothing changed.
#[test]
fn an_append_past_the_value_limit_is_refused_and_changes_nothing() {
    let mut store = KvStore::new();
    let client = register(&mut store, 1);
    let quarter = vec![b'x'; MAX_VALUE_BYTES / 4];
    for seq in 1..=4 {
        let answer = reply(store.apply(1 + seq, &write(client, seq, Op::Append, "k", &quarter)));
        assert!(answer.ok && !answer.value_too_large, "{seq}: {answer:?}");
    }
    assert_eq!(store.get(b"k").unwrap().len(), MAX_VALUE_BYTES);
    let over = reply(store.apply(6, &write(client, 5, Op::Append, "k", b"y")));
    assert!(over.value_too_large && !over.ok, "{over:?}");
    assert_eq!(store.get(b"k").unwrap().len(), MAX_VALUE_BYTES);
    let retry = reply(store.apply(7, &write(client, 5, Op::Append, "k", b"y")));
    assert!(retry.value_too_large, "{retry:?}");
    // The refusal survives a snapshot.
    let mut restored = KvStore::new();
    restored.restore(&store.snapshot()).unwrap();
    assert!(reply(restored.apply(8, &write(client, 5, Op::Append, "k", b"y"))).value_too_large);
    // A put of a full value is still fine, and appending nothing to it too.
    assert!(reply(store.apply(9, &write(client, 6, Op::Put, "k", &quarter))).ok);
    assert!(reply(store.apply(10, &write(client, 7, Op::Append, "j", &[]))).ok);
}
