//! Messages a correct peer would never send, or would send only late: the
//! core must answer them (every request gets exactly one response) or drop
//! them, and never reach one of its assertions. Each test here failed before
//! the fix it is named after.

use bytes::Bytes;
use cairn_raft::{
    AppendEntries, ClusterConfig, Config, Entry, EntryKind, HardState, InitialState,
    InstallSnapshot, Message, MessageBody, Raft, RequestVoteResponse, Role, SnapshotMeta,
};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("{index}@{term}")),
    }
}

/// Node 2 of {1, 2, 3} with `entries` durable, `commit` committed, in `term`.
fn follower(term: u64, entries: Vec<Entry>, commit: u64) -> Raft {
    let initial = InitialState {
        cluster: ClusterConfig::new([1, 2, 3]),
        hard_state: HardState {
            term,
            vote: None,
            commit,
        },
        snapshot: None,
        entries,
    };
    let mut raft = Raft::new(Config::new(2), initial, 7).unwrap();
    drain(&mut raft);
    raft
}

/// Processes every pending `Ready`; returns the messages sent.
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

fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Bug 4 of the reliability review: an append whose entries contradict the
/// follower's committed log (entries 1..5 of term 1 from a term-2 leader to
/// a follower that committed 1..3 of term 2) used to reach `push`'s "log
/// terms must not decrease" assertion through the skip-committed path.
#[test]
fn an_append_contradicting_the_committed_log_is_rejected_not_a_panic() {
    let mut raft = follower(2, (1..=3).map(|i| entry(i, 2)).collect(), 3);
    let append = AppendEntries {
        prev_index: 0,
        prev_term: 0,
        entries: (1..=5).map(|i| entry(i, 1)).collect(),
        commit: 5,
    };
    raft.step(message(1, 2, 2, MessageBody::AppendEntries(append)));
    let sent = drain(&mut raft);
    assert_eq!(sent.len(), 1, "one response per request: {sent:?}");
    match &sent[0].body {
        MessageBody::AppendEntriesResponse(response) => {
            assert!(response.reject.is_some(), "must be refused: {response:?}")
        }
        other => panic!("expected an append response, got {other:?}"),
    }
    assert_eq!(raft.status().last_index, 3, "the log is unchanged");
    assert_eq!(raft.entry(3).unwrap().term, 2);
}

/// Appends that are malformed on their face (a gap, decreasing terms, an
/// entry newer than the message, a previous entry newer than the first)
/// are refused with a response and change nothing.
#[test]
fn malformed_appends_are_refused() {
    let malformed = [
        // A gap between entries.
        vec![entry(4, 2), entry(6, 2)],
        // Terms that decrease.
        vec![entry(4, 2), entry(5, 1)],
        // An entry from a later term than the message's.
        vec![entry(4, 3)],
        // Entries that do not start right after prev_index.
        vec![entry(7, 2)],
        // A configuration entry whose bytes are not a configuration.
        vec![Entry {
            kind: EntryKind::Config,
            ..entry(4, 2)
        }],
    ];
    for entries in malformed {
        let mut raft = follower(2, (1..=3).map(|i| entry(i, 2)).collect(), 2);
        let append = AppendEntries {
            prev_index: 3,
            prev_term: 2,
            entries: entries.clone(),
            commit: 3,
        };
        raft.step(message(1, 2, 2, MessageBody::AppendEntries(append)));
        let sent = drain(&mut raft);
        assert_eq!(sent.len(), 1, "{entries:?}: one response: {sent:?}");
        assert!(
            matches!(&sent[0].body, MessageBody::AppendEntriesResponse(r) if r.reject.is_some()),
            "{entries:?}: refused: {sent:?}"
        );
        assert_eq!(raft.status().last_index, 3, "{entries:?}: log unchanged");
    }
}

/// Bug 6: the first chunk's `total_bytes` used to size the buffer, so one
/// message could make a follower reserve any amount of memory (and a huge
/// claim panicked with "capacity overflow").
#[test]
fn a_snapshot_chunk_claiming_a_huge_total_allocates_nothing() {
    let mut raft = follower(2, (1..=3).map(|i| entry(i, 2)).collect(), 3);
    let chunk = InstallSnapshot {
        meta: SnapshotMeta {
            index: 10,
            term: 2,
            config: ClusterConfig::new([1, 2, 3]),
            urls: Default::default(),
        },
        total_bytes: 1 << 62,
        offset: 0,
        data: Bytes::from_static(b"tiny"),
    };
    raft.step(message(1, 2, 2, MessageBody::InstallSnapshot(chunk)));
    let sent = drain(&mut raft);
    assert_eq!(sent.len(), 1, "one response: {sent:?}");
    match &sent[0].body {
        MessageBody::InstallSnapshotResponse(response) => {
            assert!(!response.done, "not installed: {response:?}")
        }
        other => panic!("expected a snapshot response, got {other:?}"),
    }
    assert_eq!(raft.status().snapshot_index, 0);
}

/// A snapshot whose configuration breaks the configuration's invariants
/// (here a voter that is also recorded as removed) is not installed.
#[test]
fn a_snapshot_with_an_impossible_configuration_is_refused() {
    let mut raft = follower(2, (1..=3).map(|i| entry(i, 2)).collect(), 3);
    let mut config = ClusterConfig::new([1, 2, 3]);
    config.removed.insert(3);
    let chunk = InstallSnapshot {
        meta: SnapshotMeta {
            index: 10,
            term: 2,
            config,
            urls: Default::default(),
        },
        total_bytes: 4,
        offset: 0,
        data: Bytes::from_static(b"tiny"),
    };
    raft.step(message(1, 2, 2, MessageBody::InstallSnapshot(chunk)));
    let sent = drain(&mut raft);
    assert!(
        matches!(&sent[..], [m] if matches!(&m.body, MessageBody::InstallSnapshotResponse(r) if !r.done)),
        "one refusal: {sent:?}"
    );
    assert_eq!(raft.status().snapshot_index, 0);
    assert_eq!(raft.cluster(), &ClusterConfig::new([1, 2, 3]));
}

/// Bug 7: a pre-vote grant left over from an older pre-campaign (it carries
/// that campaign's term) was counted towards the current one.
#[test]
fn a_stale_pre_vote_grant_is_not_counted() {
    let mut raft = follower(5, (1..=3).map(|i| entry(i, 5)).collect(), 3);
    // Node 2 pre-campaigns for term 6; the grant is delayed.
    raft.campaign();
    drain(&mut raft);
    assert_eq!(raft.role(), Role::PreCandidate);
    let stale_grant = message(
        3,
        2,
        6,
        MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote: true,
            granted: true,
        }),
    );
    // Meanwhile term 6 started elsewhere: node 1 leads it, node 2 follows.
    let heartbeat = AppendEntries {
        prev_index: 3,
        prev_term: 5,
        entries: Vec::new(),
        commit: 3,
    };
    raft.step(message(1, 2, 6, MessageBody::AppendEntries(heartbeat)));
    drain(&mut raft);
    assert_eq!((raft.role(), raft.term()), (Role::Follower, 6));
    // Node 1 goes quiet; node 2 pre-campaigns again, now for term 7.
    raft.campaign();
    drain(&mut raft);
    assert_eq!((raft.role(), raft.term()), (Role::PreCandidate, 6));
    // The old grant (for term 6) arrives: it must not make node 2 a
    // candidate.
    raft.step(stale_grant);
    drain(&mut raft);
    assert_eq!(
        (raft.role(), raft.term()),
        (Role::PreCandidate, 6),
        "a grant for term 6 was counted in the pre-campaign for term 7"
    );
}

/// A second leader in a leader's own term is impossible in a correct
/// cluster: the leader refuses its messages (answering each), keeps
/// leading, and counts the violation; it used to step down and follow.
#[test]
fn a_second_leader_in_the_same_term_is_refused_and_counted() {
    let mut raft = follower(5, (1..=3).map(|i| entry(i, 5)).collect(), 3);
    raft.campaign();
    drain(&mut raft);
    for (from, term, pre_vote) in [(3, 6, true), (3, 6, false)] {
        let grant = RequestVoteResponse {
            pre_vote,
            granted: true,
        };
        raft.step(message(
            from,
            2,
            term,
            MessageBody::RequestVoteResponse(grant),
        ));
        drain(&mut raft);
    }
    assert_eq!((raft.role(), raft.term()), (Role::Leader, 6));
    let append = AppendEntries {
        prev_index: 3,
        prev_term: 5,
        entries: vec![entry(4, 6)],
        commit: 3,
    };
    raft.step(message(1, 2, 6, MessageBody::AppendEntries(append)));
    let sent = drain(&mut raft);
    let answers: Vec<_> = sent
        .iter()
        .filter(|m| m.to == 1 && m.is_response())
        .collect();
    assert_eq!(answers.len(), 1, "answered once: {sent:?}");
    assert_eq!(
        (raft.role(), raft.term()),
        (Role::Leader, 6),
        "still leading"
    );
    assert_eq!(raft.status().protocol_violations, 1);
    assert_eq!(
        raft.entry(4).map(|e| e.kind),
        Some(EntryKind::Noop),
        "the leader's own no-op stays at 4"
    );
}
