//! The trash commands as the log applies them: delete into the trash,
//! undelete and purge, their refusals, and the snapshot keeping the trash.

use cairn_rpc::fs::{AddChunk, Create, Delete, Purge, Undelete};

use super::tests::{code, command, register, reply};
use super::*;

const RETENTION_MS: u64 = 60_000;

fn delete(path: &[u8], deleted_at_ms: u64) -> Op {
    Op::Delete(Delete {
        path: path.to_vec(),
        recursive: true,
        skip_trash: false,
        deleted_at_ms,
    })
}

fn undelete(path: &[u8], now_ms: u64) -> Op {
    Op::Undelete(Undelete {
        path: path.to_vec(),
        now_ms,
        retention_ms: RETENTION_MS,
    })
}

fn purge(trash_id: u64, now_ms: u64) -> Op {
    Op::Purge(Purge {
        trash_id,
        now_ms,
        retention_ms: RETENTION_MS,
    })
}

/// A state with the file `/f` of one granted chunk; returns the handle.
fn with_a_file(state: &mut MasterState, client: u64) -> u64 {
    let create = Op::Create(Create {
        path: b"/f".to_vec(),
    });
    state.apply(2, &command(client, 1, create));
    let add = Op::AddChunk(AddChunk {
        path: b"/f".to_vec(),
        index: 0,
    });
    let handle = reply(state.apply(3, &command(0, 0, add))).handle;
    let grant = Op::GrantVersion(cairn_rpc::fs::GrantVersion {
        handle,
        expected: 0,
        replicas: vec!["http://cs0:1".into()],
    });
    state.apply(4, &command(0, 0, grant));
    handle
}

#[test]
fn delete_undelete_and_purge_through_the_log() {
    let mut state = MasterState::new();
    let client = register(&mut state, 1);
    let handle = with_a_file(&mut state, client);
    let deleted = reply(state.apply(5, &command(client, 2, delete(b"/f", 1_000))));
    assert_eq!(code(&deleted), FsErrorCode::Ok);
    assert!(deleted.freed.is_empty(), "kept in the trash: nothing freed");
    assert!(state.namespace().references(handle));
    assert_eq!(state.granted_to(handle).len(), 1);
    // The snapshot keeps the trash.
    let mut restored = MasterState::new();
    restored.restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state);
    let back = reply(state.apply(6, &command(client, 3, undelete(b"/f", 2_000))));
    assert_eq!(code(&back), FsErrorCode::Ok);
    assert!(state.namespace().get(&FsPath::parse("/f").unwrap()).is_ok());
    // Deleted again, then purged once the retention ran out: the chunk is
    // unreferenced and its grant forgotten.
    state.apply(7, &command(client, 4, delete(b"/f", 3_000)));
    let (id, _) = state.namespace().trashed().next().unwrap();
    let early = reply(state.apply(8, &command(0, 0, purge(id, 3_000 + RETENTION_MS - 1))));
    assert_eq!(code(&early), FsErrorCode::TrashNotExpired);
    let purged = reply(state.apply(9, &command(0, 0, purge(id, 3_000 + RETENTION_MS))));
    assert_eq!(purged.freed, [handle]);
    assert!(!state.namespace().references(handle));
    assert!(state.granted_to(handle).is_empty());
    let again = reply(state.apply(10, &command(0, 0, purge(id, u64::MAX))));
    assert_eq!((code(&again), again.freed.len()), (FsErrorCode::Ok, 0));
}

#[test]
fn undelete_refusals_say_why() {
    let mut state = MasterState::new();
    let client = register(&mut state, 1);
    with_a_file(&mut state, client);
    let never = reply(state.apply(5, &command(client, 2, undelete(b"/g", 0))));
    assert_eq!(code(&never), FsErrorCode::NotInTrash);
    assert!(never.message.contains("ls --trash"), "{}", never.message);
    state.apply(6, &command(client, 3, delete(b"/f", 1_000)));
    let late = reply(state.apply(
        7,
        &command(client, 4, undelete(b"/f", 1_000 + RETENTION_MS)),
    ));
    assert_eq!(code(&late), FsErrorCode::TrashExpired);
    let create = Op::Create(Create {
        path: b"/f".to_vec(),
    });
    state.apply(8, &command(client, 5, create));
    let onto = reply(state.apply(9, &command(client, 6, undelete(b"/f", 2_000))));
    assert_eq!(code(&onto), FsErrorCode::AlreadyExists);
    let bad = reply(state.apply(10, &command(client, 7, undelete(b"f", 2_000))));
    assert_eq!(code(&bad), FsErrorCode::InvalidPath);
}

#[test]
fn a_purge_inside_the_retention_is_refused_whoever_sends_it() {
    // A purge with a session is applied as a session's command; the
    // server refuses it from clients before the log (master.rs), and the
    // apply still refuses one inside the retention.
    let mut state = MasterState::new();
    let client = register(&mut state, 1);
    with_a_file(&mut state, client);
    state.apply(5, &command(client, 2, delete(b"/f", 1_000)));
    let early = reply(state.apply(6, &command(client, 3, purge(1, 1_000))));
    assert_eq!(code(&early), FsErrorCode::TrashNotExpired);
}
