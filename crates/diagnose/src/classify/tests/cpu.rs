//! CPU classes from recorded snapshots: real-time hogs, kernel stalls,
//! runaway kernel threads and the user-space hogs that are not.

use super::*;

#[test]
fn rt_hog_named_with_and_without_a_stall_report() {
    let fx = Fixture::load("rt_hog");
    let (_, after) = fx.snapshots();
    let hog = fx.pid_of(&after, "tp-rt-spin");
    for stalled in [vec![(1, Duration::from_millis(400))], vec![]] {
        let trigger = match stalled.first() {
            Some(&(cpu, d)) => Trigger::Stall {
                cpu,
                stalled_for: d,
            },
            None => Trigger::Alert {
                rule: "run_queue_long".into(),
                level: selfheal_config::Level::Light,
                cpu: None,
            },
        };
        let r = run(&fx, trigger, &stalled, &[], Thresholds::default());
        assert_eq!(r.classes(), vec![Class::RtHog], "{:#?}", r.diagnoses);
        let d = r.only(Class::RtHog);
        assert_eq!(d.culprit.pid, Some(hog));
        assert_eq!(d.culprit.comm.as_deref(), Some("tp-rt-spin"));
        assert_eq!(d.culprit.cpu, Some(1));
        assert_eq!(d.culprit.cgroup.as_deref(), Some(fx.cgroup().as_str()));
        assert_eq!(d.evidence.to_value()["culprit"]["policy"], "SCHED_FIFO");
        assert_eq!(d.evidence.to_value()["culprit"]["rt_priority"], 20);
        assert!(
            d.evidence.to_value()["culprit"]["cpu_percent"]
                .as_f64()
                .unwrap()
                >= 80.0
        );
        let t = d.target.as_ref().unwrap();
        assert_eq!((t.pid, &t.blame), (hog, &selfheal_event::Blame::Tree));
        assert!(t.starttime > 0);
        assert!(matches!(d.symptom, Symptom::RtMonopoly { pid, .. } if pid == hog));
        let ev = d.to_event(&Trigger::Manual, Some(Duration::from_millis(230)));
        assert_eq!(ev.details["class"], "rt_hog");
        assert_eq!(ev.kind.as_str(), "diagnosis");
    }
}

#[test]
fn stalled_cpu_without_a_realtime_runner_is_a_kernel_stall() {
    // The busy fixture: nothing real-time. If the stall detector says CPU 0
    // stalled, only a kernel stall can explain it.
    let fx = Fixture::load("busy");
    let r = run(
        &fx,
        Trigger::Stall {
            cpu: 0,
            stalled_for: Duration::from_millis(300),
        },
        &[(0, Duration::from_millis(300))],
        &[],
        Thresholds::default(),
    );
    let d = r.only(Class::KernelStall);
    assert_eq!(d.culprit.cpu, Some(0));
    assert_eq!(d.symptom, Symptom::CpuStalled { cpu: 0 });
    assert!(d.summary.contains("cpu 0"), "{}", d.summary);
}

/// The busy fixture with kernel thread `comm` edited to run `run_ms` and
/// wait `wait_ms` of the interval on CPU 1, runnable in both snapshots.
fn spinning_kthread(comm: &str, run_ms: u64, wait_ms: u64) -> (Fixture, Run, i32) {
    spinning_task(comm, run_ms, wait_ms, true)
}

/// [`spinning_kthread`], or with `kernel = false` the same thread made a
/// user-space one (its PF_KTHREAD flag cleared): a user-space CPU hog.
fn spinning_task(comm: &str, run_ms: u64, wait_ms: u64, kernel: bool) -> (Fixture, Run, i32) {
    let fx = Fixture::load("busy");
    let (_, after) = fx.snapshots();
    let k = after
        .tasks
        .iter()
        .find(|t| t.is_kernel_thread() && t.sched.is_some())
        .expect("a kernel thread with schedstat in the busy fixture")
        .tid;
    let name = comm.to_string();
    let r = run_with(
        &fx,
        Trigger::Alert {
            rule: "kernel_spin".into(),
            level: selfheal_config::Level::Light,
            cpu: Some(1),
        },
        &[],
        &[],
        Thresholds::default(),
        |before, after| {
            let base = before
                .tasks
                .iter()
                .find(|t| t.tid == k)
                .unwrap()
                .sched
                .unwrap();
            for (snap, extra) in [(before, 0u64), (after, 1u64)] {
                // CPU 1 is the thread's alone (the fixture's hogs go to 0).
                for t in snap.tasks.iter_mut().filter(|t| t.tid != k) {
                    t.stat.processor = Some(0);
                }
                let t = snap.tasks.iter_mut().find(|t| t.tid == k).unwrap();
                t.stat.state = 'R';
                t.stat.processor = Some(1);
                t.stat.comm = name.clone();
                if !kernel {
                    // PF_KTHREAD
                    t.stat.flags &= !0x0020_0000;
                }
                let mut s = base;
                s.runtime_ns += extra * run_ms * 1_000_000;
                s.wait_ns += extra * wait_ms * 1_000_000;
                t.sched = Some(s);
            }
        },
    );
    (fx, r, k)
}

#[test]
fn a_kernel_thread_that_never_sleeps_is_a_runaway_named_and_targeted() {
    // The hang lab's kthread_loop under preempt=full: the canary runs (no
    // stall), the thread runs most of the interval and waits the rest.
    let interval = Fixture::load("busy").interval().as_millis() as u64;
    let (_, r, k) = spinning_kthread("lab_kthread_loo", interval * 6 / 10, interval * 4 / 10);
    let d = r.only(Class::RunawayKthread);
    assert_eq!(d.culprit.pid, Some(k));
    assert_eq!(d.culprit.comm.as_deref(), Some("lab_kthread_loo"));
    assert_eq!(d.culprit.cpu, Some(1));
    assert_eq!(d.target.as_ref().map(|t| t.pid), Some(k));
    assert!(matches!(d.symptom, Symptom::KthreadSpin { tid, .. } if tid == k));
    assert!(d.summary.contains("without sleeping"), "{}", d.summary);
    // Reclaim, softirqs and the like run long by design: not runaways.
    let (_, r, _) = spinning_kthread("kswapd0", interval, 0);
    assert!(
        !r.classes().contains(&Class::RunawayKthread),
        "{:#?}",
        r.diagnoses
    );
    // A busy kernel thread that also slept (runnable 60% of the interval),
    // and one that ran a third of it.
    let (_, r, _) = spinning_kthread("lab_kthread_loo", interval * 6 / 10, 0);
    assert!(
        !r.classes().contains(&Class::RunawayKthread),
        "{:#?}",
        r.diagnoses
    );
    let (_, r, _) = spinning_kthread("kworker/1:2", interval / 3, interval * 2 / 3);
    assert!(
        !r.classes().contains(&Class::RunawayKthread),
        "{:#?}",
        r.diagnoses
    );
}

#[test]
fn a_user_space_cpu_hog_is_never_a_runaway_kernel_thread() {
    // Bystander: the very numbers of the runaway above (never slept, ran
    // the whole interval), but a user-space program: not a kernel thread,
    // so never this class (and never the one step that acts on kernel
    // threads).
    let interval = Fixture::load("busy").interval().as_millis() as u64;
    for (run, wait) in [(interval, 0), (interval * 6 / 10, interval * 4 / 10)] {
        let (_, r, _) = spinning_task("spin", run, wait, false);
        assert!(
            !r.classes().contains(&Class::RunawayKthread),
            "{:#?}",
            r.diagnoses
        );
    }
}
