//! packaging/kubernetes without a cluster (none can run here; docs/kubernetes.md
//! says what was not run): the manifests against Kubernetes' JSON schemas
//! and the cross-checks of scripts/k8s-validate; the DaemonSet's config
//! through `selfheal config check`; node-problem-detector's monitor config
//! applied, as NPD applies it, to the event log of a real daemon.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::npd::{monitor_path, Monitor, Outcome};
use common::DaemonProc;

#[test]
fn manifests_pass_schemas_and_cross_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(root.join("scripts/k8s-validate"))
        .arg("--extract")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(77) {
        println!(
            "SKIP manifests_pass_schemas_and_cross_checks: {}",
            text.trim()
        );
        return;
    }
    assert!(out.status.success(), "scripts/k8s-validate:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");
    // The DaemonSet's config is a valid selfheal config.
    let cfg = dir.path().join("config.toml");
    let (code, stdout, err) = common::run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "the ConfigMap's config.toml: {err}");
    assert!(stdout.contains("HTTP 0.0.0.0:9469"), "{stdout}");
}

/// Every rule of the monitor, on the real event log of a daemon whose
/// supervised app crash-loops until the breaker gives up.
#[test]
fn npd_monitor_reads_a_real_event_log() {
    let m = Monitor::load(&monitor_path());
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "[daemon]\nlisten = \"\"\ndry_run = true\n\n\
         [[app]]\nname = \"flaky\"\n\
         command = [\"/bin/sh\", \"-c\", \"echo oops >&2; exit 3\"]\n\
         restart = \"always\"\n\
         backoff = { initial = \"20ms\", max = \"40ms\", multiplier = 2.0 }\n\
         crash_loop = { max_restarts = 2, window = \"60s\" }\n",
    );
    let log = dir.path().join("events.jsonl");
    let store = dir.path().join("s.db");
    let mut d = DaemonProc::with_event_log(&cfg, &store, &log);
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("\"kind\":\"app_gave_up\"")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no app_gave_up: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.terminate().success(), "{}", d.log_text());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut seen = std::collections::BTreeMap::<String, Vec<String>>::new();
    for line in text.lines() {
        let kind = serde_json::from_str::<serde_json::Value>(line).unwrap()["kind"]
            .as_str()
            .unwrap()
            .to_string();
        match m
            .outcome(line)
            .unwrap_or_else(|e| panic!("NPD drops it: {e}"))
        {
            Outcome::Skipped => assert!(
                matches!(kind.as_str(), "alert" | "dismissed"),
                "{kind} skipped: {line}"
            ),
            Outcome::Matched(r) => {
                let reasons = r.into_iter().map(|(r, _)| r).collect();
                seen.insert(kind, reasons);
            }
        }
    }
    // What becomes an Event, what a NodeCondition, what nothing.
    assert_eq!(seen["app_crash"], ["SelfhealAppCrash"]);
    assert_eq!(seen["app_gave_up"], ["AppGaveUp"]);
    for quiet in ["start", "stop", "app_start", "app_restart"] {
        assert_eq!(seen[quiet], Vec::<String>::new(), "{quiet}");
    }
    let gave_up = m.rules.iter().find(|r| r.reason == "AppGaveUp").unwrap();
    assert_eq!(gave_up.kind, "permanent");
    assert_eq!(gave_up.condition.as_deref(), Some("SelfhealAppGaveUp"));
    // The message NPD puts in the Event: from the kind to the human
    // message, without the (long) details.
    let crash = text
        .lines()
        .find(|l| l.contains("\"kind\":\"app_crash\""))
        .unwrap();
    let (ts, msg) = m.translate(crash).unwrap();
    assert!(ts.ends_with('Z'), "{ts}");
    assert!(
        msg.starts_with("app_crash\",\"severity\":\"critical\""),
        "{msg}"
    );
    assert!(msg.ends_with("exited with status 3\""), "{msg}");
    assert!(!msg.contains("stderr_tail"), "{msg}");
}

/// The skip list drops the light detector's alerts (frequent, long) by the
/// top-level kind only: a diagnosis triggered by an alert carries
/// `{"kind":"alert","level":…}` in its details and must not be skipped.
#[test]
fn npd_skip_list_matches_only_the_top_level_kind() {
    let m = Monitor::load(&monitor_path());
    let diag = selfheal_event::Event::now(
        selfheal_event::EventKind::Diagnosis,
        selfheal_event::Severity::Critical,
        selfheal_event::Source::Heavy,
        "rt_hog: pid 7 (spin) ran 1.2 s on cpu 1 at SCHED_FIFO 20",
    )
    .with_rule("rt_hog")
    .with_details(serde_json::json!({
        "class": "rt_hog",
        "trigger": {"kind": "alert", "rule": "kernel_spin", "level": "light", "cpu": 1},
    }));
    let line = selfheal_daemon::event_log_line(&diag).unwrap();
    assert!(
        line.contains("{\"cpu\":1,\"kind\":\"alert\",\"level\""),
        "{line}"
    );
    assert_eq!(m.reasons(&line), ["SelfhealHangDiagnosed"]);
}
