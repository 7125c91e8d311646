//! Sandboxes on this machine's real cgroups: fork bomb, memory hog,
//! limits, pinning. Every test skips with a message when not root or the
//! cgroup hierarchy is not writable.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use selfheal_cgroup::{Controller, CpuPinning, Hierarchy, Mode, SandboxConfig};

/// A fork bomb that keeps trying: every member loops forking new members.
/// Run by bash, which retries a failed fork instead of exiting (dash exits,
/// so a dash bomb thins itself out at the limit).
const FORK_BOMB: &str = "f() { while :; do f & done; }; f";

fn fork_bomb_is_contained_then_killed_by_drop(test: &str, unified: bool) {
    let config = SandboxConfig::new("forkbomb")
        .pids_max(20)
        .memory_max_bytes(256 << 20)
        .cpus(Some(0.5))
        .use_unified(unified);
    let Some(sandbox) = sandbox_or_skip(test, config) else {
        return;
    };
    let rel = sandbox.rel_path().to_string();
    let dirs = sandbox.cgroup().dirs();
    let mut child = sandbox
        .spawn(
            Command::new("bash")
                .args(["-c", FORK_BOMB])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();

    // Contained: it reaches the limit and forks get refused, never more.
    let cg = sandbox.cgroup();
    let mut highest = 0;
    let reached = wait_until(Duration::from_secs(20), || {
        let p = cg.pids().unwrap().unwrap();
        highest = highest.max(p.current);
        p.current >= 20 && p.refused_forks.unwrap_or(1) > 0
    });
    assert!(
        reached,
        "bomb never reached pids.max=20 (highest {highest})"
    );
    let pids = cg.pids().unwrap().unwrap();
    assert_eq!(pids.max, Some(20));
    assert!(
        pids.current <= 20,
        "pids.current {} above the limit",
        pids.current
    );
    let members = cg.procs_recursive().unwrap();
    assert!(members.len() >= 2, "bomb has members: {members:?}");
    // The rest of the machine can still fork.
    assert!(Command::new("true").status().unwrap().success());

    let start = Instant::now();
    drop(sandbox);
    let teardown = start.elapsed();
    eprintln!("{test}: teardown of a 20-task fork bomb took {teardown:?}");

    assert!(killed_by_sigkill(wait_child(
        &mut child,
        Duration::from_secs(10)
    )));
    let leftovers = all_pids_in_cgroup(&rel);
    assert!(
        leftovers.is_empty(),
        "processes escaped the sandbox teardown: {leftovers:?}"
    );
    for dir in dirs {
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}

#[test]
fn fork_bomb_dies_with_the_sandbox_via_cgroup_kill() {
    fork_bomb_is_contained_then_killed_by_drop(
        "fork_bomb_dies_with_the_sandbox_via_cgroup_kill",
        true,
    );
}

#[test]
fn fork_bomb_dies_with_the_sandbox_via_freeze_kill_loop() {
    fork_bomb_is_contained_then_killed_by_drop(
        "fork_bomb_dies_with_the_sandbox_via_freeze_kill_loop",
        false,
    );
}

#[test]
fn memory_hog_is_oom_killed_inside_the_sandbox_only() {
    let test = "memory_hog_is_oom_killed_inside_the_sandbox_only";
    let config = SandboxConfig::new("memhog")
        .memory_max_bytes(64 << 20)
        .pids_max(8);
    let Some(sandbox) = sandbox_or_skip(test, config) else {
        return;
    };
    // A bystander outside the sandbox: the OOM kill must not touch it.
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    // tail keeps the whole "last line" of /dev/zero in memory: it never ends.
    let mut hog = sandbox
        .spawn(Command::new("tail").arg("/dev/zero").stdout(Stdio::null()))
        .unwrap();
    let status = wait_child(&mut hog, Duration::from_secs(60));
    assert!(
        killed_by_sigkill(status),
        "hog ended with {status:?}, expected the OOM killer's SIGKILL"
    );

    let mem = sandbox
        .cgroup()
        .memory()
        .unwrap()
        .expect("memory controller");
    assert_eq!(mem.limit_bytes, Some(64 << 20));
    if let Some(kills) = mem.oom_kills {
        assert!(
            kills >= 1,
            "the sandbox's OOM counter did not move: {mem:?}"
        );
    }
    if let Some(peak) = mem.peak_bytes {
        assert!(peak <= 64 << 20, "peak {peak} above the limit");
    }
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "bystander outside the sandbox died"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    sandbox.close().unwrap();
}

#[test]
fn cpu_quota_caps_a_busy_loop() {
    let test = "cpu_quota_caps_a_busy_loop";
    let Some(sandbox) = sandbox_or_skip(test, SandboxConfig::new("cpuquota").cpus(Some(0.25)))
    else {
        return;
    };
    let max = sandbox.cgroup().cpu_max().unwrap().expect("cpu controller");
    assert_eq!(max.cpus(), Some(0.25));
    let mut busy = sandbox
        .spawn(Command::new("sh").args(["-c", "while :; do :; done"]))
        .unwrap();
    let pid = busy.id() as i32;
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let used = cpu_seconds(pid);
    let wall = start.elapsed().as_secs_f64();
    eprintln!("{test}: busy loop used {used:.3} s CPU in {wall:.3} s wall (quota 0.25 CPU)");
    // Upper bound only: a noisy machine can only make the loop get less.
    assert!(
        used <= 0.25 * wall * 1.5 + 0.05,
        "used {used:.3} s of CPU in {wall:.3} s"
    );
    let report = sandbox.close().unwrap();
    assert!(report.signalled + usize::from(report.used_cgroup_kill) >= 1);
    assert!(killed_by_sigkill(wait_child(
        &mut busy,
        Duration::from_secs(10)
    )));
}

#[test]
fn pinning_keeps_tasks_on_one_cpu() {
    let test = "pinning_keeps_tasks_on_one_cpu";
    let cpu = selfheal_sys::sched::cpus_configured() - 1;
    let Some(sandbox) = sandbox_or_skip(test, SandboxConfig::new("pinned").pin_cpu(cpu)) else {
        return;
    };
    let h = Hierarchy::detect().unwrap();
    match sandbox.pinning() {
        Some(CpuPinning::Cpuset(c)) => assert_eq!(c, cpu),
        Some(CpuPinning::Affinity(c)) => {
            assert_eq!(c, cpu);
            assert!(h.controller_location(Controller::Cpuset).is_none());
        }
        None => panic!("pin_cpu was requested"),
    }
    let out = sandbox
        .spawn(
            Command::new("grep")
                .args(["^Cpus_allowed_list:", "/proc/self/status"])
                .stdout(Stdio::piped()),
        )
        .unwrap()
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().nth(1),
        Some(cpu.to_string().as_str()),
        "{text}"
    );
    sandbox.close().unwrap();
}

#[test]
fn realtime_tasks_need_an_rt_budget_on_v1() {
    let test = "realtime_tasks_need_an_rt_budget_on_v1";
    let h = Hierarchy::detect().unwrap();
    let rt_group_sched = h
        .v1_mount(Controller::Cpu)
        .is_some_and(|m| m.mount_point.join("cpu.rt_runtime_us").exists());
    if !rt_group_sched {
        eprintln!(
            "SKIP {test}: no v1 cpu hierarchy with cpu.rt_runtime_us (CONFIG_RT_GROUP_SCHED)"
        );
        return;
    }
    let chrt = |config: SandboxConfig| -> Option<bool> {
        let sandbox = sandbox_or_skip(test, config)?;
        let status = sandbox
            .spawn(
                Command::new("chrt")
                    .args(["-f", "10", "true"])
                    .stderr(Stdio::null()),
            )
            .unwrap()
            .wait()
            .unwrap();
        sandbox.close().unwrap();
        Some(status.success())
    };
    let Some(without) = chrt(SandboxConfig::new("rt-none")) else {
        return;
    };
    assert!(
        !without,
        "SCHED_FIFO should be refused in a cpu cgroup with rt_runtime_us = 0"
    );
    let with = chrt(SandboxConfig::new("rt-budget").rt_runtime_us(50_000)).unwrap();
    assert!(with, "SCHED_FIFO should be allowed with an rt budget");
}

#[test]
fn a_missing_program_never_runs_and_leaves_nothing() {
    let test = "a_missing_program_never_runs_and_leaves_nothing";
    let Some(sandbox) = sandbox_or_skip(test, SandboxConfig::new("missing")) else {
        return;
    };
    let err = sandbox
        .spawn(&mut Command::new("/nonexistent/selfheal-test-program"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent/selfheal-test-program"),
        "{err}"
    );
    assert!(sandbox.cgroup().procs_recursive().unwrap().is_empty());
    let dirs = sandbox.cgroup().dirs();
    sandbox.close().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn this_machine_layout_is_detected() {
    let h = Hierarchy::detect().unwrap();
    eprintln!(
        "detected {:?}: v1 {:?}, v2 {:?}",
        h.mode(),
        h.v1.iter().map(|m| m.label()).collect::<Vec<_>>(),
        h.v2
    );
    // Any real Linux with cgroups mounted has a mode; the pids controller is
    // needed by every sandbox.
    if h.mode().is_none() {
        eprintln!("SKIP this_machine_layout_is_detected: no cgroup hierarchy mounted");
        return;
    }
    if h.mode() == Some(Mode::Hybrid) {
        assert!(h.v2.is_some() && !h.v1.is_empty());
    }
}

#[test]
fn without_cpuset_pinning_falls_back_to_affinity() {
    let test = "without_cpuset_pinning_falls_back_to_affinity";
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP {test}: not root");
        return;
    }
    // Hide the cpuset controller, as on a v2 machine where it is not enabled.
    let mut h = Hierarchy::detect().unwrap();
    h.v1.retain(|m| !m.controllers.iter().any(|c| c == "cpuset"));
    if let Some(v2) = &mut h.v2 {
        v2.controllers.retain(|c| c != "cpuset");
    }
    let cpu = 0;
    let sandbox = match selfheal_cgroup::Sandbox::with_hierarchy(
        &h,
        SandboxConfig::new("affinity").pin_cpu(cpu),
    ) {
        Ok(s) => s,
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP {test}: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(sandbox.pinning(), Some(CpuPinning::Affinity(cpu)));
    let out = sandbox
        .spawn(
            Command::new("grep")
                .args(["^Cpus_allowed_list:", "/proc/self/status"])
                .stdout(Stdio::piped()),
        )
        .unwrap()
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.split_whitespace().nth(1), Some("0"), "{text}");
    sandbox.close().unwrap();
}
