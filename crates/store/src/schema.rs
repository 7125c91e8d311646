//! The versioned schema: how a file is recognised as ours, and the migrations
//! that bring an older file up to [`SCHEMA_VERSION`].
//!
//! `PRAGMA application_id` marks the file as a selfheal store and
//! `PRAGMA user_version` is the schema version. Both are set inside the
//! migration transaction, so a file either has our id and a complete schema or
//! is unchanged.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::OpenError;

/// `PRAGMA application_id` of a selfheal store: the ASCII bytes `sfhl`
/// (0x7366686c, 1936091244). `file(1)` shows it as the application id.
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"sfhl");

/// The schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// One step of the schema history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// The version the file has after this step.
    pub version: i64,
    /// SQL run inside the migration transaction.
    pub sql: &'static str,
}

/// Every migration, in order. Never edit a released entry: add a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        // AUTOINCREMENT: ids never repeat, even after retention empties the
        // table, so a follower polling "id > last seen" never misses an event.
        // `has_culprit` tells "no culprit" from "a culprit with nothing known".
        sql: "
        CREATE TABLE events (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            time_unix_ms INTEGER NOT NULL,
            kind         TEXT    NOT NULL,
            severity     TEXT    NOT NULL,
            source       TEXT    NOT NULL,
            rule         TEXT,
            has_culprit  INTEGER NOT NULL DEFAULT 0 CHECK (has_culprit IN (0, 1)),
            pid          INTEGER,
            tid          INTEGER,
            comm         TEXT,
            cgroup       TEXT,
            unit         TEXT,
            cpu          INTEGER,
            app          TEXT,
            message      TEXT    NOT NULL,
            details      TEXT CHECK (details IS NULL OR json_valid(details))
        );
        CREATE INDEX events_time ON events (time_unix_ms, id);
        CREATE INDEX events_kind_time ON events (kind, time_unix_ms);
        CREATE INDEX events_pid ON events (pid) WHERE pid IS NOT NULL;
        CREATE INDEX events_app_time ON events (app, time_unix_ms) WHERE app IS NOT NULL;
    ",
    },
    Migration {
        version: 2,
        // The virtual machine an event is about or comes from (`selfheal vm`).
        sql: "
        ALTER TABLE events ADD COLUMN vm TEXT;
        CREATE INDEX events_vm_time ON events (vm, time_unix_ms) WHERE vm IS NOT NULL;
    ",
    },
];

/// What SQLite says about a file's owner and version.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub application_id: i32,
    pub user_version: i64,
    pub tables: Vec<String>,
}

/// Reads the identity of the database behind `conn` (reads only).
pub(crate) fn identify(conn: &Connection) -> rusqlite::Result<Identity> {
    let application_id = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let user_version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let tables = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Identity {
        application_id,
        user_version,
        tables,
    })
}

/// Decides whether a file is ours. `Ok(None)`: an empty database, to be
/// initialised; `Ok(Some(v))`: ours at schema `v` (never above
/// `supported`); otherwise the error that refuses it.
pub(crate) fn classify(
    path: &Path,
    id: &Identity,
    supported: i64,
) -> Result<Option<i64>, OpenError> {
    if id.application_id == APPLICATION_ID {
        if id.user_version > supported {
            return Err(OpenError::TooNew {
                path: path.to_path_buf(),
                found: id.user_version,
                supported,
            });
        }
        return Ok(Some(id.user_version));
    }
    if id.application_id == 0 && id.tables.is_empty() && id.user_version == 0 {
        return Ok(None);
    }
    let mut tables: Vec<&str> = id.tables.iter().take(5).map(String::as_str).collect();
    if id.tables.len() > 5 {
        tables.push("…");
    }
    Err(OpenError::Foreign {
        path: path.to_path_buf(),
        application_id: id.application_id as u32,
        tables: if tables.is_empty() {
            "none".to_string()
        } else {
            tables.join(", ")
        },
    })
}

/// Brings the file up to [`SCHEMA_VERSION`] in one IMMEDIATE transaction.
/// The identity is checked again under the write lock, so two daemons
/// starting at once cannot both initialise the file.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    migrate_with(conn, path, MIGRATIONS)
}

/// [`migrate`] with an explicit migration list (tests use broken ones).
pub(crate) fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<(), OpenError> {
    let target = migrations.last().map_or(0, |m| m.version);
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let from = classify(path, &identify(&tx).map_err(sqlite)?, target)?.unwrap_or(0);
    if from == target {
        return Ok(()); // dropping `tx` rolls back the empty transaction
    }
    let failed = |source| OpenError::Migration {
        path: path.to_path_buf(),
        from,
        to: target,
        source,
    };
    for m in migrations.iter().filter(|m| m.version > from) {
        tx.execute_batch(m.sql).map_err(failed)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(failed)?;
    tx.pragma_update(None, "user_version", target)
        .map_err(failed)?;
    tx.commit().map_err(failed)?;
    tracing::info!(path = %path.display(), from, to = target, "store schema migrated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKEN: &[Migration] = &[
        MIGRATIONS[0],
        MIGRATIONS[1],
        Migration {
            version: 3,
            sql: "CREATE TABLE extra (x INTEGER); THIS IS NOT SQL;",
        },
    ];

    #[test]
    fn fresh_database_gets_our_id_and_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let id = identify(&conn).unwrap();
        assert_eq!(id.application_id, APPLICATION_ID);
        assert_eq!(id.user_version, SCHEMA_VERSION);
        assert!(id.tables.contains(&"events".to_string()), "{:?}", id.tables);
        // Running again is a no-op.
        migrate(&mut conn, Path::new(":memory:")).unwrap();
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version_intact() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new("mem.db")).unwrap();
        conn.execute(
            "INSERT INTO events (time_unix_ms, kind, severity, source, message) \
             VALUES (1, 'start', 'info', 'test', 'kept')",
            [],
        )
        .unwrap();
        let err = migrate_with(&mut conn, Path::new("mem.db"), BROKEN).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, OpenError::Migration { from: 2, to: 3, .. }),
            "{msg}"
        );
        assert!(msg.contains("mem.db") && msg.contains("unchanged"), "{msg}");
        let id = identify(&conn).unwrap();
        assert_eq!(id.user_version, 2);
        assert!(!id.tables.contains(&"extra".to_string()), "{:?}", id.tables);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_version_1_store_gains_the_vm_column_and_keeps_its_events() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, Path::new("old.db"), &MIGRATIONS[..1]).unwrap();
        conn.execute(
            "INSERT INTO events (time_unix_ms, kind, severity, source, message, app) \
             VALUES (1, 'app_crash', 'critical', 'app', 'old', 'web')",
            [],
        )
        .unwrap();
        migrate(&mut conn, Path::new("old.db")).unwrap();
        assert_eq!(identify(&conn).unwrap().user_version, 2);
        let (app, vm): (String, Option<String>) = conn
            .query_row("SELECT app, vm FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((app.as_str(), vm), ("web", None));
    }

    #[test]
    fn classification() {
        let p = Path::new("x.db");
        let id = |application_id, user_version, tables: &[&str]| Identity {
            application_id,
            user_version,
            tables: tables.iter().map(|t| t.to_string()).collect(),
        };
        assert_eq!(classify(p, &id(0, 0, &[]), 1).unwrap(), None);
        assert_eq!(
            classify(p, &id(APPLICATION_ID, 1, &["events"]), 1).unwrap(),
            Some(1)
        );
        assert!(matches!(
            classify(p, &id(APPLICATION_ID, 2, &["events"]), 1),
            Err(OpenError::TooNew {
                found: 2,
                supported: 1,
                ..
            })
        ));
        assert!(matches!(
            classify(p, &id(0, 0, &["users"]), 1),
            Err(OpenError::Foreign {
                application_id: 0,
                ..
            })
        ));
        let err = classify(p, &id(0x0f05_5112, 0, &[]), 1).unwrap_err();
        assert!(err.to_string().contains("0x0f055112"), "{err}");
        assert!(matches!(
            classify(p, &id(0, 3, &[]), 1),
            Err(OpenError::Foreign { .. })
        ));
    }
}
