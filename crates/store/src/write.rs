//! Appending events and applying retention.

use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, TransactionBehavior};
use selfheal_event::{unix_ms, Event};

use crate::error::StoreError;
use crate::open::Store;

const INSERT: &str =
    "INSERT INTO events (time_unix_ms, kind, severity, source, rule, has_culprit, \
     pid, tid, comm, cgroup, unit, cpu, app, message, details, vm) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// How much history to keep. `None` means no limit of that kind; both limits
/// apply when both are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this (by event time) are deleted.
    pub max_age: Option<Duration>,
    /// Only the newest this many events are kept.
    pub max_count: Option<u64>,
}

impl Store {
    /// Appends one event and returns its id. The event is durable (fsynced)
    /// when this returns.
    pub fn append(&mut self, event: &Event) -> Result<i64, StoreError> {
        self.ensure_writable()?;
        insert(&self.conn, event)
            .map_err(|e| StoreError::sqlite(&self.path, "appending an event", e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Appends events in one transaction: all of them are durable when this
    /// returns, or none is stored. Returns how many were written.
    pub fn append_batch(&mut self, events: &[Event]) -> Result<usize, StoreError> {
        self.ensure_writable()?;
        let path = &self.path;
        let err = |e| StoreError::sqlite(path, "appending events", e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        for event in events {
            insert(&tx, event).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(events.len())
    }

    /// Deletes what `retention` says is too old or too many, measuring age
    /// from now. Returns how many events were deleted.
    pub fn apply_retention(&mut self, retention: &Retention) -> Result<u64, StoreError> {
        self.apply_retention_at(retention, SystemTime::now())
    }

    /// [`Store::apply_retention`] with an explicit "now".
    pub fn apply_retention_at(
        &mut self,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        self.ensure_writable()?;
        let path = &self.path;
        let err = |e| StoreError::sqlite(path, "applying retention", e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut deleted = 0u64;
        if let Some(age) = retention.max_age {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = unix_ms(now).saturating_sub(age_ms);
            deleted += tx
                .execute("DELETE FROM events WHERE time_unix_ms < ?1", [cutoff])
                .map_err(err)? as u64;
        }
        if let Some(count) = retention.max_count {
            let keep = i64::try_from(count).unwrap_or(i64::MAX);
            deleted += tx
                .execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events \
                     ORDER BY time_unix_ms DESC, id DESC LIMIT -1 OFFSET ?1)",
                    [keep],
                )
                .map_err(err)? as u64;
        }
        tx.commit().map_err(err)?;
        if deleted > 0 {
            incremental_vacuum(&self.conn)
                .map_err(|e| StoreError::sqlite(&self.path, "freeing pages after retention", e))?;
        }
        Ok(deleted)
    }
}

/// Gives freed pages back to the file system (the file was created with
/// auto_vacuum=INCREMENTAL; a no-op otherwise). SQLite frees one page per
/// step, so the statement is stepped to the end, not just once.
fn incremental_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

fn insert(conn: &Connection, e: &Event) -> rusqlite::Result<()> {
    let c = e.culprit.as_ref();
    // Null evidence is stored as SQL NULL; serialising a `Value` cannot fail.
    let details = (!e.details.is_null()).then(|| e.details.to_string());
    let mut stmt = conn.prepare_cached(INSERT)?;
    stmt.execute(params![
        e.time_unix_ms,
        e.kind.as_str(),
        e.severity.as_str(),
        e.source.as_str(),
        e.rule,
        c.is_some(),
        c.and_then(|c| c.pid),
        c.and_then(|c| c.tid),
        c.and_then(|c| c.comm.as_deref()),
        c.and_then(|c| c.cgroup.as_deref()),
        c.and_then(|c| c.unit.as_deref()),
        c.and_then(|c| c.cpu),
        c.and_then(|c| c.app.as_deref()),
        e.message,
        details,
        c.and_then(|c| c.vm.as_deref()),
    ])?;
    Ok(())
}
