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
    let mut d = DaemonProc::with_config(&cfg, &store);
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
    // The daemon protects itself from the OOM killer; its programs do not
    // inherit that.
    let adj = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
    };
    // Lowering it needs CAP_SYS_RESOURCE (bit 24 of CapEff), which some
    // container roots lack; the daemon then keeps its value and says so.
    let cap_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0);
    if cap_sys_resource {
        assert_eq!(adj(d.child.id()), -1000, "daemon oom_score_adj");
    } else {
        eprintln!("no CAP_SYS_RESOURCE here: checking the daemon says it could not protect itself");
        assert!(
            d.log_text().contains("cannot set oom_score_adj"),
            "{}",
            d.log_text()
        );
    }
    assert_eq!(
        adj(sleeper_pid as u32),
        0,
        "supervised program oom_score_adj"
    );

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
