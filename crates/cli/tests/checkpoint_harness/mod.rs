//! Shared by the checkpoint tests of the real binary: the C test programs,
//! `selfheal` started inside a cgroup sandbox, signals, events.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::common::*;
use selfheal_cgroup::{Sandbox, SandboxConfig};
use serde_json::Value;

/// Bound on any one program run (generous: a noisy shared machine).
pub const LIMIT: Duration = Duration::from_secs(120);

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !selfheal_sys::process::is_root() {
        return Some("needs root (ptrace, userfaultfd, cgroup sandbox)".into());
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup for the sandbox".into());
    }
    progs().err()
}

/// Skips the calling test (returns true) with the reason printed.
pub fn skip() -> bool {
    match skip_reason() {
        Some(why) => {
            eprintln!("SKIP: {why}");
            true
        }
        None => false,
    }
}

/// One at a time: timing-sensitive on a shared 2-core machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles the test programs once: the checkpoint engine's own and ours.
pub fn progs() -> Result<&'static PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("selfheal-cli-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let engine_progs = here.join("../checkpoint/tests/progs");
        for (name, src) in [
            ("compute", engine_progs.join("compute.c")),
            ("socket", engine_progs.join("socket.c")),
            ("threads", engine_progs.join("threads.c")),
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

pub fn prog(name: &str) -> String {
    progs().unwrap().join(name).display().to_string()
}

/// The program's output unsupervised and fault-free.
pub fn plain(name: &str, arg: &str) -> String {
    let out = Command::new(prog(name)).arg(arg).output().unwrap();
    assert!(out.status.success(), "{name} {arg}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An argument for `name` that makes it run about `secs` unsupervised.
/// The fastest of three probes counts: one probe slowed down by a burst
/// of load (another test's fork bomb) would size the run far too short,
/// and it would end before the test's signals.
pub fn rounds_for(name: &str, probe: u64, secs: f64) -> String {
    let per = (0..3)
        .map(|_| {
            let t = Instant::now();
            plain(name, &probe.to_string());
            t.elapsed().as_secs_f64() / probe as f64
        })
        .fold(f64::INFINITY, f64::min);
    ((secs / per.max(1e-7)) as u64)
        .clamp(probe, probe * 1000)
        .to_string()
}

/// A deterministic pseudo-random sequence (seed printed for reruns).
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// `selfheal ARGS` running in its own sandbox (its program inherits it).
/// Dropped while running, it is SIGKILLed, which kills the traced program
/// with it (PTRACE_O_EXITKILL).
pub struct Selfheal {
    child: Option<Child>,
    pub sandbox: Sandbox,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// Reads a stream to its end on a thread.
pub fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// `selfheal ARGS` set up to start inside a new sandbox.
pub fn sandboxed(args: &[&str]) -> (Command, Sandbox) {
    let sandbox = Sandbox::new(
        SandboxConfig::new("selfheal-ckpt")
            .memory_max_bytes(512 << 20)
            .pids_max(128)
            .cpus(Some(1.0)),
    )
    .unwrap_or_else(|e| panic!("create the cgroup sandbox: {e}"));
    let fds: Vec<OwnedFd> = sandbox
        .cgroup()
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
    pub fn start(args: &[&str]) -> Selfheal {
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

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits for the end: (exit code, stdout, stderr).
    pub fn wait(&mut self, limit: Duration) -> (Option<i32>, String, String) {
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
pub fn sandbox_pids(sandbox: &Sandbox, except: i32) -> Vec<i32> {
    sandbox
        .cgroup()
        .procs()
        .unwrap_or_default()
        .into_iter()
        .filter(|&p| p != except)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .is_ok_and(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        })
        .collect()
}

/// The pid of the program `path` running in the sandbox.
pub fn program_pid(sandbox: &Sandbox, path: &str, except: i32) -> i32 {
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
pub fn sig(name: &str) -> i32 {
    selfheal_sys::signal::signal_from_name(name).unwrap()
}

pub fn send(pid: i32, signal: i32) -> bool {
    selfheal_sys::signal::pidfd_open(pid)
        .and_then(|fd| selfheal_sys::signal::pidfd_send_signal(&fd, signal))
        .is_ok()
}

/// Events of one kind.
pub fn kinds<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// One line per event, for failure messages.
pub fn dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("  {} {} {}", e["kind"], e["message"], e["details"]))
        .collect::<Vec<_>>()
        .join("\n")
}
