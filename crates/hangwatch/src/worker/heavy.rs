//! The heavy detector's run: two snapshots, a diagnosis, and the
//! recovery ladder for every hang found.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use selfheal_detect::Heartbeat;
use selfheal_diagnose::class::Symptom;
use selfheal_diagnose::classify::Observation;
use selfheal_diagnose::verify::SymptomCheck;
use selfheal_event::Class;
use selfheal_kmsg::KernelReport;
use selfheal_recover::{Recheck, SymptomProbe};

use super::{HeldWatch, Pending, Worker, HELD_RECHECK};

impl Worker {
    /// Two snapshots, a diagnosis, and recovery for every hang found.
    pub(super) fn heavy(&mut self, p: Pending) {
        let t0 = Instant::now();
        self.stats.count_run(p.trigger.kind());
        let before = match self.reader.take() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("heavy detector: cannot snapshot tasks: {e}");
                return;
            }
        };
        std::thread::sleep(self.cfg.heavy.interval.get());
        let Ok(after) = self.reader.take() else {
            return;
        };
        let now = Instant::now();
        let measured_wall = SystemTime::now();
        self.refresh_dstate(now, false);
        let stuck = self.tracker.stuck(now, self.cfg.heavy.dstate_bound.get());
        let oom_loops = self.oom_loops.looping(now);
        let (cgroups, members) = {
            let mut sc = self.scanner.lock().unwrap_or_else(|p| p.into_inner());
            // Full figures, and cgroups created since the last walk.
            sc.set_detail_above(None);
            sc.walk();
            let cgroups = sc.scan();
            let th = &self.cfg.heavy;
            let members: HashMap<String, Vec<i32>> = cgroups
                .iter()
                .filter(|u| {
                    u.memory
                        .is_some_and(|m| m.percent() >= th.cgroup_memory_percent)
                        || u.pids
                            .is_some_and(|p| p.percent() >= th.cgroup_pids_percent)
                })
                .map(|u| (u.path.clone(), sc.members(&u.path)))
                .chain(
                    oom_loops
                        .iter()
                        .map(|l| (l.cgroup.clone(), sc.members(&l.cgroup))),
                )
                .collect();
            (cgroups, members)
        };
        let mut stalled = self.stall.as_ref().map(|s| s.stalled()).unwrap_or_default();
        // A stall held for the host's word is not one yet.
        if let Some(h) = &self.stalls_held {
            stalled.retain(|(cpu, _)| !h.holds(*cpu));
        }
        let window = self.cfg.kmsg.correlate_window.get();
        let kernel: Vec<KernelReport> = self
            .kernel
            .iter()
            .filter(|(t, _)| t.elapsed() <= window)
            .map(|(_, r)| r.clone())
            .collect();
        let settling = self.ladder.settling();
        let obs = Observation {
            trigger: &p.trigger,
            before: &before,
            after: &after,
            stalled_cpus: &stalled,
            stuck: &stuck,
            cgroups: &cgroups,
            cgroup_members: &members,
            kernel: &kernel,
            settling: &settling,
            oom_loops: &oom_loops,
        };
        let diagnoses = self.diagnoser.diagnose(&obs);
        let elapsed = t0.elapsed();
        self.stats.heavy_run.observe(elapsed);
        let took = elapsed.as_micros() as u64;
        self.stats.heavy_last_us.store(took, Ordering::Relaxed);
        self.stats.heavy_max_us.fetch_max(took, Ordering::Relaxed);

        let again = self.cfg.heavy.rediagnose_after.get();
        self.recent.retain(|_, t| t.elapsed() < again);
        for d in diagnoses {
            // Stuck tasks seen by this diagnosis are not triggers again
            // (held ones are re-checked by the sweep, see `recheck_held`).
            if let Symptom::Stuck { tasks } = &d.symptom {
                for s in stuck.iter().filter(|s| tasks.iter().any(|t| t.1 == s.tid)) {
                    self.stuck_reported.insert((s.tid, s.starttime));
                    if d.class == Class::Held {
                        self.held.entry((s.tid, s.starttime)).or_insert(HeldWatch {
                            pid: s.pid,
                            next_check: Instant::now() + HELD_RECHECK,
                            alerted: false,
                        });
                    }
                }
            }
            let key = d.key();
            if self.recent.contains_key(&key) {
                continue;
            }
            self.recent.insert(key, Instant::now());
            // Stuck tasks carry their own onset (the trigger may be an
            // alert that came later, or another task's block).
            let onset = match &d.symptom {
                Symptom::Stuck { tasks } => stuck
                    .iter()
                    .filter(|s| tasks.iter().any(|t| t.1 == s.tid && t.2 == s.starttime))
                    .map(|s| s.since)
                    .min()
                    .or(p.onset),
                _ => p.onset,
            };
            let latency = onset.map(|o| Instant::now().saturating_duration_since(o));
            self.sink.emit(d.to_event(&p.trigger, latency));
            if !d.class.is_fault() {
                continue;
            }
            let incident = d.incident(now, measured_wall);
            let mut probe = Beating {
                check: SymptomCheck::new(
                    d.symptom.clone(),
                    &self.proc_root,
                    self.stall.clone(),
                    Some(self.scanner.clone()),
                ),
                heartbeat: &self.heartbeat,
            };
            let report = self.ladder.run(&incident, &mut probe, self.sink.as_ref());
            if let Some(t) = report.time_to_recover {
                tracing::info!("{}: recovered in {} ms", d.class, t.as_millis());
            }
        }
        // Forget stuck threads that are gone, so a new hang of a reused tid
        // is reported again.
        let live: HashSet<(i32, u64)> = stuck.iter().map(|s| (s.tid, s.starttime)).collect();
        self.stuck_reported.retain(|k| live.contains(k));
    }
}

/// The symptom check, beating the pipeline's heartbeat while the ladder
/// polls it (a ladder can take seconds; the watchdog must not see a
/// stalled pipeline).
struct Beating<'a> {
    check: SymptomCheck,
    heartbeat: &'a Heartbeat,
}

impl SymptomProbe for Beating<'_> {
    fn cleared(&mut self) -> bool {
        self.heartbeat.beat();
        self.check.cleared()
    }

    fn recheck(&mut self) -> Recheck {
        self.heartbeat.beat();
        self.check.recheck()
    }
}
