//! Per-app state shared by the supervision thread (writer) and the
//! snapshot and `/metrics` readers: atomics for everything scraped, a
//! mutex only for the few strings the status view shows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use selfheal_metrics::{AtomicHistogram, Collector, Encoder, MetricType, RESTART_BUCKETS};

use crate::child::ExitStatus;
use crate::HangDetector;

/// Where an app is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started, not yet ready (waiting for `READY=1`).
    Starting,
    /// Running (and ready, if it reports readiness).
    Running,
    /// Being stopped (signal sent, waiting out the grace period).
    Stopping,
    /// Ended; waiting out the backoff before the restart.
    Backoff,
    /// The crash-loop breaker tripped; not running.
    GaveUp,
    /// Supervision ended.
    Exited,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Backoff,
        Phase::GaveUp,
        Phase::Exited,
    ];

    /// The name shown by `selfheal status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Backoff => "backoff",
            Phase::GaveUp => "gave_up",
            Phase::Exited => "exited",
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A monotonic time as nanoseconds since the process-wide epoch, never 0
/// (0 means "unset" in the atomics).
fn stamp(t: Instant) -> u64 {
    (t.saturating_duration_since(epoch()).as_nanos() as u64).max(1)
}

fn age(stamp_ns: u64) -> Option<Duration> {
    (stamp_ns != 0).then(|| {
        let now = Instant::now().saturating_duration_since(epoch()).as_nanos() as u64;
        Duration::from_nanos(now.saturating_sub(stamp_ns))
    })
}

#[derive(Debug, Default)]
struct Text {
    status: Option<String>,
    suspected: Vec<HangDetector>,
    last_exit: Option<ExitStatus>,
}

/// One app's live state.
#[derive(Debug)]
pub struct AppState {
    name: String,
    command: Vec<String>,
    phase: AtomicU8,
    pid: AtomicI32,
    ready: AtomicBool,
    restarts: AtomicU64,
    crashes: AtomicU64,
    started_ns: AtomicU64,
    heartbeat_ns: AtomicU64,
    last_exit_code: AtomicI64,
    last_exit_signal: AtomicI64,
    /// By [`HangDetector::index`].
    hangs: [AtomicU64; HangDetector::ALL.len()],
    /// By [`HangDetector::index`].
    suspected: [AtomicU64; HangDetector::ALL.len()],
    probe_failures: AtomicU64,
    /// From a run's end noticed to the next run started (backoff included).
    restart_latency: AtomicHistogram,
    text: Mutex<Text>,
}

impl AppState {
    /// Fresh state for `name`.
    pub fn new(name: &str, command: &[String]) -> AppState {
        AppState {
            name: name.to_string(),
            command: command.to_vec(),
            phase: AtomicU8::new(Phase::Starting as u8),
            pid: AtomicI32::new(0),
            ready: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            started_ns: AtomicU64::new(0),
            heartbeat_ns: AtomicU64::new(0),
            last_exit_code: AtomicI64::new(-1),
            last_exit_signal: AtomicI64::new(0),
            hangs: Default::default(),
            suspected: Default::default(),
            probe_failures: AtomicU64::new(0),
            restart_latency: AtomicHistogram::new(RESTART_BUCKETS),
            text: Mutex::new(Text::default()),
        }
    }

    fn text(&self) -> std::sync::MutexGuard<'_, Text> {
        self.text.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        let v = self.phase.load(Ordering::Acquire);
        Phase::ALL
            .into_iter()
            .find(|p| *p as u8 == v)
            .unwrap_or(Phase::Exited)
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    pub(crate) fn started(&self, pid: i32, at: Instant) {
        self.pid.store(pid, Ordering::Release);
        self.started_ns.store(stamp(at), Ordering::Release);
        self.heartbeat_ns.store(0, Ordering::Release);
        self.ready.store(false, Ordering::Release);
        let mut t = self.text();
        t.status = None;
        t.suspected.clear();
    }

    pub(crate) fn ended(&self, status: ExitStatus, crashed: bool) {
        self.pid.store(0, Ordering::Release);
        self.started_ns.store(0, Ordering::Release);
        self.ready.store(false, Ordering::Release);
        self.last_exit_code
            .store(status.code.map_or(-1, i64::from), Ordering::Release);
        self.last_exit_signal
            .store(status.signal.map_or(0, i64::from), Ordering::Release);
        if crashed {
            self.crashes.fetch_add(1, Ordering::Relaxed);
        }
        self.text().last_exit = Some(status);
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub(crate) fn heartbeat(&self, at: Instant) {
        self.heartbeat_ns.store(stamp(at), Ordering::Release);
    }

    pub(crate) fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// A restart whose previous run's end was noticed `after` ago.
    pub(crate) fn restarted_after(&self, after: Duration) {
        // Histogram first: a scrape never sees more restarts than times.
        self.restart_latency.observe(after);
        self.restarted();
    }

    pub(crate) fn hang(&self, detector: HangDetector) {
        self.hangs[detector.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn suspect(&self, detector: HangDetector, active: bool) {
        if active {
            self.suspected[detector.index()].fetch_add(1, Ordering::Relaxed);
        }
        let mut t = self.text();
        t.suspected.retain(|d| *d != detector);
        if active {
            t.suspected.push(detector);
        }
    }

    pub(crate) fn probe_failed(&self) {
        self.probe_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_status(&self, s: &str) {
        self.text().status = Some(s.to_string());
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// A consistent-enough copy for the status view.
    pub fn status(&self) -> AppStatus {
        let t = self.text();
        let pid = self.pid.load(Ordering::Acquire);
        AppStatus {
            name: self.name.clone(),
            command: self.command.clone(),
            state: self.phase(),
            pid: (pid > 0).then_some(pid),
            ready: self.ready.load(Ordering::Acquire),
            status: t.status.clone(),
            uptime_seconds: age(self.started_ns.load(Ordering::Acquire)).map(|d| d.as_secs_f64()),
            heartbeat_age_seconds: age(self.heartbeat_ns.load(Ordering::Acquire))
                .map(|d| d.as_secs_f64()),
            restarts: self.restarts(),
            crashes: self.crashes.load(Ordering::Relaxed),
            last_exit: t.last_exit,
            last_exit_description: t.last_exit.map(|s| s.describe()),
            hangs: HangDetector::ALL
                .iter()
                .zip(&self.hangs)
                .map(|(d, n)| (d.as_str().to_string(), n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            suspected: t.suspected.iter().map(|d| d.as_str().to_string()).collect(),
        }
    }
}

/// One app as `selfheal status` and `/api/apps` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppStatus {
    /// Name.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Where it is in its life.
    pub state: Phase,
    /// Main process id while running.
    pub pid: Option<i32>,
    /// It reported `READY=1` (or does not use the notify protocol and runs).
    pub ready: bool,
    /// Its last `STATUS=` line.
    pub status: Option<String>,
    /// Time since the current run started.
    pub uptime_seconds: Option<f64>,
    /// Time since its last `WATCHDOG=1`.
    pub heartbeat_age_seconds: Option<f64>,
    /// Restarts since supervision started.
    pub restarts: u64,
    /// Runs that ended in a crash.
    pub crashes: u64,
    /// How the previous run ended.
    pub last_exit: Option<ExitStatus>,
    /// The same in words.
    pub last_exit_description: Option<String>,
    /// Hangs acted on, by detector (only non-zero counts).
    pub hangs: BTreeMap<String, u64>,
    /// No-progress suspicions currently held.
    pub suspected: Vec<String>,
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) if s < 120.0 => format!("{s:.1}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// A plain-text table of apps for `selfheal status`: name, state, pid,
/// uptime, restarts, how the last run ended, heartbeat age, suspicions and
/// the program's own status line.
pub fn render_table(apps: &[AppStatus]) -> String {
    let mut rows = vec![[
        "APP",
        "STATE",
        "PID",
        "UP",
        "RESTARTS",
        "LAST EXIT",
        "HEARTBEAT",
        "STATUS",
    ]
    .map(String::from)];
    for a in apps {
        let mut status = a.status.clone().unwrap_or_default();
        if !a.suspected.is_empty() {
            status = format!("suspected {}; {status}", a.suspected.join(", "));
        }
        let state = if a.state == Phase::Running && !a.ready {
            "running (not ready)".to_string()
        } else {
            a.state.as_str().to_string()
        };
        rows.push([
            a.name.clone(),
            state,
            a.pid.map_or("-".into(), |p| p.to_string()),
            secs(a.uptime_seconds),
            a.restarts.to_string(),
            a.last_exit_description
                .clone()
                .unwrap_or_else(|| "-".into()),
            secs(a.heartbeat_age_seconds),
            status.trim_end_matches("; ").to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `selfheal_app_*` metric families over every app's state.
#[derive(Debug)]
pub struct AppMetrics {
    apps: Vec<Arc<AppState>>,
}

impl AppMetrics {
    /// Metrics for these apps.
    pub fn new(apps: Vec<Arc<AppState>>) -> AppMetrics {
        AppMetrics { apps }
    }
}

impl Collector for AppMetrics {
    fn collect(&self, enc: &mut Encoder<'_>) {
        if self.apps.is_empty() {
            return;
        }
        // One series per app in each family; None leaves the app out.
        let each = |enc: &mut Encoder<'_>, get: fn(&AppState) -> Option<f64>| {
            for a in &self.apps {
                if let Some(v) = get(a) {
                    enc.sample(&[("app", &a.name)], v);
                }
            }
        };
        enc.family(
            "selfheal_app_up",
            "1 while the app's process runs.",
            MetricType::Gauge,
        );
        each(enc, |a| {
            Some(f64::from(u8::from(a.pid.load(Ordering::Acquire) > 0)))
        });
        enc.family(
            "selfheal_app_ready",
            "1 while the app runs and is ready (READY=1, or no readiness protocol).",
            MetricType::Gauge,
        );
        each(enc, |a| {
            Some(f64::from(u8::from(a.ready.load(Ordering::Acquire))))
        });
        enc.family(
            "selfheal_app_gave_up",
            "1 when the crash-loop breaker stopped restarting the app.",
            MetricType::Gauge,
        );
        each(enc, |a| {
            Some(f64::from(u8::from(a.phase() == Phase::GaveUp)))
        });
        enc.family(
            "selfheal_app_restarts_total",
            "Restarts since supervision started.",
            MetricType::Counter,
        );
        each(enc, |a| Some(a.restarts.load(Ordering::Relaxed) as f64));
        enc.family(
            "selfheal_app_crashes_total",
            "Runs that ended on their own with a failure.",
            MetricType::Counter,
        );
        each(enc, |a| Some(a.crashes.load(Ordering::Relaxed) as f64));
        enc.family(
            "selfheal_app_probe_failures_total",
            "Failed probe checks.",
            MetricType::Counter,
        );
        each(enc, |a| {
            Some(a.probe_failures.load(Ordering::Relaxed) as f64)
        });
        enc.family(
            "selfheal_app_uptime_seconds",
            "Time since the current run started.",
            MetricType::Gauge,
        );
        each(enc, |a| {
            age(a.started_ns.load(Ordering::Acquire)).map(|d| d.as_secs_f64())
        });
        enc.family(
            "selfheal_app_last_exit_code",
            "Exit code of the previous run (-1: none, or killed by a signal).",
            MetricType::Gauge,
        );
        each(enc, |a| {
            Some(a.last_exit_code.load(Ordering::Acquire) as f64)
        });
        enc.family(
            "selfheal_app_last_exit_signal",
            "Signal that ended the previous run (0: none).",
            MetricType::Gauge,
        );
        each(enc, |a| {
            Some(a.last_exit_signal.load(Ordering::Acquire) as f64)
        });
        enc.family(
            "selfheal_app_crash_to_restart_seconds",
            "From a run's end (crash, or kill after a hang) noticed to the next run started, \
             backoff included.",
            MetricType::Histogram,
        );
        for a in &self.apps {
            enc.histogram(&[("app", &a.name)], &a.restart_latency.snapshot());
        }
        enc.family(
            "selfheal_app_heartbeat_age_seconds",
            "Time since the app's last WATCHDOG=1 (absent before the first).",
            MetricType::Gauge,
        );
        for a in &self.apps {
            if let Some(d) = age(a.heartbeat_ns.load(Ordering::Acquire)) {
                if a.pid.load(Ordering::Acquire) > 0 {
                    enc.sample(&[("app", &a.name)], d.as_secs_f64());
                }
            }
        }
        let per_detector = |enc: &mut Encoder<'_>, get: fn(&AppState) -> &[AtomicU64]| {
            for a in &self.apps {
                for (d, n) in HangDetector::ALL.iter().zip(get(a)) {
                    enc.sample(
                        &[("app", &a.name), ("detector", d.as_str())],
                        n.load(Ordering::Relaxed) as f64,
                    );
                }
            }
        };
        enc.family(
            "selfheal_app_hangs_total",
            "Hangs acted on, by detector.",
            MetricType::Counter,
        );
        per_detector(enc, |a| &a.hangs);
        enc.family(
            "selfheal_app_suspected_hangs_total",
            "No-progress suspicions raised, by detector.",
            MetricType::Counter,
        );
        per_detector(enc, |a| &a.suspected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_metrics_follow_the_state() {
        let a = Arc::new(AppState::new("web", &["web".to_string()]));
        a.started(1234, Instant::now());
        a.set_phase(Phase::Running);
        a.set_ready(true);
        a.heartbeat(Instant::now());
        a.hang(HangDetector::Watchdog);
        a.restarted();
        a.ended(ExitStatus::killed(libc::SIGSEGV, false), true);
        let s = a.status();
        assert_eq!(s.state, Phase::Running);
        assert_eq!((s.pid, s.restarts, s.crashes), (None, 1, 1));
        assert_eq!(
            s.last_exit_description.as_deref(),
            Some("killed by SIGSEGV")
        );
        assert_eq!(s.hangs.get("watchdog"), Some(&1));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "running");

        let mut out = String::new();
        AppMetrics::new(vec![a]).collect(&mut Encoder::new(&mut out));
        assert!(
            out.contains("selfheal_app_restarts_total{app=\"web\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("selfheal_app_last_exit_signal{app=\"web\"} 11\n"),
            "{out}"
        );
        assert!(
            out.contains("selfheal_app_last_exit_code{app=\"web\"} -1\n"),
            "{out}"
        );
        assert!(out.contains("selfheal_app_up{app=\"web\"} 0\n"), "{out}");
        assert!(
            out.contains("selfheal_app_hangs_total{app=\"web\",detector=\"watchdog\"} 1\n"),
            "{out}"
        );
        assert!(!out.contains("selfheal_app_uptime_seconds{"), "{out}");
        let table = render_table(std::slice::from_ref(&s));
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("APP ") && lines[0].contains("LAST EXIT"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("web ") && lines[1].contains("killed by SIGSEGV"),
            "{table}"
        );
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(selfheal_metrics::valid_name(name), "{name}");
        }
    }
}
