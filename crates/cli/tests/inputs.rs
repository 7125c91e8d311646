//! Bad input and degraded machines: each gives a clear message and the
//! documented behaviour.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn bad_config_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[daemon]\nlisten = \"127.0.0.1:0\"\nlisen = 3\n",
    );
    let (code, _, err) = run(&["watch", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("selfheal.toml:3:1"), "{err}");
    assert!(err.contains("unknown field `lisen`"), "{err}");

    let cfg = write_config(dir.path(), "[sampler]\nperiod = \"1ms\"\n");
    let (code, _, err) = run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains(":2:10") && err.contains("10ms to 60s"),
        "{err}"
    );
}

#[test]
fn default_config_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text, _) = run(&["config", "default"]);
    assert_eq!(code, 0);
    assert!(text.contains("[[rule]]") && text.contains("kernel_spin_hang"));
    let cfg = write_config(dir.path(), &text);
    let (code, out, err) = run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("OK") && out.contains("13 rules (8 light, 5 heavy)"),
        "{out}"
    );
}

#[test]
fn bad_cli_values_are_usage_errors() {
    let (code, _, err) = run(&["watch", "--listen", "localhost"]);
    assert_eq!(code, 2);
    assert!(err.contains("--listen") && err.contains("IP:PORT"), "{err}");
    let (code, _, err) = run(&[
        "events",
        "--since",
        "yesterday",
        "--store",
        "/nonexistent.db",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--since"), "{err}");
    let (code, _, err) = run(&["events", "--kind", "alerts", "--store", "/nonexistent.db"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown event kind `alerts`"), "{err}");
}

#[test]
fn unusable_store_paths_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // Parent is a regular file.
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("s.db");
    let (code, _, err) = run(&["watch", "--listen", "", "--store", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(bad.to_str().unwrap()) || err.contains(file.to_str().unwrap()),
        "{err}"
    );

    // No store yet: `events` says how to get one, creates nothing.
    let missing = dir.path().join("none.db");
    let (code, _, err) = run(&["events", "--store", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("none.db"), "{err}");
    assert!(!missing.exists());
}

#[test]
fn corrupted_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&db, &junk).unwrap();
    let (code, _, err) = run(&["watch", "--listen", "", "--store", db.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(db.to_str().unwrap()), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        junk,
        "the file must not be touched"
    );
    let (code, _, err) = run(&["events", "--store", db.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), junk);
}

#[test]
fn missing_psi_degrades_with_a_note() {
    // A procfs tree captured from a real machine, minus /proc/pressure.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("proc");
    std::fs::create_dir(&fake).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../procfs/tests/fixtures/host-6.18-2cpu");
    for f in ["stat", "meminfo", "vmstat", "diskstats"] {
        std::fs::copy(src.join(f), fake.join(f)).unwrap();
    }
    let store = dir.path().join("s.db");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\n[sampler]\nproc_root = \"{}\"\nsys_root = \"{}\"\n",
            fake.display(),
            dir.path().join("nosys").display()
        ),
    );
    let mut d = DaemonProc::with_config(&cfg, &store);
    let addr = d.wait_http(Duration::from_secs(20));
    wait_healthy(addr, Duration::from_secs(10));
    let (code, metrics) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        !metrics.contains("selfheal_pressure_avg10_ratio"),
        "no PSI series without PSI"
    );
    assert!(metrics.contains("selfheal_memory_available_bytes"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get(addr, "/healthz").0,
        200,
        "the daemon stays healthy without PSI"
    );
    assert!(
        d.log_text()
            .contains("PSI (pressure stall information) unavailable"),
        "{}",
        d.log_text()
    );
    assert!(d.terminate().success());
    let start = &events_json(&store, &["--kind", "start"])[0];
    let notes = start["details"]["notes"].to_string();
    assert!(notes.contains("PSI"), "{start}");
}

#[test]
fn runs_as_an_ordinary_user() {
    const NOBODY: u32 = 65534;
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP runs_as_an_ordinary_user: needs root to switch to uid {NOBODY} (as a normal user, every test here already runs unprivileged)");
        return;
    }
    // The binary must be reachable by that user.
    let probe = std::process::Command::new(bin())
        .arg("--version")
        .uid_gid(NOBODY)
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP runs_as_an_ordinary_user: {} is not executable by uid {NOBODY}",
            bin().display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::process::Command::new("chown")
        .args([&format!("{NOBODY}:{NOBODY}"), state.to_str().unwrap()])
        .status()
        .unwrap();
    std::process::Command::new("chmod")
        .args(["755", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    let mut d = DaemonProc::start(
        &["--listen", "127.0.0.1:0"],
        &[
            ("XDG_STATE_HOME", state.to_str().unwrap()),
            ("HOME", "/nonexistent"),
        ],
        Some(NOBODY),
    );
    let addr = d.wait_http(Duration::from_secs(20));
    wait_healthy(addr, Duration::from_secs(10));
    let log = d.log_text();
    assert!(
        log.contains("runs at normal priority"),
        "says once it is not real-time:\n{log}"
    );
    assert!(log.contains("not root"), "{log}");
    assert!(d.terminate().success());
    let store = state.join("selfheal/selfheal.db");
    assert!(store.exists(), "store in the XDG state dir");
    let evs = events_json(&store, &[]);
    assert_eq!(evs.last().unwrap()["kind"], "stop");
}

trait UidGid {
    fn uid_gid(&mut self, id: u32) -> &mut Self;
}

impl UidGid for std::process::Command {
    fn uid_gid(&mut self, id: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.uid(id).gid(id)
    }
}

#[test]
fn out_of_range_durations_urls_and_timeouts_are_usage_errors() {
    // Each would have panicked (overflow) or killed a healthy program.
    let cases: &[(&[&str], &str)] = &[
        (&["--watchdog", "999999999999s"], "999999999999s"),
        (&["--backoff", "3651d"], "3651d"),
        (
            &["--stop-grace", "18446744073709551615s"],
            "18446744073709551615s",
        ),
        (
            &["--probe-period", "99999999h", "--probe-tcp", "127.0.0.1:1"],
            "99999999h",
        ),
        (&["--probe-http", "http://127.0.0.1:99999/"], "99999"),
        (&["--probe-http", "http://:80/"], "no host"),
        (
            &["--probe-timeout", "0", "--probe-tcp", "127.0.0.1:1"],
            "timeout 0s",
        ),
        (&["--probe-tcp", "127.0.0.1:0"], "127.0.0.1:0"),
        (&["--stop-signal", "SIGFOO"], "SIGFOO"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["run", "--no-store"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "true"]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert!(err.contains(named), "{flags:?} must name `{named}`: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, err) = run(&["calibrate", "--duration", "3651d"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--duration") && err.contains("3650d"), "{err}");
    // The same limits in a config file, with the line.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[app]]\nname = \"a\"\ncommand = [\"true\"]\n[[app.probe]]\nhttp = \"http://127.0.0.1:99999/\"\n",
    );
    let (code, _, err) = run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":4:") && err.contains("65535"), "{err}");
    let cfg = write_config(dir.path(), "[store]\nmax_age = \"20000d\"\n");
    let (code, _, err) = run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("20000d") && err.contains("3650d"), "{err}");
}

/// The essentials of bench/http/hostile.sh at a smaller scale: idle
/// connections, a slowloris head, garbage and the request that used to
/// panic the HTTP thread; /healthz and /metrics keep answering.
#[test]
fn hostile_http_clients_do_not_take_the_endpoints_down() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[daemon]\nlisten = \"127.0.0.1:0\"\n");
    let store = dir.path().join("s.db");
    let mut d = DaemonProc::with_config(&cfg, &store);
    let addr = d.wait_http(Duration::from_secs(20));
    wait_healthy(addr, Duration::from_secs(10));
    let mut held: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    held.push(slow);
    for garbage in [
        &b"GET /%a\xc3\xa9 HTTP/1.1\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /api/events?since=%ff%fe&kind=%c3 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: \xff\xff\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(garbage).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
    }
    let mut huge = TcpStream::connect(addr).unwrap();
    let _ = huge.write_all(&[b'a'; 100_000]);
    for path in ["/healthz", "/metrics"] {
        let t0 = Instant::now();
        let (code, body) = get(addr, path);
        // 1 s is the target (bench/http/hostile.sh measures it); a busy
        // test machine gets slack.
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            t0.elapsed()
        );
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, metrics) = get(addr, "/metrics");
    assert!(
        metrics.contains("selfheal_http_connections_open"),
        "{metrics}"
    );
    drop(held);
    assert!(d.terminate().success());
}

#[test]
fn as_root_files_others_could_change_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP as_root_files_others_could_change_are_refused: the StrictModes check applies to root only");
        return;
    }
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    // A config file in a directory anyone can write to.
    let cfg = open.join("selfheal.toml");
    std::fs::write(&cfg, "[daemon]\nlisten = \"\"\n").unwrap();
    for args in [
        vec!["config", "check", cfg.to_str().unwrap()],
        vec!["watch", "--config", cfg.to_str().unwrap()],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(open.to_str().unwrap()) && err.contains("chmod go-w"),
            "{err}"
        );
    }
    // A safe config whose hook lives in that directory.
    let hook = open.join("dump.sh");
    std::fs::write(&hook, "#!/bin/sh\n").unwrap();
    chmod(&hook, 0o755);
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[app]]\nname = \"a\"\ncommand = [\"sleep\", \"1\"]\n[app.hook]\ncommand = [\"{}\"]\n",
            hook.display()
        ),
    );
    let (code, _, err) = run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hook command of app `a`") && err.contains("chmod go-w"),
        "{err}"
    );
    // Owned by another user.
    chmod(&open, 0o755);
    std::os::unix::fs::chown(&hook, Some(65534), None).unwrap();
    let (code, _, err) = run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("uid 65534") && err.contains("chown root"),
        "{err}"
    );
    // Fixed: accepted.
    std::os::unix::fs::chown(&hook, Some(0), None).unwrap();
    let (code, _, err) = run(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_store_and_event_log_are_created_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state/s.db");
    let log = dir.path().join("events.jsonl");
    let mut d = DaemonProc::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--store",
            store.to_str().unwrap(),
            "--event-log",
            log.to_str().unwrap(),
        ],
        &[],
        None,
    );
    d.wait_http(Duration::from_secs(20));
    assert!(d.terminate().success());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o600);
    assert_eq!(mode(store.parent().unwrap()), 0o700);
    assert_eq!(mode(&log), 0o600);
}
