//! Shards taken back from a group that left before it took them: the
//! holder moves on through the configurations and has the shard again,
//! intact; a shard whose last chunk went out is never taken back; a third
//! group told where the shard is pulls it from the holder; a group that
//! comes back after leaving drops what it never got.

use cairn_rpc::shardkv::{InstallShards, OfferRequest};

use super::tests::{command, config, pull, reply, serving_group, write};
use super::*;

/// Configuration `num` of a one-shard cluster whose groups are `groups`
/// (servers "gG"), the shard on `owner`.
fn configure(store: &mut ShardStore, index: LogIndex, num: u64, owner: Gid, groups: &[Gid]) {
    store.apply(index, &config(num, owner, groups));
}

/// Moves the shard, handed over in configuration `num`, from `old` to
/// `new`; returns the next free index.
fn hand_over(
    old: &mut ShardStore,
    new: &mut ShardStore,
    num: u64,
    mut index: LogIndex,
) -> LogIndex {
    while let Some(position) = new.pull_position(num, 0) {
        let pulled = pull(old, num, 0, position.after_key.as_deref(), 0);
        assert!(pulled.ready, "not handing over: {pulled:?}");
        let install = InstallShards {
            config_num: num,
            chunk: pulled.chunk,
            ..InstallShards::default()
        };
        new.apply(index, &command(command::Command::Install(install)));
        index += 1;
    }
    index
}

/// Logs `take_back` of the shard, offered in configuration `num`.
fn take_back(store: &mut ShardStore, index: LogIndex, num: u64) {
    let request = DeleteRequest {
        config_num: num,
        shards: vec![0],
    };
    store.apply(index, &command(command::Command::TakeBack(request)));
}

fn restarted(store: &ShardStore) -> ShardStore {
    let mut copy = ShardStore::new(store.gid, 1, crate::lab_shard_of);
    copy.restore(&store.snapshot()).unwrap();
    assert_eq!(&copy, store, "the snapshot lost something");
    copy
}

/// Group 1 serves the shard, with "a" appended to "k" by client 5; in
/// configuration 2 the shard goes to group 9, which never takes it.
fn offered_to_a_phantom() -> ShardStore {
    let mut store = serving_group();
    assert!(!reply(store.apply(2, &write(5, 1, Op::Append, "k", b"a"))).wrong_group);
    configure(&mut store, 3, 2, 9, &[1, 9]);
    assert_eq!(store.shard_state(0), Some(ShardState::Offering));
    assert_eq!(store.plan().offer.keys().collect::<Vec<_>>(), vec![&9]);
    store
}

#[test]
fn a_shard_offered_to_a_group_that_leaves_without_taking_it_comes_back_intact() {
    let mut store = offered_to_a_phantom();
    // While the shard waits for group 9, the group stays where it is.
    configure(&mut store, 4, 3, 9, &[1, 9, 10]);
    assert_eq!(
        store.config().num,
        2,
        "moved on while the shard was offered"
    );
    // Group 9 is gone from the latest configuration: the shard is taken
    // back, held, not served, and the group moves on.
    take_back(&mut store, 5, 2);
    assert_eq!(store.shard_state(0), Some(ShardState::Held));
    assert!(store.get(b"k").wrong_group);
    let mut store = restarted(&store);
    configure(&mut store, 6, 3, 9, &[1, 9, 10]);
    assert_eq!(store.config().num, 3);
    assert_eq!(store.shard_state(0), Some(ShardState::Offering));
    take_back(&mut store, 7, 3);
    // Group 9 leaves: the shard is group 1's again, keys and table intact.
    configure(&mut store, 8, 4, 1, &[1, 10]);
    assert_eq!(store.config().num, 4);
    assert_eq!(store.serving(), vec![0]);
    assert_eq!(store.get(b"k").value, Bytes::from("a"));
    let retry = reply(store.apply(9, &write(5, 1, Op::Append, "k", b"a")));
    assert!(!retry.wrong_group && !retry.session_expired, "{retry:?}");
    assert_eq!(store.get(b"k").value, Bytes::from("a"), "applied twice");
    // Group 9, should it ever ask, is told to drop the shard.
    for num in [2, 3] {
        let answer = store.pull_chunk(num, 0, None, 0).unwrap();
        assert!(answer.revoked && !answer.ready, "{answer:?}");
    }
    assert!(!store.pull_chunk(4, 0, None, 0).unwrap().revoked);
    restarted(&store);
}

#[test]
fn a_shard_whose_last_chunk_went_out_is_not_taken_back() {
    let mut store = offered_to_a_phantom();
    let last = pull(&mut store, 2, 0, None, 0);
    assert!(last.ready && last.chunk.unwrap().done);
    assert_eq!(store.plan().handed.keys().collect::<Vec<_>>(), vec![&9]);
    let mut store = restarted(&store);
    take_back(&mut store, 10, 2);
    assert_eq!(store.shard_state(0), Some(ShardState::Offering));
    configure(&mut store, 11, 3, 1, &[1]);
    assert_eq!(store.config().num, 2, "took back a shard group 9 may serve");
    assert!(!store.pull_chunk(2, 0, None, 0).unwrap().revoked);
}

#[test]
fn a_shard_taken_back_for_a_third_group_is_pulled_from_the_holder() {
    // Group 1 serves the shard, group 2 serves nothing; the shard goes to
    // group 9, which never takes it, then (9 gone) to group 2.
    let mut holder = serving_group_of_two();
    holder.apply(3, &write(5, 1, Op::Put, "k", b"v"));
    configure(&mut holder, 4, 2, 9, &[1, 2, 9]);
    take_back(&mut holder, 5, 2);
    let mut third = ShardStore::new(2, 1, crate::lab_shard_of);
    configure(&mut third, 1, 1, 1, &[1, 2]);
    configure(&mut third, 2, 2, 9, &[1, 2, 9]);
    for store in [&mut holder, &mut third] {
        configure(store, 10, 3, 2, &[1, 2]);
        assert_eq!(store.config().num, 3);
    }
    // The holder offers it and says so; group 2 would ask group 9.
    let plan = holder.plan();
    assert_eq!(plan.announce, plan.offer);
    assert_eq!(plan.announce[&2].1, vec![0]);
    assert_eq!(third.plan().pull.keys().collect::<Vec<_>>(), vec![&9]);
    let offer = OfferRequest {
        config_num: 3,
        shards: vec![0],
        gid: 1,
        servers: vec!["g1".into()],
    };
    assert!(third.needs_source(&offer));
    third.apply(11, &command(command::Command::Source(offer.clone())));
    assert!(!third.needs_source(&offer));
    let mut third = restarted(&third);
    assert_eq!(third.plan().pull[&1], (vec!["g1".to_string()], vec![0]));
    let index = hand_over(&mut holder, &mut third, 3, 12);
    assert_eq!(third.get(b"k").value, Bytes::from("v"));
    let retry = reply(third.apply(index, &write(5, 1, Op::Put, "k", b"other")));
    assert!(!retry.wrong_group && !retry.session_expired, "{retry:?}");
    assert_eq!(third.get(b"k").value, Bytes::from("v"), "applied twice");
    // The delete goes to the holder, not to group 9.
    let third = restarted(&third);
    assert_eq!(third.plan().collect[&1].1, vec![0]);
    let delete = DeleteRequest {
        config_num: 3,
        shards: vec![0],
    };
    let done = DeleteReply::decode(holder.apply(20, &command(command::Command::Delete(delete))));
    assert!(done.unwrap().done);
    assert_eq!(holder.shard_state(0), None);
    assert!(holder.plan().stable);
}

/// Group 1 of a one-shard cluster of groups 1 and 2, serving the shard.
fn serving_group_of_two() -> ShardStore {
    let mut store = ShardStore::new(1, 1, crate::lab_shard_of);
    configure(&mut store, 1, 1, 1, &[1, 2]);
    assert_eq!(store.serving(), vec![0]);
    store
}

#[test]
fn a_group_that_left_before_taking_a_shard_drops_it_when_told() {
    let mut holder = offered_to_a_phantom();
    take_back(&mut holder, 4, 2);
    configure(&mut holder, 5, 3, 1, &[1]);
    // Group 9 was real but down; it comes back in configuration 2.
    let mut late = ShardStore::new(9, 1, crate::lab_shard_of);
    configure(&mut late, 1, 1, 1, &[1]);
    configure(&mut late, 2, 2, 9, &[1, 9]);
    assert_eq!(late.shard_state(0), Some(ShardState::Pulling));
    let answer = holder.pull_chunk(2, 0, None, 0).unwrap();
    assert!(answer.revoked);
    let abandon = DeleteRequest {
        config_num: 2,
        shards: vec![0],
    };
    late.apply(3, &command(command::Command::Abandon(abandon)));
    assert_eq!(late.shard_state(0), None);
    assert!(late.plan().stable);
    configure(&mut late, 4, 3, 1, &[1]);
    assert_eq!(late.config().num, 3);
    assert_eq!(late.serving(), Vec::<u32>::new());
}

#[test]
fn the_shards_taken_back_are_remembered_up_to_the_bound() {
    let mut store = serving_group();
    let mut index = 2;
    let mut num = 1;
    for _ in 0..MAX_REVOKED + 5 {
        configure(&mut store, index, num + 1, 9, &[1, 9]);
        take_back(&mut store, index + 1, num + 1);
        configure(&mut store, index + 2, num + 2, 1, &[1]);
        assert_eq!(store.config().num, num + 2);
        num += 2;
        index += 3;
    }
    assert_eq!(store.revoked.len(), MAX_REVOKED);
    assert!(
        store.was_revoked(num - 1, 0),
        "the newest record was dropped"
    );
    assert!(!store.was_revoked(2, 0), "the oldest record was kept");
}
