use super::*;

fn p(text: &str) -> FsPath {
    FsPath::parse(text).unwrap()
}

/// A namespace with /d/a (two chunks) and /d/e/b (one chunk).
fn sample() -> (Namespace, Vec<ChunkHandle>) {
    let mut ns = Namespace::new();
    ns.mkdir(&p("/d/e"), true).unwrap();
    ns.create(&p("/d/a")).unwrap();
    ns.create(&p("/d/e/b")).unwrap();
    let handles = vec![
        ns.add_chunk(&p("/d/a"), 0).unwrap(),
        ns.add_chunk(&p("/d/a"), 1).unwrap(),
        ns.add_chunk(&p("/d/e/b"), 0).unwrap(),
    ];
    (ns, handles)
}

fn chunks_of(ns: &Namespace, path: &str) -> Vec<ChunkHandle> {
    match ns.get(&p(path)).unwrap() {
        Inode::File { chunks, .. } => chunks.clone(),
        Inode::Directory => panic!("{path} is a directory"),
    }
}

#[test]
fn a_snapshot_shares_every_chunk_of_a_tree() {
    let (mut ns, handles) = sample();
    let shared = ns.snapshot(&p("/d"), &p("/s")).unwrap();
    assert_eq!(shared, handles);
    assert_eq!(chunks_of(&ns, "/s/a"), chunks_of(&ns, "/d/a"));
    assert_eq!(chunks_of(&ns, "/s/e/b"), vec![handles[2]]);
    assert!(
        handles
            .iter()
            .all(|&h| ns.is_shared(h) && ns.chunk(h).unwrap().refs == 2)
    );
    // Refused: into itself, over an existing path, of the root, of nothing.
    let before = ns.clone();
    for (src, dst) in [("/d", "/d/e/x"), ("/d", "/s"), ("/", "/r"), ("/none", "/x")] {
        assert!(ns.snapshot(&p(src), &p(dst)).is_err(), "{src} -> {dst}");
    }
    assert_eq!(ns, before, "a refused snapshot changes nothing");
}

#[test]
fn a_write_copies_a_shared_chunk_and_the_copy_holds_the_old_one() {
    let (mut ns, handles) = sample();
    ns.snapshot(&p("/d/a"), &p("/a2")).unwrap();
    let old = handles[0];
    let new = ns.copy_on_write(&p("/d/a"), 0).unwrap();
    assert_ne!(new, old);
    assert_eq!(
        ns.copy_on_write(&p("/d/a"), 0),
        Ok(new),
        "a retry changes nothing"
    );
    assert_eq!(ns.chunk(new).unwrap().copy_of, Some(old));
    assert_eq!(chunks_of(&ns, "/d/a"), vec![new, handles[1]]);
    assert_eq!(chunks_of(&ns, "/a2"), vec![old, handles[1]]);
    // The snapshot deleted: the old chunk is still held by the copy.
    assert_eq!(ns.delete(&p("/a2"), false).unwrap(), vec![]);
    assert!(ns.references(old));
    assert!(!ns.is_shared(handles[1]));
    // The copy done: the old chunk is garbage.
    assert_eq!(ns.copy_done(new), vec![old]);
    assert_eq!(ns.copy_done(new), vec![], "done twice is nothing");
    assert!(!ns.references(old));
    // A chunk not shared is written in place.
    assert_eq!(ns.copy_on_write(&p("/d/a"), 1), Ok(handles[1]));
}

#[test]
fn deleting_a_file_whose_copy_is_pending_frees_both_chunks() {
    let (mut ns, handles) = sample();
    ns.snapshot(&p("/d/e/b"), &p("/b2")).unwrap();
    let new = ns.copy_on_write(&p("/b2"), 0).unwrap();
    assert_eq!(ns.delete(&p("/d/e/b"), false).unwrap(), vec![]);
    let mut freed = ns.delete(&p("/b2"), false).unwrap();
    freed.sort_unstable();
    assert_eq!(freed, vec![handles[2], new]);
    assert_eq!(ns.chunk_count(), 2);
}

#[test]
fn shared_chunks_and_pending_copies_survive_a_snapshot_of_the_master() {
    let (mut ns, _) = sample();
    ns.snapshot(&p("/d"), &p("/s")).unwrap();
    ns.copy_on_write(&p("/s/a"), 1).unwrap();
    ns.trash(&p("/d/e"), true, 5).unwrap();
    let back = crate::snapshot::decode(&crate::snapshot::encode(&ns)).unwrap();
    assert_eq!(back, ns, "reference counts are recounted the same");
}
