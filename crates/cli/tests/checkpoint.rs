//! Checkpoints through the real binary: `selfheal run --checkpoint-interval`
//! and `[app.checkpoint]` in `selfheal watch`, on real programs in a cgroup
//! sandbox (memory, pids and CPU limits), with faults sent from outside.
//!
//! Output is not rolled back, so the programs print only their final
//! answer; a test passes when that answer equals the one the program
//! prints unsupervised and fault-free. Needs root (ptrace, userfaultfd, the
//! sandbox) and `cc`; skips with the reason otherwise.

mod common;

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use selfheal_supervise::checkpoint::engine::sandbox::{Limits, Sandbox};
use serde_json::Value;

/// Bound on any one program run (generous: a noisy shared machine).
const LIMIT: Duration = Duration::from_secs(120);

fn skip_reason() -> Option<String> {
    if !selfheal_sys::process::is_root() {
        return Some("needs root (ptrace, userfaultfd, cgroup sandbox)".into());
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup for the sandbox".into());
    }
    progs().err()
}

fn skip() -> bool {
    match skip_reason() {
        Some(why) => {
            eprintln!("SKIP: {why}");
            true
        }
        None => false,
    }
}

/// One at a time: timing-sensitive on a shared 2-core machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles the test programs once: the checkpoint engine's own and ours.
fn progs() -> Result<&'static PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("selfheal-cli-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let engine_progs = here.join("../checkpoint/tests/progs");
        for (name, src) in [
            ("compute", engine_progs.join("compute.c")),
            ("socket", engine_progs.join("socket.c")),
            ("watchdog", here.join("tests/checkpoint_progs/watchdog.c")),
            ("crasher", here.join("tests/checkpoint_progs/crasher.c")),
        ] {
            let st = Command::new("cc")
                .args(["-O2", "-o"])
                .arg(out.join(name))
                .arg(&src)
                .args(["-lm", "-lpthread"])
                .status()
                .map_err(|e| format!("cannot run cc to build the test programs: {e}"))?;
            if !st.success() {
                return Err(format!("cc failed on {}", src.display()));
            }
        }
        Ok(out)
    })
    .as_ref()
    .map_err(|e| e.clone())
}

fn prog(name: &str) -> String {
    progs().unwrap().join(name).display().to_string()
}

/// The program's output unsupervised and fault-free.
fn plain(name: &str, arg: &str) -> String {
    let out = Command::new(prog(name)).arg(arg).output().unwrap();
    assert!(out.status.success(), "{name} {arg}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An argument for `name` that makes it run about `secs` unsupervised.
fn rounds_for(name: &str, probe: u64, secs: f64) -> String {
    let t = Instant::now();
    plain(name, &probe.to_string());
    let per = t.elapsed().as_secs_f64() / probe as f64;
    ((secs / per.max(1e-7)) as u64)
        .clamp(probe, probe * 1000)
        .to_string()
}

/// A deterministic pseudo-random sequence (seed printed for reruns).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// `selfheal ARGS` running in its own sandbox (its program inherits it).
/// Dropped while running, it is SIGKILLed, which kills the traced program
/// with it (PTRACE_O_EXITKILL).
struct Selfheal {
    child: Option<Child>,
    sandbox: Sandbox,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn sandboxed(args: &[&str]) -> (Command, Sandbox) {
    let sandbox = Sandbox::create(
        Path::new("/sys/fs/cgroup"),
        Limits {
            memory_bytes: 512 << 20,
            pids: 128,
            cpu_percent: 100,
        },
    )
    .expect("create the cgroup sandbox");
    let fds: Vec<OwnedFd> = sandbox
        .procs_files()
        .iter()
        .map(|p| {
            OwnedFd::from(
                OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
        })
        .collect();
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    selfheal_sys::spawn::join_cgroups_before_exec(&mut cmd, fds);
    (cmd, sandbox)
}

impl Selfheal {
    fn start(args: &[&str]) -> Selfheal {
        let (mut cmd, sandbox) = sandboxed(args);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn selfheal");
        Selfheal {
            stdout: Some(reader(child.stdout.take().unwrap())),
            stderr: Some(reader(child.stderr.take().unwrap())),
            child: Some(child),
            sandbox,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits for the end: (exit code, stdout, stderr).
    fn wait(&mut self, limit: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let err = self.stderr.take().unwrap().join().unwrap();
                panic!("selfheal did not finish within {limit:?}:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        (
            status.code(),
            self.stdout.take().unwrap().join().unwrap(),
            self.stderr.take().unwrap().join().unwrap(),
        )
    }
}

impl Drop for Selfheal {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Live (not zombie) processes of the sandbox other than `except`.
fn sandbox_pids(sandbox: &Sandbox, except: i32) -> Vec<i32> {
    let procs = &sandbox.procs_files()[0];
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&p| p != except)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .is_ok_and(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        })
        .collect()
}

/// The pid of the program `path` running in the sandbox.
fn program_pid(sandbox: &Sandbox, path: &str, except: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for p in sandbox_pids(sandbox, except) {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if cmd.split(|b| *b == 0).next() == Some(path.as_bytes()) {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "{path} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A signal's number by name (this crate does not link libc).
fn sig(name: &str) -> i32 {
    selfheal_sys::signal::signal_from_name(name).unwrap()
}

fn send(pid: i32, signal: i32) -> bool {
    selfheal_sys::signal::pidfd_open(pid)
        .and_then(|fd| selfheal_sys::signal::pidfd_send_signal(&fd, signal))
        .is_ok()
}

fn kinds<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

fn dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("  {} {} {}", e["kind"], e["message"], e["details"]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sigsegv_at_random_moments_is_rolled_back_and_the_answer_is_right() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    // About 3 s unsupervised, so every signal (4 × at most 500 ms) lands
    // well before it ends.
    let rounds = rounds_for("compute", 200, 3.0);
    let expected = plain("compute", &rounds);
    let compute = prog("compute");
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-interval",
        "50ms",
        "--keep",
        "8",
        "--",
        &compute,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &compute, sh.pid());
    let mut rng = Rng::new();
    let mut sent = 0;
    for _ in 0..4 {
        std::thread::sleep(rng.millis(200, 500));
        if !send(pid, sig("SIGSEGV")) {
            break;
        }
        sent += 1;
    }
    let (code, out, err) = sh.wait(LIMIT);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, expected, "{err}");
    assert!(sent >= 2, "the program ended before two signals were sent");

    let events = events_json(&store, &[]);
    let rollbacks = kinds(&events, "rollback");
    assert_eq!(
        rollbacks.len(),
        sent,
        "one rollback per SIGSEGV:\n{}",
        dump(&events)
    );
    for r in &rollbacks {
        let d = &r["details"];
        assert_eq!(d["outcome"], "done", "{r}");
        assert_eq!(d["trigger"], "crash", "{r}");
        assert_eq!(d["signal_name"], "SIGSEGV", "{r}");
        assert_eq!(r["culprit"]["pid"], pid, "{r}");
        assert!(d["checkpoint_id"].as_u64().unwrap() >= 1, "{r}");
        assert!(d["checkpoint_age_ms"].is_u64(), "{r}");
        assert!(d["depth"].is_u64(), "{r}");
        assert!(d["pages_restored"].as_u64().unwrap() > 0, "{r}");
        assert!(d["duration_us"].as_u64().unwrap() > 0, "{r}");
    }
    assert!(kinds(&events, "app_crash").is_empty(), "{}", dump(&events));
    assert!(
        kinds(&events, "app_restart").is_empty(),
        "{}",
        dump(&events)
    );
    let started = kinds(&events, "checkpoint");
    assert_eq!(started.len(), 1, "{}", dump(&events));
    assert_eq!(started[0]["details"]["outcome"], "started");
    assert_eq!(started[0]["details"]["tracking"], "uffd_wp");
}

#[test]
fn unrecoverable_state_is_restarted_with_the_reason_recorded() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let rounds = rounds_for("socket", 50, 2.0);
    let expected = plain("socket", &rounds);
    let socket = prog("socket");
    // Full copies too: the fallback of kernels without uffd-wp announces itself.
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--backoff",
        "50ms",
        "--checkpoint-interval",
        "50ms",
        "--checkpoint-full-copy",
        "--",
        &socket,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &socket, sh.pid());
    std::thread::sleep(Duration::from_millis(500));
    assert!(send(pid, sig("SIGSEGV")));
    let (code, out, err) = sh.wait(LIMIT);
    // The first run died; the restarted one printed the answer.
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, expected, "{err}");

    let events = events_json(&store, &[]);
    let rb = kinds(&events, "rollback");
    assert_eq!(rb.len(), 1, "{}", dump(&events));
    let d = &rb[0]["details"];
    assert_eq!(d["outcome"], "impossible", "{d}");
    assert_eq!(d["reason"], "socket", "{d}");
    assert_eq!(d["then"], "restart", "{d}");
    assert!(d["message"].as_str().unwrap().contains("socket"), "{d}");
    let crash = kinds(&events, "app_crash");
    assert_eq!(crash.len(), 1, "{}", dump(&events));
    assert_eq!(crash[0]["details"]["signal_name"], "SIGSEGV");
    let restart = kinds(&events, "app_restart");
    assert_eq!(restart.len(), 1, "{}", dump(&events));
    assert_eq!(restart[0]["details"]["cause"], "crash");
    // Each run announced its checkpoints, in full-copy mode with the reason.
    let ck = kinds(&events, "checkpoint");
    assert_eq!(ck.len(), 2, "{}", dump(&events));
    for c in ck {
        assert_eq!(c["details"]["tracking"], "full_copy", "{c}");
        assert!(c["details"]["tracking_note"].is_string(), "{c}");
        assert_eq!(c["severity"], "warning", "{c}");
    }
}

#[test]
fn a_recurring_crash_goes_back_step_by_step_then_restarts() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    // The crash comes after about 0.6 s of work, past 4 checkpoints.
    let t = Instant::now();
    let st = Command::new(prog("crasher")).arg("200").status().unwrap();
    assert!(!st.success(), "the crasher crashes unsupervised");
    let per = t.elapsed().as_secs_f64() / 200.0;
    let rounds = ((0.6 / per.max(1e-7)) as u64)
        .clamp(200, 200_000)
        .to_string();
    let crasher = prog("crasher");
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--restart",
        "never",
        "--checkpoint-interval",
        "50ms",
        "--keep",
        "4",
        "--",
        &crasher,
        &rounds,
    ]);
    let (code, _, err) = sh.wait(LIMIT);
    assert_eq!(code, Some(128 + sig("SIGSEGV")), "{err}");

    let events = events_json(&store, &[]);
    let rb = kinds(&events, "rollback");
    let done: Vec<_> = rb
        .iter()
        .filter(|e| e["details"]["outcome"] == "done")
        .collect();
    // Progressive: the newest checkpoint, then one older each time.
    assert_eq!(done.len(), 4, "{}", dump(&events));
    for (i, e) in done.iter().enumerate() {
        assert_eq!(e["details"]["depth"], i, "{}", dump(&events));
        assert_eq!(e["details"]["signal_name"], "SIGSEGV");
        assert!(e["details"]["fault_addr"].is_string(), "a real fault: {e}");
    }
    let last = rb.last().unwrap();
    assert_eq!(
        last["details"]["outcome"],
        "impossible",
        "{}",
        dump(&events)
    );
    assert_eq!(last["details"]["reason"], "history_exhausted");
    let crash = kinds(&events, "app_crash");
    assert_eq!(crash.len(), 1, "{}", dump(&events));
    assert_eq!(crash[0]["details"]["signal_name"], "SIGSEGV");
}

#[test]
fn too_many_rollbacks_end_in_a_restart() {
    if skip() {
        return;
    }
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let rounds = rounds_for("compute", 200, 3.0);
    let expected = plain("compute", &rounds);
    let compute = prog("compute");
    let mut sh = Selfheal::start(&[
        "run",
        "--store",
        store.to_str().unwrap(),
        "--backoff",
        "50ms",
        "--checkpoint-interval",
        "50ms",
        "--max-rollbacks",
        "2",
        "--",
        &compute,
        &rounds,
    ]);
    let pid = program_pid(&sh.sandbox, &compute, sh.pid());
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(send(pid, sig("SIGSEGV")));
    }
    let (code, out, err) = sh.wait(LIMIT);
    // The restarted run printed the answer.
    assert_eq!((code, out), (Some(0), expected), "{err}");
    let events = events_json(&store, &[]);
    let outcomes: Vec<_> = kinds(&events, "rollback")
        .iter()
        .map(|e| e["details"]["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        outcomes,
        ["done", "done", "done", "gave_up"],
        "{}",
        dump(&events)
    );
    let crash = kinds(&events, "app_crash");
    assert_eq!(crash.len(), 1, "{}", dump(&events));
    assert_eq!(crash[0]["details"]["signal_name"], "SIGKILL");
    assert_eq!(kinds(&events, "app_restart").len(), 1, "{}", dump(&events));
}

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
