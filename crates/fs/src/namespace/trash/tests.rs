//! The trash's rules: what a delete keeps, what undelete restores or
//! refuses, when a purge unreferences chunks.

use super::*;

const RETENTION: u64 = 1_000;

fn p(text: &str) -> FsPath {
    FsPath::parse(text).unwrap()
}

/// `/d/f` with two chunks and `/d/g` with one; returns every handle.
fn tree() -> (Namespace, Vec<ChunkHandle>) {
    let mut ns = Namespace::new();
    ns.mkdir(&p("/d"), false).unwrap();
    ns.create(&p("/d/f")).unwrap();
    ns.create(&p("/d/g")).unwrap();
    let handles = vec![
        ns.add_chunk(&p("/d/f"), 0).unwrap(),
        ns.add_chunk(&p("/d/f"), 1).unwrap(),
        ns.add_chunk(&p("/d/g"), 0).unwrap(),
    ];
    (ns, handles)
}

#[test]
fn a_deleted_tree_leaves_the_paths_but_keeps_its_chunks_until_purged() {
    let (mut ns, handles) = tree();
    assert_eq!(
        ns.trash(&p("/d"), false, 0),
        Err(FsError::DirectoryNotEmpty(p("/d")))
    );
    assert_eq!(ns.trash(&FsPath::root(), true, 0), Err(FsError::Root));
    let id = ns.trash(&p("/d"), true, 5_000).unwrap();
    assert!(ns.list(&FsPath::root()).unwrap().is_empty());
    assert_eq!(ns.get(&p("/d/f")), Err(FsError::NotFound(p("/d/f"))));
    assert!(handles.iter().all(|&h| ns.references(h)));
    let (_, trashed) = ns.trashed().next().unwrap();
    assert_eq!((trashed.files(), trashed.is_directory()), (2, true));
    // Not yet expired: the purge is refused and changes nothing.
    let before = ns.clone();
    assert_eq!(
        ns.purge(id, 5_000 + RETENTION - 1, RETENTION),
        Err(FsError::TrashNotExpired(id))
    );
    assert_eq!(ns, before);
    assert_eq!(ns.expired(5_000 + RETENTION - 1, RETENTION, 10), vec![]);
    assert_eq!(ns.expired(5_000 + RETENTION, RETENTION, 10), vec![id]);
    let mut freed = ns.purge(id, 5_000 + RETENTION, RETENTION).unwrap();
    freed.sort();
    assert_eq!(freed, handles);
    assert!(handles.iter().all(|&h| !ns.references(h)));
    assert_eq!(ns.chunk_count(), 0);
    // Twice: nothing more to do.
    assert_eq!(ns.purge(id, u64::MAX, RETENTION), Ok(vec![]));
    assert_eq!(
        ns.undelete(&p("/d"), 5_000, RETENTION),
        Err(FsError::NotInTrash(p("/d")))
    );
}

#[test]
fn undelete_restores_the_whole_tree_within_the_retention() {
    let (mut ns, _) = tree();
    let before = ns.clone();
    ns.trash(&p("/d"), true, 100).unwrap();
    ns.undelete(&p("/d"), 100 + RETENTION - 1, RETENTION)
        .unwrap();
    assert_eq!(ns.trashed().count(), 0);
    // The same entries and chunks; only the deletion counter moved.
    assert_eq!(ns.parts(), before.parts());
}

#[test]
fn undelete_refusals_change_nothing() {
    let (mut ns, _) = tree();
    assert_eq!(
        ns.undelete(&p("/never"), 0, RETENTION),
        Err(FsError::NotInTrash(p("/never")))
    );
    ns.trash(&p("/d/f"), false, 100).unwrap();
    // Expired (not yet purged).
    let before = ns.clone();
    assert_eq!(
        ns.undelete(&p("/d/f"), 100 + RETENTION, RETENTION),
        Err(FsError::TrashExpired {
            path: p("/d/f"),
            purge_at_ms: 100 + RETENTION
        })
    );
    // Onto a path that exists again.
    ns.create(&p("/d/f")).unwrap();
    let with_new = ns.clone();
    assert_eq!(
        ns.undelete(&p("/d/f"), 200, RETENTION),
        Err(FsError::AlreadyExists(p("/d/f")))
    );
    assert_eq!(ns, with_new);
    // Its directory is gone.
    let mut ns = before;
    ns.trash(&p("/d"), true, 150).unwrap();
    assert_eq!(
        ns.undelete(&p("/d/f"), 200, RETENTION),
        Err(FsError::ParentMissing(p("/d")))
    );
}

#[test]
fn two_deletions_of_one_path_are_both_kept_and_the_latest_comes_back_first() {
    let mut ns = Namespace::new();
    ns.create(&p("/f")).unwrap();
    let first = ns.add_chunk(&p("/f"), 0).unwrap();
    ns.trash(&p("/f"), false, 10).unwrap();
    ns.create(&p("/f")).unwrap();
    let second = ns.add_chunk(&p("/f"), 0).unwrap();
    ns.trash(&p("/f"), false, 20).unwrap();
    assert_eq!(ns.trashed().count(), 2);
    ns.undelete(&p("/f"), 30, RETENTION).unwrap();
    assert_eq!(
        ns.get(&p("/f")),
        Ok(&Inode::File {
            chunks: vec![second],
            goal: 0
        })
    );
    ns.delete(&p("/f"), false).unwrap();
    ns.undelete(&p("/f"), 30, RETENTION).unwrap();
    assert_eq!(
        ns.get(&p("/f")),
        Ok(&Inode::File {
            chunks: vec![first],
            goal: 0
        })
    );
}

#[test]
fn a_deletion_at_once_unreferences_its_chunks() {
    let (mut ns, handles) = tree();
    let mut freed = ns.delete(&p("/d"), true).unwrap();
    freed.sort();
    assert_eq!(freed, handles);
    assert!(handles.iter().all(|&h| !ns.references(h)));
    assert_eq!(ns.trashed().count(), 0);
}
