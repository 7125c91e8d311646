//! Running the real `selfheal` binary in tests.

#![allow(dead_code)]

pub mod confined;
pub mod held;
pub mod npd;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_selfheal"))
}

/// A `selfheal watch` process; SIGTERM then SIGKILL on drop.
pub struct DaemonProc {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl DaemonProc {
    /// Starts `selfheal watch ARGS` with stderr captured.
    pub fn start(args: &[&str], env: &[(&str, &str)], uid: Option<u32>) -> DaemonProc {
        DaemonProc::spawn(args, env, &[], uid)
    }

    /// Starts `selfheal watch ARGS` without the environment variables `remove`.
    pub fn start_without_env(args: &[&str], remove: &[&str]) -> DaemonProc {
        DaemonProc::spawn(args, &[], remove, None)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], remove: &[&str], uid: Option<u32>) -> DaemonProc {
        let mut cmd = Command::new(bin());
        for k in remove {
            cmd.env_remove(k);
        }
        cmd.arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("spawn selfheal watch");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line);
            }
        });
        DaemonProc { child, log }
    }

    /// Starts `selfheal watch --config CONFIG --store STORE` as this user.
    pub fn with_config(config: &Path, store: &Path) -> DaemonProc {
        let (c, s) = (config.to_str().unwrap(), store.to_str().unwrap());
        DaemonProc::start(&["--config", c, "--store", s], &[], None)
    }

    /// Starts `selfheal watch --config CONFIG --store STORE --event-log LOG`
    /// as this user.
    pub fn with_event_log(config: &Path, store: &Path, log: &Path) -> DaemonProc {
        let (c, s, l) = (
            config.to_str().unwrap(),
            store.to_str().unwrap(),
            log.to_str().unwrap(),
        );
        DaemonProc::start(&["--config", c, "--store", s, "--event-log", l], &[], None)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for the "serving http://ADDR/metrics" line.
    pub fn wait_http(&mut self, timeout: Duration) -> SocketAddr {
        let start = Instant::now();
        loop {
            if let Some(addr) = self.log.lock().unwrap().iter().find_map(|l| {
                let rest = l.split("serving http://").nth(1)?;
                rest.split('/').next()?.parse().ok()
            }) {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daemon exited with {status}:\n{}", self.log_text());
            }
            assert!(
                start.elapsed() < timeout,
                "daemon did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("daemon did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            std::thread::sleep(Duration::from_millis(300));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `selfheal watch` started with a config text, its store and event
/// log in a temporary directory of its own; SIGTERM then SIGKILL on drop.
pub struct EventLogWatch {
    pub daemon: DaemonProc,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EventLogWatch {
    /// Starts `selfheal watch` with `config` (TOML) and returns at once.
    pub fn start(config: &str) -> EventLogWatch {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), config);
        let log = dir.path().join("events.jsonl");
        let store = dir.path().join("s.db");
        let daemon = DaemonProc::with_event_log(&config, &store, &log);
        EventLogWatch {
            daemon,
            log,
            _dir: dir,
        }
    }

    /// The events logged so far (lines that do not parse are skipped).
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first event `pred` accepts, waiting up to `timeout` for it.
    pub fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        poll(timeout, Duration::from_millis(50), || {
            self.events().into_iter().find(|e| pred(e))
        })
    }

    /// Stops the daemon (SIGTERM): its events and its log.
    pub fn stop(mut self) -> (Vec<serde_json::Value>, String) {
        self.daemon.terminate();
        let log = self.daemon.log_text();
        (self.events(), log)
    }
}

/// Calls `f` every `every` until it returns a value, or `None` once
/// `timeout` has passed.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    poll(timeout, Duration::from_millis(20), || {
        child.try_wait().ok().flatten()
    })
}

/// Polls /healthz until it answers 200 (the light detector completed a
/// cycle), or panics after `timeout`.
pub fn wait_healthy(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    loop {
        if get(addr, "/healthz").0 == 200 {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "daemon not healthy after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// HTTP GET via the daemon crate's client.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r =
        selfheal_daemon::http::client::get(addr, path, Duration::from_secs(5)).expect("http get");
    (r.status, r.body)
}

/// Runs `selfheal ARGS` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run selfheal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Events from the store as JSON values.
pub fn events_json(store: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "events",
        "--json",
        "--limit",
        "10000",
        "--store",
        store.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "selfheal events failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Whether `program` is a file in a directory of the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Writes a config file into `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("selfheal.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Busy share of each CPU over `window`, measured from /proc/stat.
pub fn cpu_busy_over(window: Duration) -> Vec<f64> {
    fn read() -> Vec<(u64, u64)> {
        std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .map(|l| {
                let v: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                let idle = v[3] + v.get(4).copied().unwrap_or(0);
                (v.iter().sum::<u64>(), idle)
            })
            .collect()
    }
    let a = read();
    std::thread::sleep(window);
    let b = read();
    a.iter()
        .zip(b.iter())
        .map(|((t0, i0), (t1, i1))| {
            let dt = (t1 - t0).max(1) as f64;
            1.0 - (i1 - i0) as f64 / dt
        })
        .collect()
}

/// A child this test started, killed and reaped on drop if still running
/// (its pid cannot be reused before it is reaped, so the kill is safe).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
