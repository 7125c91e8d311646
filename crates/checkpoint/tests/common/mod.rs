//! Helpers for tests that run real programs under checkpointing: compile
//! the C programs in tests/progs, run them in a cgroup sandbox, collect
//! their output and the engine's events, all bounded in time.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_checkpoint::{Config, Engine, Event, LaunchSpec, Program, StdioSpec, Target};

/// Why tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !selfheal_sys::process::is_root() {
        return Some("needs root (cgroup sandbox for fault injection, userfaultfd)".into());
    }
    if progs_dir().is_err() {
        return Some(format!(
            "cannot build the C test programs: {}",
            progs_dir().unwrap_err()
        ));
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup for the sandbox".into());
    }
    None
}

/// Skips the calling test (returns true) with a clear message.
pub fn skip() -> bool {
    match skip_reason() {
        Some(why) => {
            eprintln!("SKIP: {why}");
            true
        }
        None => false,
    }
}

/// One test at a time: they are timing-sensitive on a shared 2-core machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn progs_dir() -> Result<&'static PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("selfheal-ckpt-progs-{}", std::process::id()));
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs");
        for name in [
            "compute",
            "corrupt",
            "mmapchurn",
            "threads",
            "socket",
            "spin",
            "exitcode",
            "linesock",
            "tstate",
            "files",
            "writer",
            "grow",
            "exits",
            "brkwalk",
            "notifysock",
            "altstack",
            "sigq",
            "sigburst",
            "sigwait",
        ] {
            let st = Command::new("cc")
                .args(["-O2", "-o"])
                .arg(out.join(name))
                .arg(src.join(format!("{name}.c")))
                .args(["-lm", "-lpthread"])
                .status()
                .map_err(|e| format!("cc: {e}"))?;
            if !st.success() {
                return Err(format!("cc failed on {name}.c"));
            }
        }
        Ok(out)
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// Path of a compiled test program.
pub fn prog(name: &str) -> PathBuf {
    progs_dir().expect("checked by skip()").join(name)
}

/// Output of the program run without any supervision: the fault-free answer.
pub fn plain_output(name: &str, args: &[&str]) -> String {
    let out = Command::new(prog(name))
        .args(args)
        .output()
        .expect("run plain");
    assert!(
        out.status.success(),
        "{name} failed unsupervised: {:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// CPU time `pid` used so far, in clock ticks (utime + stime); None once
/// it is gone.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line; `rest` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// What each thread of `pid` is doing (state and kernel wait channel),
/// for a failure message.
pub fn task_states(pid: i32) -> String {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("process {pid} is gone");
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let wchan = std::fs::read_to_string(e.path().join("wchan")).unwrap_or_default();
        out.push(format!("{tid} {state} {wchan}"));
    }
    out.sort();
    out.join("; ")
}

/// Everything /proc says about where the threads of `pid` and this
/// process's tracer threads are stuck, for a failure message: per thread
/// its state, wait channel, pending/blocked signals, tracer and kernel
/// stack (root only).
pub fn stuck_report(pid: i32) -> String {
    fn threads(dir: &str, only_named: Option<&str>) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return vec![format!("{dir} is gone")];
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let p = e.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            let comm = read("comm").trim().to_string();
            if only_named.is_some_and(|n| !comm.starts_with(n)) {
                continue;
            }
            let stat = read("stat");
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            let status = read("status");
            let fields: Vec<&str> = status
                .lines()
                .filter(|l| {
                    ["SigPnd", "ShdPnd", "SigBlk", "SigCgt", "TracerPid"]
                        .iter()
                        .any(|f| l.starts_with(f))
                })
                .collect();
            let stack = read("stack").replace('\n', " | ");
            out.push(format!(
                "  {} {comm} state {state} wchan {} syscall {} {}; stack: {stack}",
                e.file_name().to_string_lossy(),
                read("wchan"),
                read("syscall").trim(),
                fields.join(" "),
            ));
        }
        out.sort();
        out
    }
    let mut s = format!("program {pid}:\n");
    s += &threads(&format!("/proc/{pid}/task"), None).join("\n");
    s += "\ntracer threads:\n";
    s += &threads("/proc/self/task", Some("selfheal-ckpt")).join("\n");
    s
}

/// A program running under the engine, in a sandbox, stdout captured.
pub struct Run {
    pub engine: Engine,
    pub sandbox: Sandbox,
    stdout: Option<std::thread::JoinHandle<String>>,
    pub events: Vec<Event>,
    /// When [`Run::wait`] saw the end.
    pub ended_at: Option<Instant>,
}

/// Starts `name args` under `config`.
pub fn start(name: &str, args: &[&str], config: Config) -> Run {
    let mut argv = vec![prog(name).to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|s| s.to_string()));
    start_argv(argv, None, config)
}

/// Starts any command (searched in PATH) under `config`, in `cwd`.
pub fn start_argv(argv: Vec<String>, cwd: Option<PathBuf>, config: Config) -> Run {
    start_stdio(argv, cwd, [None, None, None], config)
}

/// Like [`start_argv`] with the given stdin, stdout and stderr (stdout
/// `None`: a pipe whose contents [`Run::wait`] returns; stdin and stderr
/// `None`: ours).
pub fn start_stdio(
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    stdio: [Option<OwnedFd>; 3],
    config: Config,
) -> Run {
    try_start_stdio(argv, cwd, stdio, config).expect("start engine")
}

/// [`start_stdio`], handing back why the engine could not start.
pub fn try_start_stdio(
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    stdio: [Option<OwnedFd>; 3],
    config: Config,
) -> Result<Run, selfheal_checkpoint::StartError> {
    let sandbox = Sandbox::new(
        SandboxConfig::new("selfheal-ckpt")
            .memory_max_bytes(512 << 20)
            .pids_max(32)
            .cpus(Some(1.0)),
    )
    .unwrap_or_else(|e| panic!("create cgroup sandbox: {e}"));
    let [stdin, stdout, stderr] = stdio;
    let (reader, stdout) = match stdout {
        Some(fd) => (None, fd),
        None => {
            let (reader, writer) = std::io::pipe().expect("pipe");
            (Some(reader), OwnedFd::from(writer))
        }
    };
    let stream = |fd: Option<OwnedFd>| fd.map_or(StdioSpec::Inherit, StdioSpec::Fd);
    let spec = LaunchSpec {
        program: Program {
            argv,
            cwd,
            stdio: [stream(stdin), StdioSpec::Fd(stdout), stream(stderr)],
            cgroup_procs: sandbox.cgroup().procs_files(),
            ..Program::default()
        },
        ..LaunchSpec::default()
    };
    let engine = Engine::start(Target::Launch(spec), config)?;
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = reader {
            let _ = r.read_to_string(&mut s);
        }
        s
    });
    Ok(Run {
        engine,
        sandbox,
        stdout: Some(stdout),
        events: Vec::new(),
        ended_at: None,
    })
}

impl Run {
    /// Keeps `ev`, noting when the end was seen.
    pub fn push(&mut self, ev: Event) {
        if matches!(ev, Event::Exited(_) | Event::Detached) {
            self.ended_at = Some(Instant::now());
        }
        self.events.push(ev);
    }

    /// Every signal in `sent` was rolled back, but the last one may have met
    /// the program in its exit (then the kernel drops it): that one may be
    /// missing if the end was seen within 200 ms of it.
    pub fn rolled_back_all(&self, sent: &Sent) -> bool {
        let n = self.rollbacks().len();
        let met_exit = match (sent.last, self.ended_at) {
            (Some(last), Some(end)) => {
                end.saturating_duration_since(last) < Duration::from_millis(200)
            }
            _ => false,
        };
        if n + 1 == sent.count && met_exit {
            eprintln!(
                "the last signal met the program's exit: {n} rollbacks for {} signals",
                sent.count
            );
        }
        n == sent.count || (n + 1 == sent.count && met_exit)
    }

    /// Collects events until the process ends (or `limit` passes: then it
    /// is killed and the test fails).
    /// Waits until the program has used `ticks` more clock ticks of CPU
    /// than now (it ran on, whatever the load), collecting events. Fails
    /// the test, saying what its threads do, if it ends or stalls first.
    pub fn wait_cpu(&mut self, ticks: u64, limit: Duration) {
        let pid = self.engine.pid();
        let t0 = cpu_ticks(pid).unwrap_or(0);
        let deadline = Instant::now() + limit;
        loop {
            while let Ok(ev) = self.engine.events().try_recv() {
                self.push(ev);
            }
            let ended = self
                .events
                .iter()
                .any(|e| matches!(e, Event::Exited(_) | Event::Detached));
            assert!(!ended, "the program ended early: {:?}", self.events);
            if cpu_ticks(pid).is_some_and(|t| t >= t0 + ticks) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no progress in {limit:?} ({} ticks used before); threads: {}; events: {:?}",
                t0,
                task_states(pid),
                self.events
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn wait(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        // The end may have been collected already (by a caller that took
        // events meanwhile).
        let ended = |e: &Event| matches!(e, Event::Exited(_) | Event::Detached);
        while !self.events.last().is_some_and(ended) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.engine.events().recv_timeout(left) {
                Ok(ev) => self.push(ev),
                Err(_) => {
                    let stuck = stuck_report(self.engine.pid());
                    self.engine.kill();
                    panic!(
                        "program did not finish within {limit:?}; events other than checkpoints: {:?}\n{stuck}",
                        self.events
                            .iter()
                            .filter(|e| !matches!(e, Event::Checkpoint(_)))
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
        self.stdout
            .take()
            .expect("once")
            .join()
            .expect("stdout reader")
    }

    /// Drains events seen so far without blocking.
    pub fn drain(&mut self) {
        while let Ok(ev) = self.engine.events().try_recv() {
            self.events.push(ev);
        }
    }

    /// The rollbacks done.
    pub fn rollbacks(&self) -> Vec<&selfheal_checkpoint::RollbackReport> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::RolledBack(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Refused rollbacks.
    pub fn impossible(&self) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::RollbackImpossible { .. }))
            .collect()
    }
}

/// A deterministic pseudo-random sequence (seed printed for reruns).
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }

    /// Uniform in [lo, hi) milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// Sends `sig` to the engine's process `times` times at random moments,
/// stopping early once it has exited. Returns how many were sent.
pub fn signal_at_random(run: &Run, sig: i32, times: usize, lo_ms: u64, hi_ms: u64) -> usize {
    signals_at_random(run, sig, times, lo_ms, hi_ms).count
}

/// Signals sent by [`signals_at_random`].
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// How many were sent to a live process.
    pub count: usize,
    /// When the last one was sent.
    pub last: Option<Instant>,
}

/// [`signal_at_random`], also saying when the last signal went. None is
/// sent to a process already ending (a zombie).
pub fn signals_at_random(run: &Run, sig: i32, times: usize, lo_ms: u64, hi_ms: u64) -> Sent {
    let pid = run.engine.pid();
    let pidfd = selfheal_sys::signal::pidfd_open(pid).expect("pidfd");
    let mut rng = Rng::from_time();
    let mut sent = Sent {
        count: 0,
        last: None,
    };
    for _ in 0..times {
        std::thread::sleep(rng.millis(lo_ms, hi_ms));
        // A standard signal sent while the last one is still queued merges
        // with it: one delivery, one rollback, for two sends. On a loaded
        // machine the program can go a second without running (a CI run
        // once counted 5 rollbacks for 6 signals), so each waits for the
        // one before it to leave the queue.
        let queued_until = Instant::now() + Duration::from_secs(10);
        while signal_queued(pid, sig) && Instant::now() < queued_until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if matches!(task_state(pid), None | Some('Z' | 'X')) {
            break;
        }
        if selfheal_sys::signal::pidfd_send_signal(&pidfd, sig).is_err() {
            break;
        }
        sent.count += 1;
        sent.last = Some(Instant::now());
    }
    sent
}

/// Whether signal `sig` is queued for `pid` or one of its threads and not
/// yet delivered (`SigPnd`/`ShdPnd` in its status).
pub fn signal_queued(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let bit = 1u64 << (sig - 1);
    status.lines().any(|l| {
        let mask = l
            .strip_prefix("SigPnd:")
            .or_else(|| l.strip_prefix("ShdPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    })
}

/// The state letter of `pid` in /proc (None once gone).
pub fn task_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Test configuration: checkpoint events on.
pub fn config() -> Config {
    Config {
        report_checkpoints: true,
        ..Config::default()
    }
}
