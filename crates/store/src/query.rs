//! Reading events back: filtered queries and per-kind counts.

use std::time::SystemTime;

use rusqlite::types::Value;
use rusqlite::Row;
use selfheal_event::{unix_ms, Culprit, Event, EventKind};

use crate::error::StoreError;
use crate::open::Store;

const COLUMNS: &str = "id, time_unix_ms, kind, severity, source, rule, has_culprit, \
     pid, tid, comm, cgroup, unit, cpu, app, message, details, vm";

/// Which end of the history a query returns first, and which end `limit` keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Newest first; `limit` keeps the newest events (the API's default).
    #[default]
    NewestFirst,
    /// Oldest first; `limit` keeps the oldest events (paging forward, or
    /// following with [`Query::after_id`]).
    OldestFirst,
    /// The newest `limit` events, returned oldest first (the CLI's tail).
    Tail,
}

/// A filter over the stored events. Every field is optional; the default
/// matches everything, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only events strictly before this time.
    pub until: Option<SystemTime>,
    /// Only these kinds (any of them); empty means all kinds.
    pub kinds: Vec<EventKind>,
    /// Only events whose culprit is this supervised application.
    pub app: Option<String>,
    /// Only events about, or forwarded from, this virtual machine.
    pub vm: Option<String>,
    /// Only events whose culprit is this process.
    pub pid: Option<i32>,
    /// Only events with an id above this one (for following new events).
    pub after_id: Option<i64>,
    /// At most this many events.
    pub limit: Option<u64>,
    /// Result order.
    pub order: Order,
}

impl Query {
    /// A query matching every event, newest first.
    pub fn new() -> Query {
        Query::default()
    }

    /// Sets [`Query::since`].
    pub fn since(mut self, t: SystemTime) -> Query {
        self.since = Some(t);
        self
    }

    /// Sets [`Query::until`].
    pub fn until(mut self, t: SystemTime) -> Query {
        self.until = Some(t);
        self
    }

    /// Adds a kind to [`Query::kinds`].
    pub fn kind(mut self, kind: EventKind) -> Query {
        self.kinds.push(kind);
        self
    }

    /// Sets [`Query::vm`].
    pub fn vm(mut self, vm: impl Into<String>) -> Query {
        self.vm = Some(vm.into());
        self
    }

    /// Sets [`Query::app`].
    pub fn app(mut self, app: impl Into<String>) -> Query {
        self.app = Some(app.into());
        self
    }

    /// Sets [`Query::pid`].
    pub fn pid(mut self, pid: i32) -> Query {
        self.pid = Some(pid);
        self
    }

    /// Sets [`Query::after_id`].
    pub fn after_id(mut self, id: i64) -> Query {
        self.after_id = Some(id);
        self
    }

    /// Sets [`Query::limit`].
    pub fn limit(mut self, n: u64) -> Query {
        self.limit = Some(n);
        self
    }

    /// Sets [`Query::order`].
    pub fn order(mut self, order: Order) -> Query {
        self.order = order;
        self
    }

    /// The SQL and its parameters.
    fn to_sql(&self) -> (String, Vec<Value>) {
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        if let Some(t) = self.since {
            clauses.push("time_unix_ms >= ?".to_string());
            params.push(Value::Integer(unix_ms(t)));
        }
        if let Some(t) = self.until {
            clauses.push("time_unix_ms < ?".to_string());
            params.push(Value::Integer(unix_ms(t)));
        }
        if !self.kinds.is_empty() {
            let marks = vec!["?"; self.kinds.len()].join(", ");
            clauses.push(format!("kind IN ({marks})"));
            params.extend(
                self.kinds
                    .iter()
                    .map(|k| Value::Text(k.as_str().to_string())),
            );
        }
        if let Some(app) = &self.app {
            clauses.push("app = ?".to_string());
            params.push(Value::Text(app.clone()));
        }
        if let Some(vm) = &self.vm {
            clauses.push("vm = ?".to_string());
            params.push(Value::Text(vm.clone()));
        }
        if let Some(pid) = self.pid {
            clauses.push("pid = ?".to_string());
            params.push(Value::Integer(i64::from(pid)));
        }
        if let Some(id) = self.after_id {
            clauses.push("id > ?".to_string());
            params.push(Value::Integer(id));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let dir = if self.order == Order::OldestFirst {
            "ASC"
        } else {
            "DESC"
        };
        // -1 is SQLite's "no limit".
        let limit = self
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        params.push(Value::Integer(limit));
        let sql = format!(
            "SELECT {COLUMNS} FROM events{filter} ORDER BY time_unix_ms {dir}, id {dir} LIMIT ?"
        );
        (sql, params)
    }
}

impl Store {
    /// The events matching `q`, each with its `id` set.
    pub fn query(&self, q: &Query) -> Result<Vec<Event>, StoreError> {
        let err = |e| StoreError::sqlite(&self.path, "querying events", e);
        let (sql, params) = q.to_sql();
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(err)?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            events.push(self.event_from_row(row)?);
        }
        if q.order == Order::Tail {
            events.reverse();
        }
        Ok(events)
    }

    /// How many events of each kind are stored, in [`EventKind::ALL`] order,
    /// omitting kinds with none.
    pub fn count_by_kind(&self) -> Result<Vec<(EventKind, u64)>, StoreError> {
        let err = |e| StoreError::sqlite(&self.path, "counting events", e);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, COUNT(*) FROM events GROUP BY kind")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(err)?;
        let mut counts = Vec::new();
        for row in rows {
            let (name, n) = row.map_err(err)?;
            let kind = name
                .parse::<EventKind>()
                .map_err(|e| self.bad_row(format!("kind count: {e}")))?;
            counts.push((kind, n as u64));
        }
        counts.sort_by_key(|(k, _)| EventKind::ALL.iter().position(|x| x == k));
        Ok(counts)
    }

    fn bad_row(&self, what: String) -> StoreError {
        StoreError::BadRow {
            path: self.path.clone(),
            what,
        }
    }

    fn event_from_row(&self, r: &Row<'_>) -> Result<Event, StoreError> {
        let err = |e| StoreError::sqlite(&self.path, "reading an event", e);
        let id: i64 = r.get(0).map_err(err)?;
        let bad = |what: String| self.bad_row(format!("event id {id}: {what}"));
        let kind: String = r.get(2).map_err(err)?;
        let severity: String = r.get(3).map_err(err)?;
        let has_culprit: bool = r.get(6).map_err(err)?;
        let culprit = if has_culprit {
            let cpu: Option<i64> = r.get(12).map_err(err)?;
            Some(Culprit {
                pid: r.get(7).map_err(err)?,
                tid: r.get(8).map_err(err)?,
                comm: r.get(9).map_err(err)?,
                cgroup: r.get(10).map_err(err)?,
                unit: r.get(11).map_err(err)?,
                cpu: cpu
                    .map(u32::try_from)
                    .transpose()
                    .map_err(|_| bad(format!("cpu {cpu:?} out of range")))?,
                app: r.get(13).map_err(err)?,
                vm: r.get(16).map_err(err)?,
            })
        } else {
            None
        };
        let details: Option<String> = r.get(15).map_err(err)?;
        let details = match details {
            None => serde_json::Value::Null,
            Some(text) => serde_json::from_str(&text).map_err(|e| bad(format!("details: {e}")))?,
        };
        Ok(Event {
            id: Some(id),
            time_unix_ms: r.get(1).map_err(err)?,
            kind: kind.parse().map_err(|e| bad(format!("{e}")))?,
            severity: severity.parse().map_err(|e| bad(format!("{e}")))?,
            source: r.get::<_, String>(4).map_err(err)?.into(),
            rule: r.get(5).map_err(err)?,
            culprit,
            message: r.get(14).map_err(err)?,
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_query_has_no_where_and_no_limit() {
        let (sql, params) = Query::new().to_sql();
        assert!(!sql.contains("WHERE"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY time_unix_ms DESC, id DESC LIMIT ?"),
            "{sql}"
        );
        assert_eq!(params, vec![Value::Integer(-1)]);
    }

    #[test]
    fn every_filter_becomes_a_bound_parameter() {
        let q = Query::new()
            .kind(EventKind::Alert)
            .kind(EventKind::AppCrash)
            .app("db'; DROP TABLE events")
            .pid(7)
            .limit(3)
            .order(Order::OldestFirst);
        let (sql, params) = q.to_sql();
        assert!(
            sql.contains("kind IN (?, ?)") && sql.contains("ASC"),
            "{sql}"
        );
        assert!(!sql.contains("DROP"), "{sql}");
        assert_eq!(params.len(), 5);
    }
}
