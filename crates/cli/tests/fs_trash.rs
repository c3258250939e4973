//! Deletion with retention through the real binary: `rm` hides a file,
//! `ls --trash` shows it with its time left, `undelete` brings it back byte
//! for byte, and `rm --skip-trash` deletes at once (nothing to restore).

mod common;

use cairn_testkit::pattern;
use common::fs_store::Store;

#[test]
fn rm_then_undelete_restores_the_file_and_skip_trash_deletes_at_once() {
    let store = Store::start();
    let data = pattern(3 << 20, 1);
    let local = store.dir.path().join("input.bin");
    std::fs::write(&local, &data).unwrap();
    store.ok(&["mkdir", "-p", "/data"]);
    store.ok(&["put", local.to_str().unwrap(), "/data/blob"]);
    store.ok(&["rm", "/data/blob"]);
    let listing = String::from_utf8(store.ok(&["ls", "-R", "/"])).unwrap();
    assert!(!listing.contains("blob"), "{listing}");
    let trash = store.json(&["ls", "--trash"]).unwrap();
    assert_eq!(trash[0]["path"], "/data/blob", "{trash}");
    let text = String::from_utf8(store.ok(&["ls", "--trash", "/data"])).unwrap();
    assert!(
        text.contains("/data/blob") && text.contains("2d 23h"),
        "{text}"
    );

    let restored = store.json(&["undelete", "/data/blob"]).unwrap();
    assert_eq!(restored["restored"], true);
    assert_eq!(store.ok(&["cat", "/data/blob"]), data);
    let out = store.fs(&["undelete", "/data/blob"], b"");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the trash"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    store.ok(&["rm", "--skip-trash", "-r", "/data"]);
    assert_eq!(
        store.json(&["ls", "--trash"]).unwrap(),
        serde_json::json!([])
    );
    let out = store.fs(&["undelete", "/data"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ls --trash"));
}
