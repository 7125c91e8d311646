//! Diagnoses written typed, stored, and read back typed: one of every
//! evidence shape, through the SQLite store and through the JSON the API
//! and `selfheal events --json` print.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use selfheal_event::{Culprit, Event, EventKind, Severity, Source};
use selfheal_kmsg::VerdictKind;
use selfheal_store::{Order, Query, Store};

use super::*;
use crate::blocker::{Blocker, Held, HeldReason, MountRef, ProcRef, Whose};
use crate::class::{Diagnosis, Symptom, Trigger, TriggerDetails};
use crate::classify::evidence::*;

fn task(comm: &str, measured: bool) -> TaskEvidence {
    TaskEvidence {
        pid: 10,
        tid: 11,
        comm: comm.into(),
        state: "R".into(),
        cpu: Some(1),
        policy: "SCHED_FIFO".into(),
        rt_priority: 50,
        nice: 0,
        ppid: 1,
        rss_bytes: 4096,
        kernel_thread: false,
        wchan: None,
        uid: Some(1000),
        cpu_use: measured.then_some(CpuUse {
            cpu_percent: 99.5,
            user_ms: 990,
            system_ms: 5,
            timeslices: 3,
            wait_ms: 0.25,
        }),
    }
}

fn report() -> KernelReportEvidence {
    KernelReportEvidence {
        verdict: VerdictKind::SoftLockup,
        headline: "watchdog: BUG: soft lockup - CPU#1 stuck for 22s!".into(),
        cpu: Some(1),
        pid: Some(10),
        comm: Some("spin".into()),
        kernel_ts_us: 5_000_000,
    }
}

fn mount() -> MountRef {
    MountRef {
        mount_id: 42,
        mount_point: PathBuf::from("/mnt/fuse"),
        fs_type: "fuse.sshfs".into(),
        source: "host:/".into(),
        device: "0:55".into(),
    }
}

fn stuck(blocker: Blocker, reason: Option<HeldReason>) -> StuckEvidence {
    StuckEvidence {
        pid: 20,
        tid: 20,
        comm: "cat".into(),
        stuck_ms: 2500,
        wchan: Some("fuse_wait_answer".into()),
        kernel_thread: false,
        blocker,
        reason,
    }
}

fn holder() -> Holder {
    Holder {
        pid: 7,
        comm: "hog".into(),
        rss_bytes: 1 << 30,
        rss_growth_bytes: -4096,
    }
}

/// One evidence document of every shape, with the class that writes it.
fn every_shape() -> Vec<(Class, DiagnosisEvidence)> {
    let fuse = Blocker::Fuse {
        connection: 55,
        mount: mount(),
        waiting: Some(1),
        server: Some(ProcRef {
            pid: 30,
            comm: "sshfs".into(),
            starttime: 123,
        }),
        server_found_by: Some("fdinfo".into()),
    };
    let frozen = Blocker::Held(Held::FrozenCgroup {
        cgroup: "/frozen".into(),
        version: "v2".into(),
        file: PathBuf::from("/sys/fs/cgroup/frozen/cgroup.events"),
        state: "frozen 1".into(),
        whose: Whose::Waiter,
        server: None,
    });
    let bomb = |scope: BombScope, groups: Option<Vec<i32>>| {
        let mut e: ForkBombEvidence = scope.into();
        e.process_groups = groups;
        DiagnosisEvidence::ForkBomb(e)
    };
    vec![
        (
            Class::RtHog,
            DiagnosisEvidence::RtHog(RtHogEvidence {
                cpu: 1,
                cpu_stalled_ms: Some(300),
                culprit: task("spin", true),
                runnable_waiting_on_cpu: vec![Waiting {
                    pid: 12,
                    comm: "sshd".into(),
                    wait_ms: 250.5,
                }],
                kernel_reports: vec![report()],
                interval_ms: 100.0,
            }),
        ),
        (
            Class::KernelStall,
            DiagnosisEvidence::KernelStall(StallEvidence {
                cpu: 0,
                cpu_stalled_ms: None,
                top_share_percent: 99.0,
                culprit: None,
                kernel_stack: Some(vec!["do_idle".into()]),
                kernel_reports: vec![],
                interval_ms: 100.0,
            }),
        ),
        (
            Class::RunawayKthread,
            DiagnosisEvidence::RunawayKthread(KthreadEvidence {
                cpu: 1,
                culprit: task("kworker/1:2", false),
                runnable_percent: 100.0,
                voluntary_context_switches: Some(4),
                kernel_stack: None,
                interval_ms: 100.0,
            }),
        ),
        (
            Class::DState,
            DiagnosisEvidence::Stuck(Box::new(StuckGroupEvidence {
                bound_ms: 2000,
                blocker: fuse.clone(),
                stuck: vec![stuck(fuse, None)],
                waiter: Some(task("sshfs", false)),
                kernel_stack: None,
                stalled_devices: vec![],
                held_elsewhere: vec![stuck(frozen.clone(), Some(HeldReason::FrozenCgroup))],
                kernel_reports: vec![],
            })),
        ),
        (
            Class::IoStall,
            DiagnosisEvidence::Stuck(Box::new(StuckGroupEvidence {
                bound_ms: 2000,
                blocker: Blocker::Device {
                    device: "8:0".into(),
                    mount: Some(mount()),
                },
                stuck: vec![stuck(
                    Blocker::Unknown {
                        wait: "block_io".into(),
                    },
                    None,
                )],
                waiter: None,
                kernel_stack: Some(vec!["io_schedule".into()]),
                stalled_devices: vec![DiskEvidence {
                    device: "sda".into(),
                    dev: "8:0".into(),
                    in_flight: 3,
                    completed: 0,
                    busy_ms: 100,
                }],
                held_elsewhere: vec![],
                kernel_reports: vec![],
            })),
        ),
        (
            Class::Held,
            DiagnosisEvidence::Held(HeldEvidence {
                bound_ms: 2000,
                held: vec![stuck(frozen, Some(HeldReason::FrozenCgroup))],
            }),
        ),
        (
            Class::ForkBomb,
            bomb(
                BombScope::Cgroup(CgroupBombEvidence {
                    cgroup: "/user.slice".into(),
                    cgroup_blamed_whole: false,
                    cgroup_not_blamed_whole_because: Some("a slice".into()),
                    pids_current: 512,
                    pids_max: 512,
                    forks_refused_total: None,
                    forks_refused_recently: 40,
                    members_counted: 500,
                    commands: vec![("bomb".into(), 498), ("sh".into(), 2)],
                }),
                None,
            ),
        ),
        (
            Class::ForkBomb,
            bomb(
                BombScope::Program(ProgramBombEvidence {
                    comm: "bomb".into(),
                    uid: 1000,
                    processes: 300,
                    processes_before: 100,
                    related_processes: 290,
                    held_by_pids_limit: None,
                    forks_refused_recently: Some(2),
                }),
                Some(vec![7, 9]),
            ),
        ),
        (
            Class::ForkBomb,
            DiagnosisEvidence::ForkBomb(ForkBombEvidence {
                scope: BombScope::User(UserBombEvidence {
                    uid: 1000,
                    gained: 200,
                    comm: "bomb".into(),
                    processes: 210,
                    gained_in_related_group: 20,
                }),
                process_groups: None,
                cpu_stalls: Some(vec![AbsorbedStall {
                    summary: "kernel_stall: cpu 1".into(),
                    cpu: Some(1),
                    on_cpu: Some("bomb".into()),
                }]),
            }),
        ),
        (
            Class::MemoryExhaustion,
            DiagnosisEvidence::CgroupMemory(CgroupEvidence {
                scope: MemoryScope::Cgroup,
                cgroup: "/a".into(),
                limit_bytes: 100,
                usage_bytes: 99,
                unreclaimable_bytes: 95,
                percent: 95.0,
                psi_some_avg10: Some(12.5),
                psi_full_avg10: None,
                limit_hits: Some(3),
                largest: vec![holder()],
            }),
        ),
        (
            Class::MemoryExhaustion,
            DiagnosisEvidence::MachineMemory(MachineEvidence {
                scope: MemoryScope::Machine,
                mem_available_percent: None,
                psi_memory_full_avg10: Some(40.0),
                available_falling_bytes_per_second: None,
                seconds_to_exhaustion: Some(4.5),
                trend: true,
                major_faults_per_second: 0.0,
                largest: vec![holder()],
            }),
        ),
        (
            Class::MemoryExhaustion,
            DiagnosisEvidence::UnaccountedMemory(UnaccountedEvidence {
                scope: MemoryScope::Machine,
                culprit: "none: no process accounts for the shortage".into(),
                mem_available_percent: Some(3.25),
                available_lost_bytes: 1 << 20,
                process_growth_bytes: 4096,
                psi_memory_full_avg10: None,
                available_falling_bytes_per_second: Some(1e6),
                seconds_to_exhaustion: None,
                largest: vec![],
                shmem_growth_bytes: 3 << 20,
            }),
        ),
        (
            Class::MemoryExhaustion,
            DiagnosisEvidence::OomLoop(LoopEvidence {
                scope: MemoryScope::CgroupOomLoop,
                cgroup: "/loop".into(),
                oom_kills: 4,
                window_s: 60,
                program: "fill".into(),
                program_kills: 4,
                victims: vec![Victim {
                    pid: Some(40),
                    comm: Some("fill".into()),
                    task_cgroup: None,
                    ago_ms: 1500,
                }],
                current: Some(Instance {
                    pid: 41,
                    comm: "fill".into(),
                    rss_bytes: 1 << 20,
                }),
                respawner: Some(Respawner {
                    pid: 1,
                    comm: "systemd".into(),
                    inside_cgroup: false,
                }),
                limit_bytes: Some(1 << 26),
                usage_bytes: None,
                limit_hits: Some(9),
                limit_diagnoses: Some(vec![AbsorbedLimit {
                    summary: "memory_exhaustion: cgroup /loop".into(),
                    percent: 99.5,
                }]),
            }),
        ),
        (
            Class::LegitimateLoad,
            DiagnosisEvidence::Dismissed(DismissEvidence {
                reason: "no hang".into(),
                runnable_threads: 3,
                d_state_threads: 0,
                mem_available_percent: None,
                busiest: vec![BusyTask {
                    pid: 1,
                    tid: 1,
                    comm: "a".into(),
                    cpu_percent: 12.5,
                    policy: "SCHED_OTHER".into(),
                }],
                interval_ms: 100.0,
            }),
        ),
    ]
}

fn diagnosis(class: Class, evidence: DiagnosisEvidence, record_only: bool) -> Diagnosis {
    Diagnosis {
        class,
        culprit: Culprit {
            pid: Some(10),
            ..Culprit::default()
        },
        target: None,
        summary: format!("{class}: test"),
        evidence,
        symptom: Symptom::Unverifiable,
        no_target: record_only.then(|| "held by the operator".into()),
        restart_veto: None,
        blocker: None,
    }
}

/// Every shape, written typed, stored in SQLite, queried back and
/// printed as the API prints it, reads back typed and equal.
#[test]
fn every_shape_reads_back_through_the_store_and_the_api() {
    let shapes = every_shape();
    let classes: std::collections::HashSet<Class> = shapes.iter().map(|s| s.0).collect();
    assert_eq!(classes.len(), Class::ALL.len(), "a class without a shape");

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("events.db")).unwrap();
    let written: Vec<Diagnosis> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, (class, evidence))| diagnosis(class, evidence, i % 2 == 0))
        .collect();
    let trigger = Trigger::Stall {
        cpu: 1,
        stalled_for: Duration::from_millis(250),
    };
    for d in &written {
        store
            .append(&d.to_event(&trigger, Some(Duration::from_millis(1500))))
            .unwrap();
    }
    let read = store
        .query(&Query::new().order(Order::OldestFirst))
        .unwrap();
    assert_eq!(read.len(), written.len());
    for (d, e) in written.iter().zip(&read) {
        let api: Event = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        for e in [e, &api] {
            let s = StoredDiagnosis::from_event(e).unwrap();
            assert_eq!(s.class, d.class);
            assert_eq!(s.evidence, d.evidence, "{}", d.class);
            assert_eq!(s.record_only.as_deref(), d.no_target.as_deref());
            assert_eq!(s.detection_latency_ms, Some(1500.0));
            assert_eq!(s.trigger, trigger.details());
        }
    }
}

/// Every kind of trigger, written typed and stored in SQLite, reads back
/// typed and equal, and is stored as the very text the `json!` literals
/// wrote.
#[test]
fn every_trigger_reads_back_through_the_store() {
    use selfheal_cgroup::Controller;
    use selfheal_config::Level;
    use selfheal_detect::watchdog::Detector;
    let cases = [
        (
            Trigger::Alert {
                rule: "sys_high".into(),
                level: Level::Heavy,
                cpu: None,
            },
            r#"{"cpu":null,"kind":"alert","level":"heavy","rule":"sys_high"}"#,
        ),
        (
            Trigger::Stall {
                cpu: 3,
                stalled_for: Duration::from_millis(250),
            },
            r#"{"cpu":3,"kind":"stall","stalled_ms":250}"#,
        ),
        (
            Trigger::Watchdog {
                component: Detector::Pipeline,
                age: Duration::from_secs(2),
            },
            r#"{"age_ms":2000,"component":"pipeline","kind":"watchdog"}"#,
        ),
        (
            Trigger::Kernel {
                verdict: VerdictKind::HungTask,
                cpu: Some(1),
            },
            r#"{"cpu":1,"kind":"kernel","verdict":"hung_task"}"#,
        ),
        (
            Trigger::DState { tids: vec![7, 8] },
            r#"{"finding":"d_state","kind":"sweep","tids":[7,8]}"#,
        ),
        (
            Trigger::Cgroup {
                path: "/a".into(),
                resource: Controller::Pids,
            },
            r#"{"cgroup":"/a","finding":"pids","kind":"sweep"}"#,
        ),
        (Trigger::Manual, r#"{"kind":"manual"}"#),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("events.db")).unwrap();
    let (class, evidence) = every_shape().swap_remove(1);
    let d = diagnosis(class, evidence, false);
    for (t, _) in &cases {
        store.append(&d.to_event(t, None)).unwrap();
    }
    let read = store
        .query(&Query::new().order(Order::OldestFirst))
        .unwrap();
    assert_eq!(read.len(), cases.len());
    for ((t, text), e) in cases.iter().zip(&read) {
        let s = StoredDiagnosis::from_event(e).unwrap();
        assert_eq!(s.trigger, t.details(), "{t:?}");
        assert_eq!(serde_json::to_string(&e.details["trigger"]).unwrap(), *text);
        // The literal, as an older selfheal stored it, reads back the same.
        let old: TriggerDetails = serde_json::from_str(text).unwrap();
        assert_eq!(old, t.details());
    }
}

/// A sweep finding that names neither D state nor a controller, or lacks
/// the field its finding needs, is refused with a message naming it.
#[test]
fn a_sweep_trigger_of_no_known_finding_is_refused() {
    let details = |trigger: serde_json::Value| {
        json!({"class": "held", "trigger": trigger,
               "evidence": {"bound_ms": 2000, "held": []}})
    };
    let err = StoredDiagnosis::from_details(&details(
        json!({"kind": "sweep", "finding": "galaxy", "cgroup": "/a"}),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("galaxy"), "{err}");
    let err =
        StoredDiagnosis::from_details(&details(json!({"kind": "sweep", "finding": "memory"})))
            .unwrap_err();
    assert!(err.to_string().contains("cgroup"), "{err}");
    let err = StoredDiagnosis::from_details(&details(json!({"kind": "comet"}))).unwrap_err();
    assert!(matches!(err, ReadError::Details(_)), "{err}");
}

/// A document as the `json!` literals wrote it, stored by an older
/// selfheal, reads back (the format did not change: the shape comes
/// from the class and `scope`, the names stay strings).
#[test]
fn a_record_of_the_json_era_reads_back() {
    let details = json!({
        "class": "memory_exhaustion",
        "trigger": {"kind": "alert", "rule": "memory_exhausted", "level": "light", "cpu": null},
        "evidence": {
            "scope": "machine", "culprit": "none: no process accounts for the shortage",
            "mem_available_percent": 3.2, "available_lost_bytes": 1048576,
            "process_growth_bytes": 4096, "psi_memory_full_avg10": null,
            "available_falling_bytes_per_second": 1e6, "seconds_to_exhaustion": null,
            "largest": [{"pid": 7, "comm": "hog", "rss_bytes": 1073741824,
                         "rss_growth_bytes": -4096}],
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("events.db")).unwrap();
    let old = Event::now(EventKind::Diagnosis, Severity::Critical, Source::Heavy, "m")
        .with_rule("memory_exhaustion")
        .with_details(details.clone());
    store.append(&old).unwrap();
    let e = store.query(&Query::new()).unwrap().remove(0);
    let s = StoredDiagnosis::from_event(&e).unwrap();
    assert_eq!(s.class, Class::MemoryExhaustion);
    assert_eq!(
        s.trigger,
        TriggerDetails::Alert {
            rule: "memory_exhausted".into(),
            level: selfheal_config::Level::Light,
            cpu: None,
        }
    );
    assert_eq!(s.detection_latency_ms, None);
    assert_eq!(s.record_only, None);
    let DiagnosisEvidence::UnaccountedMemory(u) = &s.evidence else {
        panic!("read as {:?}", s.evidence);
    };
    assert_eq!(u.largest, vec![holder()]);
    assert_eq!(u.available_falling_bytes_per_second, Some(1e6));
    // Everything it held comes back; `shmem_growth_bytes`, added since,
    // reads as 0.
    let mut expect = details["evidence"].clone();
    expect["shmem_growth_bytes"] = json!(0);
    assert_eq!(s.evidence.to_value(), expect);

    let frozen = json!({
        "class": "held", "trigger": {"kind": "sweep", "finding": "d_state", "tids": [20]},
        "evidence": {"bound_ms": 2000, "held": [{
            "pid": 20, "tid": 20, "comm": "cat", "stuck_ms": 2500, "wchan": null,
            "kernel_thread": false, "reason": "frozen_cgroup",
            "blocker": {"kind": "held", "reason": "frozen_cgroup", "cgroup": "/f",
                        "version": "v1", "file": "/sys/fs/cgroup/freezer/f/freezer.state",
                        "state": "FROZEN", "whose": "waiter", "server": null}}]},
    });
    let s = StoredDiagnosis::from_details(&frozen).unwrap();
    assert_eq!(
        s.trigger,
        TriggerDetails::Sweep(crate::class::SweepFinding::DState { tids: vec![20] })
    );
    let DiagnosisEvidence::Held(h) = &s.evidence else {
        panic!("read as {:?}", s.evidence);
    };
    assert_eq!(h.held[0].reason, Some(HeldReason::FrozenCgroup));
    assert!(matches!(
        &h.held[0].blocker,
        Blocker::Held(Held::FrozenCgroup { version, .. }) if version == "v1"
    ));
    assert_eq!(s.evidence.to_value(), frozen["evidence"]);
}

/// What is not a diagnosis, or not its class's shape, is an error that
/// says so.
#[test]
fn other_shapes_are_refused() {
    let start = Event::now(EventKind::Start, Severity::Info, Source::Daemon, "up");
    assert!(matches!(
        StoredDiagnosis::from_event(&start),
        Err(ReadError::NotADiagnosis {
            kind: EventKind::Start,
            ..
        })
    ));
    let (_, stall) = every_shape().swap_remove(1);
    let as_rt_hog = json!({"class": "rt_hog", "trigger": {"kind": "manual"},
                           "evidence": stall.to_value()});
    let err = StoredDiagnosis::from_details(&as_rt_hog).unwrap_err();
    assert!(err.to_string().contains("rt_hog"), "{err}");
    let bad_scope = json!({"class": "memory_exhaustion", "trigger": {"kind": "manual"},
                           "evidence": {"scope": "galaxy"}});
    assert!(StoredDiagnosis::from_details(&bad_scope).is_err());
    let no_class = json!({"trigger": {"kind": "manual"}, "evidence": {}});
    assert!(matches!(
        StoredDiagnosis::from_details(&no_class),
        Err(ReadError::Details(_))
    ));
}
