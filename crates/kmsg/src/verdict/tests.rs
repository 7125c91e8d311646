use super::*;
use crate::record::{parse_record, split_records};

const LAB: &str = include_str!("../../tests/fixtures/lab-guest-6.1-console.txt");
const HOST: &str = include_str!("../../tests/fixtures/host-6.18-kmsg.txt");

/// The text of each `[ ts] text` console line of one captured lab case.
fn lab_case(case: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in LAB.lines() {
        if let Some(name) = line.strip_prefix("# --- ") {
            inside = name.starts_with(case);
            continue;
        }
        if inside {
            if let Some((_, text)) = line.split_once("] ") {
                out.push(text);
            }
        }
    }
    out
}

fn verdicts(lines: &[&str]) -> Vec<Verdict> {
    lines.iter().filter_map(|l| classify(l)).collect()
}

#[test]
fn soft_lockup_names_cpu_task_and_duration() {
    let v = verdicts(&lab_case("spin_abba"));
    let soft = v
        .iter()
        .find(|v| v.kind == Some(VerdictKind::SoftLockup))
        .expect("captured soft lockup");
    assert_eq!(soft.cpu, Some(0));
    assert_eq!(soft.comm.as_deref(), Some("lab_abba/0"));
    assert_eq!(soft.pid, Some(121));
    assert_eq!(soft.stuck_for_s, Some(3));
}

#[test]
fn hung_task_names_task_and_bound() {
    let v = verdicts(&lab_case("d_state"));
    let hung: Vec<&Verdict> = v
        .iter()
        .filter(|v| v.kind == Some(VerdictKind::HungTask))
        .collect();
    assert!(hung.len() >= 3, "{hung:?}");
    assert_eq!(hung[0].comm.as_deref(), Some("lab_dholder"));
    assert_eq!(hung[0].pid, Some(680));
    assert_eq!(hung[0].stuck_for_s, Some(1));
    assert!(hung[1..5]
        .iter()
        .all(|h| h.comm.as_deref() == Some("lab_dwaiter")));
    // The kernel repeats its report as the wait grows.
    assert!(hung
        .iter()
        .any(|h| h.pid == Some(680) && h.stuck_for_s == Some(2)));
}

#[test]
fn rcu_stalls_and_their_cpu_lines() {
    for case in ["irq_loop", "preempt_loop"] {
        let lines = lab_case(case);
        assert!(
            verdicts(&lines)
                .iter()
                .any(|v| v.kind == Some(VerdictKind::RcuStall)),
            "{case}"
        );
        // The stalled CPU is named on the "rcu: \t1-....:" line (a tab in
        // the console; /dev/kmsg escapes it as \x09, which record parsing undoes).
        let cpus: Vec<u32> = lines
            .iter()
            .filter_map(|l| context_of(l))
            .filter_map(|c| c.cpu)
            .collect();
        assert!(cpus.contains(&1), "{case}: {cpus:?}");
    }
    let preempt = lab_case("preempt_loop");
    let task = preempt
        .iter()
        .filter_map(|l| context_of(l))
        .find(|c| c.comm.as_deref() == Some("lab_preempt_loo"))
        .expect("CPU: line naming the looping task");
    assert_eq!((task.cpu, task.pid), (Some(1), Some(121)));
}

#[test]
fn global_oom_kill() {
    let lines = lab_case("kmem_leak");
    let v = verdicts(&lines);
    assert!(v.iter().any(|v| v.opens_oom));
    let killed = v
        .iter()
        .find(|v| v.kind == Some(VerdictKind::OomKill) && !v.opens_oom)
        .unwrap();
    assert_eq!(
        (killed.pid, killed.comm.as_deref()),
        (Some(120), Some("sleep"))
    );
    let ctx = lines
        .iter()
        .filter_map(|l| context_of(l))
        .find(|c| c.oom_constraint.is_some())
        .unwrap();
    assert_eq!(ctx.oom_constraint.as_deref(), Some("CONSTRAINT_NONE"));
    assert_eq!(ctx.cgroup.as_deref(), Some("/"));
    assert!(v.iter().any(|v| v.kind == Some(VerdictKind::Panic)));
}

#[test]
fn host_memcg_oom_and_fork_rejection() {
    let records: Vec<_> = split_records(HOST)
        .into_iter()
        .filter_map(parse_record)
        .collect();
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let v = verdicts(&texts);
    let killed = v
        .iter()
        .find(|v| v.kind == Some(VerdictKind::OomKill) && !v.opens_oom)
        .expect("memcg OOM kill captured on the host");
    assert_eq!(
        (killed.pid, killed.comm.as_deref()),
        (Some(27202), Some("tail"))
    );
    let ctx = texts
        .iter()
        .filter_map(|l| context_of(l))
        .find(|c| c.oom_constraint.as_deref() == Some("CONSTRAINT_MEMCG"))
        .unwrap();
    assert_eq!(
        ctx.cgroup.as_deref(),
        Some("/selfheal-sandbox/memhog-27069-4")
    );
    let cpu_line = texts
        .iter()
        .filter_map(|l| context_of(l))
        .find(|c| c.pid == Some(27202))
        .unwrap();
    assert_eq!(
        (cpu_line.cpu, cpu_line.comm.as_deref()),
        (Some(0), Some("tail"))
    );
    let fork = v
        .iter()
        .find(|v| v.kind == Some(VerdictKind::ForkRejected))
        .unwrap();
    assert!(fork
        .cgroup
        .as_deref()
        .unwrap()
        .starts_with("/selfheal-sandbox/forkbomb-"));
    // "Speculative Return Stack Overflow: WARNING: See …" is a boot notice,
    // not a WARN() report, and the boot log holds no other verdict.
    assert!(
        v.iter().all(|v| matches!(
            v.kind,
            Some(VerdictKind::OomKill | VerdictKind::ForkRejected)
        )),
        "{v:?}"
    );
}

/// Lines for detectors the captures do not contain, written from the
/// kernel's format strings (kernel/watchdog.c, kernel/watchdog_perf.c,
/// kernel/panic.c, arch/x86/mm/fault.c, kernel/sched/rt.c).
#[test]
fn formats_from_kernel_source() {
    let hard = classify("NMI watchdog: Watchdog detected hard LOCKUP on cpu 1").unwrap();
    assert_eq!(
        (hard.kind, hard.cpu),
        (Some(VerdictKind::HardLockup), Some(1))
    );
    let buddy = classify("watchdog: Watchdog detected hard LOCKUP on cpu 3").unwrap();
    assert_eq!(buddy.cpu, Some(3));
    let warn =
        classify("WARNING: CPU: 1 PID: 4242 at kernel/workqueue.c:1772 __queue_work+0x3a/0x40")
            .unwrap();
    assert_eq!(
        (warn.kind, warn.cpu, warn.pid),
        (Some(VerdictKind::Warning), Some(1), Some(4242))
    );
    let wq = classify("BUG: workqueue lockup - pool cpus=1 node=0 flags=0x0 nice=0 stuck for 31s!")
        .unwrap();
    assert_eq!(
        (wq.kind, wq.stuck_for_s),
        (Some(VerdictKind::Bug), Some(31))
    );
    assert_eq!(
        classify("BUG: kernel NULL pointer dereference, address: 0000000000000000")
            .unwrap()
            .kind,
        Some(VerdictKind::Bug)
    );
    assert_eq!(
        classify("Oops: 0002 [#1] PREEMPT SMP NOPTI").unwrap().kind,
        Some(VerdictKind::Oops)
    );
    assert_eq!(
        classify("Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP")
            .unwrap()
            .kind,
        Some(VerdictKind::Oops)
    );
    assert_eq!(
        classify("kernel BUG at mm/slub.c:412!").unwrap().kind,
        Some(VerdictKind::Bug)
    );
    assert_eq!(
        classify("sched: RT throttling activated").unwrap().kind,
        Some(VerdictKind::RtThrottling)
    );
    let hung6 = context_of(
        "task:kworker/0:1     state:D stack:0     pid:17    tgid:17    ppid:2      task_flags:0x4208060 flags:0x00004000",
    )
    .unwrap();
    assert_eq!(
        (hung6.comm.as_deref(), hung6.pid),
        (Some("kworker/0:1"), Some(17))
    );
    assert!(classify("random: crng init done").is_none());
    assert!(classify("CPU: 1 PID: 121 Comm: x Tainted: G").is_none());
}

#[test]
fn every_kind_has_a_unique_name() {
    let mut names: Vec<&str> = VerdictKind::ALL.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), VerdictKind::ALL.len());
    assert!(VerdictKind::SoftLockup.is_cpu_stall() && !VerdictKind::OomKill.is_cpu_stall());
}
