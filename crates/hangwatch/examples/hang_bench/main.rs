//! Detection-latency benchmark against the real `selfheal watch` (root).
//! Run through `bench/hang/latency.sh`, which builds everything first.
//!
//! `hang_bench --selfheal BIN --bin-dir DIR --case CASE [--injections N]
//!  [--bound MS] [--tick MS] [--on-demand true|false] [--tracer true|false]`
//!
//! CASE: `rt_hog`, or one of the D-state cases of [`dstate`]: `d_state`
//! (a FUSE read never answered), `dstate_lookup` (a FUSE lookup, a D wait
//! that is not block I/O), `dstate_blockio` (a loop device whose backing
//! file never answers).
//!
//! Starts one daemon whose recovery is confined to
//! `/selfheal-sandbox/hang-bench`, then injects the fault N times (default
//! 20), each in a fresh sandbox below that cgroup, and times from the
//! fault's own start stamp to the daemon's events:
//! - rt_hog: `tp-rt-spin` (SCHED_FIFO 20, CPU 1) with RT throttling off for
//!   at most 10 s per injection (restored by a guard process whatever
//!   happens); times to the `cpu_stall` alert, the `rt_hog` diagnosis and
//!   the `recovered` step;
//! - the D-state cases ([`dstate`]): times from the task's measured onset
//!   to the diagnosis, after the configured bound, and the error of the
//!   onset the daemon states.
//!
//! Prints one line per injection, then median, p95, min and max, and a JSON
//! summary line.

mod dstate;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_event::{Event, EventKind};

pub(crate) const PARENT: &str = "selfheal-sandbox/hang-bench";
const RT_SYSCTL: &str = "/proc/sys/kernel/sched_rt_runtime_us";

pub(crate) struct Args {
    selfheal: PathBuf,
    pub(crate) bin_dir: PathBuf,
    case: String,
    injections: usize,
    bound_ms: u64,
    tick_ms: u64,
    /// Written to the config only when given (older binaries lack the key).
    on_demand: Option<bool>,
    /// `heavy.dstate_tracer`, when given.
    tracer: Option<bool>,
}

fn args() -> Args {
    let mut a = Args {
        selfheal: PathBuf::from("target/release/selfheal"),
        bin_dir: PathBuf::from("target/release"),
        case: "rt_hog".into(),
        injections: 20,
        bound_ms: 200,
        tick_ms: 100,
        on_demand: None,
        tracer: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--selfheal" => a.selfheal = v.into(),
            "--bin-dir" => a.bin_dir = v.into(),
            "--case" => a.case = v,
            "--injections" => a.injections = v.parse().unwrap(),
            "--bound" => a.bound_ms = v.parse().unwrap(),
            "--tick" => a.tick_ms = v.parse().unwrap(),
            "--on-demand" => a.on_demand = Some(v.parse().unwrap()),
            "--tracer" => a.tracer = Some(v.parse().unwrap()),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

pub(crate) fn now_ms() -> i64 {
    selfheal_event::unix_ms(SystemTime::now())
}

pub(crate) struct Daemon {
    child: Child,
    log: PathBuf,
    seen: usize,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(a: &Args) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bench.toml");
        std::fs::write(
            &cfg,
            format!(
                "[daemon]\nlisten = \"\"\n[stall]\nbound = \"{}ms\"\ntick = \"{}ms\"\n{}\
                 [heavy]\n{}[recovery]\nallowed_cgroups = [\"/{PARENT}\"]\nmax_actions_per_minute = 1000\n",
                a.bound_ms,
                a.tick_ms,
                a.on_demand
                    .map_or(String::new(), |b| format!("on_demand = {b}\n")),
                a.tracer
                    .map_or(String::new(), |b| format!("dstate_tracer = {b}\n"))
            ),
        )
        .unwrap();
        let log = dir.path().join("events.jsonl");
        let child = Command::new(&a.selfheal)
            .args(["watch", "-c"])
            .arg(&cfg)
            .arg("--store")
            .arg(dir.path().join("s.db"))
            .arg("--event-log")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start selfheal watch");
        let mut d = Daemon {
            child,
            log,
            seen: 0,
            _dir: dir,
        };
        d.wait(Duration::from_secs(20), |e| e.kind == EventKind::Start)
            .expect("selfheal watch started");
        std::thread::sleep(Duration::from_secs(1));
        d
    }

    pub(crate) fn new_events(&mut self) -> Vec<Event> {
        let all: Vec<Event> = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        all[self.seen.min(all.len())..].to_vec()
    }

    /// The first event from now on matching `pred` (earlier ones are skipped for good).
    pub(crate) fn wait(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let start = Instant::now();
        loop {
            let fresh = self.new_events();
            if let Some(i) = fresh.iter().position(&pred) {
                return Some(fresh[i].clone());
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Forget everything logged so far.
    pub(crate) fn mark(&mut self) {
        self.seen = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .count();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = selfheal_sys::signal::kill_process(self.child.id() as i32, libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// RT throttling off until dropped; a guard process restores it (and kills
/// the sandbox) after 10 s in any case.
struct NoThrottle {
    original: String,
    guard: Child,
}

impl NoThrottle {
    fn new(sb: &Sandbox) -> NoThrottle {
        let original = std::fs::read_to_string(RT_SYSCTL)
            .unwrap()
            .trim()
            .to_string();
        let mut script = format!("sleep 10; echo {original} > {RT_SYSCTL};");
        for d in sb.cgroup().dirs() {
            let k = d.join("cgroup.kill");
            if k.exists() {
                script.push_str(&format!(" echo 1 > {} 2>/dev/null;", k.display()));
            }
        }
        let guard = Command::new("sh").args(["-c", &script]).spawn().unwrap();
        std::fs::write(RT_SYSCTL, "-1").unwrap();
        NoThrottle { original, guard }
    }
}

impl Drop for NoThrottle {
    fn drop(&mut self) {
        let _ = std::fs::write(RT_SYSCTL, &self.original);
        let _ = self.guard.kill();
        let _ = self.guard.wait();
    }
}

pub(crate) fn first_line(c: &mut Child) -> String {
    let mut l = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut l)
        .unwrap();
    l
}

fn field(line: &str, key: &str) -> Option<i64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn rt_hog(a: &Args, d: &mut Daemon, i: usize) -> Option<Vec<f64>> {
    let sb = Sandbox::new(
        SandboxConfig::new("rt")
            .parent(PARENT)
            .pin_cpu(1)
            .rt_runtime_us(900_000)
            .cpus(None)
            .pids_max(8),
    )
    .expect("sandbox");
    d.mark();
    let throttle = NoThrottle::new(&sb);
    let mut hog = sb
        .spawn(
            Command::new(a.bin_dir.join("tp-rt-spin"))
                .args(["--priority", "20", "--cpu", "1", "--seconds", "8"])
                .stdout(Stdio::piped()),
        )
        .unwrap();
    let start = field(&first_line(&mut hog), "wall_ms").unwrap();
    let pid = hog.id() as i32;
    let stall = d.wait(Duration::from_secs(8), |e| {
        e.rule.as_deref() == Some("cpu_stall")
    });
    let diag = d.wait(Duration::from_secs(8), |e| {
        e.kind == EventKind::Diagnosis && e.culprit.as_ref().and_then(|c| c.pid) == Some(pid)
    });
    let rec = d.wait(Duration::from_secs(8), |e| {
        e.kind == EventKind::Recovery && e.details["outcome"] == "recovered"
    });
    drop(throttle);
    drop(sb);
    let _ = hog.wait();
    let (stall, diag, rec) = (stall?, diag?, rec?);
    let v = vec![
        (stall.time_unix_ms - start) as f64,
        (diag.time_unix_ms - start) as f64,
        (rec.time_unix_ms - start) as f64,
    ];
    println!(
        "rt_hog #{i:02}: stall {:>5.0} ms  diagnosis {:>5.0} ms  recovered {:>5.0} ms ({})",
        v[0], v[1], v[2], diag.details["class"]
    );
    Some(v)
}

/// Removes the (now empty) parent cgroup in every hierarchy: left behind
/// with its real-time budget, it would eat the budget later sandboxes need.
fn remove_parent() {
    let root = Path::new("/sys/fs/cgroup");
    let _ = std::fs::remove_dir(root.join(PARENT)); // cgroup2-only layout
    if let Ok(mounts) = std::fs::read_dir(root) {
        for m in mounts.flatten() {
            let _ = std::fs::remove_dir(m.path().join(PARENT));
        }
    }
}

fn stats(name: &str, mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let pick = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    println!(
        "{name:<28} n={n:<3} median {median:>6.0} ms  p95 {:>6.0} ms  min {:>6.0} ms  max {:>6.0} ms",
        pick(0.95),
        v[0],
        v[n - 1]
    );
    serde_json::json!({"metric": name, "n": n, "median_ms": median, "p95_ms": pick(0.95), "min_ms": v[0], "max_ms": v[n - 1]})
}

fn main() {
    let a = args();
    assert!(
        selfheal_sys::process::is_root(),
        "hang_bench injects faults in cgroup sandboxes: run as root"
    );
    let mut d = Daemon::start(&a);
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut failed = 0;
    match a.case.as_str() {
        "rt_hog" => {
            for i in 1..=a.injections {
                match rt_hog(&a, &mut d, i) {
                    Some(r) => rows.push(r),
                    None => {
                        failed += 1;
                        println!("rt_hog #{i:02}: not detected/recovered within 8 s");
                    }
                }
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
        "d_state" | "dstate_lookup" | "dstate_blockio" => {
            let bound = selfheal_config::HeavyConfig::default()
                .dstate_bound
                .get()
                .as_millis() as f64;
            let inject = match a.case.as_str() {
                "d_state" => dstate::fuse_read,
                "dstate_lookup" => dstate::fuse_lookup,
                _ => dstate::block_io,
            };
            for i in 1..=a.injections {
                match inject(&a, &mut d, i, bound) {
                    Some(r) => rows.push(r),
                    None => {
                        failed += 1;
                        println!("{} #{i:02}: not diagnosed in time", a.case);
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        other => panic!("unknown case {other}"),
    }
    drop(d);
    remove_parent();
    if rows.is_empty() {
        println!("no successful injection");
        std::process::exit(1);
    }
    let names: &[&str] = if a.case == "rt_hog" {
        &[
            "rt_hog stall reported",
            "rt_hog diagnosed",
            "rt_hog recovered",
        ]
    } else {
        &["diagnosed after the bound", "stated onset error"]
    };
    let setting = if a.case == "rt_hog" {
        format!(
            "stall bound {} ms, tick {} ms, canaries {}",
            a.bound_ms,
            a.tick_ms,
            match a.on_demand {
                Some(true) => "on demand",
                Some(false) => "always armed",
                None => "as the binary's default",
            }
        )
    } else {
        format!(
            "D-state bound 2 s (default), eBPF tracer {}",
            match a.tracer {
                Some(false) => "off (/proc scans)",
                _ => "on (default)",
            }
        )
    };
    println!(
        "case {}, {setting}: {} injections, {} failed",
        a.case,
        rows.len() + failed,
        failed
    );
    let summary: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(k, n)| stats(n, rows.iter().map(|r| r[k]).collect()))
        .collect();
    // The bound the case is measured against: the stall bound, or the D-state one.
    let bound_ms = if a.case == "rt_hog" {
        a.bound_ms
    } else {
        selfheal_config::HeavyConfig::default()
            .dstate_bound
            .get()
            .as_millis() as u64
    };
    println!(
        "{}",
        serde_json::json!({"case": a.case, "bound_ms": bound_ms, "tick_ms": a.tick_ms, "on_demand": a.on_demand, "tracer": a.tracer,
                           "injections": rows.len() + failed, "failed": failed, "metrics": summary})
    );
}
