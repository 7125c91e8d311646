//! Opening a store: for the daemon (create, initialise, migrate) and for the
//! CLI (read-only, never creating or changing anything).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{OpenError, StoreError};
use crate::inspect::{create_store_file, inspect, wal_len, FileState};
use crate::schema::{self, Identity, SCHEMA_VERSION};

/// How long a statement waits for another connection's lock before failing.
/// Readers never block the writer in WAL mode; this covers checkpoints and a
/// second writer (two daemons, or the CLI's one-shot appends).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL file is truncated back to this size after a checkpoint, so a
/// reader that held a snapshot for long does not leave a huge file behind.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// An open event store: one SQLite connection and the path it came from.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    read_only: bool,
    snapshot: bool,
}

impl Store {
    /// Opens the store for writing, creating the directory (mode 0700) and
    /// the file (mode 0600: root only, as root) when missing and
    /// initialising an empty file. An existing file keeps its mode.
    /// A file that is not a selfheal store, or one from a newer selfheal, is
    /// refused and left untouched.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let state = inspect(&path, true)?;
        let mut fresh = state != FileState::Sqlite;
        if state == FileState::Missing {
            create_store_file(&path)?;
        }
        if state == FileState::Sqlite {
            // Ask SQLite whose file it is through a read-only connection: it
            // never writes the main file, not even a checkpoint on close.
            let (conn, id) =
                open_read_only_conn(&path, false).map_err(|e| sqlite_open_error(&path, e))?;
            fresh = schema::classify(&path, &id, SCHEMA_VERSION)?.is_none();
            if !fresh {
                check_integrity(&conn, &path)?;
            }
            drop(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(&path, flags).map_err(|e| sqlite_open_error(&path, e))?;
        configure_writer(&conn, &path, fresh)?;
        schema::migrate(&mut conn, &path)?;
        Ok(Store {
            conn,
            path,
            read_only: false,
            snapshot: false,
        })
    }

    /// Opens an existing store for reading only: never creates, initialises
    /// or migrates, and works while the daemon writes (WAL readers do not
    /// block the writer).
    ///
    /// On a read-only directory SQLite cannot create the `-shm` file a WAL
    /// reader needs. If no `-wal` file holds unflushed frames (no daemon is
    /// running), the file is then opened `immutable`: a consistent snapshot
    /// without locking, which does not see later writes ([`Store::is_snapshot`]).
    /// Otherwise the permission error is returned.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        match inspect(&path, false)? {
            FileState::Missing => return Err(OpenError::NotFound { path }),
            FileState::Empty => return Err(OpenError::Uninitialised { path }),
            FileState::Sqlite => {}
        }
        let (conn, id, snapshot) = match open_read_only_conn(&path, false) {
            Ok((conn, id)) => (conn, id, false),
            Err(e) if is_cant_open(&e) && wal_len(&path) == 0 => {
                tracing::debug!(path = %path.display(), error = %e, "read-only directory: opening an immutable snapshot");
                let (conn, id) =
                    open_read_only_conn(&path, true).map_err(|e| sqlite_open_error(&path, e))?;
                (conn, id, true)
            }
            Err(e) if is_cant_open(&e) => {
                return Err(OpenError::PermissionDenied {
                    detail:
                        "a running daemon's changes are in the -wal file and reading them needs \
                             write access to the directory (for the -shm file)"
                            .to_string(),
                    path,
                })
            }
            Err(e) => return Err(sqlite_open_error(&path, e)),
        };
        match schema::classify(&path, &id, SCHEMA_VERSION)? {
            None => return Err(OpenError::Uninitialised { path }),
            Some(found) if found < SCHEMA_VERSION => {
                return Err(OpenError::NeedsUpgrade {
                    path,
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
        }
        Ok(Store {
            conn,
            path,
            read_only: true,
            snapshot,
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a handle from [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// True when a read-only open fell back to an immutable snapshot (see
    /// [`Store::open_read_only`]); such a handle does not see later writes.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }

    /// Closes the connection; a writer's last close checkpoints the WAL into
    /// the main file and removes the `-wal` and `-shm` files.
    pub fn close(self) -> Result<(), StoreError> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| StoreError::sqlite(&path, "closing", e))
    }

    /// The schema version of the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.pragma("user_version")
    }

    /// The journal mode SQLite reports: `wal` for every writable store.
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        self.pragma("journal_mode")
    }

    /// The connection's `synchronous` setting by name: `full` for a writer.
    pub fn synchronous(&self) -> Result<&'static str, StoreError> {
        Ok(match self.pragma::<i64>("synchronous")? {
            0 => "off",
            1 => "normal",
            2 => "full",
            _ => "extra",
        })
    }

    fn pragma<T: rusqlite::types::FromSql>(&self, name: &str) -> Result<T, StoreError> {
        self.conn
            .pragma_query_value(None, name, |r| r.get(0))
            .map_err(|e| StoreError::sqlite(&self.path, "reading a pragma", e))
    }

    pub(crate) fn ensure_writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        }
        Ok(())
    }
}

/// Opens a read-only connection and reads the file's identity; the first
/// read is where SQLite finds out whether it can use the WAL index.
fn open_read_only_conn(path: &Path, immutable: bool) -> rusqlite::Result<(Connection, Identity)> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = if immutable {
        Connection::open_with_flags(format!("{}?immutable=1", file_uri(path)), flags)?
    } else {
        Connection::open_with_flags(path, flags)?
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let id = schema::identify(&conn)?;
    Ok((conn, id))
}

/// Sets the pragmas the daemon relies on. `fresh`: the file has no tables
/// yet, so page-level settings can still be chosen.
fn configure_writer(conn: &Connection, path: &Path, fresh: bool) -> Result<(), OpenError> {
    let sqlite = |e| sqlite_open_error(path, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    if fresh {
        // Lets retention give freed pages back to the file system; only
        // possible before the first table exists.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(sqlite)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // FULL: in WAL mode every commit fsyncs the WAL, so an event is on disk
    // when `append` returns (NORMAL could lose the last commits on power loss).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(sqlite)?;
    Ok(())
}

fn is_cant_open(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied)
    )
}

/// Maps an SQLite error met while opening to the variant that explains it.
/// Runs `PRAGMA quick_check` (every page and b-tree of the file, without
/// the slower index-content cross-checks of `integrity_check`): a store
/// whose pages were overwritten would otherwise be accepted, and events
/// written to it lost.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let findings: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| match sqlite_open_error(path, e) {
            // An error while checking is itself damage.
            OpenError::Sqlite { source, .. } => OpenError::Damaged {
                path: path.to_path_buf(),
                findings: source.to_string(),
            },
            other => other,
        })?;
    if findings.len() == 1 && findings[0] == "ok" {
        return Ok(());
    }
    Err(OpenError::Damaged {
        path: path.to_path_buf(),
        findings: findings.join("; "),
    })
}

fn sqlite_open_error(path: &Path, e: rusqlite::Error) -> OpenError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => OpenError::Corrupt {
            path,
            reason: "SQLite says it is not a database".to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path,
            reason: format!("SQLite reports damage ({e})"),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            OpenError::PermissionDenied {
                path,
                detail: format!(
                    "SQLite cannot write the file or create its -wal/-shm files next to it ({e})"
                ),
            }
        }
        _ => OpenError::Sqlite { path, source: e },
    }
}

/// `file:` URI for a path: every byte outside the unreserved set and `/` is
/// percent-encoded, so `?`, `#` and `%` in directory names are safe.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escapes_special_bytes() {
        assert_eq!(
            file_uri(Path::new("/a b/c?d#e%f.db")),
            "file:/a%20b/c%3Fd%23e%25f.db"
        );
    }
}
