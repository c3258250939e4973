//! A replica group's state machine: exactly-once writes per shard (the
//! session floor, here and across a hand-over), the value limit.

use cairn_rpc::shardkv::{InstallShards, PullReply, ShardChunk};

use super::*;

pub(super) fn command(command: command::Command) -> Vec<u8> {
    Command {
        command: Some(command),
    }
    .encode_to_vec()
}

pub(super) fn write(client: u64, seq: u64, op: Op, key: &str, value: &[u8]) -> Vec<u8> {
    command(command::Command::Write(WriteRequest {
        client_id: client,
        seq,
        op: op as i32,
        key: key.as_bytes().to_vec().into(),
        value: value.to_vec().into(),
    }))
}

pub(super) fn reply(bytes: Bytes) -> WriteReply {
    WriteReply::decode(bytes).unwrap()
}

/// Configuration `num` of a one-shard cluster: the shard on `owner`, the
/// groups `groups`.
pub(super) fn config(num: u64, owner: Gid, groups: &[Gid]) -> Vec<u8> {
    let config = Config {
        num,
        shards: vec![owner],
        groups: groups.iter().map(|&g| (g, vec![format!("g{g}")])).collect(),
    };
    command(command::Command::Config(config.to_proto()))
}

/// Moves `shard` (handed over in configuration 2) from `old` to `new`,
/// chunk by chunk at the full chunk size, logging chunks at `index`
/// onwards; returns the next free index.
pub(super) fn hand_over(
    old: &mut ShardStore,
    new: &mut ShardStore,
    mut index: LogIndex,
    shard: u32,
) -> LogIndex {
    while let Some(position) = new.pull_position(2, shard) {
        let pulled = pull(old, 2, shard, position.after_key.as_deref(), 0);
        assert!(
            pulled.ready,
            "the old owner is not handing shard {shard} over"
        );
        new.apply(index, &install(pulled.chunk.unwrap()));
        index += 1;
    }
    index
}

/// The old owner's answer to a pull of configuration `num`, as its server
/// gives it: when the pull reaches the last chunk, `handing` is logged
/// first.
pub(super) fn pull(
    old: &mut ShardStore,
    num: u64,
    shard: u32,
    after_key: Option<&[u8]>,
    max_bytes: usize,
) -> PullReply {
    if let Ok(reply) = old.pull_chunk(num, shard, after_key, max_bytes) {
        return reply;
    }
    let handing = command(command::Command::Handing(DeleteRequest {
        config_num: num,
        shards: vec![shard],
    }));
    let reply = DeleteReply::decode(old.apply(1 << 50, &handing)).unwrap();
    assert!(reply.done, "handing shard {shard} was refused");
    old.pull_chunk(num, shard, after_key, max_bytes)
        .expect("handed")
}

pub(super) fn install(chunk: ShardChunk) -> Vec<u8> {
    command(command::Command::Install(InstallShards {
        config_num: 2,
        chunk: Some(chunk),
        ..InstallShards::default()
    }))
}

/// Group 1 of a one-shard cluster, serving the shard.
pub(super) fn serving_group() -> ShardStore {
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
    let index = hand_over(&mut old, &mut new, 3, 0);
    assert_eq!(new.serving(), vec![0]);

    let retry = reply(new.apply(index, &write(1, 1, Op::Append, "k", b"a")));
    assert!(retry.session_expired, "{retry:?}");
    let mut restarted = ShardStore::new(2, 1, crate::lab_shard_of);
    restarted.restore(&new.snapshot()).unwrap();
    assert_eq!(restarted, new);
    let retry = reply(restarted.apply(index + 1, &write(1, 1, Op::Append, "k", b"a")));
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
    let index = hand_over(&mut old, &mut new, 3, 0);
    let retry = reply(new.apply(index, &write(5, 1, Op::Append, "k", b"a")));
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

/// Groups 1 and 2 of a one-shard cluster after configuration 2 moved the
/// shard from 1 to 2; group 1 held `keys` keys of `value_bytes` bytes,
/// written by client 7 (sequence numbers 1..=keys), and clients 100 up to
/// `100 + clients` put the first key again (the same value).
fn moving(keys: usize, value_bytes: usize, clients: u64) -> (ShardStore, ShardStore) {
    let mut old = serving_group();
    for i in 0..keys {
        let value = vec![i as u8; value_bytes];
        old.apply(
            2 + i as u64,
            &write(7, 1 + i as u64, Op::Put, &format!("k{i:03}"), &value),
        );
    }
    for client in 100..100 + clients {
        old.apply(
            client * 2,
            &write(client, 1, Op::Put, "k000", &vec![0; value_bytes]),
        );
    }
    let mut new = ShardStore::new(2, 1, crate::lab_shard_of);
    new.apply(1, &config(1, 1, &[1]));
    let moved = config(2, 2, &[1, 2]);
    new.apply(2, &moved);
    old.apply(1 << 20, &moved);
    (old, new)
}

/// The bug 9: a shard bigger than one chunk moves in several, one
/// log entry each; a chunk logged twice (a re-pull after a lost reply or a
/// new leader) changes nothing; a restart from a snapshot in the middle
/// resumes from the cursor; readers see nothing before the last chunk.
#[test]
fn a_shard_bigger_than_a_chunk_moves_in_chunks_applied_once_served_after_the_last() {
    const CHUNK: usize = 4000;
    let (mut old, mut new) = moving(20, 1000, 0);
    let mut index = 3;
    let mut chunks = Vec::new();
    while let Some(position) = new.pull_position(2, 0) {
        assert!(new.get(b"k000").wrong_group, "served before the last chunk");
        assert_eq!(new.serving(), Vec::<u32>::new());
        let pulled = pull(&mut old, 2, 0, position.after_key.as_deref(), CHUNK);
        assert!(pulled.ready);
        let chunk = pulled.chunk.unwrap();
        assert!(
            chunk.encoded_len() <= CHUNK + 100,
            "{} bytes",
            chunk.encoded_len()
        );
        new.apply(index, &install(chunk.clone()));
        let once = new.clone();
        new.apply(index + 1, &install(chunk.clone()));
        assert_eq!(new, once, "a repeated chunk changed the state");
        // A restart here resumes where the installed keys end.
        let mut restarted = ShardStore::new(2, 1, crate::lab_shard_of);
        restarted.restore(&new.snapshot()).unwrap();
        assert_eq!(restarted, new);
        new = restarted;
        index += 2;
        chunks.push(chunk);
    }
    assert!(chunks.len() >= 5, "moved in {} chunks", chunks.len());
    assert!(chunks.iter().rev().skip(1).all(|c| !c.done));
    assert_eq!(new.serving(), vec![0]);
    for i in 0..20 {
        assert_eq!(
            new.get(format!("k{i:03}").as_bytes()).value,
            vec![i as u8; 1000]
        );
    }
    // Stale chunks after the end change nothing either.
    let done = new.clone();
    for chunk in &chunks {
        new.apply(index, &install(chunk.clone()));
        index += 1;
    }
    assert_eq!(new, done);
    // The duplicate table came with the last chunk.
    let retry = reply(new.apply(index, &write(7, 20, Op::Put, "k019", b"other")));
    assert!(!retry.session_expired, "{retry:?}");
    assert_eq!(new.get(b"k019").value, vec![19u8; 1000]);
    // The old owner still offers the frozen shard until told to drop it.
    assert_eq!(old.shard_state(0), Some(ShardState::Offering));
}

/// A chunk out of order (one that does not start where the installed keys
/// end) is ignored; the pull goes on from the cursor.
#[test]
fn a_chunk_out_of_order_is_ignored() {
    let (mut old, mut new) = moving(10, 1000, 0);
    let first = pull(&mut old, 2, 0, None, 2500).chunk.unwrap();
    let after = first
        .data
        .as_ref()
        .unwrap()
        .data
        .last()
        .unwrap()
        .key
        .clone();
    let second = pull(&mut old, 2, 0, Some(&after), 2500).chunk.unwrap();
    let before = new.clone();
    new.apply(3, &install(second.clone()));
    assert_eq!(new, before, "a second chunk installed before the first");
    new.apply(4, &install(first));
    new.apply(5, &install(second));
    assert_eq!(new.pull_position(2, 0).unwrap().keys, 4);
}

/// Every chunk fits its bound: the keys within the chunk size (or one key
/// alone), the duplicate table with the last keys or alone after them.
#[test]
fn chunks_stay_within_their_bound_and_a_large_table_travels_alone() {
    // 200 clients in the table: about 4 KB, more than fits beside a key.
    let (mut old, mut new) = moving(3, 1000, 200);
    let mut sizes = Vec::new();
    while let Some(position) = new.pull_position(2, 0) {
        let chunk = pull(&mut old, 2, 0, position.after_key.as_deref(), 1500)
            .chunk
            .unwrap();
        sizes.push((chunk.data.as_ref().unwrap().data.len(), chunk.done));
        new.apply(10 + sizes.len() as u64, &install(chunk));
    }
    assert_eq!(sizes, vec![(1, false), (1, false), (1, false), (0, true)]);
    assert_eq!(new.serving(), vec![0]);
    let retry = reply(new.apply(1 << 30, &write(299, 1, Op::Put, "k000", b"x")));
    assert!(retry.previous_found && !retry.session_expired, "{retry:?}");
    assert_eq!(new.get(b"k000").value, vec![0u8; 1000]);
}

/// The bound on a session's size in a chunk holds for the largest values.
#[test]
fn a_session_fits_its_bound() {
    let session = proto::ShardSession {
        client_id: u64::MAX,
        seq: u64::MAX,
        reply: Some(WriteReply {
            previous_found: true,
            wrong_group: true,
            session_expired: true,
            value_too_large: true,
        }),
        last_index: u64::MAX,
    };
    let len = session.encoded_len();
    let element = 1 + prost::length_delimiter_len(len) + len;
    assert!(
        element <= crate::server::MAX_SESSION_BYTES,
        "{element} bytes"
    );
}

/// An install logged before shards moved in chunks (whole shards in one
/// entry) is still applied.
#[test]
fn a_whole_shard_install_from_before_chunks_is_applied() {
    let (old, mut new) = moving(3, 10, 0);
    let whole = old.shards[&0].to_proto(0);
    let install = InstallShards {
        config_num: 2,
        shards: vec![whole],
        ..InstallShards::default()
    };
    new.apply(3, &command(command::Command::Install(install)));
    assert_eq!(new.serving(), vec![0]);
    assert_eq!(new.get(b"k002").value, vec![2u8; 10]);
}
