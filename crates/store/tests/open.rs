//! Opening stores: initialisation, identification, and refusing (without
//! touching) every file that is not a current selfheal store.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{event, sibling, tempdir};
use rusqlite::Connection;
use selfheal_event::EventKind;
use selfheal_store::{OpenError, Query, Store, StoreError, APPLICATION_ID, SCHEMA_VERSION};

/// Asserts that opening `path` for writing and for reading both fail with
/// an error matching `expected`, that the message names the file, and that
/// the file is byte-identical afterwards.
fn assert_refused(path: &Path, expected: fn(&OpenError) -> bool, fix: &str) {
    let before = fs::read(path).unwrap();
    for (how, result) in [
        ("open", Store::open(path)),
        ("open_read_only", Store::open_read_only(path)),
    ] {
        let err = result.expect_err(how);
        let msg = err.to_string();
        assert!(expected(&err), "{how}: unexpected error: {msg}");
        assert!(
            msg.contains(&path.display().to_string()),
            "{how}: message lacks the path: {msg}"
        );
        assert!(
            msg.contains(fix),
            "{how}: message lacks the fix `{fix}`: {msg}"
        );
        assert_eq!(
            fs::read(path).unwrap(),
            before,
            "{how} modified {}",
            path.display()
        );
    }
}

#[test]
fn a_missing_store_and_its_directory_are_created_private() {
    let tmp = tempdir();
    let path = tmp.path().join("state/selfheal/selfheal.db");
    let mut store = Store::open(&path).unwrap();
    store
        .append(&event(1, EventKind::Start, None, None))
        .unwrap();
    let dir_mode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    let file_mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert_eq!(file_mode & 0o777, 0o600);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn wal_is_on_and_the_file_is_identified_as_ours() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let mut store = Store::open(&path).unwrap();
    store
        .append(&event(1, EventKind::Start, None, None))
        .unwrap();
    assert_eq!(store.journal_mode().unwrap(), "wal");
    assert!(
        sibling(&path, "-wal").exists(),
        "no -wal file while the writer is open"
    );
    let raw = Connection::open(&path).unwrap();
    let app_id: i32 = raw
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(app_id, APPLICATION_ID);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(store.synchronous().unwrap(), "full");
}

#[test]
fn reopening_sees_earlier_events() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    {
        let mut store = Store::open(&path).unwrap();
        store
            .append(&event(10, EventKind::Alert, Some("db"), Some(42)))
            .unwrap();
        store.close().unwrap();
    }
    assert!(
        !sibling(&path, "-wal").exists(),
        "a clean close checkpoints and removes the WAL"
    );
    let store = Store::open(&path).unwrap();
    let events = store.query(&Query::new()).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message, "alert at 10");
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(reader.query(&Query::new()).unwrap(), events);
}

#[test]
fn an_empty_file_is_initialised() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    fs::write(&path, b"").unwrap();
    assert!(matches!(
        Store::open_read_only(&path),
        Err(OpenError::Uninitialised { .. })
    ));
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.journal_mode().unwrap(), "wal");
}

#[test]
fn an_empty_sqlite_database_is_initialised() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn random_bytes_are_refused_untouched() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(&path, &noise).unwrap();
    assert_refused(
        &path,
        |e| matches!(e, OpenError::Corrupt { .. }),
        "move it aside or pass --store PATH",
    );
    assert!(!sibling(&path, "-wal").exists() && !sibling(&path, "-shm").exists());
}

#[test]
fn a_short_file_is_refused_untouched() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    fs::write(&path, b"SQLite format 3\0 and then nothing").unwrap();
    assert_refused(
        &path,
        |e| matches!(e, OpenError::Corrupt { .. }),
        "move it aside",
    );
}

#[test]
fn a_truncated_store_is_refused_untouched() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let mut store = Store::open(&path).unwrap();
    let events: Vec<_> = (0..2000)
        .map(|i| event(i, EventKind::Alert, Some("db"), Some(1)))
        .collect();
    store.append_batch(&events).unwrap();
    store.close().unwrap();
    let full = fs::read(&path).unwrap();
    assert!(
        full.len() > 8 * 4096,
        "store too small to truncate meaningfully"
    );
    fs::write(&path, &full[..full.len() / 2]).unwrap();
    assert_refused(
        &path,
        |e| matches!(e, OpenError::Corrupt { reason, .. } if reason.contains("truncated")),
        "move it aside",
    );
}

#[test]
fn a_foreign_database_is_refused_untouched() {
    let tmp = tempdir();
    // Another application's tables, application_id left at 0.
    let plain = tmp.path().join("plain.db");
    let conn = Connection::open(&plain).unwrap();
    conn.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');")
        .unwrap();
    drop(conn);
    assert_refused(
        &plain,
        |e| matches!(e, OpenError::Foreign { application_id: 0, tables, .. } if tables == "users"),
        "pass --store PATH",
    );
    // Another application's id, in WAL mode like ours.
    let tagged = tmp.path().join("tagged.db");
    let conn = Connection::open(&tagged).unwrap();
    conn.execute_batch(
        "PRAGMA application_id = 305419896; PRAGMA journal_mode = WAL; CREATE TABLE t (x);",
    )
    .unwrap();
    drop(conn);
    assert_refused(
        &tagged,
        |e| {
            matches!(
                e,
                OpenError::Foreign {
                    application_id: 0x1234_5678,
                    ..
                }
            )
        },
        "pass --store PATH",
    );
}

#[test]
fn a_store_from_a_newer_selfheal_is_refused_untouched() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    Store::open(&path).unwrap().close().unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    conn.close().unwrap();
    assert_refused(
        &path,
        |e| matches!(e, OpenError::TooNew { found, .. } if *found == SCHEMA_VERSION + 1),
        "written by a newer selfheal",
    );
    let msg = Store::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("upgrade selfheal or use another --store path"),
        "{msg}"
    );
}

#[test]
fn a_parent_that_is_a_file_is_named() {
    let tmp = tempdir();
    let file = tmp.path().join("afile");
    fs::write(&file, b"x").unwrap();
    let path = file.join("sub/s.db");
    for err in [
        Store::open(&path).unwrap_err(),
        Store::open_read_only(&path).unwrap_err(),
    ] {
        match &err {
            OpenError::ParentNotDirectory { parent, .. } => assert_eq!(parent, &file),
            other => panic!("unexpected: {other}"),
        }
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

#[test]
fn a_directory_is_not_a_store() {
    let tmp = tempdir();
    let err = Store::open(tmp.path()).unwrap_err();
    assert!(matches!(err, OpenError::NotAFile { .. }), "{err}");
}

#[test]
fn read_only_open_never_creates_a_store() {
    let tmp = tempdir();
    let path = tmp.path().join("missing/s.db");
    let err = Store::open_read_only(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OpenError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("has `selfheal watch` run?") && msg.contains("--store"),
        "{msg}"
    );
    assert!(!path.parent().unwrap().exists());
}

#[test]
fn a_read_only_handle_refuses_writes() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    Store::open(&path).unwrap().close().unwrap();
    let mut reader = Store::open_read_only(&path).unwrap();
    assert!(reader.is_read_only() && !reader.is_snapshot());
    let err = reader
        .append(&event(1, EventKind::Start, None, None))
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
}

#[test]
fn two_writers_can_share_a_store() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let mut a = Store::open(&path).unwrap();
    let mut b = Store::open(&path).unwrap();
    a.append(&event(1, EventKind::Start, None, None)).unwrap();
    b.append(&event(2, EventKind::Stop, None, None)).unwrap();
    assert_eq!(a.query(&Query::new()).unwrap().len(), 2);
}

#[test]
fn a_store_with_overwritten_pages_is_refused_untouched() {
    let tmp = tempdir();
    let path = tmp.path().join("s.db");
    let mut store = Store::open(&path).unwrap();
    let events: Vec<_> = (0..2000)
        .map(|i| event(i, EventKind::Alert, Some("db"), Some(1)))
        .collect();
    store.append_batch(&events).unwrap();
    store.close().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 8 * page, "store too small to damage");
    // Keep the header page (so the file still looks like our store) and
    // overwrite every other page with pseudo-random bytes.
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut bytes[page..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OpenError::Damaged { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains(".recover")
            && msg.contains("mv "),
        "{msg}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "left untouched");
}
