//! Property tests of the path from the network to the Raft core: arbitrary
//! bytes and arbitrary well-formed-but-hostile messages go through the codec
//! (`cairn_rsm::decode`) into a follower, a candidate and a leader. Nothing
//! may panic, and every request the core takes gets exactly one response
//! (a transport may pair responses with requests by that rule; cairn-rsm's
//! streams no longer need to).
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` runs more.

use bytes::Bytes;
use cairn_raft::{
    AppendEntries, AppendEntriesResponse, ClusterConfig, Config, Entry, EntryKind, HardState,
    Heartbeat, HeartbeatResponse, InitialState, InstallSnapshot, InstallSnapshotResponse, Message,
    MessageBody, Raft, Reject, RequestVote, RequestVoteResponse, Role, SnapshotMeta,
};
use cairn_rpc::raft as proto;
use proptest::prelude::*;
use prost::Message as _;

const ME: u64 = 2;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"e"),
    }
}

/// Node 2 of {1, 2, 3} in term 3 with entries 1..=6 (terms 1 1 2 2 3 3),
/// 4 committed.
fn follower() -> Raft {
    let initial = InitialState {
        cluster: ClusterConfig::new([1, 2, 3]),
        hard_state: HardState {
            term: 3,
            vote: None,
            commit: 4,
        },
        snapshot: None,
        entries: [1, 1, 2, 2, 3, 3]
            .iter()
            .enumerate()
            .map(|(i, &term)| entry(i as u64 + 1, term))
            .collect(),
    };
    let mut raft = Raft::new(Config::new(ME), initial, 5).unwrap();
    drain(&mut raft);
    raft
}

fn vote_response(from: u64, term: u64, pre_vote: bool) -> Message {
    Message {
        from,
        to: ME,
        term,
        body: MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote,
            granted: true,
        }),
    }
}

/// The follower, campaigning: a candidate in term 4.
fn candidate() -> Raft {
    let mut raft = follower();
    raft.campaign();
    drain(&mut raft);
    raft.step(vote_response(1, 4, true));
    drain(&mut raft);
    assert_eq!(raft.role(), Role::Candidate);
    raft
}

/// The candidate, elected: a leader in term 4.
fn leader() -> Raft {
    let mut raft = candidate();
    raft.step(vote_response(1, 4, false));
    drain(&mut raft);
    assert_eq!(raft.role(), Role::Leader);
    raft
}

/// Runs every pending `Ready`; returns the messages sent.
fn drain(raft: &mut Raft) -> Vec<Message> {
    let mut sent = Vec::new();
    while raft.has_ready() {
        let ready = raft.ready();
        sent.extend(ready.early_messages.iter().cloned());
        sent.extend(ready.messages.iter().cloned());
        raft.advance(&ready);
    }
    sent
}

fn index() -> impl Strategy<Value = u64> {
    prop_oneof![0..12u64, Just(u64::MAX), any::<u64>()]
}

fn term() -> impl Strategy<Value = u64> {
    prop_oneof![0..7u64, Just(u64::MAX)]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    (index(), prop::collection::vec((0..3u64, term()), 0..5)).prop_map(|(start, steps)| {
        let mut next = start;
        steps
            .into_iter()
            .map(|(skip, term)| {
                let e = entry(next, term);
                next = next.wrapping_add(1 + skip / 2);
                e
            })
            .collect()
    })
}

fn meta() -> impl Strategy<Value = SnapshotMeta> {
    (index(), term(), prop::collection::btree_set(1..5u64, 1..4)).prop_map(
        |(index, term, voters)| SnapshotMeta {
            index,
            term,
            config: ClusterConfig::new(voters),
            urls: Default::default(),
        },
    )
}

fn body() -> impl Strategy<Value = MessageBody> {
    let reject = prop::option::of((index(), prop::option::of(term()), index())).prop_map(|r| {
        r.map(|(rejected_index, conflict_term, conflict_index)| Reject {
            rejected_index,
            conflict_term,
            conflict_index,
        })
    });
    prop_oneof![
        (index(), term(), entries(), index()).prop_map(
            |(prev_index, prev_term, entries, commit)| {
                MessageBody::AppendEntries(AppendEntries {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                })
            }
        ),
        (index(), reject).prop_map(|(match_index, reject)| {
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                match_index,
                reject,
            })
        }),
        (index(), 0..4u64).prop_map(|(commit, read_round)| MessageBody::Heartbeat(Heartbeat {
            commit,
            read_round
        })),
        (0..4u64, prop::option::of(index())).prop_map(|(read_round, lacking)| {
            MessageBody::HeartbeatResponse(HeartbeatResponse {
                read_round,
                lacking,
            })
        }),
        (any::<bool>(), any::<bool>(), index(), term()).prop_map(
            |(pre_vote, transfer, last_index, last_term)| {
                MessageBody::RequestVote(RequestVote {
                    pre_vote,
                    transfer,
                    last_index,
                    last_term,
                })
            }
        ),
        (any::<bool>(), any::<bool>()).prop_map(|(pre_vote, granted)| {
            MessageBody::RequestVoteResponse(RequestVoteResponse { pre_vote, granted })
        }),
        (
            meta(),
            index(),
            index(),
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(
                |(meta, total_bytes, offset, data)| MessageBody::InstallSnapshot(InstallSnapshot {
                    meta,
                    total_bytes,
                    offset,
                    data: data.into(),
                })
            ),
        (index(), index(), any::<bool>()).prop_map(|(snapshot_index, next_offset, done)| {
            MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
            })
        }),
        Just(MessageBody::TimeoutNow),
    ]
}

/// An append a leader of `term` could have sent, but to another log:
/// consecutive entries with terms rising from `prev_term`, none above
/// `term`.
fn plausible_append(term: u64) -> impl Strategy<Value = MessageBody> {
    (
        0..8u64,
        0..=term,
        prop::collection::vec(0..2u64, 0..7),
        0..10u64,
    )
        .prop_map(move |(prev_index, prev_term, rises, commit)| {
            let prev_term = if prev_index == 0 { 0 } else { prev_term };
            let mut entry_term = prev_term.max(1);
            let entries = rises
                .iter()
                .enumerate()
                .map(|(i, rise)| {
                    entry_term = (entry_term + rise).min(term.max(1));
                    entry(prev_index + 1 + i as u64, entry_term)
                })
                .collect();
            MessageBody::AppendEntries(AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            })
        })
}

fn message() -> impl Strategy<Value = Message> {
    (prop_oneof![1..5u64, Just(ME)], term()).prop_flat_map(|(from, term)| {
        let body = if term <= 8 {
            prop_oneof![body(), plausible_append(term)].boxed()
        } else {
            body().boxed()
        };
        body.prop_map(move |body| Message {
            from,
            to: ME,
            term,
            body,
        })
    })
}

/// Steps `message` (if the codec and the transport's batch rules take it)
/// into `raft`; checks the one-response rule.
fn deliver(raft: &mut Raft, message: Message) {
    let Ok(message) = cairn_rsm::decode(cairn_rsm::encode(&message)) else {
        return;
    };
    // The transport refuses these before the core (rsm's batch check).
    if message.from == ME || message.is_response() && message.to != ME {
        return;
    }
    let from = message.from;
    let is_request = message.is_request();
    raft.step(message.clone());
    let sent = drain(raft);
    if is_request {
        let responses = sent
            .iter()
            .filter(|m| m.to == from && m.is_response())
            .count();
        assert_eq!(
            responses, 1,
            "{message:?} got {responses} responses: {sent:?}"
        );
    }
}

proptest! {
    #[test]
    fn hostile_messages_never_panic_and_every_request_is_answered_once(
        messages in prop::collection::vec(message(), 1..12),
        role in 0..3u8,
    ) {
        let mut raft = match role {
            0 => follower(),
            1 => candidate(),
            _ => leader(),
        };
        for message in messages {
            deliver(&mut raft, message);
            raft.tick();
            drain(&mut raft);
        }
    }

    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_a_message_the_core_survives(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(message) = proto::Message::decode(&bytes[..])
            && let Ok(mut message) = cairn_rsm::decode(message)
        {
            message.to = ME;
            deliver(&mut follower(), message.clone());
            deliver(&mut leader(), message);
        }
    }

    #[test]
    fn mutated_messages_decode_to_an_error_or_a_message_the_core_survives(
        message in message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = cairn_rsm::encode(&message).encode_to_vec();
        for (at, value) in flips {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
        }
        if let Ok(decoded) = proto::Message::decode(&bytes[..])
            && let Ok(mut decoded) = cairn_rsm::decode(decoded)
        {
            decoded.to = ME;
            deliver(&mut follower(), decoded.clone());
            deliver(&mut leader(), decoded);
        }
    }
}
