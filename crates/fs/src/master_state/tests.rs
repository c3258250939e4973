use cairn_rpc::fs::{AddChunk, Create, Delete, GrantVersion, Mkdir, Register, Rename, Snapshot};
use proptest::prelude::*;

use super::*;

pub(super) fn command(client_id: u64, seq: u64, op: Op) -> Vec<u8> {
    MasterCommand {
        client_id,
        seq,
        op: Some(op),
    }
    .encode_to_vec()
}

pub(super) fn reply(bytes: Bytes) -> MasterReply {
    MasterReply::decode(bytes).unwrap()
}

pub(super) fn code(reply: &MasterReply) -> FsErrorCode {
    FsErrorCode::try_from(reply.error).unwrap()
}

/// Registers a session at `index`; returns its id.
pub(super) fn register(state: &mut MasterState, index: u64) -> u64 {
    let answer = reply(state.apply(index, &command(0, 0, Op::Register(Register {}))));
    assert_eq!(answer.client_id, index);
    index
}

#[test]
fn commands_change_the_namespace_and_refusals_say_why() {
    let mut state = MasterState::new();
    let client = register(&mut state, 1);
    let mkdir = Op::Mkdir(Mkdir {
        path: b"/jobs/out".to_vec(),
        parents: true,
    });
    assert_eq!(
        code(&reply(state.apply(2, &command(client, 1, mkdir)))),
        FsErrorCode::Ok
    );
    let create = |path: &[u8]| {
        Op::Create(Create {
            path: path.to_vec(),
        })
    };
    assert_eq!(
        code(&reply(
            state.apply(3, &command(client, 2, create(b"/jobs/out/part-0")))
        )),
        FsErrorCode::Ok
    );
    let again = reply(state.apply(4, &command(client, 3, create(b"/jobs/out/part-0"))));
    assert_eq!(code(&again), FsErrorCode::AlreadyExists);
    assert!(
        again.message.contains("/jobs/out/part-0"),
        "{}",
        again.message
    );
    let bad = reply(state.apply(5, &command(client, 4, create(b"relative"))));
    assert_eq!(code(&bad), FsErrorCode::InvalidPath);
    let add = Op::AddChunk(AddChunk {
        path: b"/jobs/out/part-0".to_vec(),
        index: 0,
    });
    let handle = reply(state.apply(6, &command(client, 5, add))).handle;
    assert_ne!(handle, 0);
    let grant = Op::GrantVersion(GrantVersion {
        handle,
        expected: 0,
        replicas: vec![],
    });
    assert_eq!(reply(state.apply(7, &command(client, 6, grant))).version, 1);
    let delete = Op::Delete(Delete {
        path: b"/jobs".to_vec(),
        recursive: true,
        skip_trash: true,
        deleted_at_ms: 0,
    });
    assert_eq!(
        reply(state.apply(8, &command(client, 7, delete))).freed,
        [handle]
    );
    assert!(state.namespace().is_empty());
}

#[test]
fn a_retried_command_is_answered_as_the_first_time_and_applied_once() {
    let mut state = MasterState::new();
    let client = register(&mut state, 1);
    let create = command(
        client,
        1,
        Op::Create(Create {
            path: b"/f".to_vec(),
        }),
    );
    let first = state.apply(2, &create);
    assert_eq!(code(&reply(first.clone())), FsErrorCode::Ok);
    // The reply was lost; the clerk sends the same command again.
    assert_eq!(state.apply(3, &create), first);
    let rename = command(
        client,
        2,
        Op::Rename(Rename {
            from: b"/f".to_vec(),
            to: b"/g".to_vec(),
            replace: false,
        }),
    );
    let renamed = state.apply(4, &rename);
    assert_eq!(code(&reply(renamed.clone())), FsErrorCode::Ok);
    // Applied a second time it would fail with NOT_FOUND.
    assert_eq!(state.apply(5, &rename), renamed);
    // An unknown session is refused, and changes nothing.
    let before = state.clone();
    let stranger = reply(state.apply(
        6,
        &command(
            999,
            1,
            Op::Create(Create {
                path: b"/x".to_vec(),
            }),
        ),
    ));
    assert_eq!(code(&stranger), FsErrorCode::SessionExpired);
    assert_eq!(state.namespace(), before.namespace());
    // A command with no operation, or undecodable, is refused.
    assert_eq!(
        code(&reply(
            state.apply(7, &MasterCommand::default().encode_to_vec())
        )),
        FsErrorCode::UnknownCommand
    );
    assert_eq!(
        code(&reply(state.apply(8, b"\xff\xff\xff"))),
        FsErrorCode::UnknownCommand
    );
}

/// The race the leader's check closes: while it revoked the leases of a
/// file's chunks, a writer added a chunk (and could hold a lease on it).
/// The snapshot naming the old chunks is refused without being remembered,
/// so the leader's retry under the same sequence number, naming the new
/// chunk too, is carried out; a snapshot from an older log (unmarked)
/// applies as before.
#[test]
fn a_snapshot_whose_source_gained_a_chunk_is_refused_and_retried() {
    let mut state = MasterState::new();
    let client = register(&mut state, 1);
    let create = Op::Create(Create {
        path: b"/d/log".to_vec(),
    });
    let mkdir = Op::Mkdir(Mkdir {
        path: b"/d".to_vec(),
        parents: true,
    });
    state.apply(2, &command(client, 1, mkdir));
    state.apply(3, &command(client, 2, create));
    let add = |index| {
        Op::AddChunk(AddChunk {
            path: b"/d/log".to_vec(),
            index,
        })
    };
    let first = reply(state.apply(4, &command(client, 3, add(0)))).handle;
    let snapshot = |dst: &[u8], revoked: Vec<u64>| {
        Op::Snapshot(Snapshot {
            src: b"/d".to_vec(),
            dst: dst.to_vec(),
            revoked_known: true,
            revoked,
        })
    };
    // The leader revoked `first`'s lease; meanwhile chunk 1 was added.
    let second = reply(state.apply(5, &command(client, 4, add(1)))).handle;
    let before = state.clone();
    let refused = reply(state.apply(6, &command(client, 5, snapshot(b"/s", vec![first]))));
    assert_eq!(code(&refused), FsErrorCode::SourceChanged);
    assert!(
        refused.message.contains(&format!("chunk {second}")),
        "{}",
        refused.message
    );
    assert_eq!(state.namespace(), before.namespace());
    // The retry, same sequence number, names both: carried out.
    let done = reply(state.apply(7, &command(client, 5, snapshot(b"/s", vec![first, second]))));
    assert_eq!(code(&done), FsErrorCode::Ok);
    assert!(state.namespace().is_shared(second));
    // Unmarked (an older log's command): no check.
    let old = Op::Snapshot(Snapshot {
        src: b"/d".to_vec(),
        dst: b"/t".to_vec(),
        ..Snapshot::default()
    });
    assert_eq!(
        code(&reply(state.apply(8, &command(client, 6, old)))),
        FsErrorCode::Ok
    );
}

#[test]
fn the_snapshot_keeps_the_namespace_and_the_sessions() {
    let mut state = MasterState::new();
    let client = register(&mut state, 1);
    let mkdir = command(
        client,
        1,
        Op::Mkdir(Mkdir {
            path: b"/a/b".to_vec(),
            parents: true,
        }),
    );
    let answer = state.apply(2, &mkdir);
    let mut restored = MasterState::new();
    restored.restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state);
    // The retry after a restore still gets the first answer.
    assert_eq!(restored.apply(3, &mkdir), answer);
    let add = command(
        client,
        2,
        Op::Create(Create {
            path: b"/a/f".to_vec(),
        }),
    );
    state.apply(4, &add);
    let chunk = reply(state.apply(
        5,
        &command(
            0,
            0,
            Op::AddChunk(AddChunk {
                path: b"/a/f".to_vec(),
                index: 0,
            }),
        ),
    ))
    .handle;
    let grant = Op::GrantVersion(GrantVersion {
        handle: chunk,
        expected: 0,
        replicas: vec!["http://cs0:1".into(), "http://cs1:1".into()],
    });
    assert_eq!(reply(state.apply(6, &command(0, 0, grant))).version, 1);
    assert_eq!(state.granted_to(chunk).len(), 2);
    // Adopting the version it has changes nothing; a higher one forgets
    // the grant (its replicas say nothing of the adopted version).
    let adopt = |version| {
        command(
            0,
            0,
            Op::AdoptVersion(cairn_rpc::fs::AdoptVersion {
                handle: chunk,
                version,
            }),
        )
    };
    state.apply(7, &adopt(1));
    assert_eq!(state.granted_to(chunk).len(), 2);
    let mut adopted = state.clone();
    adopted.apply(8, &adopt(3));
    assert!(adopted.granted_to(chunk).is_empty());
    let mut restored = MasterState::new();
    restored.restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state, "the grants survive a snapshot");
    let mut empty = MasterState::new();
    empty.restore(&[]).unwrap();
    assert_eq!(empty, MasterState::new());
}

#[test]
fn a_decommission_mark_is_set_undone_applied_twice_and_kept_by_the_snapshot() {
    let mut state = MasterState::new();
    let mark = |url: &str, undo: bool| {
        let op = Op::Decommission(cairn_rpc::fs::Decommission {
            url: url.into(),
            undo,
        });
        command(0, 0, op)
    };
    for index in [1, 2] {
        assert_eq!(
            code(&reply(state.apply(index, &mark("http://cs0:1", false)))),
            FsErrorCode::Ok
        );
    }
    state.apply(3, &mark("http://cs1:1", false));
    state.apply(4, &mark("http://cs1:1", true));
    let marked: Vec<&String> = state.decommissioning().iter().collect();
    assert_eq!(marked, ["http://cs0:1"]);
    let mut restored = MasterState::new();
    restored.restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state, "the marks survive a snapshot");
}

proptest! {
    /// Any bytes given to restore are an error or a state that snapshots
    /// to itself; never a panic.
    #[test]
    fn restore_is_total(garbage in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut state = MasterState::new();
        if state.restore(&garbage).is_ok() {
            let mut again = MasterState::new();
            again.restore(&state.snapshot()).unwrap();
            prop_assert_eq!(again, state);
        }
    }

    /// Any command bytes are applied without a panic.
    #[test]
    fn apply_is_total(garbage in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut state = MasterState::new();
        register(&mut state, 1);
        let _ = state.apply(2, &garbage);
    }
}
