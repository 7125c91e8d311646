//! `[[app]]` supervision inside `selfheal watch`: events in the same store,
//! series in the same /metrics, apps in `selfheal status` and /api/apps.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn daemon_supervises_apps() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let cfg = write_config(
        dir.path(),
        "[daemon]\nlisten = \"127.0.0.1:0\"\n\
         [[app]]\nname = \"sleeper\"\ncommand = [\"sleep\", \"300\"]\n\
         [[app]]\nname = \"crasher\"\ncommand = [\"sh\", \"-c\", \"echo boom >&2; exit 3\"]\n\
         backoff = { initial = \"50ms\", max = \"100ms\" }\n\
         crash_loop = { max_restarts = 3, window = \"1m\" }\n",
    );
    let mut d = DaemonProc::start(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
        None,
    );
    let addr = d.wait_http(Duration::from_secs(20));

    // The crash loop ends in gave_up after 3 restarts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let evs = events_json(&store, &["--app", "crasher"]);
        if evs.iter().any(|e| e["kind"] == "app_gave_up") {
            let crash = evs.iter().find(|e| e["kind"] == "app_crash").unwrap();
            assert_eq!(crash["details"]["exit_code"], 3, "{crash}");
            assert!(
                crash["details"]["stderr_tail"].to_string().contains("boom"),
                "{crash}"
            );
            assert_eq!(evs.iter().filter(|e| e["kind"] == "app_restart").count(), 3);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gave-up event: {evs:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (code, body) = get(addr, "/api/apps");
    assert_eq!(code, 200);
    let apps: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let sleeper = apps
        .iter()
        .find(|a| a["name"] == "sleeper")
        .expect("sleeper listed");
    assert_eq!(sleeper["state"], "running");
    let sleeper_pid = sleeper["pid"].as_i64().unwrap();
    assert!(apps.iter().any(|a| a["name"] == "crasher"));

    let (_, metrics) = get(addr, "/metrics");
    assert!(
        metrics.contains("selfheal_app_restarts_total{app=\"crasher\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("selfheal_app_up{app=\"sleeper\"} 1"));

    let (code, out, err) = run(&["status", "--listen", &addr.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("supervised apps:") && out.contains("sleeper") && out.contains("crasher"),
        "{out}"
    );

    // Stopping the daemon stops what it supervises.
    assert!(d.terminate().success());
    assert!(
        !std::path::Path::new(&format!("/proc/{sleeper_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{sleeper_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the supervised program outlived the daemon"
    );
    let evs = events_json(&store, &["--app", "sleeper"]);
    assert!(evs.iter().any(|e| e["kind"] == "app_start"));
}
