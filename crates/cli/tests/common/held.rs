//! The harness of the held-task bystander tests (`bystanders_frozen_*`,
//! `bystanders_stopped_and_throttled`, `bystanders_fuse`): the real
//! `selfheal watch` with the default recovery ladders next to tasks that
//! look hung but are held on purpose.
//!
//! A test builds its scenarios into a [`HeldRun`] (sandboxes under a
//! parent cgroup of its own, the processes that must finish unharmed with
//! their expected output, how each is held), and [`HeldRun::finish`] holds
//! them all at once for [`HOLD`], releases them and checks that each
//! finished with the right output, none was diagnosed as a fault, the
//! daemon recorded the held ones (class `held`, the reason, the file that
//! says so) and recovery took no action.
//!
//! The daemon's recovery is scoped (`recovery.allowed_cgroups`) to the
//! test's own sandboxes, so that on a shared machine it cannot touch
//! anyone else's processes; the ladders are the defaults. Root only; each
//! scenario that needs a missing tool or kernel feature is skipped, saying
//! why. Everything is undone on the way out, also on failure.

#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use selfheal_cgroup::{Sandbox, SandboxConfig};

use super::{on_path, wait_exit, EventLogWatch};

/// How long every scenario is held (frozen, stopped, throttled).
pub const HOLD: Duration = Duration::from_secs(12);

/// Runs undo actions, last first, when dropped (also when a test panics).
#[derive(Default)]
pub struct Undo(Vec<(String, Box<dyn FnOnce()>)>);

impl Undo {
    /// Adds `f`, run before everything added earlier.
    pub fn push(&mut self, what: &str, f: impl FnOnce() + 'static) {
        self.0.push((what.to_string(), Box::new(f)));
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some((_, f)) = self.0.pop() {
            f();
        }
    }
}

/// Runs `cmd ARGS`: its trimmed stdout, or what failed with its stderr.
pub fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The first of `tools` that is not installed, as a reason to skip `what`.
pub fn missing(what: &str, tools: &[&str]) -> Option<String> {
    tools
        .iter()
        .find(|t| !on_path(t))
        .map(|t| format!("{what}: {t} is not installed"))
}

/// Whether the machine has a cgroup2 hierarchy.
pub fn have_cgroup_v2() -> bool {
    selfheal_cgroup::Hierarchy::detect()
        .ok()
        .is_some_and(|h| h.v2.is_some())
}

/// A test's own ground: its parent cgroup (`selfheal-sandbox/<parent>`,
/// recovery's scope), the daemon watching, the undo list and a scratch
/// directory. Dropped in that order: the undo list (unmounts, loop
/// devices, the parent cgroups) before the scratch directory goes.
pub struct Scope {
    pub parent: String,
    pub watch: EventLogWatch,
    pub undo: Undo,
    pub scratch: tempfile::TempDir,
}

impl Scope {
    /// The ground of `test`, named `name-<pid>`; `None` (saying why) when
    /// not root.
    pub fn start(test: &str, name: &str) -> Option<Scope> {
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIP {test}: needs root (cgroups, mounts, loop devices, FUSE)");
            return None;
        }
        let parent = format!("{name}-{}", std::process::id());
        let scratch = tempfile::Builder::new()
            .prefix(&format!("selfheal-{name}-"))
            .tempdir_in("/tmp")
            .unwrap();
        let mut undo = Undo::default();
        remove_parent_on_exit(&parent, &mut undo);
        let mut watch = EventLogWatch::start(&format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\n\n[recovery]\nallowed_cgroups = [\"/selfheal-sandbox/{parent}\"]\n"
        ));
        watch.daemon.wait_http(Duration::from_secs(30));
        // The tracer and the first samples.
        std::thread::sleep(Duration::from_millis(1500));
        Some(Scope {
            parent,
            watch,
            undo,
            scratch,
        })
    }

    /// `name` in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// A sandbox under this test's parent.
    pub fn sandbox(&self, name: &str, unified: bool, v1_freezer: bool) -> Sandbox {
        Sandbox::new(
            SandboxConfig::new(name)
                .parent(&format!("selfheal-sandbox/{}", self.parent))
                .use_unified(unified)
                .use_v1_freezer(v1_freezer)
                .pids_max(32),
        )
        .unwrap_or_else(|e| panic!("sandbox {name}: {e}"))
    }
}

/// Removes this test's parent cgroup (`selfheal-sandbox/<parent>`) from
/// every hierarchy once its sandboxes are gone (sandboxes keep parents).
fn remove_parent_on_exit(parent: &str, undo: &mut Undo) {
    let parent = parent.to_string();
    undo.push("parent cgroups", move || {
        let Ok(h) = selfheal_cgroup::Hierarchy::detect() else {
            return;
        };
        let roots =
            h.v1.iter()
                .map(|m| m.mount_point.clone())
                .chain(h.v2.iter().map(|m| m.mount_point.clone()));
        for r in roots {
            let _ = std::fs::remove_dir(r.join("selfheal-sandbox").join(&parent));
        }
    });
}

/// Every thread of `pid`.
fn threads(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Holds every thread of `pid` in a ptrace stop for `hold`, from a thread
/// of its own (a tracer must be one thread), then detaches.
fn ptrace_hold(pid: i32, hold: Duration) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        use selfheal_sys::ptrace;
        let tids = threads(pid);
        for &t in &tids {
            ptrace::seize(t, 0).map_err(|e| e.to_string())?;
            ptrace::interrupt(t).map_err(|e| e.to_string())?;
        }
        for &t in &tids {
            ptrace::wait_task(t, false).map_err(|e| e.to_string())?;
        }
        std::thread::sleep(hold);
        for &t in &tids {
            ptrace::detach(t, 0).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// The held record of `pid` with `reason`, if the daemon made one.
fn held_record<'a>(events: &'a [Value], pid: u32, reason: &str) -> Option<&'a Value> {
    events.iter().find_map(|e| {
        (e["kind"] == "dismissed" && e["details"]["class"] == "held")
            .then(|| e["details"]["evidence"]["held"].as_array())
            .flatten()?
            .iter()
            .find(|h| h["pid"] == pid && h["reason"] == reason)
    })
}

/// Pids named by any fault diagnosis (culprit or stuck list).
fn diagnosed_pids(events: &[Value]) -> Vec<u64> {
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e["kind"] == "diagnosis") {
        out.extend(e["culprit"]["pid"].as_u64());
        for s in e["details"]["evidence"]["stuck"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.extend(s["pid"].as_u64());
        }
    }
    out
}

/// Recovery steps that did something (anything but record/refuse/skip).
pub fn actions(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "recovery")
        .filter(|e| {
            !matches!(
                e["details"]["outcome"].as_str(),
                Some("recorded" | "refused" | "skipped" | "rate_limited" | "dry_run")
            )
        })
        .collect()
}

/// What a held process must have written once it finished.
pub enum Output {
    /// This file, byte for byte.
    Exact(PathBuf, Vec<u8>),
    /// `tool -dc` of this file gives `want`, byte for byte.
    Decompressed {
        tool: &'static str,
        path: PathBuf,
        want: Vec<u8>,
    },
}

impl Output {
    /// What differs from the expected output, if anything.
    fn differs(&self) -> Option<String> {
        let (what, got, want) = match self {
            Output::Exact(path, want) => (
                format!("output {}", path.display()),
                std::fs::read(path).unwrap_or_default(),
                want,
            ),
            Output::Decompressed { tool, path, want } => (
                format!("`{tool} -dc {}`", path.display()),
                Command::new(tool)
                    .arg("-dc")
                    .arg(path)
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap_or_else(|e| panic!("{tool}: {e}"))
                    .stdout,
                want,
            ),
        };
        (&got != want).then(|| {
            format!(
                "{what} differs ({} bytes, {} expected)",
                got.len(),
                want.len()
            )
        })
    }
}

/// What one scenario leaves to check after the hold.
pub struct Check {
    pub name: &'static str,
    /// The process that must finish unharmed, and its expected output.
    pub child: Child,
    pub output: Option<Output>,
    /// The pid whose held record is expected, with the reason.
    pub held: Option<(u32, &'static str)>,
}

/// How a scenario is held.
enum Hold {
    /// The sandbox at this index, frozen at the hold.
    Freeze(usize),
    /// This mount, frozen with `fsfreeze -f` at the hold.
    FsFreeze(PathBuf),
    /// This process, SIGSTOPped at the hold.
    Stop(i32),
    /// This process group, stopped by the test: SIGCONT at the release.
    StoppedGroup(i32),
    /// This process, held in a ptrace stop by a tracer for the hold.
    Trace(i32),
}

/// The scenarios of one held-task test, held together under one daemon.
/// Dropped on a failure: the sandboxes (killed) before the scope.
pub struct HeldRun {
    test: &'static str,
    checks: Vec<Check>,
    servers: Vec<Child>,
    sandboxes: Vec<Sandbox>,
    holds: Vec<Hold>,
    skipped: Vec<String>,
    pub scope: Scope,
}

impl HeldRun {
    /// The run of `test` (see [`Scope::start`]).
    pub fn start(test: &'static str, name: &str) -> Option<HeldRun> {
        Some(HeldRun {
            test,
            checks: Vec::new(),
            servers: Vec::new(),
            sandboxes: Vec::new(),
            holds: Vec::new(),
            skipped: Vec::new(),
            scope: Scope::start(test, name)?,
        })
    }

    /// A file that appears 300 ms before the holds (writers that must be
    /// caught mid-work wait for it).
    pub fn before_hold(&self) -> PathBuf {
        self.scope.path("fs-go")
    }

    /// A file that appears 300 ms after the holds (readers that must wait
    /// on a held server wait for it).
    pub fn once_held(&self) -> PathBuf {
        self.scope.path("go")
    }

    /// Says why a scenario does not run.
    pub fn skip(&mut self, why: impl Into<String>) {
        self.skipped.push(why.into());
    }

    /// Checks `c` after the hold.
    pub fn check(&mut self, c: Check) {
        self.checks.push(c);
    }

    /// Keeps `sb` until the checks are done.
    pub fn keep(&mut self, sb: Sandbox) {
        self.sandboxes.push(sb);
    }

    /// Keeps `sb` and freezes it for the hold.
    pub fn freeze(&mut self, sb: Sandbox) {
        self.holds.push(Hold::Freeze(self.sandboxes.len()));
        self.sandboxes.push(sb);
    }

    /// Freezes the filesystem mounted at `mount` for the hold.
    pub fn fsfreeze(&mut self, mount: PathBuf) {
        self.holds.push(Hold::FsFreeze(mount));
    }

    /// SIGSTOPs `pid` for the hold.
    pub fn sigstop(&mut self, pid: i32) {
        self.holds.push(Hold::Stop(pid));
    }

    /// Continues the process group `pgid`, stopped by the test, at the
    /// release.
    pub fn continue_at_release(&mut self, pgid: i32) {
        self.holds.push(Hold::StoppedGroup(pgid));
    }

    /// Holds `pid` in a ptrace stop for the hold.
    pub fn ptrace(&mut self, pid: i32) {
        self.holds.push(Hold::Trace(pid));
    }

    /// A server whose stdin is closed (and which is awaited) once the
    /// daemon has stopped.
    pub fn server(&mut self, server: Child) {
        self.servers.push(server);
    }

    /// Holds everything for [`HOLD`], releases it, and checks; panics with
    /// every failure, the events and the daemon's log.
    pub fn finish(mut self) {
        let test = self.test;
        if self.checks.is_empty() {
            for s in &self.skipped {
                eprintln!("SKIP {test}: {s}");
            }
            return;
        }
        self.hold_and_release();
        let mut failures = Vec::new();
        for c in &mut self.checks {
            match wait_exit(&mut c.child, Duration::from_secs(60)) {
                Some(st) if st.success() => {}
                Some(st) => failures.push(format!(
                    "{}: exited {st:?} (signal {:?})",
                    c.name,
                    st.signal()
                )),
                None => failures.push(format!("{}: still running 60 s after the release", c.name)),
            }
            if let Some(why) = c.output.as_ref().and_then(Output::differs) {
                failures.push(format!("{}: {why}", c.name));
            }
        }

        std::thread::sleep(Duration::from_secs(1));
        let (events, log) = self.scope.watch.stop();
        for mut server in self.servers {
            drop(server.stdin.take());
            let _ = wait_exit(&mut server, Duration::from_secs(10));
        }
        drop(self.sandboxes);
        drop(self.scope.undo);

        let acted = actions(&events);
        if !acted.is_empty() {
            failures.push(format!("recovery acted: {acted:#?}"));
        }
        let named = diagnosed_pids(&events);
        for c in &self.checks {
            if named.contains(&u64::from(c.child.id())) {
                failures.push(format!(
                    "{} (pid {}) was diagnosed as a fault",
                    c.name,
                    c.child.id()
                ));
            }
            if let Some((pid, reason)) = c.held {
                match held_record(&events, pid, reason) {
                    Some(h) => eprintln!("{test}: {}: held {reason}: {h}", c.name),
                    None => failures.push(format!(
                        "{} (pid {pid}): no held record with reason {reason}",
                        c.name
                    )),
                }
            }
        }
        for h in &self.holds {
            let Hold::FsFreeze(m) = h else { continue };
            let named_mount = events.iter().any(|e| {
                e["details"]["evidence"]["held"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|h| h["blocker"]["mount"]["mount_point"] == m.to_str().unwrap())
            });
            if !named_mount {
                failures.push(format!(
                    "the frozen filesystem {} is not named",
                    m.display()
                ));
            }
        }
        for s in &self.skipped {
            eprintln!("SKIP part of {test}: {s}");
        }
        assert!(
            failures.is_empty(),
            "{test}:\n- {}\n\nevents:\n{}\n\ndaemon log:\n{log}",
            failures.join("\n- "),
            events
                .iter()
                .filter(|e| e["kind"] != "alert")
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Starts the writers, holds everything, lets the readers read, waits
    /// [`HOLD`] and releases.
    fn hold_and_release(&mut self) {
        // Undone before the sandboxes are torn down, also on a panic (a
        // frozen or stopped task cannot be killed and reaped).
        let mut release = Undo::default();
        std::fs::write(self.before_hold(), "").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut tracers = Vec::new();
        for h in &self.holds {
            match *h {
                Hold::FsFreeze(ref m) => {
                    sh("fsfreeze", &["-f", m.to_str().unwrap()]).unwrap();
                    let m2 = m.clone();
                    release.push("fsfreeze -u", move || {
                        let _ = sh("fsfreeze", &["-u", m2.to_str().unwrap()]);
                    });
                }
                Hold::Freeze(i) => {
                    self.sandboxes[i].cgroup().freeze().unwrap();
                    let dirs = self.sandboxes[i].cgroup().dirs();
                    release.push("thaw", move || {
                        for d in dirs {
                            let _ = std::fs::write(d.join("freezer.state"), "THAWED");
                            let _ = std::fs::write(d.join("cgroup.freeze"), "0");
                        }
                    });
                }
                Hold::Stop(p) => {
                    selfheal_sys::signal::kill_process(p, 19).unwrap();
                    release.push("SIGCONT the server", move || {
                        let _ = selfheal_sys::signal::kill_process(p, 18);
                    });
                }
                Hold::StoppedGroup(pgid) => {
                    release.push("SIGCONT the job", move || {
                        let _ = selfheal_sys::signal::kill_process_group(pgid, 18);
                    });
                }
                Hold::Trace(p) => tracers.push(ptrace_hold(p, HOLD)),
            }
        }
        // The readers read once their servers are held.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(self.once_held(), "").unwrap();
        let held_at = Instant::now();
        std::thread::sleep(HOLD);
        for h in &self.holds {
            if let Hold::Freeze(i) = *h {
                self.sandboxes[i].cgroup().thaw().unwrap();
            }
        }
        drop(release);
        for t in tracers {
            t.join().unwrap().expect("ptrace hold");
        }
        eprintln!("{}: held for {:?}", self.test, held_at.elapsed());
    }
}
