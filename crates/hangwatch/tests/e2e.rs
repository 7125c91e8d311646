//! End to end: the real `selfheal watch` binary against sandboxed faults.
//! The daemon's recovery is confined to the fault's sandbox through its
//! config (`recovery.allowed_cgroups`); events are read from its
//! `--event-log`. Root only (sandboxes, SCHED_FIFO); skips otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::sandbox_or_skip;
use selfheal_cgroup::SandboxConfig;
use selfheal_event::{Event, EventKind};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The `selfheal` binary, built once per test process into this target dir.
fn selfheal_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile = exe.parent().and_then(Path::parent).ok_or("no target dir")?;
        let target = profile.parent().ok_or("no target dir")?;
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "selfheal-cli",
                "--bin",
                "selfheal",
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target)
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(profile.join("selfheal"))
    })
    .clone()
    .unwrap_or_else(|e| panic!("building selfheal failed: {e}"))
}

/// A running `selfheal watch`, stopped with SIGTERM on drop.
struct Watch {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watch {
    fn start(allowed: &str, extra: &[&str]) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("selfheal.toml");
        std::fs::write(
            &config,
            format!("[daemon]\nlisten = \"\"\n\n[recovery]\nallowed_cgroups = [\"{allowed}\"]\n"),
        )
        .unwrap();
        let log = dir.path().join("events.jsonl");
        let child = Command::new(selfheal_bin())
            .arg("watch")
            .arg("-c")
            .arg(&config)
            .arg("--store")
            .arg(dir.path().join("s.db"))
            .arg("--event-log")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let w = Watch {
            child,
            log,
            _dir: dir,
        };
        assert!(
            w.wait_event(Duration::from_secs(20), |e| e.kind == EventKind::Start)
                .is_some(),
            "selfheal watch did not start"
        );
        // Let the canaries and the first samples settle.
        std::thread::sleep(Duration::from_millis(500));
        w
    }

    fn events(&self) -> Vec<Event> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn wait_event(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon (SIGTERM to our own child) and returns its stderr.
    fn stop(mut self) -> String {
        let _ = selfheal_sys::signal::kill_process(self.child.id() as i32, libc::SIGTERM);
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut BufReader::new(e), &mut err);
        }
        err
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = selfheal_sys::signal::kill_process(self.child.id() as i32, libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

fn class_event(kind: EventKind, class: &'static str) -> impl Fn(&Event) -> bool {
    move |e: &Event| e.kind == kind && e.details["class"] == class
}

/// A FUSE mount whose reads never complete (see tests/faults.rs), served
/// from inside the sandbox (recovery may act on its connection).
fn mount_fuse(sb: &selfheal_cgroup::Sandbox, dir: &Path) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(selfheal_testprogs::bin("tp-fuse-stall"));
    cmd.arg(dir)
        .args(["--seconds", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    selfheal_sys::child::parent_death_signal_before_exec(&mut cmd, libc::SIGTERM);
    let mut server = sb.spawn(&mut cmd).unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("mounted"), "{line}");
    server
}

fn unmount_fuse(mut server: Child, dir: &Path) {
    drop(server.stdin.take());
    let _ = server.wait();
    let _ = selfheal_sys::fuse::umount_lazy(dir);
    let _ = std::fs::remove_dir(dir);
}

/// The daemon aborts the dead FUSE connection a reader is stuck on; the
/// reader is not killed: its read fails and it exits by itself.
#[test]
fn watch_aborts_a_dead_fuse_connection_and_spares_the_waiter() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TEST: &str = "watch_aborts_a_dead_fuse_connection_and_spares_the_waiter";
    let Some(sb) = sandbox_or_skip(TEST, SandboxConfig::new("e2e-dstate").pids_max(8)) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let watch = Watch::start(&rel, &[]);
    let mnt = std::env::temp_dir().join(format!("selfheal-e2e-fuse-{}", std::process::id()));
    let server = mount_fuse(&sb, &mnt);
    let t0 = Instant::now();
    let mut reader = sb
        .spawn(
            Command::new("cat")
                .arg(mnt.join("stall"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    let diag = watch.wait_event(
        Duration::from_secs(15),
        class_event(EventKind::Diagnosis, "d_state"),
    );
    let after = t0.elapsed();
    let rec = watch.wait_event(Duration::from_secs(10), |e| {
        e.kind == EventKind::Recovery && e.details["outcome"] == "recovered"
    });
    let status = {
        let start = Instant::now();
        loop {
            if let Some(s) = reader.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > Duration::from_secs(5) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    unmount_fuse(server, &mnt);
    let events = watch.events();
    let stderr = watch.stop();
    let diag = diag.unwrap_or_else(|| panic!("no d_state diagnosis; daemon log:\n{stderr}"));
    let rec = rec.unwrap_or_else(|| {
        panic!("not recovered within 10 s of the diagnosis; events:\n{events:#?}\ndaemon log:\n{stderr}")
    });
    eprintln!(
        "{TEST}: diagnosed after {} ms: {}; {}",
        after.as_millis(),
        diag.message,
        rec.message
    );
    assert_eq!(
        diag.details["evidence"]["stuck"][0]["pid"],
        reader.id(),
        "{}",
        diag.message
    );
    assert_eq!(diag.details["evidence"]["blocker"]["kind"], "fuse");
    assert_eq!(rec.details["action"], "abort_fuse");
    let status = status.expect("the reader woke after the abort");
    assert_eq!(status.signal(), None, "the reader was signalled");
}

#[test]
fn watch_dry_run_records_the_plan_and_touches_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TEST: &str = "watch_dry_run_records_the_plan_and_touches_nothing";
    let Some(sb) = sandbox_or_skip(TEST, SandboxConfig::new("e2e-dry").pids_max(8)) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let watch = Watch::start(&rel, &["--dry-run"]);
    let mnt = std::env::temp_dir().join(format!("selfheal-e2e-dry-{}", std::process::id()));
    let server = mount_fuse(&sb, &mnt);
    let mut reader = sb
        .spawn(
            Command::new("cat")
                .arg(mnt.join("stall"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    let diag = watch.wait_event(
        Duration::from_secs(15),
        class_event(EventKind::Diagnosis, "d_state"),
    );
    let plan = watch.wait_event(Duration::from_secs(10), |e| {
        e.kind == EventKind::Recovery && e.details["outcome"] == "dry_run"
    });
    // The stuck reader is still there: nothing was done.
    std::thread::sleep(Duration::from_millis(500));
    let still_running = reader.try_wait().unwrap().is_none();
    let state = std::fs::read_to_string(format!("/proc/{}/stat", reader.id()))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|r| r.1.chars().next()))
        .flatten();
    unmount_fuse(server, &mnt);
    let _ = reader.wait();
    let events = watch.events();
    let stderr = watch.stop();
    diag.unwrap_or_else(|| panic!("no d_state diagnosis; daemon log:\n{stderr}"));
    let plan = plan.unwrap_or_else(|| {
        panic!("no dry-run recovery event within 10 s of the diagnosis; events:\n{events:#?}\ndaemon log:\n{stderr}")
    });
    assert!(
        plan.message.contains("would abort FUSE connection"),
        "{}",
        plan.message
    );
    assert!(still_running, "the dry run killed the reader");
    assert_eq!(state, Some('D'));
    assert!(events
        .iter()
        .filter(|e| e.kind == EventKind::Recovery)
        .all(|e| e.details["dry_run"] == true
            && matches!(
                e.details["outcome"].as_str(),
                Some("recorded" | "dry_run" | "skipped" | "refused")
            )));
}

#[test]
fn watch_demotes_an_rt_hog() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TEST: &str = "watch_demotes_an_rt_hog";
    if selfheal_sys::sched::cpus_configured() < 2 {
        eprintln!("SKIP {TEST}: needs 2 CPUs so that one stays free");
        return;
    }
    // RT throttling stays on here (the in-process test turns it off): the
    // sandbox's 90% budget still starves CPU 1's canary for 900 ms at a time.
    let Some(sb) = sandbox_or_skip(
        TEST,
        SandboxConfig::new("e2e-rt")
            .pin_cpu(1)
            .rt_runtime_us(900_000)
            .cpus(None)
            .pids_max(8),
    ) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let watch = Watch::start(&rel, &[]);
    let mut hog = sb
        .spawn(
            Command::new(selfheal_testprogs::bin("tp-rt-spin"))
                .args(["--priority", "20", "--cpu", "1", "--seconds", "8"])
                .stdout(Stdio::null()),
        )
        .unwrap();
    let t0 = Instant::now();
    let diag = watch.wait_event(
        Duration::from_secs(8),
        class_event(EventKind::Diagnosis, "rt_hog"),
    );
    let rec = watch.wait_event(Duration::from_secs(8), |e| {
        e.kind == EventKind::Recovery && e.details["outcome"] == "recovered"
    });
    let after = t0.elapsed();
    drop(sb);
    let _ = hog.wait();
    let stderr = watch.stop();
    let diag = diag.unwrap_or_else(|| panic!("no rt_hog diagnosis; daemon log:\n{stderr}"));
    let rec = rec.expect("recovered");
    eprintln!(
        "{TEST}: recovered within {} ms: {}; {}",
        after.as_millis(),
        diag.message,
        rec.message
    );
    assert_eq!(diag.culprit.as_ref().unwrap().pid, Some(hog.id() as i32));
    assert_eq!(diag.culprit.as_ref().unwrap().cpu, Some(1));
    assert_eq!(rec.details["action"], "demote");
}
