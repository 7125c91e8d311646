//! Recovery operations on real cgroups: freeze/thaw, kill_all, naming a
//! process's cgroup, and the safety refusals. Skips when not root.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use selfheal_cgroup::{
    most_specific, read_pid_cgroup, Cgroup, CgroupError, FreezerState, Hierarchy, SandboxConfig,
    Version,
};

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A child appends to a file every 20 ms; frozen, the file stops growing.
fn freeze_stops_and_thaw_resumes(test: &str, unified: bool, expect: Version) {
    let config = SandboxConfig::new("freeze").use_unified(unified);
    let Some(sandbox) = sandbox_or_skip(test, config) else {
        return;
    };
    let cg = sandbox.cgroup();
    // Cgroup::freeze prefers the v2 freezer when the sandbox has one.
    let has = |v| {
        cg.managers()
            .iter()
            .any(|m| m.version() == v && m.can_freeze())
    };
    let used = [Version::V2, Version::V1].into_iter().find(|&v| has(v));
    if used != Some(expect) {
        eprintln!(
            "SKIP {test}: no {expect:?} freezer in this layout ({})",
            cg.describe()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("ticks");
    let script = format!(
        "while :; do echo x >> '{}'; sleep 0.02; done",
        log.display()
    );
    let mut child = sandbox
        .spawn(Command::new("sh").args(["-c", &script]))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || file_len(&log) > 4),
        "child never ran"
    );

    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    let state = task_state(child.id() as i32).unwrap();
    eprintln!("{test}: a frozen task shows state {state:?} in /proc/PID/stat");
    assert_ne!(state, 'R', "a frozen task must not be running");
    let frozen_len = file_len(&log);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        file_len(&log),
        frozen_len,
        "the child kept writing while frozen"
    );

    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    assert!(
        wait_until(Duration::from_secs(10), || file_len(&log) > frozen_len),
        "the child did not resume after thaw"
    );
    sandbox.close().unwrap();
    assert!(killed_by_sigkill(wait_child(
        &mut child,
        Duration::from_secs(10)
    )));
}

#[test]
fn v2_freezer_stops_and_resumes_a_child() {
    freeze_stops_and_thaw_resumes("v2_freezer_stops_and_resumes_a_child", true, Version::V2);
}

#[test]
fn v1_freezer_stops_and_resumes_a_child() {
    freeze_stops_and_thaw_resumes("v1_freezer_stops_and_resumes_a_child", false, Version::V1);
}

#[test]
fn kill_all_empties_the_cgroup_and_it_stays_usable() {
    let test = "kill_all_empties_the_cgroup_and_it_stays_usable";
    for unified in [true, false] {
        let Some(sandbox) =
            sandbox_or_skip(test, SandboxConfig::new("killall").use_unified(unified))
        else {
            return;
        };
        let mut children: Vec<_> = (0..3)
            .map(|_| sandbox.spawn(Command::new("sleep").arg("60")).unwrap())
            .collect();
        // A grandchild too: kill_all must reach descendants we never saw.
        children.push(
            sandbox
                .spawn(Command::new("sh").args(["-c", "sleep 60 & wait"]))
                .unwrap(),
        );
        assert!(wait_until(Duration::from_secs(5), || sandbox
            .cgroup()
            .procs_recursive()
            .unwrap()
            .len()
            >= 5));
        let report = sandbox.kill_all().unwrap();
        eprintln!("{test} (unified={unified}): {report:?}");
        assert!(
            report.used_cgroup_kill || report.signalled >= 5,
            "{report:?}"
        );
        assert!(sandbox.cgroup().procs_recursive().unwrap().is_empty());
        for c in &mut children {
            assert!(killed_by_sigkill(wait_child(c, Duration::from_secs(10))));
        }
        // Still usable afterwards.
        let status = sandbox
            .spawn(&mut Command::new("true"))
            .unwrap()
            .wait()
            .unwrap();
        assert!(status.success());
        sandbox.close().unwrap();
    }
}

#[test]
fn a_sandboxed_child_is_named_by_its_cgroup() {
    let test = "a_sandboxed_child_is_named_by_its_cgroup";
    let Some(sandbox) = sandbox_or_skip(test, SandboxConfig::new("naming")) else {
        return;
    };
    let mut child = sandbox
        .spawn(Command::new("sleep").arg("60").stdout(Stdio::null()))
        .unwrap();
    let pid = child.id() as i32;
    let entries = read_pid_cgroup(pid).unwrap();
    let shown = most_specific(&entries).unwrap();
    assert_eq!(shown.path, sandbox.rel_path(), "{entries:?}");

    // Opening the child's cgroup finds the sandbox's directories.
    let h = Hierarchy::detect().unwrap();
    let cg = Cgroup::of_pid(&h, pid).unwrap();
    assert_eq!(cg.procs().unwrap(), vec![pid]);
    let mut theirs = cg.dirs();
    let mut ours = sandbox.cgroup().dirs();
    theirs.sort();
    ours.sort();
    assert!(
        theirs.iter().all(|d| ours.contains(d)),
        "{theirs:?} vs {ours:?}"
    );
    assert!(cg.pids().unwrap().is_some() && cg.memory().unwrap().is_some());
    cg.check_safe_to_act().unwrap();

    sandbox.close().unwrap();
    assert!(killed_by_sigkill(wait_child(
        &mut child,
        Duration::from_secs(10)
    )));
}

#[test]
fn our_own_cgroup_and_init_are_refused() {
    let test = "our_own_cgroup_and_init_are_refused";
    let h = match Hierarchy::detect() {
        Ok(h) if h.mode().is_some() => h,
        _ => {
            eprintln!("SKIP {test}: no cgroup hierarchy mounted");
            return;
        }
    };
    // Only the non-destructive check is exercised: if it were wrong, a real
    // kill_all here would kill this test (and its session).
    let me = Cgroup::of_pid(&h, selfheal_sys::process::getpid()).unwrap();
    let err = me.check_safe_to_act().unwrap_err();
    assert!(matches!(err, CgroupError::Refused { .. }), "{err}");
    eprintln!("{test}: {err}");
    if let Ok(init) = Cgroup::of_pid(&h, 1) {
        let err = init.check_safe_to_act().unwrap_err();
        assert!(matches!(err, CgroupError::Refused { .. }), "{err}");
        eprintln!("{test}: {err}");
    }
}
