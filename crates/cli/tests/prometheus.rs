//! The Prometheus side, tested with Debian's real `prometheus` and
//! `promtool` (package `prometheus`, installed by scripts/install-deps):
//! the alert rules pass `promtool check rules` and their unit tests; a live
//! daemon's /metrics passes `promtool check metrics`; the rules and the
//! Grafana dashboard query only metrics a live daemon exports; and a real
//! Prometheus scraping a real `selfheal watch` fires SelfhealHangDiagnosed
//! when a real-time hog in a cgroup sandbox stalls a CPU (and
//! node-problem-detector's monitor turns the same run's diagnosis and
//! recovery lines into Events).
//!
//! Each test says why it skips: no promtool/prometheus (the package could
//! not be installed), or, for the fault, no root or no cgroup sandbox.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, DaemonProc};
use selfheal_cgroup::{Sandbox, SandboxConfig};

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/prometheus")
}

/// A tool of the `prometheus` package, or None with the reason printed.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    println!(
        "SKIP {test}: {name} is not installed (Debian package `prometheus`; \
         scripts/install-deps installs it, so it could not be installed here)"
    );
    None
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = tool("promtool", "rules_pass_promtool_check_and_unit_tests") else {
        return;
    };
    for args in [
        &["check", "rules", "selfheal-rules.yml"][..],
        &["test", "rules", "selfheal-rules.test.yml"][..],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(packaging())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
    // The example scrape configuration, with its rule file pointed at this
    // checkout instead of the package's path.
    let example = std::fs::read_to_string(packaging().join("prometheus-scrape.yml")).unwrap();
    let installed = "/usr/share/selfheal/prometheus/selfheal-rules.yml";
    assert!(example.contains(installed));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    let rules = packaging().join("selfheal-rules.yml");
    std::fs::write(&cfg, example.replace(installed, rules.to_str().unwrap())).unwrap();
    let out = Command::new(&promtool)
        .args(["check", "config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config prometheus-scrape.yml:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names `selfheal_…` mentioned in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("selfheal_") {
        let before = rest[..i].chars().last();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// Families in an exposition (`# TYPE name kind`).
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// True when `name` is a family or one of a family's series
/// (`_bucket`, `_sum`, `_count` of a histogram; `_total` of an
/// OpenMetrics counter, whose TYPE line omits it).
fn exported(name: &str, fams: &BTreeSet<String>) -> bool {
    fams.contains(name)
        || ["_bucket", "_sum", "_count", "_total", "_created"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|b| fams.contains(b)))
}

/// A daemon with a supervised app under checkpoints, so that every family
/// (the app and checkpoint ones too) is in its /metrics.
fn daemon_with_app(dir: &Path) -> (DaemonProc, SocketAddr) {
    let cfg = common::write_config(
        dir,
        "[daemon]\nlisten = \"127.0.0.1:0\"\ndry_run = true\n\n\
         [[app]]\nname = \"sleeper\"\ncommand = [\"/bin/sleep\", \"600\"]\n\
         checkpoint = { interval = \"1s\", keep = 2 }\n",
    );
    let mut d = DaemonProc::with_config(&cfg, &dir.join("s.db"));
    let addr = d.wait_http(Duration::from_secs(60));
    common::wait_healthy(addr, Duration::from_secs(60));
    (d, addr)
}

#[test]
fn live_exposition_passes_promtool_and_covers_rules_and_dashboard() {
    const TEST: &str = "live_exposition_passes_promtool_and_covers_rules_and_dashboard";
    let Some(promtool) = tool("promtool", TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut d, addr) = daemon_with_app(dir.path());
    // The app's families appear once it runs.
    let start = Instant::now();
    let body = loop {
        let (code, body) = common::get(addr, "/metrics");
        assert_eq!(code, 200);
        // PSI is read every 5th sample: wait for it too, where it exists.
        let psi = !Path::new("/proc/pressure/cpu").exists()
            || body.contains("# TYPE selfheal_pressure_avg10_ratio");
        if (psi && body.contains("selfheal_app_up{app=\"sleeper\"} 1"))
            || start.elapsed() > Duration::from_secs(30)
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // A scraper that asks for OpenMetrics (as Prometheus does) gets it.
    let open = raw_get(
        addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert!(
        open.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        &open[..open.len().min(400)]
    );
    assert!(open.ends_with("# EOF\n"), "no # EOF at the end");
    assert!(
        open.contains("\n# TYPE selfheal_samples counter\n"),
        "OpenMetrics counter naming"
    );
    assert!(
        !body.contains("# EOF"),
        "plain requests get the Prometheus text format"
    );
    // One family per name in OpenMetrics (a counter `x_total` and a
    // histogram `x` would both be family `x` there).
    let mut seen = BTreeSet::new();
    for name in open.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = name.split_whitespace().next().unwrap();
        assert!(
            seen.insert(name.to_string()),
            "family {name} twice in OpenMetrics"
        );
    }
    assert!(d.terminate().success(), "{}", d.log_text());

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics found problems:\n{text}"
    );

    let fams = families(&body);
    assert!(fams.len() > 50, "too few families: {fams:?}");
    for family in [
        "selfheal_app_up",
        "selfheal_app_checkpoints_total",
        // The histograms.
        "selfheal_light_sample_duration_seconds",
        "selfheal_detection_latency_seconds",
        "selfheal_diagnosis_duration_seconds",
        "selfheal_recovery_step_duration_seconds",
        "selfheal_app_checkpoint_pause_seconds",
        "selfheal_app_rollback_duration_seconds",
        "selfheal_app_crash_to_restart_seconds",
    ] {
        assert!(exported(family, &fams), "{family} missing:\n{body}");
    }
    for file in ["selfheal-rules.yml", "selfheal-dashboard.json"] {
        let text = std::fs::read_to_string(packaging().join(file)).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        let missing: Vec<_> = names.iter().filter(|n| !exported(n, &fams)).collect();
        assert!(
            missing.is_empty(),
            "{file} queries metrics the daemon does not export: {missing:?}"
        );
    }
}

/// A GET with an `Accept` header: the status line, headers (lower-cased
/// names) and body as one string.
fn raw_get(addr: SocketAddr, path: &str, accept: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    format!("{}\n\n{body}", head.to_ascii_lowercase())
}

#[test]
fn dashboard_is_grafana_json_with_queries() {
    let text = std::fs::read_to_string(packaging().join("selfheal-dashboard.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("dashboard parses as JSON");
    assert_eq!(v["uid"], "selfheal");
    let panels = v["panels"].as_array().expect("panels");
    let mut queries = 0;
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        let g = &p["gridPos"];
        let n = |k: &str| g[k].as_u64().unwrap();
        assert!(n("w") + n("x") <= 24, "{p}");
        for x in n("x")..n("x") + n("w") {
            for y in n("y")..n("y") + n("h") {
                assert!(
                    cells.insert((x, y)),
                    "{} overlaps another panel",
                    p["title"]
                );
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("selfheal_"), "{expr}");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "unbalanced: {expr}"
            );
            queries += 1;
        }
    }
    assert!(queries >= 15, "{queries} queries");
}

/// A free loopback port (bound, then released for Prometheus to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let r = selfheal_daemon::http::client::get(addr, path, Duration::from_secs(5)).ok()?;
    (r.status == 200)
        .then(|| serde_json::from_str(&r.body).ok())
        .flatten()
}

/// Polls `f` every 250 ms until it returns Some, or `timeout`.
fn poll<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    common::poll(timeout, Duration::from_millis(250), f)
}

/// One instant-query value, when the query returns exactly one series.
fn query_one(prom: SocketAddr, q: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", urlencode(q));
    let v = get_json(prom, &path)?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn real_prometheus_fires_hang_alert_on_a_sandboxed_rt_hog() {
    const TEST: &str = "real_prometheus_fires_hang_alert_on_a_sandboxed_rt_hog";
    let Some(prometheus) = tool("prometheus", TEST) else {
        return;
    };
    if !selfheal_sys::process::is_root() {
        println!("SKIP {TEST}: the RT hog needs root (cgroup sandbox, SCHED_FIFO)");
        return;
    }
    if selfheal_sys::sched::cpus_configured() < 2 {
        println!("SKIP {TEST}: needs 2 CPUs so that one stays free of the hog");
        return;
    }
    // pids, memory and CPU limits; a real-time budget of 0.9 s per second
    // on CPU 1 is the brake on the hog (the CPU quota covers normal tasks).
    // The real-time budget is one per machine: while another test's RT
    // sandbox holds it (another worktree's suite, on a shared machine),
    // creating ours fails with EINVAL. Wait for it, within reason.
    let waited = Instant::now();
    let sb = loop {
        match Sandbox::new(
            SandboxConfig::new("prom-rt")
                .pin_cpu(1)
                .rt_runtime_us(900_000)
                .pids_max(8)
                .memory_max_bytes(64 << 20),
        ) {
            Ok(s) => break s,
            Err(e) if e.is_unavailable() => {
                println!("SKIP {TEST}: {e}");
                return;
            }
            Err(e)
                if e.to_string().contains("rt_runtime_us")
                    && waited.elapsed() < Duration::from_secs(180) =>
            {
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => panic!("{TEST}: {e}"),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // Recovery is confined to the sandbox: the daemon may demote our hog
    // and touch nothing else on this shared machine.
    let cfg = common::write_config(
        dir.path(),
        &format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\n\n\
             [recovery]\nallowed_cgroups = [\"{}\"]\n",
            sb.rel_path()
        ),
    );
    let events = dir.path().join("events.jsonl");
    let store = dir.path().join("s.db");
    let mut d = DaemonProc::with_event_log(&cfg, &store, &events);
    let selfheal = d.wait_http(Duration::from_secs(60));
    common::wait_healthy(selfheal, Duration::from_secs(60));

    let rules = packaging().join("selfheal-rules.yml");
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: selfheal\n    static_configs:\n      - targets: ['{selfheal}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prom_log = dir.path().join("prometheus.log");
    let mut prom_child = ChildGuard(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    let prom_log_text = || std::fs::read_to_string(&prom_log).unwrap_or_default();
    // Ready, and a baseline scrape with the rt_hog counter at 0 (increase()
    // needs a sample before the diagnosis).
    let baseline = poll(Duration::from_secs(90), || {
        if let Ok(Some(s)) = prom_child.0.try_wait() {
            panic!("prometheus exited with {s}:\n{}", prom_log_text());
        }
        query_one(
            prom,
            "count_over_time(selfheal_diagnoses_total{job=\"selfheal\",class=\"rt_hog\"}[1m])",
        )
        .filter(|n| *n >= 2.0)
    });
    assert!(
        baseline.is_some(),
        "prometheus did not scrape selfheal twice:\n{}",
        prom_log_text()
    );
    let quiet = get_json(prom, "/api/v1/alerts").expect("alerts API");
    assert!(
        !quiet
            .to_string()
            .contains("SelfhealHangDiagnosed\",\"class\":\"rt_hog"),
        "rt_hog alert before the fault: {quiet}"
    );

    let t0 = Instant::now();
    let mut hog = sb
        .spawn(
            Command::new(selfheal_testprogs::bin("tp-rt-spin"))
                .args(["--priority", "20", "--cpu", "1", "--seconds", "20"])
                .stdout(Stdio::piped()),
        )
        .unwrap();
    let mut line = String::new();
    BufReader::new(hog.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let hog_pid = hog.id() as i32;

    // The daemon's own verdict, naming our hog.
    let diag = poll(Duration::from_secs(30), || {
        std::fs::read_to_string(&events)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| {
                e["kind"] == "diagnosis"
                    && e["details"]["class"] == "rt_hog"
                    && e["culprit"]["pid"] == hog_pid
            })
    });
    // Prometheus's: the alert fires through its HTTP API.
    let alert = diag.as_ref().and_then(|_| {
        poll(Duration::from_secs(30), || {
            let v = get_json(prom, "/api/v1/alerts")?;
            v["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "SelfhealHangDiagnosed"
                        && a["labels"]["class"] == "rt_hog"
                        && a["state"] == "firing"
                })
                .cloned()
        })
    });
    let fired_after = t0.elapsed();
    let recovered = poll(Duration::from_secs(15), || {
        std::fs::read_to_string(&events)
            .ok()?
            .lines()
            .find(|l| {
                let e: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                e["kind"] == "recovery"
                    && e["details"]["outcome"] == "recovered"
                    && e["details"]["class"] == "rt_hog"
            })
            .map(str::to_string)
    });
    let _ = sb.kill_all();
    let _ = hog.wait();
    drop(sb);
    let _ = Command::new("kill")
        .args(["-TERM", &prom_child.0.id().to_string()])
        .status();
    let _ = prom_child.0.wait();
    assert!(d.terminate().success(), "{}", d.log_text());

    diag.unwrap_or_else(|| {
        panic!(
            "no rt_hog diagnosis naming pid {hog_pid}; events:\n{}\ndaemon log:\n{}",
            std::fs::read_to_string(&events).unwrap_or_default(),
            d.log_text()
        )
    });
    let alert = alert.unwrap_or_else(|| {
        panic!(
            "SelfhealHangDiagnosed did not fire; prometheus log:\n{}",
            prom_log_text()
        )
    });
    assert_eq!(alert["labels"]["job"], "selfheal");
    assert_eq!(alert["labels"]["instance"], selfheal.to_string());
    assert_eq!(alert["labels"]["severity"], "critical");
    // node-problem-detector's monitor, on the same real lines: the
    // diagnosis and the recovery become Events on the Node.
    let npd = common::npd::Monitor::load(&common::npd::monitor_path());
    let log = std::fs::read_to_string(&events).unwrap();
    let diag_line = log
        .lines()
        .find(|l| {
            l.contains("\"kind\":\"diagnosis\"") && l.contains(&format!("\"pid\":{hog_pid},"))
        })
        .expect("the diagnosis line");
    assert_eq!(npd.reasons(diag_line), ["SelfhealHangDiagnosed"]);
    let recovered = recovered.unwrap_or_else(|| panic!("rt_hog not recovered:\n{log}"));
    assert_eq!(npd.reasons(&recovered), ["SelfhealRecovered"]);
    for line in log.lines() {
        npd.outcome(line)
            .unwrap_or_else(|e| panic!("NPD would drop a line: {e}"));
    }
    eprintln!(
        "{TEST}: alert firing {} ms after the hog started: {}",
        fired_after.as_millis(),
        alert["annotations"]["summary"]
    );
}
