use proptest::prelude::*;

use super::*;

fn p(text: &str) -> FsPath {
    FsPath::parse(text).unwrap()
}

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn directories_and_files_are_created_under_existing_directories() {
    let mut ns = Namespace::new();
    assert_eq!(ns.create(&p("/a/f")), Err(FsError::ParentMissing(p("/a"))));
    assert_eq!(
        ns.mkdir(&p("/a/b"), false),
        Err(FsError::ParentMissing(p("/a")))
    );
    ns.mkdir(&p("/a/b"), true).unwrap();
    ns.mkdir(&p("/a/b"), true).unwrap(); // -p: existing is fine
    assert_eq!(
        ns.mkdir(&p("/a/b"), false),
        Err(FsError::AlreadyExists(p("/a/b")))
    );
    ns.create(&p("/a/f")).unwrap();
    assert_eq!(
        ns.create(&p("/a/f")),
        Err(FsError::AlreadyExists(p("/a/f")))
    );
    assert_eq!(
        ns.create(&p("/a/f/g")),
        Err(FsError::NotADirectory(p("/a/f")))
    );
    assert_eq!(
        ns.mkdir(&p("/a/f/g"), true),
        Err(FsError::NotADirectory(p("/a/f")))
    );
    assert_eq!(
        ns.mkdir(&p("/a/f"), true),
        Err(FsError::AlreadyExists(p("/a/f")))
    );
    assert_eq!(names(&ns.list(&FsPath::root()).unwrap()), ["/a"]);
    assert_eq!(names(&ns.list(&p("/a")).unwrap()), ["/a/b", "/a/f"]);
    assert_eq!(names(&ns.list(&p("/a/f")).unwrap()), ["/a/f"]);
    assert_eq!(ns.list(&p("/x")), Err(FsError::NotFound(p("/x"))));
}

#[test]
fn listing_a_directory_shows_only_its_children() {
    let mut ns = Namespace::new();
    ns.mkdir(&p("/a/b/c"), true).unwrap();
    ns.mkdir(&p("/a-z"), true).unwrap();
    ns.mkdir(&p("/ab"), true).unwrap();
    assert_eq!(names(&ns.list(&p("/a")).unwrap()), ["/a/b"]);
    assert_eq!(
        names(&ns.list(&FsPath::root()).unwrap()),
        ["/a", "/a-z", "/ab"]
    );
}

#[test]
fn delete_frees_chunks_and_refuses_non_empty_directories() {
    let mut ns = Namespace::new();
    ns.mkdir(&p("/d/e"), true).unwrap();
    ns.create(&p("/d/e/f")).unwrap();
    let first = ns.add_chunk(&p("/d/e/f"), 0).unwrap();
    let second = ns.add_chunk(&p("/d/e/f"), 1).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        ns.delete(&p("/d"), false),
        Err(FsError::DirectoryNotEmpty(p("/d")))
    );
    assert_eq!(ns.delete(&FsPath::root(), true), Err(FsError::Root));
    let mut freed = ns.delete(&p("/d"), true).unwrap();
    freed.sort();
    assert_eq!(freed, [first, second]);
    assert!(ns.is_empty());
    assert_eq!(ns.chunk_count(), 0);
    // Handles are never reused.
    ns.create(&p("/g")).unwrap();
    assert!(ns.add_chunk(&p("/g"), 0).unwrap() > second);
}

#[test]
fn rename_moves_whole_subtrees_atomically() {
    let mut ns = Namespace::new();
    ns.mkdir(&p("/jobs/tmp"), true).unwrap();
    ns.create(&p("/jobs/tmp/part-0")).unwrap();
    let chunk = ns.add_chunk(&p("/jobs/tmp/part-0"), 0).unwrap();
    ns.rename(&p("/jobs/tmp"), &p("/jobs/out"), false).unwrap();
    assert_eq!(
        ns.get(&p("/jobs/tmp")),
        Err(FsError::NotFound(p("/jobs/tmp")))
    );
    assert_eq!(
        ns.get(&p("/jobs/out/part-0")),
        Ok(&Inode::File {
            chunks: vec![chunk],
            goal: 0
        })
    );
    assert_eq!(
        ns.rename(&p("/jobs"), &p("/jobs/out/x"), false),
        Err(FsError::MoveIntoItself {
            from: p("/jobs"),
            to: p("/jobs/out/x")
        })
    );
    assert_eq!(
        ns.rename(&p("/nope"), &p("/x"), false),
        Err(FsError::NotFound(p("/nope")))
    );
    assert_eq!(
        ns.rename(&p("/jobs/out"), &p("/none/x"), false),
        Err(FsError::ParentMissing(p("/none")))
    );
}

#[test]
fn rename_over_an_existing_file_only_when_asked() {
    let mut ns = Namespace::new();
    ns.create(&p("/a")).unwrap();
    ns.create(&p("/b")).unwrap();
    let old = ns.add_chunk(&p("/b"), 0).unwrap();
    assert_eq!(
        ns.rename(&p("/a"), &p("/b"), false),
        Err(FsError::AlreadyExists(p("/b")))
    );
    assert_eq!(ns.rename(&p("/a"), &p("/b"), true), Ok(vec![old]));
    assert_eq!(
        ns.get(&p("/b")),
        Ok(&Inode::File {
            chunks: vec![],
            goal: 0
        })
    );
    assert_eq!(ns.chunk_count(), 0);
    ns.mkdir(&p("/dir"), false).unwrap();
    assert_eq!(
        ns.rename(&p("/b"), &p("/dir"), true),
        Err(FsError::IsADirectory(p("/dir")))
    );
}

#[test]
fn chunks_are_added_once_per_index_and_versions_move_forward() {
    let mut ns = Namespace::new();
    ns.create(&p("/f")).unwrap();
    let handle = ns.add_chunk(&p("/f"), 0).unwrap();
    // A retry, or a second writer that saw the same length, gets the same chunk.
    assert_eq!(ns.add_chunk(&p("/f"), 0), Ok(handle));
    assert_eq!(
        ns.add_chunk(&p("/f"), 2),
        Err(FsError::ChunkCountChanged {
            path: p("/f"),
            chunks: 1,
            expected: 2
        })
    );
    assert_eq!(ns.chunk(handle).unwrap().version, 0);
    assert_eq!(ns.bump_version(handle, 0), Ok(1));
    assert_eq!(
        ns.bump_version(handle, 0),
        Err(FsError::VersionChanged {
            handle,
            current: 1,
            expected: 0
        })
    );
    ns.adopt_version(handle, 5).unwrap();
    ns.adopt_version(handle, 3).unwrap();
    assert_eq!(ns.chunk(handle).unwrap().version, 5);
    assert_eq!(ns.bump_version(99, 0), Err(FsError::NoSuchChunk(99)));
}

/// One namespace operation, for the random sequences below.
#[derive(Debug, Clone)]
enum Op {
    Mkdir(String, bool),
    Create(String),
    Delete(String, bool),
    Rename(String, String, bool),
    AddChunk(String, usize),
    Bump(u64, u64),
    Trash(String, bool, u64),
    Undelete(String, u64),
    Purge(u64, u64),
}

fn small_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4)
        .prop_map(|names| format!("/{}", names.join("/")))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (small_path(), any::<bool>()).prop_map(|(p, r)| Op::Mkdir(p, r)),
        small_path().prop_map(Op::Create),
        (small_path(), any::<bool>()).prop_map(|(p, r)| Op::Delete(p, r)),
        (small_path(), small_path(), any::<bool>()).prop_map(|(a, b, r)| Op::Rename(a, b, r)),
        (small_path(), 0usize..3).prop_map(|(p, i)| Op::AddChunk(p, i)),
        (1u64..8, 0u64..3).prop_map(|(h, v)| Op::Bump(h, v)),
        (small_path(), any::<bool>(), 0u64..20).prop_map(|(p, r, t)| Op::Trash(p, r, t)),
        (small_path(), 0u64..40).prop_map(|(p, t)| Op::Undelete(p, t)),
        (1u64..6, 0u64..40).prop_map(|(id, t)| Op::Purge(id, t)),
    ]
}

fn apply(ns: &mut Namespace, op: &Op) -> bool {
    match op {
        Op::Mkdir(path, parents) => ns.mkdir(&p(path), *parents).is_ok(),
        Op::Create(path) => ns.create(&p(path)).is_ok(),
        Op::Delete(path, recursive) => ns.delete(&p(path), *recursive).is_ok(),
        Op::Rename(from, to, replace) => ns.rename(&p(from), &p(to), *replace).is_ok(),
        Op::AddChunk(path, index) => ns.add_chunk(&p(path), *index).is_ok(),
        Op::Bump(handle, version) => ns.bump_version(*handle, *version).is_ok(),
        Op::Trash(path, recursive, at) => ns.trash(&p(path), *recursive, *at).is_ok(),
        Op::Undelete(path, now) => ns.undelete(&p(path), *now, 10).is_ok(),
        Op::Purge(id, now) => ns.purge(*id, *now, 10).is_ok(),
    }
}

proptest! {
    /// After any sequence of operations the namespace is well formed (what
    /// a snapshot's decoder checks), and a refused operation changed nothing.
    #[test]
    fn any_sequence_keeps_the_namespace_well_formed(ops in proptest::collection::vec(op(), 0..40)) {
        let mut ns = Namespace::new();
        for op in &ops {
            let before = ns.clone();
            if !apply(&mut ns, op) {
                prop_assert_eq!(&ns, &before, "refused {:?} changed the namespace", op);
            }
            let (entries, chunks, next) = ns.parts();
            let (trash, next_trash_id) = ns.trash_parts();
            let rebuilt = Namespace::from_parts(
                entries.clone(),
                chunks.clone(),
                next,
                (trash.clone(), next_trash_id),
            );
            prop_assert_eq!(rebuilt.as_ref(), Ok(&ns), "after {:?}", op);
        }
    }
}

#[test]
fn a_replication_goal_is_kept_by_the_file_and_its_chunks_old_and_new() {
    let mut ns = Namespace::new();
    let p = |t: &str| FsPath::parse(t).unwrap();
    ns.mkdir(&p("/d"), false).unwrap();
    ns.create(&p("/d/f")).unwrap();
    let first = ns.add_chunk(&p("/d/f"), 0).unwrap();
    assert_eq!(ns.chunk(first).unwrap().goal_or(3), 3);
    ns.set_replication(&p("/d/f"), 5).unwrap();
    let second = ns.add_chunk(&p("/d/f"), 1).unwrap();
    assert_eq!(ns.chunk(first).unwrap().goal_or(3), 5);
    assert_eq!(ns.chunk(second).unwrap().goal_or(3), 5);
    let before = ns.clone();
    assert_eq!(
        ns.set_replication(&p("/d/f"), 0),
        Err(FsError::BadReplication(0))
    );
    assert_eq!(
        ns.set_replication(&p("/d/f"), MAX_REPLICATION + 1),
        Err(FsError::BadReplication(MAX_REPLICATION + 1))
    );
    assert_eq!(
        ns.set_replication(&p("/d"), 2),
        Err(FsError::IsADirectory(p("/d")))
    );
    assert_eq!(
        ns.set_replication(&p("/nope"), 2),
        Err(FsError::NotFound(p("/nope")))
    );
    assert_eq!(ns, before, "refusals change nothing");
    ns.rename(&p("/d/f"), &p("/g"), false).unwrap();
    assert_eq!(
        ns.get(&p("/g")).unwrap(),
        &Inode::File {
            chunks: vec![first, second],
            goal: 5
        }
    );
}
