//! What an ordinary user sees when file permissions stand in the way. Root
//! bypasses permission bits, so under root each check re-runs in a child
//! process as `nobody` (see `common::unprivileged`).

mod common;

use std::fs;
use std::path::Path;

use common::{child_dir, chmod, event, sibling, tempdir, unprivileged};
use selfheal_event::EventKind;
use selfheal_store::{OpenError, Query, Store};

/// A closed store with three events, readable by everyone.
fn make_store(path: &Path) {
    let mut store = Store::open(path).unwrap();
    for t in 1..=3 {
        store
            .append(&event(t, EventKind::Alert, Some("db"), None))
            .unwrap();
    }
    store.close().unwrap();
    chmod(path, 0o644);
}

#[test]
fn the_daemon_needs_write_access_to_the_file() {
    fn check(dir: &Path) {
        let path = dir.join("s.db");
        let err = Store::open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OpenError::PermissionDenied { .. }), "{msg}");
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("--store"),
            "{msg}"
        );
        // Reading is still allowed.
        let reader = Store::open_read_only(&path).unwrap();
        assert_eq!(reader.query(&Query::new()).unwrap().len(), 3);
    }
    if let Some(dir) = child_dir() {
        return check(&dir);
    }
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    make_store(&path);
    chmod(&path, 0o444);
    let before = fs::read(&path).unwrap();
    unprivileged(
        "the_daemon_needs_write_access_to_the_file",
        tmp.path(),
        check,
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn an_unreadable_store_is_refused() {
    fn check(dir: &Path) {
        let path = dir.join("s.db");
        for err in [
            Store::open_read_only(&path).unwrap_err(),
            Store::open(&path).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(matches!(err, OpenError::PermissionDenied { .. }), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
    }
    if let Some(dir) = child_dir() {
        return check(&dir);
    }
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    make_store(&path);
    chmod(&path, 0o000);
    unprivileged("an_unreadable_store_is_refused", tmp.path(), check);
}

#[test]
fn a_directory_that_cannot_be_created_is_named() {
    fn check(dir: &Path) {
        let locked = dir.join("locked");
        let err = Store::open(locked.join("sub/s.db")).unwrap_err();
        match &err {
            OpenError::CreateDir { dir, .. } => assert_eq!(dir, &locked.join("sub")),
            other => panic!("unexpected: {other}"),
        }
        assert!(
            err.to_string()
                .contains("create it yourself or pass --store PATH"),
            "{err}"
        );
        // The directory exists but the file cannot be created in it.
        let err = Store::open(locked.join("s.db")).unwrap_err();
        assert!(matches!(err, OpenError::PermissionDenied { .. }), "{err}");
    }
    if let Some(dir) = child_dir() {
        return check(&dir);
    }
    let tmp = tempdir();
    let locked = tmp.path().join("locked");
    fs::create_dir(&locked).unwrap();
    chmod(&locked, 0o555);
    unprivileged(
        "a_directory_that_cannot_be_created_is_named",
        tmp.path(),
        check,
    );
    assert_eq!(
        fs::read_dir(&locked).unwrap().count(),
        0,
        "something was created"
    );
    chmod(&locked, 0o755);
}

#[test]
fn a_read_only_directory_is_read_as_a_snapshot() {
    fn check(dir: &Path) {
        let path = dir.join("ro/s.db");
        let reader = Store::open_read_only(&path).unwrap();
        assert!(reader.is_snapshot(), "expected the immutable fallback");
        let events = reader.query(&Query::new()).unwrap();
        assert_eq!(events.len(), 3);
        assert!(!sibling(&path, "-shm").exists());
        // The file itself is writable, but WAL needs files next to it.
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, OpenError::PermissionDenied { .. }), "{err}");
        assert!(err.to_string().contains("-wal/-shm"), "{err}");
    }
    if let Some(dir) = child_dir() {
        return check(&dir);
    }
    let tmp = tempdir();
    let ro = tmp.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let path = ro.join("s.db");
    make_store(&path);
    chmod(&path, 0o666);
    chmod(&ro, 0o555);
    let before = fs::read(&path).unwrap();
    unprivileged(
        "a_read_only_directory_is_read_as_a_snapshot",
        tmp.path(),
        check,
    );
    assert_eq!(fs::read(&path).unwrap(), before);
    chmod(&ro, 0o755);
}

#[test]
fn a_read_only_directory_with_a_running_writer_is_read_live() {
    fn check(dir: &Path) {
        let path = dir.join("ro/s.db");
        match Store::open_read_only(&path) {
            Ok(reader) => {
                assert!(!reader.is_snapshot());
                // The last event is only in the -wal file.
                assert_eq!(reader.query(&Query::new()).unwrap().len(), 4);
            }
            // Acceptable if SQLite cannot use a read-only -shm: the error
            // must say why instead of showing stale data.
            Err(e @ OpenError::PermissionDenied { .. }) => {
                assert!(e.to_string().contains("-wal"), "{e}");
                println!("read-only -shm not usable here: {e}");
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    if let Some(dir) = child_dir() {
        return check(&dir);
    }
    let tmp = tempdir();
    let ro = tmp.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let path = ro.join("s.db");
    make_store(&path);
    // The "daemon" keeps its connection open, so -wal and -shm stay (and are
    // created with the store file's 0644).
    let mut writer = Store::open(&path).unwrap();
    writer
        .append(&event(4, EventKind::Stop, None, None))
        .unwrap();
    assert!(common::sibling(&path, "-wal").metadata().unwrap().len() > 0);
    chmod(&ro, 0o555);
    unprivileged(
        "a_read_only_directory_with_a_running_writer_is_read_live",
        tmp.path(),
        check,
    );
    chmod(&ro, 0o755);
    drop(writer);
}
