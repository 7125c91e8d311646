//! The sweep: the cheap periodic check of D-state threads, limited
//! cgroups and tasks recorded as held.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use selfheal_cgroup::Controller;
use selfheal_diagnose::class::Trigger;
use selfheal_diagnose::sweep::StuckTask;
use selfheal_event::{Culprit, Event, EventKind, Severity, Source};
use selfheal_kmsg::KernelReport;
use selfheal_sampler::SystemMetric;

use super::{Pending, Worker, HELD_RECHECK};
use crate::details::HeldDetails;

impl Worker {
    /// Brings the D-state tracker up to date: from the tracer's map (and
    /// one full scan at start, or when the map overflowed), else by
    /// scanning /proc — on a sweep (`periodic`) only when tasks are
    /// blocked on I/O, some are followed, or the full scan is due.
    pub(super) fn refresh_dstate(&mut self, now: Instant, periodic: bool) {
        let bound = self.cfg.heavy.dstate_bound.get();
        if let Some(t) = self.tracer.as_mut() {
            match t.read(&mut self.waits) {
                Ok(complete) => {
                    if !complete || !self.scanned_once {
                        if !complete {
                            tracing::warn!(
                                "D-state tracer: {} tasks in D at once fill its map; scanning /proc too",
                                self.waits.len()
                            );
                        }
                        self.tracker.scan(now);
                        self.scanned_once = true;
                        self.last_full_scan = now;
                        self.stats
                            .sweep_threads
                            .store(self.tracker.last_scanned as u64, Ordering::Relaxed);
                    }
                    self.tracker.observe_traced(&self.waits, now, bound);
                    self.stats
                        .dstate_traced
                        .store(self.waits.len() as u64, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!("D-state tracer failed ({e}); scanning /proc from now on");
                    self.tracer = None;
                    self.stats.dstate_tracer.store(0, Ordering::Relaxed);
                }
            }
        }
        let full_every = self.cfg.heavy.dstate_full_scan.get();
        let full_due = !full_every.is_zero() && self.last_full_scan.elapsed() >= full_every;
        let blocked = periodic
            && self.board.read_into(&mut self.sample)
            && self.sample.system(SystemMetric::BlockedTasks) >= 1.0;
        if !periodic || blocked || full_due || self.tracker.in_d_state() > 0 {
            self.tracker.scan(now);
            self.scanned_once = true;
            if full_due {
                self.last_full_scan = now;
            }
            self.stats
                .sweep_threads
                .store(self.tracker.last_scanned as u64, Ordering::Relaxed);
        }
    }

    /// The cheap periodic check: limited cgroups, and D-state threads (see
    /// [`Worker::refresh_dstate`]).
    pub(super) fn sweep(&mut self, pending: &mut Option<Pending>) {
        let t0 = Instant::now();
        self.refresh_dstate(t0, true);
        self.recheck_held(t0);
        let bound = self.cfg.heavy.dstate_bound.get();
        let own = self.diagnoser.own_pids.clone();
        let stuck: Vec<_> = self
            .tracker
            .stuck(Instant::now(), bound)
            .into_iter()
            .filter(|s| !own.contains(&s.pid))
            .filter(|s| !self.stuck_reported.contains(&(s.tid, s.starttime)))
            .collect();
        if !stuck.is_empty() {
            let onset = stuck.iter().map(|s| s.since).min();
            Worker::want(
                pending,
                Trigger::DState {
                    tids: stuck.iter().map(|s| s.tid).collect(),
                },
                onset,
            );
        }
        let usages = {
            let mut sc = self.scanner.lock().unwrap_or_else(|p| p.into_inner());
            // memory.stat (the kernel sums per-CPU counters) only where the
            // total usage, page cache included, reaches the threshold: below
            // it the unreclaimable part cannot (heavy runs read it all).
            sc.set_detail_above(Some(self.cfg.heavy.cgroup_memory_percent));
            sc.scan()
        };
        let th = &self.cfg.heavy;
        let again = self.cfg.heavy.rediagnose_after.get();
        for u in usages {
            let memory = u
                .memory
                .is_some_and(|m| m.percent() >= th.cgroup_memory_percent);
            let pids = u
                .pids
                .is_some_and(|p| p.percent() >= th.cgroup_pids_percent && p.refused_recently > 0);
            if !(memory || pids) {
                continue;
            }
            if self
                .cgroups_reported
                .get(&u.path)
                .is_some_and(|t| t.elapsed() < again)
            {
                continue;
            }
            self.cgroups_reported.insert(u.path.clone(), Instant::now());
            Worker::want(
                pending,
                Trigger::Cgroup {
                    path: u.path.clone(),
                    resource: if pids {
                        Controller::Pids
                    } else {
                        Controller::Memory
                    },
                },
                None,
            );
        }
        self.stats.sweeps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sweep_last_us
            .store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Tasks recorded as held: forgotten when their block ends; every
    /// [`HELD_RECHECK`], what they wait for is looked at again, and a task
    /// no longer held becomes a trigger (its block is then a fault). Held
    /// longer than `heavy.held_alert_after`: one alert.
    fn recheck_held(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let stuck: HashMap<(i32, u64), StuckTask> = self
            .tracker
            .stuck(now, Duration::ZERO)
            .into_iter()
            .map(|s| ((s.tid, s.starttime), s))
            .collect();
        self.held.retain(|k, _| stuck.contains_key(k));
        let alert_after = self.cfg.heavy.held_alert_after.get();
        let kernel: Vec<KernelReport> = self.kernel.iter().map(|(_, r)| r.clone()).collect();
        let mut released = Vec::new();
        for (key, w) in self.held.iter_mut() {
            let s = &stuck[key];
            if now >= w.next_check {
                w.next_check = now + HELD_RECHECK;
                let b =
                    self.diagnoser
                        .blockers
                        .blocker_of(w.pid, s.tid, s.wchan.as_deref(), &kernel);
                if b.held().is_none() {
                    released.push(*key);
                    continue;
                }
            }
            if !alert_after.is_zero() && s.stuck_for >= alert_after && !w.alerted {
                w.alerted = true;
                self.sink.emit(
                    Event::now(
                        EventKind::Alert,
                        Severity::Warning,
                        Source::Heavy,
                        format!(
                            "{} pid {} held for {} s (heavy.held_alert_after = {}); not acted on",
                            s.comm,
                            s.pid,
                            s.stuck_for.as_secs(),
                            self.cfg.heavy.held_alert_after
                        ),
                    )
                    .with_rule("held_too_long")
                    .with_culprit(Culprit {
                        pid: Some(s.pid),
                        tid: Some(s.tid),
                        comm: Some(s.comm.clone()),
                        ..Culprit::default()
                    })
                    .with_details_of(&HeldDetails {
                        stuck_ms: s.stuck_for.as_millis() as u64,
                        held_alert_after_ms: alert_after.as_millis() as u64,
                    }),
                );
            }
        }
        for key in released {
            self.held.remove(&key);
            self.stuck_reported.remove(&key);
        }
    }
}
