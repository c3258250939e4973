//! A replica group's state machine: exactly-once writes per shard (the
//! session floor, here and across a hand-over), the value limit.

use super::*;

fn command(command: command::Command) -> Vec<u8> {
    Command {
        command: Some(command),
    }
    .encode_to_vec()
}

fn write(client: u64, seq: u64, op: Op, key: &str, value: &[u8]) -> Vec<u8> {
    command(command::Command::Write(WriteRequest {
        client_id: client,
        seq,
        op: op as i32,
        key: key.as_bytes().to_vec().into(),
        value: value.to_vec().into(),
    }))
}

fn reply(bytes: Bytes) -> WriteReply {
    WriteReply::decode(bytes).unwrap()
}

/// Configuration `num` of a one-shard cluster: the shard on `owner`, the
/// groups `groups`.
fn config(num: u64, owner: Gid, groups: &[Gid]) -> Vec<u8> {
    let config = Config {
        num,
        shards: vec![owner],
        groups: groups.iter().map(|&g| (g, vec![format!("g{g}")])).collect(),
    };
    command(command::Command::Config(config.to_proto()))
}

/// Group 1 of a one-shard cluster, serving the shard.
fn serving_group() -> ShardStore {
    let mut store = ShardStore::new(1, 1, crate::lab_shard_of);
    store.apply(1, &config(1, 1, &[1]));
    assert_eq!(store.serving(), vec![0]);
    store
}

/// Client 1's first append of "a" to "k" is applied (and its reply lost),
/// then MAX_SESSIONS_PER_SHARD clients with larger ids write to the shard.
fn first_write_then_churn(store: &mut ShardStore) {
    assert!(!reply(store.apply(2, &write(1, 1, Op::Append, "k", b"a"))).session_expired);
    for client in 2..(MAX_SESSIONS_PER_SHARD as u64 + 2) {
        store.apply(client + 1, &write(client, 1, Op::Put, "o", b""));
    }
}

/// The sequence at a shard: the retry must not apply twice.
#[test]
fn a_first_write_retried_after_the_shard_forgot_its_client_applies_once() {
    let mut store = serving_group();
    first_write_then_churn(&mut store);
    let retry = reply(store.apply(1 << 40, &write(1, 1, Op::Append, "k", b"a")));
    assert!(retry.session_expired, "{retry:?}");
    assert_eq!(store.get(b"k").value, Bytes::from("a"));
    // A client registered after the forgotten one is new to the shard.
    let newer = MAX_SESSIONS_PER_SHARD as u64 + 10;
    let fresh = reply(store.apply((1 << 40) + 1, &write(newer, 1, Op::Append, "k", b"b")));
    assert!(!fresh.session_expired, "{fresh:?}");
    assert_eq!(store.get(b"k").value, Bytes::from("ab"));
}

/// The same after the shard moved to another group, and after that group
/// restarted from a snapshot: the floor travels with the shard.
#[test]
fn the_session_floor_moves_with_the_shard_and_survives_a_snapshot() {
    let mut old = serving_group();
    first_write_then_churn(&mut old);
    let mut new = ShardStore::new(2, 1, crate::lab_shard_of);
    new.apply(1, &config(1, 1, &[1]));
    let moved = config(2, 2, &[1, 2]);
    new.apply(2, &moved);
    old.apply(1 << 39, &moved);
    assert_eq!(new.shard_state(0), Some(ShardState::Pulling));
    let pulled = old.pull(2, &[0]);
    assert!(pulled.ready);
    let install = InstallShards {
        config_num: 2,
        shards: pulled.shards,
    };
    new.apply(3, &command(command::Command::Install(install)));
    assert_eq!(new.serving(), vec![0]);

    let retry = reply(new.apply(4, &write(1, 1, Op::Append, "k", b"a")));
    assert!(retry.session_expired, "{retry:?}");
    let mut restarted = ShardStore::new(2, 1, crate::lab_shard_of);
    restarted.restore(&new.snapshot()).unwrap();
    assert_eq!(restarted, new);
    let retry = reply(restarted.apply(5, &write(1, 1, Op::Append, "k", b"a")));
    assert!(retry.session_expired, "{retry:?}");
    assert_eq!(restarted.get(b"k").value, Bytes::from("a"));
}

/// A retry of a write the old owner applied is recognized at the new one.
#[test]
fn a_retry_at_the_new_owner_gets_the_first_answer() {
    let mut old = serving_group();
    old.apply(2, &write(5, 1, Op::Append, "k", b"a"));
    let mut new = ShardStore::new(2, 1, crate::lab_shard_of);
    new.apply(1, &config(1, 1, &[1]));
    let moved = config(2, 2, &[1, 2]);
    new.apply(2, &moved);
    old.apply(3, &moved);
    let install = InstallShards {
        config_num: 2,
        shards: old.pull(2, &[0]).shards,
    };
    new.apply(3, &command(command::Command::Install(install)));
    let retry = reply(new.apply(4, &write(5, 1, Op::Append, "k", b"a")));
    assert!(!retry.session_expired && !retry.previous_found, "{retry:?}");
    assert_eq!(new.get(b"k").value, Bytes::from("a"));
}

#[test]
fn an_append_past_the_value_limit_is_refused_and_changes_nothing() {
    let mut store = serving_group();
    let half = vec![b'x'; MAX_VALUE_BYTES / 2];
    assert!(!reply(store.apply(2, &write(1, 1, Op::Append, "k", &half))).value_too_large);
    assert!(!reply(store.apply(3, &write(1, 2, Op::Append, "k", &half))).value_too_large);
    assert_eq!(store.get(b"k").value.len(), MAX_VALUE_BYTES);
    let over = reply(store.apply(4, &write(1, 3, Op::Append, "k", b"y")));
    assert!(over.value_too_large, "{over:?}");
    assert_eq!(store.get(b"k").value.len(), MAX_VALUE_BYTES);
    let retry = reply(store.apply(5, &write(1, 3, Op::Append, "k", b"y")));
    assert!(retry.value_too_large, "{retry:?}");
}
