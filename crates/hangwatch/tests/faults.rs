//! Real faults on this machine, each confined in a cgroup sandbox with
//! pids, memory and CPU limits, detected and recovered by the hang pipeline
//! running in-process with a real light detector. Each test asserts the
//! class, the culprit pid, the action taken, that the machine recovered,
//! and that recovery touched nothing outside the sandbox (recovery is also
//! confined to the sandbox by `recovery.allowed_cgroups`).
//!
//! Tests run one at a time (a lock): two faults at once on a 2-CPU machine
//! would blur each other's evidence. They skip, saying why, without root or
//! a writable cgroup hierarchy.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_event::{Event, EventKind};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn diagnosis_of(class: &'static str) -> impl Fn(&Event) -> bool {
    move |e: &Event| e.kind == EventKind::Diagnosis && e.details["class"] == class
}

fn recovered(class: &'static str) -> impl Fn(&Event) -> bool {
    move |e: &Event| {
        e.kind == EventKind::Recovery
            && e.details["class"] == class
            && e.details["outcome"] == "recovered"
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// `key=value` from a line like `spinning pid=1 tid=2 wall_ms=3`.
fn field(line: &str, key: &str) -> Option<i64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// RT throttling off (`kernel.sched_rt_runtime_us = -1`) for as long as this
/// lives, with a separate guard process that restores the original value and
/// kills everything in the sandbox after `max`, whatever happens to the test
/// (even SIGKILL). Drop restores it at once and stops the guard.
struct RtThrottlingOff {
    original: String,
    guard: Child,
}

const RT_SYSCTL: &str = "/proc/sys/kernel/sched_rt_runtime_us";

impl RtThrottlingOff {
    fn new(sandbox: &Sandbox, max: Duration) -> RtThrottlingOff {
        let original = std::fs::read_to_string(RT_SYSCTL)
            .unwrap()
            .trim()
            .to_string();
        let procs: Vec<PathBuf> = sandbox.cgroup().procs_files();
        let kill_files: Vec<PathBuf> = sandbox
            .cgroup()
            .dirs()
            .into_iter()
            .map(|d| d.join("cgroup.kill"))
            .filter(|p| p.exists())
            .collect();
        let mut script = format!("sleep {}; echo {original} > {RT_SYSCTL};", max.as_secs());
        for k in &kill_files {
            script.push_str(&format!(" echo 1 > {} 2>/dev/null;", k.display()));
        }
        for p in &procs {
            script.push_str(&format!(
                " for p in $(cat {} 2>/dev/null); do kill -9 $p; done;",
                p.display()
            ));
        }
        let guard = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(RT_SYSCTL, "-1").unwrap();
        RtThrottlingOff { original, guard }
    }
}

impl Drop for RtThrottlingOff {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(RT_SYSCTL, &self.original) {
            eprintln!("restoring {RT_SYSCTL} to {}: {e}", self.original);
        }
        let _ = self.guard.kill();
        let _ = self.guard.wait();
    }
}

#[test]
fn rt_hog_on_one_cpu_is_demoted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TEST: &str = "rt_hog_on_one_cpu_is_demoted";
    if selfheal_sys::sched::cpus_configured() < 2 {
        eprintln!("SKIP {TEST}: needs 2 CPUs so that one stays free");
        return;
    }
    let Some(sb) = sandbox_or_skip(
        TEST,
        SandboxConfig::new("rt-hog")
            .pin_cpu(1)
            .rt_runtime_us(900_000)
            .cpus(None)
            .pids_max(8),
    ) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let h = Harness::start(Options::new(&rel));
    std::thread::sleep(Duration::from_millis(500)); // canaries settle
    let throttling = RtThrottlingOff::new(&sb, Duration::from_secs(10));
    let mut hog = sb
        .spawn(
            Command::new(selfheal_testprogs::bin("tp-rt-spin"))
                .args(["--priority", "20", "--cpu", "1", "--seconds", "8"])
                .stdout(Stdio::piped()),
        )
        .unwrap();
    let line = first_line(&mut hog);
    let hog_pid = hog.id() as i32;
    let spin_ms = field(&line, "wall_ms").expect("tp-rt-spin says when it starts");

    let stall = h.wait_event(Duration::from_secs(8), |e| {
        e.kind == EventKind::Alert && e.rule.as_deref() == Some("cpu_stall")
    });
    let diag = h.wait_event(Duration::from_secs(8), diagnosis_of("rt_hog"));
    let rec = h.wait_event(Duration::from_secs(8), recovered("rt_hog"));
    drop(throttling);
    let stall = stall.expect("the stall detector reported cpu 1");
    let diag = diag.expect("rt_hog diagnosed");
    let rec = rec.expect("rt_hog recovered");
    eprintln!(
        "{TEST}: stall reported {} ms, diagnosed {} ms, recovered {} ms after the hog started ({})",
        stall.time_unix_ms - spin_ms,
        diag.time_unix_ms - spin_ms,
        rec.time_unix_ms - spin_ms,
        rec.message
    );
    assert_eq!(stall.culprit.as_ref().unwrap().cpu, Some(1));
    let c = diag.culprit.as_ref().unwrap();
    assert_eq!((c.pid, c.cpu), (Some(hog_pid), Some(1)));
    assert_eq!(c.comm.as_deref(), Some("tp-rt-spin"));
    assert_eq!(rec.details["action"], "demote");
    // The hog now runs as a normal task (or was stopped), and CPU 1 is free.
    let stat = std::fs::read_to_string(format!("/proc/{hog_pid}/stat")).unwrap_or_default();
    let policy = stat
        .rsplit_once(") ")
        .map_or("", |r| r.1)
        .split_whitespace()
        .nth(38);
    assert!(matches!(policy, Some("0") | None), "policy {policy:?}");
    assert!(
        wait_until(Duration::from_secs(3), || h
            .pipeline()
            .stalled_cpus()
            .is_empty()),
        "cpu 1 still stalled: {:?}",
        h.pipeline().stalled_cpus()
    );
    assert_only_sandbox_touched(&h, &rel);
    drop(sb);
    let _ = hog.wait();
    h.stop();
}

#[test]
fn fork_bomb_under_a_pids_limit_is_killed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TEST: &str = "fork_bomb_under_a_pids_limit_is_killed";
    let Some(sb) = sandbox_or_skip(
        TEST,
        SandboxConfig::new("forkbomb")
            .pids_max(32)
            .cpus(Some(0.5))
            .memory_max_bytes(256 << 20),
    ) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let h = Harness::start(Options::new(&rel));
    let start_ms = selfheal_event::unix_ms(std::time::SystemTime::now());
    let mut bomb = sb
        .spawn(
            Command::new("bash")
                .args(["-c", "f() { while :; do f & done; }; f"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    let bomb_pid = bomb.id() as i32;
    let diag = h
        .wait_event(Duration::from_secs(15), diagnosis_of("fork_bomb"))
        .expect("fork bomb diagnosed");
    let rec = h
        .wait_event(Duration::from_secs(15), recovered("fork_bomb"))
        .expect("fork bomb recovered");
    eprintln!(
        "{TEST}: diagnosed after {} ms: {}; {}",
        diag.time_unix_ms - start_ms,
        diag.message,
        rec.message
    );
    for r in h.events().iter().filter(|e| e.kind == EventKind::Recovery) {
        eprintln!("  {}", r.message);
    }
    let c = diag.culprit.as_ref().unwrap();
    assert_eq!(c.cgroup.as_deref(), Some(rel.as_str()));
    assert_eq!(
        c.pid,
        Some(bomb_pid),
        "the bomb's first process is the culprit"
    );
    assert!(matches!(
        rec.details["action"].as_str(),
        Some("kill_tree" | "kill_cgroup")
    ));
    // Recovered: nothing left in the sandbox, the rest of the machine forks.
    assert!(wait_until(Duration::from_secs(5), || sb
        .cgroup()
        .procs_recursive()
        .unwrap()
        .is_empty()));
    assert_eq!(
        wait_exit(&mut bomb, Duration::from_secs(5)).and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
    assert!(Command::new("true").status().unwrap().success());
    assert_only_sandbox_touched(&h, &rel);
    h.stop();
}

#[test]
fn memory_hog_is_killed_before_the_sandbox_runs_out() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TEST: &str = "memory_hog_is_killed_before_the_sandbox_runs_out";
    let Some(sb) = sandbox_or_skip(
        TEST,
        SandboxConfig::new("memhog")
            .memory_max_bytes(256 << 20)
            .pids_max(16),
    ) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let h = Harness::start(Options::new(&rel));
    let mut hog = sb
        .spawn(
            Command::new(selfheal_testprogs::bin("tp-memhog"))
                .args(["--rate-mib", "16", "--max-mib", "250", "--seconds", "60"])
                .stdout(Stdio::null()),
        )
        .unwrap();
    let hog_pid = hog.id() as i32;
    // 90% of 256 MiB is reached after about 14 s at 16 MiB/s.
    let diag = h
        .wait_event(Duration::from_secs(40), diagnosis_of("memory_exhaustion"))
        .expect("memory exhaustion diagnosed");
    let rec = h
        .wait_event(Duration::from_secs(10), recovered("memory_exhaustion"))
        .expect("memory exhaustion recovered");
    eprintln!("{TEST}: {} / {}", diag.message, rec.message);
    let c = diag.culprit.as_ref().unwrap();
    assert_eq!(c.pid, Some(hog_pid));
    assert_eq!(c.comm.as_deref(), Some("tp-memhog"));
    assert_eq!(diag.details["evidence"]["scope"], "cgroup");
    assert!(diag.details["evidence"]["percent"].as_f64().unwrap() >= 90.0);
    assert_eq!(rec.details["action"], "kill");
    assert_eq!(
        wait_exit(&mut hog, Duration::from_secs(5)).and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
    // We acted before the kernel's OOM killer had to.
    if let Ok(Some(m)) = sb.cgroup().memory() {
        assert_eq!(m.oom_kills.unwrap_or(0), 0, "the kernel OOM-killed first");
    }
    assert_only_sandbox_touched(&h, &rel);
    h.stop();
}

/// A FUSE mount served by `tp-fuse-stall` inside the sandbox; dropping
/// it aborts the connection (every stuck reader wakes) and unmounts.
struct StallingFuse {
    server: Child,
    dir: PathBuf,
    conn: u64,
}

impl StallingFuse {
    fn mount(sb: &Sandbox) -> StallingFuse {
        let dir = std::env::temp_dir().join(format!("selfheal-fuse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(selfheal_testprogs::bin("tp-fuse-stall"));
        cmd.arg(&dir)
            .args(["--seconds", "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        selfheal_sys::child::parent_death_signal_before_exec(&mut cmd, libc::SIGTERM);
        let mut server = sb.spawn(&mut cmd).unwrap();
        let line = first_line(&mut server);
        assert!(line.starts_with("mounted"), "tp-fuse-stall: {line}");
        let conn = field(&line, "conn").unwrap() as u64;
        StallingFuse { server, dir, conn }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("stall")
    }
}

impl Drop for StallingFuse {
    fn drop(&mut self) {
        drop(self.server.stdin.take());
        if wait_exit(&mut self.server, Duration::from_secs(10)).is_none() {
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
        let _ = selfheal_sys::fuse::umount_lazy(&self.dir);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A reader of a FUSE file whose server never answers is stuck in D. The
/// diagnosis names the blocker (the connection and its server) at the
/// bound, and recovery aborts the connection: the reader wakes with an
/// error and exits by itself; nobody is signalled.
#[test]
fn task_stuck_in_d_state_is_named_at_the_bound() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TEST: &str = "task_stuck_in_d_state_is_named_at_the_bound";
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP {TEST}: /dev/fuse is missing");
        return;
    }
    let Some(sb) = sandbox_or_skip(TEST, SandboxConfig::new("dstate").pids_max(8)) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let h = Harness::start(Options::new(&rel));
    let bound = h_bound();
    let fuse = StallingFuse::mount(&sb);
    let t0 = Instant::now();
    let mut reader = sb
        .spawn(
            Command::new("cat")
                .arg(fuse.file())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    let reader_pid = reader.id() as i32;
    let diag = h
        .wait_event(bound + Duration::from_secs(10), diagnosis_of("d_state"))
        .expect("D state diagnosed");
    let after = t0.elapsed();
    let rec = h
        .wait_event(Duration::from_secs(10), recovered("d_state"))
        .expect("D state recovered");
    eprintln!(
        "{TEST}: diagnosed {} ms after the read began (bound {} ms): {}; {}",
        after.as_millis(),
        bound.as_millis(),
        diag.message,
        rec.message
    );
    // The culprit is the server; the waiter is listed as stuck on it.
    let c = diag.culprit.as_ref().unwrap();
    assert_eq!(c.pid, Some(fuse.server.id() as i32), "{}", diag.message);
    let blocker = &diag.details["evidence"]["blocker"];
    assert_eq!(blocker["kind"], "fuse", "{blocker}");
    assert_eq!(blocker["connection"], fuse.conn);
    assert_eq!(blocker["server"]["pid"], fuse.server.id());
    assert_eq!(diag.details["evidence"]["stuck"][0]["pid"], reader_pid);
    let age = diag.details["evidence"]["stuck"][0]["stuck_ms"]
        .as_u64()
        .unwrap();
    assert!(
        age >= bound.as_millis() as u64 && Duration::from_millis(age) <= after,
        "true age {age} ms, diagnosed {after:?} after the read"
    );
    // The stated latency is the task's own age, not the trigger's.
    let stated = diag.details["detection_latency_ms"].as_f64().unwrap();
    assert!(
        stated >= bound.as_millis() as f64 && stated <= after.as_millis() as f64 + 1.0,
        "stated latency {stated} ms, diagnosed {after:?} after the read (bound {bound:?})"
    );
    assert!(after >= bound, "diagnosed before the bound: {after:?}");
    assert!(
        after <= bound + Duration::from_secs(4),
        "diagnosed {after:?} after the read, bound {bound:?}"
    );
    assert_eq!(rec.details["action"], "abort_fuse");
    // The reader was not killed: the aborted read failed and it exited.
    let status = wait_exit(&mut reader, Duration::from_secs(5)).expect("reader woke");
    assert_eq!(
        status.signal(),
        None,
        "the reader was signalled: {status:?}"
    );
    assert!(h
        .calls()
        .iter()
        .all(|c| c.call == selfheal_recover::fake::Call::AbortFuse(fuse.conn)));
    assert_only_sandbox_touched(&h, &rel);
    drop(fuse);
    h.stop();
}

fn h_bound() -> Duration {
    selfheal_config::HeavyConfig::default().dstate_bound.get()
}
