//! Checkpoints through the real binary: hangs rolled back by the recovery
//! step, job control and signals on a traced program, and `[app.checkpoint]`
//! in `selfheal watch`. See checkpoint.rs for the crash paths.

mod checkpoint_harness;
mod common;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use checkpoint_harness::*;
use common::*;

#[test]
fn hang_is_rolled_back_by_the_recovery_step() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let rounds = rounds_for("watchdog", 200, 3.0);
    let expected = plain("watchdog", &rounds);
    let watchdog = prog("watchdog");
    // 60 × 50 ms = 3 s of history reaches back past the 1 s watchdog.
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--watchdog",
        "1s",
        "--checkpoint-interval",
        "50ms",
        "--keep",
        "60",
        "--",
        &watchdog,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &watchdog, sh.pid());
    std::thread::sleep(Duration::from_millis(700));
    // The program's own bug, simulated: it spins without heartbeats.
    assert!(send(pid, sig("SIGUSR1")));
    let (code, out, err) = sh.wait(LIMIT);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, expected, "{err}");

    let events = events_json(&store, &[]);
    let hangs: Vec<_> = kinds(&events, "app_hang");
    assert_eq!(hangs.len(), 1, "{}", dump(&events));
    assert_eq!(hangs[0]["details"]["detector"], "watchdog");
    let rb = kinds(&events, "rollback");
    assert_eq!(rb.len(), 1, "{}", dump(&events));
    let d = &rb[0]["details"];
    assert_eq!(
        (&d["outcome"], &d["trigger"]),
        (&"done".into(), &"hang".into()),
        "{d}"
    );
    // Restored from before the last heartbeat: at least the watchdog ago.
    assert!(d["checkpoint_age_ms"].as_u64().unwrap() >= 900, "{d}");
    let recovered: Vec<_> = kinds(&events, "app_action")
        .into_iter()
        .filter(|e| e["details"]["action"] == "rollback")
        .collect();
    assert_eq!(recovered.len(), 1, "{}", dump(&events));
    assert_eq!(recovered[0]["details"]["outcome"], "recovered");
    let stopped = kinds(&events, "app_action")
        .into_iter()
        .any(|e| e["details"]["action"] == "signal");
    assert!(
        !stopped,
        "no stop signal after a rollback:\n{}",
        dump(&events)
    );
    assert!(
        kinds(&events, "app_restart").is_empty(),
        "{}",
        dump(&events)
    );
}

#[test]
fn job_control_sigterm_and_sigkill_work_on_a_traced_program() {
    if skip() {
        return;
    }
    let _one = serial();
    let compute = prog("compute");
    let rounds = rounds_for("compute", 200, 3.0);
    let expected = plain("compute", &rounds);

    // Stopped and continued (group-stop under ptrace), then a crash: the
    // answer is still right.
    let mut sh = Selfheal::start(&[
        "run",
        "--no-store",
        "--checkpoint-interval",
        "50ms",
        "--",
        &compute,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &compute, sh.pid());
    std::thread::sleep(Duration::from_millis(300));
    assert!(send(pid, sig("SIGSTOP")));
    std::thread::sleep(Duration::from_millis(800));
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = state.rsplit(") ").next().unwrap().chars().next().unwrap();
    assert!(matches!(state, 't' | 'T'), "stopped, not {state}");
    assert!(send(pid, sig("SIGCONT")));
    std::thread::sleep(Duration::from_millis(300));
    assert!(send(pid, sig("SIGSEGV")));
    let (code, out, err) = sh.wait(LIMIT);
    assert_eq!((code, out), (Some(0), expected), "{err}");
    // A stopped program is not checkpointed (nothing can run inside it
    // without ending the stop), and that is no failure: checkpoints of it
    // once failed every 50 ms, each discarding the history.
    assert!(!err.contains("a checkpoint of"), "{err}");

    // SIGTERM to selfheal stops a stopped program at once (not after the
    // 10 s grace) and passes its status on.
    let long = rounds_for("compute", 200, 60.0);
    let mut sh = Selfheal::start(&[
        "run",
        "--no-store",
        "--checkpoint-interval",
        "50ms",
        "--",
        &compute,
        &long,
    ]);
    let pid = program_pid(&sh.sandbox, &compute, sh.pid());
    assert!(send(pid, sig("SIGSTOP")));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert!(send(sh.pid(), sig("SIGTERM")));
    let (code, _, err) = sh.wait(LIMIT);
    assert_eq!(code, Some(128 + sig("SIGTERM")), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    // SIGKILL to selfheal leaves no program behind (PTRACE_O_EXITKILL).
    let mut sh = Selfheal::start(&[
        "run",
        "--no-store",
        "--checkpoint-interval",
        "50ms",
        "--",
        &compute,
        &long,
    ]);
    let selfheal_pid = sh.pid();
    program_pid(&sh.sandbox, &compute, selfheal_pid);
    assert!(send(selfheal_pid, sig("SIGKILL")));
    sh.wait(LIMIT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sandbox_pids(&sh.sandbox, selfheal_pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the traced program outlived selfheal: {:?}",
            sandbox_pids(&sh.sandbox, selfheal_pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_ends_supervision_promptly_amid_checkpoints_and_rollbacks() {
    if skip() {
        return;
    }
    let _one = serial();
    let threads = prog("threads");
    let long = rounds_for("threads", 20, 60.0);
    let mut rng = Rng::new();
    // Checkpoints every 10 ms and a storm of crash signals: SIGTERM to
    // selfheal lands in the middle of a checkpoint, a pre-copy, a rollback
    // or a remote system call, wherever; supervision must end at once
    // (the program does not handle SIGTERM) and pass its status on.
    for round in 0..3 {
        let mut sh = Selfheal::start(&[
            "run",
            "--no-store",
            "--checkpoint-interval",
            "10ms",
            "--max-rollbacks",
            "0",
            "--",
            &threads,
            &long,
        ]);
        let pid = program_pid(&sh.sandbox, &threads, sh.pid());
        std::thread::sleep(Duration::from_millis(300));
        // One pidfd for the whole storm: it never names another process.
        let pidfd = selfheal_sys::signal::pidfd_open(pid).unwrap();
        let storm = std::thread::spawn(move || {
            let mut rng = Rng::new();
            while selfheal_sys::signal::pidfd_send_signal(&pidfd, sig("SIGSEGV")).is_ok() {
                std::thread::sleep(rng.millis(5, 40));
            }
        });
        std::thread::sleep(rng.millis(100, 700));
        let t = Instant::now();
        assert!(send(sh.pid(), sig("SIGTERM")));
        let (code, _, err) = sh.wait(LIMIT);
        let took = t.elapsed();
        storm.join().unwrap();
        assert_eq!(code, Some(128 + sig("SIGTERM")), "round {round}: {err}");
        assert!(
            took < Duration::from_secs(5),
            "round {round}: took {took:?}\n{err}"
        );
    }
}

#[test]
fn app_table_checkpoints_in_the_daemon() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let out_file = dir.path().join("out.txt");
    let rounds = rounds_for("compute", 200, 3.0);
    let expected = plain("compute", &rounds);
    let compute = prog("compute");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\n\
             [[app]]\nname = \"crunch\"\ncommand = [\"{compute}\", \"{rounds}\"]\n\
             stdout = \"{}\"\n\
             [app.checkpoint]\ninterval = \"50ms\"\nkeep = 8\nrecurrence_window = \"1s\"\n",
            out_file.display()
        ),
    );
    let (mut cmd, sandbox) = sandboxed(&[
        "watch",
        "--config",
        cfg.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let log2 = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            log2.lock().unwrap().push(line);
        }
    });
    let mut d = DaemonProc { child, log };
    let addr = d.wait_http(Duration::from_secs(30));
    let pid = program_pid(&sandbox, &compute, d.child.id() as i32);
    std::thread::sleep(Duration::from_millis(400));
    assert!(send(pid, sig("SIGSEGV")));
    std::thread::sleep(Duration::from_millis(400));
    assert!(send(pid, sig("SIGSEGV")));

    // It runs to the end (exit 0: supervision of the app ends).
    let deadline = Instant::now() + LIMIT;
    let events = loop {
        let evs = events_json(&store, &["--app", "crunch"]);
        if !kinds(&evs, "app_exit").is_empty() {
            break evs;
        }
        assert!(
            Instant::now() < deadline,
            "the app did not finish:\n{}\n{}",
            dump(&evs),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), expected);
    assert_eq!(kinds(&events, "rollback").len(), 2, "{}", dump(&events));
    assert!(kinds(&events, "app_crash").is_empty(), "{}", dump(&events));
    let (_, metrics) = get(addr, "/metrics");
    for line in [
        "selfheal_app_rollbacks_total{app=\"crunch\"} 2",
        "selfheal_app_rollbacks_impossible_total{app=\"crunch\"} 0",
        "selfheal_app_checkpoint_active{app=\"crunch\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let checkpoints: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("selfheal_app_checkpoints_total{app=\"crunch\"} "))
        .expect("checkpoints_total")
        .parse()
        .unwrap();
    assert!(checkpoints >= 10.0, "{metrics}");
    assert!(d.terminate().success());
    drop(sandbox);
}
