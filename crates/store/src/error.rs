//! Errors of the store. Each message names the file and what to do about it,
//! because the operator reads them in a terminal, not in the source.

use std::path::PathBuf;

/// Why a store could not be opened. In every case the file is left exactly
/// as it was found.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is not an SQLite database, or is a damaged one.
    #[error(
        "{path} is not a usable selfheal store: {reason}; it was left untouched: \
         move it aside or pass --store PATH"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// SQLite's integrity check (`PRAGMA quick_check`) found damage in an
    /// existing store: pages overwritten or lost. Writing on would lose
    /// events, so the file is refused untouched.
    #[error(
        "{path} is damaged: SQLite's integrity check reports {findings}; it was left \
         untouched, and events written to it could be lost. Move it aside \
         (mv {path} {path}.damaged) so selfheal starts a fresh store, salvage its events \
         with `sqlite3 {path}.damaged .recover`, or pass --store PATH"
    )]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// The first problems SQLite listed.
        findings: String,
    },

    /// A valid SQLite database that belongs to another application.
    #[error(
        "{path} is an SQLite database of another application \
         (application_id {application_id:#010x}, tables: {tables}); it was left untouched: \
         pass --store PATH to use a selfheal store"
    )]
    Foreign {
        /// The store file.
        path: PathBuf,
        /// The file's `PRAGMA application_id`.
        application_id: u32,
        /// The first few table names, for recognising the file.
        tables: String,
    },

    /// The file's schema version is newer than this build knows.
    #[error(
        "{path} was written by a newer selfheal (schema v{found}; this build knows up to \
         v{supported}); upgrade selfheal or use another --store path"
    )]
    TooNew {
        /// The store file.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i64,
        /// The newest schema this build knows.
        supported: i64,
    },

    /// A read-only open found an older schema, which only a writer may upgrade.
    #[error(
        "{path} has schema v{found}, older than v{supported}, and a read-only open cannot \
         upgrade it; run `selfheal watch` once with this version (it upgrades the store)"
    )]
    NeedsUpgrade {
        /// The store file.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i64,
        /// The schema this build uses.
        supported: i64,
    },

    /// The operating system refused access to the file or its directory.
    #[error(
        "permission denied on {path}: {detail}; run as a user with access to it \
         (root for the system store) or pass --store PATH"
    )]
    PermissionDenied {
        /// The file or directory access was denied on.
        path: PathBuf,
        /// Which access was needed.
        detail: String,
    },

    /// A component of the path that should be a directory is a file.
    #[error(
        "cannot use {path}: {parent} is not a directory; remove or rename it, \
         or pass --store PATH"
    )]
    ParentNotDirectory {
        /// The store file.
        path: PathBuf,
        /// The path component that is not a directory.
        parent: PathBuf,
    },

    /// The store's directory is missing and could not be created.
    #[error(
        "cannot create directory {dir} for the store {path}: {source}; \
         create it yourself or pass --store PATH"
    )]
    CreateDir {
        /// The store file.
        path: PathBuf,
        /// The directory that could not be created.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The path names a directory or a device, not a file.
    #[error("{path} is not a regular file; pass --store PATH naming a file")]
    NotAFile {
        /// The path given as the store.
        path: PathBuf,
    },

    /// A read-only open found no file.
    #[error("no store at {path}; has `selfheal watch` run? pass --store PATH")]
    NotFound {
        /// The store file.
        path: PathBuf,
    },

    /// A read-only open found an empty file that no writer has initialised.
    #[error(
        "the store at {path} is empty (never initialised); has `selfheal watch` run? \
         pass --store PATH"
    )]
    Uninitialised {
        /// The store file.
        path: PathBuf,
    },

    /// SQLite could not switch the file to write-ahead logging.
    #[error(
        "{path}: SQLite could not enable WAL mode (journal mode stayed `{mode}`); \
         the file system may not support it: pass --store PATH on a local disk"
    )]
    NoWal {
        /// The store file.
        path: PathBuf,
        /// The journal mode SQLite reported.
        mode: String,
    },

    /// A schema migration failed; its transaction was rolled back.
    #[error(
        "migrating {path} from schema v{from} to v{to} failed: {source}; the file \
         is unchanged (migrations run in one transaction); please report this bug"
    )]
    Migration {
        /// The store file.
        path: PathBuf,
        /// The version found.
        from: i64,
        /// The version being migrated to.
        to: i64,
        /// The SQLite error.
        source: rusqlite::Error,
    },

    /// Another I/O failure while looking at the file.
    #[error("cannot open the store {path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// Another SQLite failure while opening.
    #[error("cannot open the store {path}: SQLite: {source}")]
    Sqlite {
        /// The store file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
}

/// Why a read or write on an open store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or quota) is full; nothing of the failed operation was kept.
    #[error("disk full while {action} in the store {path}; free space or lower the retention")]
    DiskFull {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
    },

    /// A write was attempted through a read-only handle.
    #[error("the store {path} was opened read-only; only the daemon writes to it")]
    ReadOnly {
        /// The store file.
        path: PathBuf,
    },

    /// A row could not be turned back into an event.
    #[error(
        "the store {path} holds an unreadable row ({what}); it may have been written by \
         a newer selfheal: upgrade selfheal"
    )]
    BadRow {
        /// The store file.
        path: PathBuf,
        /// Which row and what is wrong.
        what: String,
    },

    /// Another SQLite failure.
    #[error("SQLite error while {action} in the store {path}: {source}")]
    Sqlite {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Wraps an SQLite error, recognising the conditions an operator can fix.
    pub(crate) fn sqlite(path: &std::path::Path, action: &'static str, e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path, action },
            _ => StoreError::Sqlite {
                path,
                action,
                source: e,
            },
        }
    }
}
