//! Fork bombs from recorded snapshots: at the pids limit, the CPU stalls
//! they cause, their aftermath, and which group is blamed.

use crate::classify::evidence::{DiagnosisEvidence, StallEvidence};

use super::*;

#[test]
fn fork_bomb_at_its_pids_limit() {
    let fx = Fixture::load("fork_bomb");
    let r = run(
        &fx,
        Trigger::Cgroup {
            path: fx.cgroup(),
            resource: selfheal_cgroup::Controller::Pids,
        },
        &[],
        &[],
        Thresholds::default(),
    );
    assert_eq!(r.classes(), vec![Class::ForkBomb], "{:#?}", r.diagnoses);
    let d = r.only(Class::ForkBomb);
    assert_eq!(d.culprit.cgroup.as_deref(), Some(fx.cgroup().as_str()));
    assert_eq!(d.culprit.comm.as_deref(), Some("bash"));
    assert_eq!(d.evidence.to_value()["pids_max"], 32);
    assert_eq!(d.evidence.to_value()["pids_current"], 32);
    assert!(
        d.evidence.to_value()["forks_refused_recently"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(matches!(d.symptom, Symptom::CgroupTasks { below: 16, .. }));
    // Recovery may take the whole cgroup down: the diagnosis blames all of it.
    assert_eq!(
        d.target.as_ref().unwrap().blame,
        selfheal_event::Blame::Cgroup
    );
}

#[test]
fn cpu_stalls_during_a_fork_bomb_are_its_symptoms() {
    let fx = Fixture::load("fork_bomb");
    let stalled = [(1, Duration::from_millis(400))];
    let trigger = Trigger::Stall {
        cpu: 1,
        stalled_for: Duration::from_millis(400),
    };
    let r = run(&fx, trigger, &stalled, &[], Thresholds::default());
    // Whatever the CPU classifier made of the stall, the fork bomb is the
    // diagnosis, first, and no kernel_stall is left to act on one member.
    assert_eq!(r.diagnoses[0].class, Class::ForkBomb, "{:#?}", r.diagnoses);
    assert!(r.diagnoses.iter().all(|d| d.class != Class::KernelStall));

    let stall = Diagnosis {
        class: Class::KernelStall,
        culprit: selfheal_event::Culprit {
            cpu: Some(1),
            comm: Some("bash".into()),
            ..Default::default()
        },
        target: None,
        summary: "kernel_stall: cpu 1".into(),
        evidence: DiagnosisEvidence::KernelStall(StallEvidence {
            cpu: 1,
            cpu_stalled_ms: Some(400),
            top_share_percent: 0.0,
            culprit: None,
            kernel_stack: None,
            kernel_reports: vec![],
            interval_ms: 100.0,
        }),
        blocker: None,
        symptom: Symptom::CpuStalled { cpu: 1 },
        no_target: None,
        restart_veto: None,
    };
    let mut out = vec![stall.clone(), r.diagnoses[0].clone()];
    absorb_stalls_into_fork_bomb(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].class, Class::ForkBomb);
    assert_eq!(out[0].evidence.to_value()["cpu_stalls"][0]["cpu"], 1);
    assert_eq!(
        out[0].evidence.to_value()["cpu_stalls"][0]["summary"],
        "kernel_stall: cpu 1"
    );
    // Without a fork bomb a stall stays a stall.
    let mut out = vec![stall];
    absorb_stalls_into_fork_bomb(&mut out);
    assert_eq!(out[0].class, Class::KernelStall);
}

/// The recorded bomb: `bash` processes of process group 2027 under a pids
/// limit, next to nine other `bash` processes of the same uid (login
/// shells, one of them the shell that started the bomb, in its session).
fn bomb_members(s: &Snapshot) -> HashSet<(i32, u64)> {
    s.processes()
        .into_iter()
        .filter(|t| t.stat.comm == "bash" && t.stat.pgrp == 2027)
        .map(|t| (t.pid, t.stat.starttime_ticks))
        .collect()
}

fn pids_trigger(fx: &Fixture) -> Trigger {
    Trigger::Cgroup {
        path: fx.cgroup(),
        resource: selfheal_cgroup::Controller::Pids,
    }
}

#[test]
fn the_aftermath_of_a_killed_bomb_is_not_a_new_bomb() {
    let fx = Fixture::load("fork_bomb");
    let (_, after) = fx.snapshots();
    let members = bomb_members(&after);
    assert_eq!(members.len(), 32);
    let low = Thresholds {
        fork_bomb_tasks: 8,
        ..Thresholds::default()
    };
    // Acted upon moments ago: still listed (stopped, dying) but not counted.
    let r = run_full(
        &fx,
        pids_trigger(&fx),
        &[],
        &[],
        low.clone(),
        |_, _| {},
        &members,
        &[],
    );
    assert_eq!(
        r.classes(),
        vec![Class::LegitimateLoad],
        "{:#?}",
        r.diagnoses
    );
    // Zombies not yet reaped: not counted either, settle window or not.
    let r = run_with(&fx, pids_trigger(&fx), &[], &[], low, |b, a| {
        for s in [b, a] {
            for t in s.tasks.iter_mut().filter(|t| t.stat.pgrp == 2027) {
                t.stat.state = 'Z';
            }
        }
    });
    assert_eq!(
        r.classes(),
        vec![Class::LegitimateLoad],
        "{:#?}",
        r.diagnoses
    );
}

#[test]
fn a_program_bomb_blames_its_related_group_not_the_oldest_namesake() {
    let fx = Fixture::load("fork_bomb");
    // No pids limit in play: the program-wide test must find it, growing.
    let t = Thresholds {
        fork_bomb_tasks: 20,
        cgroup_pids_percent: 1000.0,
        ..Thresholds::default()
    };
    let r = run_with(&fx, Trigger::Manual, &[], &[], t, |before, _| {
        before.tasks.retain(|t| t.pid < 2110);
    });
    let d = r.only(Class::ForkBomb);
    let target = d.target.as_ref().unwrap();
    // The oldest bash on the machine is pid 1033; the bomb's oldest is 2091.
    assert_eq!(target.pid, 2091, "{}", d.summary);
    let selfheal_event::Blame::Program(scope) = &target.blame else {
        panic!("{:?}", target.blame)
    };
    assert_eq!(scope.pgids, [2027].into());
    assert_eq!(scope.members.len(), 32);
    assert!(matches!(&d.symptom, Symptom::TreeTasks { target: t, .. } if t == target));
    // What recovery would blame among the recorded processes: the bomb only.
    let (_, after) = fx.snapshots();
    let procs: Vec<selfheal_recover::ProcInfo> = after
        .processes()
        .into_iter()
        .map(|t| selfheal_recover::ProcInfo {
            pid: t.pid,
            ppid: t.stat.ppid,
            comm: t.stat.comm.clone(),
            starttime: t.stat.starttime_ticks,
            uid: t.uid,
            kernel_thread: t.is_kernel_thread(),
            cgroups: vec![],
            unit: None,
            pgid: t.stat.pgrp,
            sid: t.stat.session,
            state: t.stat.state,
        })
        .collect();
    let blamed: HashSet<(i32, u64)> = selfheal_recover::blamed_set(&procs, target, &[])
        .iter()
        .map(|p| (p.pid, p.starttime))
        .collect();
    assert_eq!(blamed, bomb_members(&after));
}

/// The fixture's bomb held at its limit, both snapshots alike (no growth),
/// with the cgroup test off (as when the count is below
/// `cgroup_pids_percent` at the moment of every sweep): found through the
/// forks its cgroup refused. Beside it, the same steady group whose cgroup
/// refused nothing (a large pool of workers) is left alone.
#[test]
fn a_bomb_held_at_a_pids_limit_is_found_without_growth_a_steady_pool_is_not() {
    let fx = Fixture::load("fork_bomb");
    let t = Thresholds {
        fork_bomb_tasks: 20,
        cgroup_pids_percent: 1000.0,
        ..Thresholds::default()
    };
    let same = |before: &mut Snapshot, after: &mut Snapshot| *before = after.clone();
    let r = run_with(&fx, Trigger::Manual, &[], &[], t.clone(), same);
    let d = r.only(Class::ForkBomb);
    assert_eq!(d.evidence.to_value()["scope"], "program", "{}", d.summary);
    assert_eq!(
        d.evidence.to_value()["processes"],
        d.evidence.to_value()["processes_before"]
    );
    assert_eq!(
        d.evidence.to_value()["held_by_pids_limit"],
        fx.cgroup().as_str()
    );
    assert!(
        d.evidence.to_value()["forks_refused_recently"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        d.summary.contains("not growing: held at the pids limit"),
        "{}",
        d.summary
    );
    let target = d.target.as_ref().unwrap();
    let selfheal_event::Blame::Program(scope) = &target.blame else {
        panic!("{:?}", target.blame)
    };
    assert_eq!(scope.pgids, [2027].into());

    // The bystander: nothing refused.
    let events = fx
        .root("t1")
        .join(format!("cgroup/pids{}/pids.events", fx.cgroup()));
    std::fs::write(&events, "max 0\n").unwrap();
    let r = run_with(&fx, Trigger::Manual, &[], &[], t, same);
    assert!(
        !r.classes().contains(&Class::ForkBomb),
        "{:#?}",
        r.diagnoses
    );
}
