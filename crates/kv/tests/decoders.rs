//! The key/value state machine reads bytes it did not write itself when a
//! snapshot arrives from the leader or a log entry is applied: arbitrary or
//! damaged bytes give an error (snapshot) or a refused command (entry),
//! never a panic, and a refused snapshot leaves the store unchanged.
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` runs more.

use cairn_kv::KvStore;
use cairn_rpc::kv::{Op, WriteRequest};
use cairn_rsm::StateMachine;
use proptest::prelude::*;
use prost::Message as _;

/// A store with one registered client and one key, built through the log
/// as the server encodes it.
fn store_with_data() -> KvStore {
    let mut store = KvStore::new();
    let register = WriteRequest {
        op: Op::Register as i32,
        ..WriteRequest::default()
    };
    store.apply(1, &register.encode_to_vec());
    let put = WriteRequest {
        client_id: 1,
        seq: 1,
        op: Op::Put as i32,
        key: b"key".to_vec().into(),
        value: b"value".to_vec().into(),
        ..WriteRequest::default()
    };
    store.apply(2, &put.encode_to_vec());
    assert_eq!(store.get(b"key").as_deref(), Some(&b"value"[..]));
    store
}

proptest! {
    #[test]
    fn arbitrary_snapshots_are_refused_or_restored(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut store = store_with_data();
        let before = store.clone();
        if store.restore(&bytes).is_err() {
            prop_assert_eq!(store, before, "a refused snapshot changed the store");
        }
    }

    #[test]
    fn damaged_snapshots_are_refused_or_restored(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut store = store_with_data();
        let mut bytes = store.snapshot().to_vec();
        for (at, value) in flips {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
        }
        let before = store.clone();
        if store.restore(&bytes).is_err() {
            prop_assert_eq!(store, before, "a refused snapshot changed the store");
        }
    }

    #[test]
    fn arbitrary_log_entries_are_applied_or_refused_without_a_panic(
        commands in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8),
    ) {
        let mut store = KvStore::new();
        for (index, command) in commands.iter().enumerate() {
            let _ = store.apply(index as u64 + 1, command);
        }
    }
}
