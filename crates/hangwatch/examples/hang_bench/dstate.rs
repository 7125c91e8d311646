//! The D-state cases: a task blocks, and the daemon must diagnose it at
//! the bound (2 s) with its true age, whatever it waits for.
//!
//! - `d_state`: `cat` of a FUSE file whose read is never answered (a page
//!   lock wait, counted as I/O wait by the kernel);
//! - `dstate_lookup`: a second `stat` of a name whose lookup the FUSE
//!   server never answers: it waits in D behind the first
//!   (`d_alloc_parallel`), a wait that is *not* block I/O and that
//!   `procs_blocked` does not count;
//! - `dstate_blockio`: `dd` reading a loop device, O_DIRECT, whose backing
//!   file is on that FUSE mount: the loop worker never gets its data, the
//!   bio never completes, the reader waits in `submit_bio_wait` — a real
//!   block-I/O wait on a device with I/O in flight and no completions.
//!
//! The onset is measured independently: the benchmark polls the task's
//! state every millisecond and notes when it is first in D. For each
//! injection it reports the diagnosis time after the bound (from that
//! onset) and the error of the age the daemon states
//! (`detection_latency_ms` gives its onset: event time minus it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_event::{Event, EventKind};

use super::{first_line, now_ms, Args, Daemon, PARENT};

/// A FUSE mount served by `tp-fuse-stall` inside `sb`; aborted on drop.
struct Fuse {
    server: Child,
    mnt: PathBuf,
    conn: u64,
}

impl Fuse {
    fn mount(a: &Args, sb: &Sandbox, i: usize) -> Fuse {
        let mnt =
            std::env::temp_dir().join(format!("selfheal-bench-fuse-{}-{i}", std::process::id()));
        std::fs::create_dir_all(&mnt).unwrap();
        let mut server = sb
            .spawn(
                Command::new(a.bin_dir.join("tp-fuse-stall"))
                    .arg(&mnt)
                    .args(["--seconds", "60"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped()),
            )
            .unwrap();
        let line = first_line(&mut server);
        assert!(line.starts_with("mounted"), "{line}");
        let conn = line.trim().rsplit('=').next().unwrap().parse().unwrap();
        Fuse { server, mnt, conn }
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        // Abort first: every waiter wakes, nothing stays stuck.
        let abort = Path::new(selfheal_sys::fuse::FUSE_CONNECTIONS)
            .join(self.conn.to_string())
            .join("abort");
        let _ = std::fs::write(abort, "1");
        drop(self.server.stdin.take());
        let _ = self.server.wait();
        let _ = selfheal_sys::fuse::umount_lazy(&self.mnt);
        let _ = std::fs::remove_dir(&self.mnt);
    }
}

/// A read-only loop device over `file`; detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["-r", "-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {:?}", out);
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Wall-clock ms when `pid` is first seen in D (polled every ms), or `None`.
fn blocked_at(pid: u32, timeout: Duration) -> Option<i64> {
    let start = Instant::now();
    let path = format!("/proc/{pid}/stat");
    while start.elapsed() < timeout {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if s.rsplit_once(") ").and_then(|r| r.1.chars().next()) == Some('D') {
                return Some(now_ms());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// A diagnosis (or held record) listing `pid` among the stuck tasks.
fn lists(pid: u32) -> impl Fn(&Event) -> bool {
    move |e: &Event| {
        matches!(e.kind, EventKind::Diagnosis | EventKind::Dismissed)
            && e.details["evidence"]["stuck"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["pid"] == pid)
    }
}

/// One injection's numbers: [diagnosed after the bound, age error], ms.
fn measure(
    d: &mut Daemon,
    pid: u32,
    onset: i64,
    bound_ms: f64,
    name: &str,
    i: usize,
) -> Option<Vec<f64>> {
    let Some(diag) = d.wait(Duration::from_secs(15), lists(pid)) else {
        // Say what the daemon concluded instead, if anything.
        println!(
            "{name} #{i:02}: pid {pid} (in D since {onset}) not listed within 15 s; meanwhile:"
        );
        for e in d
            .new_events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Diagnosis | EventKind::Dismissed))
        {
            println!(
                "  {} +{} ms: {}",
                e.kind.as_str(),
                e.time_unix_ms - onset,
                e.message
            );
        }
        return None;
    };
    let after = (diag.time_unix_ms - onset) as f64 - bound_ms;
    // The daemon's onset: its event time minus the latency it states.
    let stated = diag.details["detection_latency_ms"].as_f64()?;
    let error = (diag.time_unix_ms as f64 - stated) - onset as f64;
    println!(
        "{name} #{i:02}: diagnosed {after:>5.0} ms after the bound, stated onset {error:>+5.0} ms off ({}: {})",
        diag.details["class"],
        diag.details["evidence"]["blocker"]["kind"].as_str().unwrap_or("-")
    );
    Some(vec![after, error])
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig::new("dstate").parent(PARENT).pids_max(16)).expect("sandbox")
}

/// `cat` of a FUSE file that is never answered.
pub fn fuse_read(a: &Args, d: &mut Daemon, i: usize, bound_ms: f64) -> Option<Vec<f64>> {
    let sb = sandbox();
    let fuse = Fuse::mount(a, &sb, i);
    d.mark();
    let reader = sb
        .spawn(
            Command::new("cat")
                .arg(fuse.mnt.join("stall"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    // No early return: whatever happens, the mount is aborted and the
    // reader reaped below.
    let r = blocked_at(reader.id(), Duration::from_secs(5))
        .and_then(|onset| measure(d, reader.id(), onset, bound_ms, "d_state", i));
    if r.is_some() {
        // The default ladder aborts the connection: the reader wakes.
        let _ = d.wait(Duration::from_secs(10), |e| {
            e.kind == EventKind::Recovery && e.details["action"] == "abort_fuse"
        });
    }
    drop(fuse);
    reap(vec![reader], sb);
    r
}

/// A second lookup of a name the server never answers: D, not I/O.
pub fn fuse_lookup(a: &Args, d: &mut Daemon, i: usize, bound_ms: f64) -> Option<Vec<f64>> {
    let sb = sandbox();
    let fuse = Fuse::mount(a, &sb, i);
    d.mark();
    let stat = |sb: &Sandbox| {
        sb.spawn(
            Command::new("stat")
                .arg(fuse.mnt.join("lookup-stall"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap()
    };
    let first = stat(&sb);
    std::thread::sleep(Duration::from_millis(100));
    let second = stat(&sb);
    let r = blocked_at(second.id(), Duration::from_secs(5))
        .and_then(|onset| measure(d, second.id(), onset, bound_ms, "dstate_lookup", i));
    drop(fuse);
    reap(vec![first, second], sb);
    r
}

/// `dd` of a loop device whose backing file is on a dead FUSE mount.
pub fn block_io(a: &Args, d: &mut Daemon, i: usize, bound_ms: f64) -> Option<Vec<f64>> {
    let sb = sandbox();
    let fuse = Fuse::mount(a, &sb, i);
    let lo = Loop::attach(&fuse.mnt.join("stall"));
    d.mark();
    let reader = sb
        .spawn(
            Command::new("dd")
                .arg(format!("if={}", lo.0))
                .args([
                    "of=/dev/null",
                    "bs=4096",
                    "count=1",
                    "iflag=direct",
                    "status=none",
                ])
                .stderr(Stdio::null()),
        )
        .unwrap();
    let r = blocked_at(reader.id(), Duration::from_secs(5))
        .and_then(|onset| measure(d, reader.id(), onset, bound_ms, "dstate_blockio", i));
    drop(fuse);
    drop(lo);
    reap(vec![reader], sb);
    r
}

/// Waits up to 5 s for the children (woken by the abort), then tears the
/// sandbox down (killing any left) and reaps them.
fn reap(mut children: Vec<Child>, sb: Sandbox) {
    let start = Instant::now();
    while children
        .iter_mut()
        .any(|c| c.try_wait().ok().flatten().is_none())
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(sb);
    for mut c in children {
        let _ = c.wait();
    }
}
