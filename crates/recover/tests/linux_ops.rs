//! `LinuxOps` against real processes this test starts (and only those).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_recover::{LinuxOps, OpsError, SystemOps};

fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

#[test]
fn signals_only_the_process_that_started_at_the_given_time() {
    let ops = LinuxOps::new();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let info = ops.process(pid).unwrap().expect("our child is visible");
    assert_eq!(info.comm, "sleep");
    assert_eq!(info.ppid, std::process::id() as i32);
    assert!(!info.kernel_thread);
    // A different start time means "not the process you mean".
    assert_eq!(
        ops.signal(pid, info.starttime + 1, libc::SIGKILL),
        Err(OpsError::Gone)
    );
    assert!(state(pid).is_some());
    ops.signal(pid, info.starttime, libc::SIGSTOP).unwrap();
    assert!(wait_for(Duration::from_secs(5), || state(pid) == Some('T')));
    ops.signal(pid, info.starttime, libc::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(
        ops.signal(pid, info.starttime, libc::SIGKILL),
        Err(OpsError::Gone)
    );
    assert_eq!(ops.process(pid).unwrap(), None);
}

#[test]
fn demotes_a_real_time_child() {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP demotes_a_real_time_child: setting SCHED_FIFO needs root");
        return;
    }
    let ops = LinuxOps::new();
    let mut child = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    if let Err(e) = selfheal_sys::sched::set_fifo(pid, 1) {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("SKIP demotes_a_real_time_child: no real-time budget here: {e}");
        return;
    }
    assert_eq!(ops.threads(pid).unwrap(), vec![(pid, true)]);
    ops.set_normal_policy(pid).unwrap();
    assert_eq!(ops.threads(pid).unwrap(), vec![(pid, false)]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ops.threads(pid), Err(OpsError::Gone));
}

#[test]
fn own_lineage_includes_this_process_and_init() {
    let ops = LinuxOps::new();
    let lineage = selfheal_recover::Policy::own_lineage(&ops);
    assert!(lineage.contains(&(std::process::id() as i32)));
    assert!(lineage.contains(&(std::os::unix::process::parent_id() as i32)));
}

#[test]
fn a_pinned_process_is_reached_through_its_pidfd_only_while_it_lives() {
    let ops = LinuxOps::new();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let info = ops.process(pid).unwrap().unwrap();
    assert!(matches!(
        ops.pin(pid, info.starttime + 1),
        Err(OpsError::Gone)
    ));
    let pinned = ops.pin(pid, info.starttime).unwrap();
    assert_eq!((pinned.pid(), pinned.starttime()), (pid, info.starttime));
    ops.signal_pinned(&pinned, 0).unwrap();
    ops.signal_pinned(&pinned, libc::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    // Reaped: the pid may now name anything; the pidfd names nothing.
    assert_eq!(ops.signal_pinned(&pinned, 0), Err(OpsError::Gone));
}

#[test]
fn cgroup_actions_reach_only_the_named_cgroup_of_the_pinned_process() {
    if !selfheal_sys::process::is_root() {
        eprintln!(
            "SKIP cgroup_actions_reach_only_the_named_cgroup_of_the_pinned_process: needs root"
        );
        return;
    }
    let sb = match selfheal_cgroup::Sandbox::new(
        selfheal_cgroup::SandboxConfig::new("linux-ops").pids_max(8),
    ) {
        Ok(s) => s,
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP cgroup_actions_reach_only_the_named_cgroup_of_the_pinned_process: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let ops = LinuxOps::new();
    let mut child = sb.spawn(Command::new("sleep").arg("30")).unwrap();
    let pid = child.id() as i32;
    let info = ops.process(pid).unwrap().unwrap();
    let pinned = ops.pin(pid, info.starttime).unwrap();
    let path = sb.rel_path().to_string();
    assert_eq!(ops.cgroup_members(&pinned, &path).unwrap(), vec![pid]);
    // A cgroup the process is not in is never acted on through it.
    assert!(matches!(
        ops.kill_cgroup(&pinned, "/selfheal-sandbox"),
        Err(OpsError::NotInCgroup(_))
    ));
    assert!(state(pid).is_some_and(|s| s != 'Z'));
    ops.kill_cgroup(&pinned, &path).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(matches!(
        ops.cgroup_members(&pinned, &path),
        Err(OpsError::Gone)
    ));
}

/// The real restart path refuses before any system call unless the handle
/// was made with `allow_restart(true)` (the daemon does so only for
/// `recovery.allow_reboot = true` outside a dry run), and even then while
/// `SELFHEAL_RESTART_FORBIDDEN` is set. Nothing here can restart the host:
/// the allowed handle is only called with the variable set, checked first.
#[test]
fn the_real_restart_refuses_without_permission_or_while_forbidden() {
    use selfheal_config::RestartMethod;
    use selfheal_sys::power::RESTART_FORBIDDEN_ENV;
    let methods = [
        RestartMethod::Kexec,
        RestartMethod::Reboot,
        RestartMethod::Watchdog,
    ];
    for m in methods {
        match LinuxOps::new().restart(m) {
            Err(OpsError::Permission(why)) => {
                assert!(why.contains("allow_restart"), "{}: {why}", m.as_str())
            }
            other => panic!("{}: {other:?}", m.as_str()),
        }
    }
    match LinuxOps::new().emergency_restart() {
        Err(OpsError::Permission(why)) => assert!(why.contains("allow_restart"), "{why}"),
        other => panic!("emergency: {other:?}"),
    }
    std::env::set_var(RESTART_FORBIDDEN_ENV, "1");
    assert!(
        std::env::var_os(RESTART_FORBIDDEN_ENV).is_some(),
        "never call an allowed restart without the variable"
    );
    for m in methods {
        match LinuxOps::new().allow_restart(true).restart(m) {
            Err(OpsError::Permission(why)) => {
                assert!(why.contains(RESTART_FORBIDDEN_ENV), "{}: {why}", m.as_str())
            }
            other => panic!("{}: {other:?}", m.as_str()),
        }
    }
    match LinuxOps::new().allow_restart(true).emergency_restart() {
        Err(OpsError::Permission(why)) => assert!(why.contains(RESTART_FORBIDDEN_ENV), "{why}"),
        other => panic!("emergency: {other:?}"),
    }
    // The live count: this machine's CPU 0 takes interrupts.
    assert!(LinuxOps::new().cpu_interrupts(0).is_some_and(|n| n > 0));
}

#[test]
fn a_child_met_on_a_walk_is_pinned_with_one_read_and_only_under_its_parent() {
    // Through an `Arc`, as the ladder holds its ops: a wrapper that did
    // not pass these on would quietly fall back to the slow path.
    let ops: std::sync::Arc<dyn SystemOps> = std::sync::Arc::new(LinuxOps::new());
    let me = std::process::id() as i32;
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let (pin, info, one_thread) = ops
        .pin_child(me, pid, false)
        .unwrap()
        .expect("our child is met under us");
    assert_eq!(
        (info.pid, info.ppid, info.comm.as_str()),
        (pid, me, "sleep")
    );
    assert!(one_thread, "sleep has one thread");
    assert!(info.cgroups.is_empty() && info.uid.is_none(), "{info:?}");
    let with = ops.pin_child(me, pid, true).unwrap().unwrap().1;
    assert_eq!(with.starttime, info.starttime);
    // Under any other parent it is not a child to walk into.
    assert!(ops.pin_child(1, pid, false).unwrap().is_none());
    // The pin reaches it; the children of a one-thread process are read
    // from its main thread (none here).
    ops.signal_pinned(&pin, libc::SIGSTOP).unwrap();
    assert!(wait_for(Duration::from_secs(5), || state(pid) == Some('T')));
    assert_eq!(ops.children_hint(pid, true).unwrap(), Some(vec![]));
    assert_eq!(
        ops.children_hint(me, false)
            .unwrap()
            .map(|k| k.contains(&pid)),
        Some(true)
    );
    ops.signal_pinned(&pin, libc::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    // Gone (a zombie reaped): nothing to pin.
    assert!(ops.pin_child(me, pid, false).unwrap().is_none());
}

/// The fork hold a fork bomb's step places, on a real cgroup: a shell in a
/// sandbox forks, then cannot while the hold is on (its `pids.max` lowered
/// to 0), then can again once it is lifted, the old limit
/// back. The machine-wide limit is never touched here: the root is asked
/// with `machine = false`, which places nothing.
#[test]
fn a_fork_hold_stops_forks_in_the_bombs_cgroup_until_lifted() {
    use selfheal_recover::ops::ForkHold;
    use std::io::{BufRead, BufReader, Write};
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP a_fork_hold_stops_forks_in_the_bombs_cgroup_until_lifted: needs root");
        return;
    }
    let sb = match selfheal_cgroup::Sandbox::new(
        selfheal_cgroup::SandboxConfig::new("fork-hold").pids_max(8),
    ) {
        Ok(s) => s,
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP a_fork_hold_stops_forks_in_the_bombs_cgroup_until_lifted: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let ops = LinuxOps::new();
    // Python, not a shell: dash exits on a refused fork, bash retries it.
    let script = "import os, sys\n\
                  for _ in sys.stdin:\n\
                  \x20   try:\n\
                  \x20       pid = os.fork()\n\
                  \x20   except OSError:\n\
                  \x20       print('refused', flush=True)\n\
                  \x20       continue\n\
                  \x20   if pid == 0:\n\
                  \x20       os._exit(0)\n\
                  \x20   os.waitpid(pid, 0)\n\
                  \x20   print('forked', flush=True)\n";
    let mut child = sb
        .spawn(
            Command::new("python3")
                .args(["-c", script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ask = |stdin: &mut std::process::ChildStdin| {
        stdin.write_all(b"go\n").unwrap();
        lines.next().unwrap().unwrap()
    };
    assert_eq!(ask(&mut stdin), "forked");
    let pid = child.id() as i32;
    let info = ops.process(pid).unwrap().unwrap();
    let pinned = ops.pin(pid, info.starttime).unwrap();
    let path = sb.rel_path().to_string();
    // Nothing is held in a cgroup the process is not in, nor at the root
    // without the machine's limit.
    assert!(matches!(
        ops.hold_forks(&pinned, "/selfheal-sandbox", false),
        Err(OpsError::NotInCgroup(_))
    ));
    assert_eq!(ops.hold_forks(&pinned, "/", false), Ok(None));

    let hold = ops
        .hold_forks(&pinned, &path, false)
        .unwrap()
        .expect("the sandbox has pids.max");
    let ForkHold::Cgroup {
        dir,
        previous,
        held_at,
    } = &hold
    else {
        panic!("{hold:?}");
    };
    // 0, not the one task there: nothing in the cgroup may fork at all.
    assert_eq!((previous.as_str(), *held_at), ("8", 0), "{hold}");
    assert!(hold.blocks_every_fork());
    let note = selfheal_recover::ops::fork_hold_note();
    let noted = std::fs::read_to_string(&note).unwrap_or_default();
    assert!(noted.starts_with("pids.max 8 0 /"), "{noted:?}");
    assert_eq!(ask(&mut stdin), "refused");
    ops.release_forks(&hold).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("pids.max"))
            .unwrap()
            .trim(),
        "8"
    );
    assert!(!note.exists(), "{}", note.display());
    assert_eq!(ask(&mut stdin), "forked");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
