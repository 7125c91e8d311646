//! HTTP routes: `/metrics`, `/healthz`, `/api/events`, `/api/status`.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use selfheal_detect::watchdog::Detector;
use selfheal_event::{EventKind, UnknownKind};
use selfheal_sampler::Sample;
use selfheal_store::{OpenError, Order, Query, Store, StoreError};

use serde::Serialize;

use crate::http::{ErrorBody, Request, Response, Router};
use crate::{Shared, SinceError};

/// Most events one API call returns.
const MAX_LIMIT: usize = 10_000;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    // The HTTP thread's own read-only connection, opened on first use.
    let reader: Mutex<Option<Store>> = Mutex::new(None);
    Arc::new(move |req: &Request| {
        match req.path.as_str() {
        "/metrics" => {
            // OpenMetrics for scrapers that ask (Prometheus does), the
            // Prometheus text format for everyone else (curl, promtool).
            let (body, content_type) = shared.registry.render_for(req.accept.as_deref());
            let mut r = Response::text(200, body);
            r.content_type = content_type;
            r
        }
        "/healthz" => healthz(&shared),
        "/api/events" => events(&shared, &reader, req),
        "/api/status" => status(&shared, &reader),
        "/api/apps" => Response::json(200, &serde_json::to_value(app_snapshot(&shared)).unwrap_or_default()),
        "/" => Response::text(
            200,
            "selfheal\n  /metrics     Prometheus metrics\n  /healthz     liveness of the detectors\n  \
             /api/events  recorded events (JSON; ?since=10m&kind=alert&limit=100)\n  \
             /api/status  current metrics and recent events (JSON)\n  \
             /api/apps    supervised applications (JSON)\n",
        ),
        _ => Response::error(404, format!("no such path {}", req.path)),
    }
    })
}

fn app_snapshot(shared: &Shared) -> Vec<selfheal_supervise::AppStatus> {
    shared
        .apps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|s| s.snapshot())
        .unwrap_or_default()
}

/// 200 `ok` while the light detector and every heartbeat of the hang
/// pipeline's watchdog chain (stall checks, pipeline, watcher) are fresh;
/// 503 naming each stale one otherwise. The same test gates systemd's
/// `WATCHDOG=1`.
fn healthz(shared: &Shared) -> Response {
    let max_age = (shared.period * 3).max(Duration::from_secs(1));
    let mut stale = Vec::new();
    match shared.heartbeat.age() {
        Some(age) if age <= max_age => {}
        Some(age) => stale.push(format!(
            "light detector heartbeat is {} ms old (limit {} ms)",
            age.as_millis(),
            max_age.as_millis()
        )),
        None => stale.push("light detector has not completed a cycle yet".to_string()),
    }
    if let Some(chain) = &shared.chain {
        for (name, age, limit) in chain.components() {
            // The light detector is judged above, on the daemon's own limit.
            if name == Detector::Light {
                continue;
            }
            match age {
                Some(a) if a <= limit => {}
                Some(a) => stale.push(format!(
                    "{name} heartbeat is {} ms old (limit {} ms)",
                    a.as_millis(),
                    limit.as_millis()
                )),
                None => {}
            }
        }
    }
    stale.extend(shared.panics.fatal_reasons());
    if stale.is_empty() {
        Response::text(200, "ok\n")
    } else {
        Response::error(503, stale.join("; "))
    }
}

/// A bad `/api/events` parameter: the answer is a 400 with this message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    /// `since` is not a time.
    #[error("since: {0}")]
    Since(#[source] SinceError),
    /// `until` is not a time.
    #[error("until: {0}")]
    Until(#[source] SinceError),
    /// `kind` names no event kind.
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    /// `limit` is not a number in range.
    #[error("limit must be 1..={MAX_LIMIT}")]
    Limit,
}

/// Reading the store for an answer failed: the answer is a 500.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Query(#[from] StoreError),
}

fn with_reader<T>(
    shared: &Shared,
    reader: &Mutex<Option<Store>>,
    f: impl FnOnce(&Store) -> Result<T, StoreError>,
) -> Result<T, ReadError> {
    let mut guard = reader.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(Store::open_read_only(&shared.store_path)?);
    }
    let store = guard.as_ref().expect("opened above");
    Ok(f(store)?)
}

/// The store query `/api/events` runs for `req`, or the bad parameter.
/// Pure, so it can be fuzzed.
pub fn events_query(req: &Request, now: SystemTime) -> Result<Query, QueryError> {
    let mut q = Query::new().order(Order::NewestFirst);
    if let Some(since) = req.param("since") {
        q = q.since(crate::parse_since(since, now).map_err(QueryError::Since)?);
    }
    if let Some(until) = req.param("until") {
        q = q.until(crate::parse_since(until, now).map_err(QueryError::Until)?);
    }
    for k in req.params("kind") {
        q = q.kind(EventKind::from_str(k)?);
    }
    if let Some(vm) = req.param("vm") {
        q = q.vm(vm);
    }
    let limit = match req.param("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err(QueryError::Limit),
    };
    Ok(q.limit(limit as u64))
}

fn events(shared: &Shared, reader: &Mutex<Option<Store>>, req: &Request) -> Response {
    let q = match events_query(req, SystemTime::now()) {
        Ok(q) => q,
        Err(e) => return Response::error(400, e.to_string()),
    };
    match with_reader(shared, reader, |s| s.query(&q)) {
        Ok(evs) => Response::json(200, &serde_json::to_value(evs).unwrap_or_default()),
        Err(e) => Response::error(500, e.to_string()),
    }
}

fn status(shared: &Shared, reader: &Mutex<Option<Store>>) -> Response {
    let mut sample = Sample::with_cpus(shared.cpus);
    let snapshot = shared
        .board
        .read_into(&mut sample)
        .then(|| selfheal_detect::light::snapshot_json(&sample));
    let recent = with_reader(shared, reader, |s| {
        s.query(&Query::new().order(Order::NewestFirst).limit(10))
    });
    let apps = app_snapshot(shared);
    let st = &shared.stats;
    let uptime = SystemTime::now()
        .duration_since(shared.started)
        .unwrap_or_default();
    let body = StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        uptime_seconds: uptime.as_secs_f64(),
        healthy: shared
            .heartbeat
            .is_fresh((shared.period * 3).max(Duration::from_secs(1)))
            && shared.panics.fatal_reasons().is_empty(),
        dry_run: shared.dry_run,
        store: shared.store_path.display().to_string(),
        features: FeaturesBody {
            psi: shared.features.psi,
            mem_available: shared.features.mem_available,
            diskstats: shared.features.diskstats,
        },
        notes: &shared.notes,
        light: LightBody {
            realtime: st.realtime.load(Ordering::Relaxed),
            samples: st.samples.load(Ordering::Relaxed),
            sample_errors: st.sample_errors.load(Ordering::Relaxed),
            alerts: st.alerts_total(),
            alerts_dropped: st.alerts_dropped.load(Ordering::Relaxed),
            last_cycle_us: st.last_cycle_ns.load(Ordering::Relaxed) as f64 / 1000.0,
            max_cycle_us: st.max_cycle_ns.load(Ordering::Relaxed) as f64 / 1000.0,
            overruns: st.overruns.load(Ordering::Relaxed),
            heartbeat_age_ms: shared.heartbeat.age().map(|a| a.as_secs_f64() * 1000.0),
        },
        events: EventsBody {
            written: shared.writer_counters.written.load(Ordering::Relaxed),
            dropped: shared.writer_counters.dropped.load(Ordering::Relaxed),
        },
        sample: snapshot,
        apps: serde_json::to_value(&apps).unwrap_or_default(),
        apps_table: (!apps.is_empty()).then(|| selfheal_supervise::render_table(&apps)),
        recent_events: match recent {
            Ok(evs) => serde_json::to_value(evs).unwrap_or_default(),
            Err(e) => serde_json::to_value(ErrorBody {
                error: e.to_string(),
            })
            .unwrap_or_default(),
        },
    };
    Response::json(200, &body)
}

/// The answer of `/api/status` (read by `selfheal status`).
#[derive(Debug, Serialize)]
struct StatusBody<'a> {
    version: &'static str,
    pid: u32,
    uptime_seconds: f64,
    /// The light detector's heartbeat is fresh and no thread died.
    healthy: bool,
    dry_run: bool,
    /// The event store's path.
    store: String,
    features: FeaturesBody,
    notes: &'a [String],
    light: LightBody,
    events: EventsBody,
    /// The latest sample (`null` before the first).
    sample: Option<serde_json::Value>,
    /// Every supervised app's status.
    apps: serde_json::Value,
    /// The same as a table, when there are apps.
    apps_table: Option<String>,
    /// The 10 latest events, or `{"error": …}`.
    recent_events: serde_json::Value,
}

/// What the kernel offers the sampler.
#[derive(Debug, Serialize)]
struct FeaturesBody {
    psi: bool,
    mem_available: bool,
    diskstats: bool,
}

/// The light detector's counters.
#[derive(Debug, Serialize)]
struct LightBody {
    /// It runs SCHED_FIFO.
    realtime: bool,
    samples: u64,
    sample_errors: u64,
    alerts: u64,
    alerts_dropped: u64,
    last_cycle_us: f64,
    max_cycle_us: f64,
    overruns: u64,
    /// `null` before the first beat.
    heartbeat_age_ms: Option<f64>,
}

/// The event writer's counters.
#[derive(Debug, Serialize)]
struct EventsBody {
    written: u64,
    dropped: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `/api/status` answers exactly the document the old `json!` literal
    /// built (`selfheal status` of any version reads it by key), and an
    /// error is `{"error": …}`.
    #[test]
    fn status_body_matches_the_old_json() {
        let notes = vec!["no PSI".to_string()];
        let body = StatusBody {
            version: "1.0",
            pid: 7,
            uptime_seconds: 1.5,
            healthy: true,
            dry_run: false,
            store: "/var/lib/selfheal/events.db".into(),
            features: FeaturesBody {
                psi: false,
                mem_available: true,
                diskstats: true,
            },
            notes: &notes,
            light: LightBody {
                realtime: true,
                samples: 10,
                sample_errors: 0,
                alerts: 2,
                alerts_dropped: 0,
                last_cycle_us: 12.5,
                max_cycle_us: 40.0,
                overruns: 1,
                heartbeat_age_ms: None,
            },
            events: EventsBody {
                written: 5,
                dropped: 0,
            },
            sample: None,
            apps: json!([]),
            apps_table: None,
            recent_events: serde_json::to_value(ErrorBody {
                error: "locked".into(),
            })
            .unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "version": "1.0", "pid": 7, "uptime_seconds": 1.5, "healthy": true,
                "dry_run": false, "store": "/var/lib/selfheal/events.db",
                "features": {"psi": false, "mem_available": true, "diskstats": true},
                "notes": ["no PSI"],
                "light": {"realtime": true, "samples": 10, "sample_errors": 0, "alerts": 2,
                          "alerts_dropped": 0, "last_cycle_us": 12.5, "max_cycle_us": 40.0,
                          "overruns": 1, "heartbeat_age_ms": null},
                "events": {"written": 5, "dropped": 0},
                "sample": null, "apps": [], "apps_table": null,
                "recent_events": {"error": "locked"},
            })
        );
        let r = Response::error(400, "since: bad");
        assert_eq!(r.content_type, "application/json");
        assert_eq!(
            serde_json::from_slice::<ErrorBody>(&r.body).unwrap(),
            ErrorBody {
                error: "since: bad".into()
            }
        );
    }
}
