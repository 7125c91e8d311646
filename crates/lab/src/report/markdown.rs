//! The report as Markdown: what a reader of `report.md` sees.

use std::fmt::Write as _;

use super::{Healing, Report};
use crate::analyze::RestartKind;
use crate::scenario::{KernelDetector, KernelProfile};

fn ms(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x >= 10_000.0 => format!("{:.1} s", x / 1000.0),
        Some(x) if x >= 1000.0 => format!("{:.2} s", x / 1000.0),
        Some(x) => format!("{x:.0} ms"),
    }
}

fn pct(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$} %"))
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let m = &r.meta;
    let mut s = String::new();
    let _ = writeln!(s, "# selfheal hang lab results\n");
    if m.placeholder {
        let _ = writeln!(
            s,
            "> **PLACEHOLDER RUN.** The guest ran the lab's stand-in, not selfheal: every selfheal column \
             below is empty by construction. Only the kernel detector columns and the lab's plumbing are real.\n"
        );
    }
    let _ = writeln!(
        s,
        "- started: {} (UTC), duration {:.0} s",
        m.started_utc, m.duration_s
    );
    let _ = writeln!(s, "- command: `{}` (seed {})", m.command, m.seed);
    let _ = writeln!(s, "- guest: {}, kernel {}, {}", m.guest, m.kernel, m.accel);
    let _ = writeln!(s, "- selfheal: {}", m.selfheal);
    let _ = writeln!(s, "- config under test: {}", m.config);
    let feats: Vec<String> = m
        .kernel_features
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(s, "- guest kernel config: {}", feats.join(", "));
    let _ = writeln!(
        s,
        "- raw serial logs: `runs/<id>/` beside this file; `results.json` has every run\n"
    );

    let _ = writeln!(s, "## Fault injections: selfheal\n");
    let _ = writeln!(
        s,
        "Latency is from the fault's start (the module's own start line, or the injection marker for \
         user-space faults) to selfheal's first alert, hang diagnosis, watchdog or recovery event, on the \
         guest's clock. Events naming another CPU than the one a pinned fault occupies are not credited. \
         `runs with alarms before injection` counts runs where selfheal already alerted under the workload \
         alone: there a detection may be the workload, not the fault.\n"
    );
    let _ = writeln!(
        s,
        "| class | fault | injections (with selfheal) | detected | median | p95 | diagnosed correctly | culprit right | \
         recovered w/o reboot | restarted, back serving | rebooted | hung (lab reset) | alive, fault persists | missed | \
         runs with alarms before injection |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in &r.classes {
        let missed = if c.undetectable_by_design {
            format!("{} (all CPUs stalled: undetectable by design)", c.missed)
        } else {
            c.missed.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {} | {} | {}/{} | {}/{} | {} | {} | {} | {} | {} | {} | {} |",
            c.class,
            c.class.describe(),
            c.injections,
            c.selfheal.runs,
            c.selfheal.detected,
            ms(c.selfheal.median_ms),
            ms(c.selfheal.p95_ms),
            c.diagnosed_correctly,
            c.selfheal.runs,
            c.culprit_correct,
            c.selfheal.runs,
            c.recovered,
            c.restarted,
            c.rebooted,
            c.hung,
            c.degraded,
            missed,
            c.runs_with_early_alarms
        );
    }
    let _ = writeln!(s);
    let problems = plain_findings(r);
    if !problems.is_empty() {
        let _ = writeln!(s, "**Where selfheal missed or misdiagnosed:**\n");
        for p in problems {
            let _ = writeln!(s, "- {p}");
        }
        let _ = writeln!(s);
    }

    healing_section(&mut s, r);

    let _ = writeln!(s, "## Fault injections: the kernel's own detectors\n");
    let _ = writeln!(
        s,
        "Each cell: runs that reported / runs, median latency. Profiles: default = soft lockup 20 s, \
         hung task 120 s (reported 120–240 s after blocking), RCU stall 21 s; tight = watchdog_thresh=1 \
         (soft lockup 2 s), hung_task_timeout_secs=1, rcu_cpu_stall_timeout=3. The hard-lockup detector \
         needs a perf NMI, which a TCG guest lacks (`NMI watchdog: Perf NMI watchdog permanently disabled`).\n"
    );
    let dets: Vec<&str> = KernelDetector::ALL.iter().map(|d| d.name()).collect();
    let _ = writeln!(s, "| class | profile | selfheal | {} |", dets.join(" | "));
    let _ = writeln!(s, "|---|---|---|{}", "---|".repeat(dets.len()));
    for c in &r.classes {
        for (profile, per) in &c.kernel {
            let cells: Vec<String> = dets
                .iter()
                .map(|d| {
                    let l = &per[*d];
                    format!("{}/{}, {}", l.detected, l.runs, ms(l.median_ms))
                })
                .collect();
            let own = per.get("selfheal").cloned().unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {}/{}, {} | {} |",
                c.class,
                profile,
                own.detected,
                own.runs,
                ms(own.median_ms),
                cells.join(" | ")
            );
        }
    }
    let _ = writeln!(s, "\n![detection latency per class](latency.svg)\n");

    let _ = writeln!(s, "## Fault-free runs: false positives and overhead\n");
    let _ = writeln!(
        s,
        "| workload | runs with / without selfheal | runs with a selfheal false positive | FP events | \
         ops/s without | ops/s with | throughput overhead | selfheal CPU (% of one core) | kernel reports |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for f in &r.fault_free {
        let kr: Vec<String> = f
            .kernel_reports
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
            f.workload.name(),
            f.runs_with,
            f.runs_without,
            f.false_positive_runs,
            f.false_positive_events,
            f.ops_per_s_without
                .map_or("—".into(), |v| format!("{v:.1}")),
            f.ops_per_s_with.map_or("—".into(), |v| format!("{v:.1}")),
            pct(f.overhead_pct, 1),
            pct(f.selfheal_cpu_pct, 2),
            if kr.is_empty() {
                "none".into()
            } else {
                kr.join(", ")
            }
        );
    }
    let _ = writeln!(
        s,
        "\nThroughput overhead compares separate guest boots under TCG on a shared host; differences of a \
         few percent either way are noise. selfheal's own CPU time (utime+stime over its lifetime) is the \
         sharper overhead figure.\n"
    );

    if let Some(vm) = &r.vm {
        vm_section(&mut s, vm, &r.runs);
    }

    let _ = writeln!(s, "## Every run\n");
    let _ = writeln!(s, "| run | workload | profile | selfheal detect | diagnosis | culprit | recovery | outcome | kernel first | logs |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for run in &r.runs {
        let first_kernel = run
            .kernel
            .iter()
            .min_by_key(|(_, h)| h.latency_ms)
            .map_or("—".into(), |(k, h)| {
                format!("{k} {}", ms(Some(h.latency_ms as f64)))
            });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:?}: {} | {} | [logs]({}/) |",
            run.scenario.id,
            run.scenario.workload.name(),
            run.scenario.profile.name(),
            run.selfheal.detect_ms.map_or("—".into(), |v| format!(
                "{} ({})",
                ms(Some(v as f64)),
                run.selfheal.detect_by.as_deref().unwrap_or("")
            )),
            run.selfheal.diagnosis.as_deref().unwrap_or("—"),
            run.selfheal.culprit.as_deref().unwrap_or("—"),
            run.selfheal.recovery.as_deref().unwrap_or("—"),
            run.outcome,
            run.outcome_note.replace('|', "/"),
            first_kernel,
            run.log_dir
        );
    }
    if !m.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &m.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// The `vm-rollback` profile: per class, rollback and serving on; the
/// checkpoints' cost in guest throughput; every run's host-side story.
fn vm_section(s: &mut String, vm: &super::VmSummary, runs: &[crate::analyze::RunRecord]) {
    let _ = writeln!(s, "## VM rollback (`vm-rollback`)\n");
    let _ = writeln!(
        s,
        "The guest under the host's `selfheal vm` (VM-μCheckpoints every 50 ms, restart never), \
         its selfheal sending heartbeats and diagnoses over the guest link; each fault triggered once \
         from the host over a virtio-serial port (a rollback to before the guest read the trigger \
         takes it back, and it is not sent again). **rolled back**: `selfheal vm` restored a \
         checkpoint. **undone**: one of them went back to before the fault (a checkpoint older \
         than the trigger, or than the guest's INJECT with none after). **served on, no reboot**: \
         one boot id, no restart, every CPU's lab heartbeat back after the last rollback, END \
         reached; rolled back or not. **recovered by rollback**: undone and served on. **extra \
         rollbacks**: after the undoing one (the guest's own diagnoses of the rollback's time \
         jump, or of a slow guest, acted on); **before it**: rollbacks on the guest's diagnoses before \
         the trigger was sent (false positives). **detect**: trigger sent → `selfheal vm`'s first \
         decision (host clock). **fault → serving**: trigger sent → every CPU's lab heartbeat \
         back after the undoing rollback (host clock). The lab's own outcome column (healthy at \
         END: no heartbeat gap over 500 ms in the last 3 s) is in the per-run table.\n"
    );
    let _ = writeln!(
        s,
        "| class | runs (injected) | rolled back | undone | recovered by rollback | served on, no reboot | restarted | acted on | detect median | fault → serving median / p95 | rollbacks after the trigger (extra) / before it |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &vm.classes {
        let acted: Vec<String> = c
            .triggers
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} ({}) / {} |",
            c.class.map_or("—", |c| c.name()),
            c.runs,
            c.injected,
            c.rolled_back,
            c.undone,
            c.recovered_by_rollback,
            c.served_without_reboot,
            c.restarted,
            if acted.is_empty() {
                "—".into()
            } else {
                acted.join(", ")
            },
            ms(c.detect.median_ms),
            ms(c.fault_to_serving.median_ms),
            ms(c.fault_to_serving.p95_ms),
            c.rollbacks,
            c.extra_rollbacks,
            c.rollbacks_before_trigger
        );
    }
    if !vm.overhead.is_empty() {
        let _ = writeln!(
            s,
            "\n**Checkpoint overhead** (fault-free pairs in the same run set, `selfheal vm` with \
             checkpoints every 50 ms and with none; the seed's figure is 6.3 % at 50 ms on SPEC \
             CINT2006):\n"
        );
        let _ = writeln!(
            s,
            "| workload | runs with / without | ops/s without | ops/s with | throughput overhead | per pair | guest false alarms | rollbacks |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for o in &vm.overhead {
            let pairs: Vec<String> = o
                .pair_overheads_pct
                .iter()
                .map(|p| format!("{p:.1} %"))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} / {} | {} | {} | {} | {} | {} | {} |",
                o.workload.map_or("—", |w| w.name()),
                o.runs_with,
                o.runs_without,
                o.ops_per_s_without
                    .map_or("—".into(), |v| format!("{v:.1}")),
                o.ops_per_s_with.map_or("—".into(), |v| format!("{v:.1}")),
                pct(o.overhead_pct, 1),
                if pairs.is_empty() {
                    "—".into()
                } else {
                    pairs.join(", ")
                },
                o.guest_false_alarms,
                o.rollbacks
            );
        }
    }
    let _ = writeln!(s, "\n**checkpoint pause**: QEMU stopped per checkpoint over the run, p50 / p99 (count), from the host's `checkpoint` summary events. **rollback pause**: QEMU stopped for each rollback's restore. **settled**: guest diagnoses recorded but not acted on (arrived within the settle window after a rollback, their evidence covering it); **told**: rollbacks the guest was told of over the link.");
    let _ = writeln!(s, "\n| run | acted on | rollbacks (checkpoint ages) | rollback pause | checkpoint pause p50 / p99 (n) | settled / told | detect | fault → serving | boot ids | host view | lab outcome |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let Some(v) = &r.vm else { continue };
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {} | {} / {} | {} | {} | {} | {} | {:?}: {} |",
            r.scenario.id,
            v.trigger.as_deref().unwrap_or("—"),
            v.rollbacks,
            v.checkpoint_ages_ms
                .iter()
                .map(|a| ms(Some(*a as f64)))
                .collect::<Vec<_>>()
                .join(", "),
            if v.rollback_pause_ms.is_empty() {
                "—".to_string()
            } else {
                v.rollback_pause_ms
                    .iter()
                    .map(|p| format!("{p:.1} ms"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            match (v.checkpoint_pause_p50_ms, v.checkpoint_pause_p99_ms) {
                (Some(a), Some(b)) =>
                    format!("{a:.1} / {b:.1} ms ({})", v.checkpoint_pauses.unwrap_or(0)),
                _ => "—".into(),
            },
            v.settled,
            v.guest_told,
            ms(v.detect_ms.map(|x| x as f64)),
            ms(v.fault_to_serving_ms.map(|x| x as f64)),
            v.boot_ids,
            v.note.replace('|', "/"),
            r.outcome,
            r.outcome_note.replace('|', "/")
        );
    }
    let _ = writeln!(s);
}

/// Profiles that follow the guest through restarts, present in the report.
fn healing_profiles(r: &Report) -> Vec<KernelProfile> {
    KernelProfile::ALL
        .iter()
        .copied()
        .filter(|p| p.follows_reboot())
        .filter(|p| r.classes.iter().any(|c| c.healing.contains_key(p.name())))
        .collect()
}

/// Handled (in place + restarted under control) over the injections of
/// classes that leave a CPU alive, for one profile: (handled, runs, runs
/// not handled in which the kernel saw a second CPU lock up within 2 s of
/// the fault, so that the injection left no CPU alive after all).
pub fn handled_share(r: &Report, profile: KernelProfile) -> (usize, usize, usize) {
    let mut handled = 0;
    let mut runs = 0;
    let mut no_cpu = 0;
    for c in r.classes.iter().filter(|c| !c.undetectable_by_design) {
        if let Some(h) = c.healing.get(profile.name()) {
            handled += h.handled();
            runs += h.runs;
            no_cpu += h.no_cpu_left;
        }
    }
    (handled, runs, no_cpu)
}

fn healing_section(s: &mut String, r: &Report) {
    let profiles = healing_profiles(r);
    if profiles.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Healing: in place, restarted, downtime\n");
    let _ = writeln!(
        s,
        "Profiles that follow the guest through restarts (the lab lets QEMU reboot it and records its next \
         boot). **in place**: healthy at the end after a selfheal recovery step reported `recovered` or \
         `mitigated`, no restart. **restarted under control**: selfheal wrote the evidence, synced and \
         restarted the guest (the `reboot` step reported `restarting`); **recorded** counts those whose next \
         boot's selfheal recorded a `restart` event naming the incident. **watchdog reset**: the guest was \
         reset by its watchdog device, which nobody petted once user space stopped. **kernel panic**: the \
         kernel panicked and rebooted. **not handled, no CPU left**: runs not handled in \
         which the kernel's soft-lockup report dates a lockup of a CPU the fault does not occupy to within 2 s \
         of the fault (an interrupts-off loop takes the other CPU with it through a cross-CPU call): no user \
         space could run. A restart counts only when the next boot served again (every CPU's \
         heartbeat regular). **Downtime**: from the fault's start to the guest serving again — the SERVING \
         marker of the next boot on the host's clock, or, in place, the end of the last heartbeat gap over \
         500 ms; runs that did not serve again are counted as not restored and have none.\n"
    );
    let _ = writeln!(
        s,
        "| class | profile | runs | in place | restarted under control (recorded) | watchdog reset | kernel panic | \
         healthy unaided | not restored | not handled, no CPU left | downtime median | downtime p95 |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &r.classes {
        for p in &profiles {
            let Some(h) = c.healing.get(p.name()) else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} |",
                c.class,
                p.name(),
                h.runs,
                h.in_place,
                h.restarted_by(RestartKind::Controlled),
                h.restart_recorded,
                h.restarted_by(RestartKind::Watchdog),
                h.restarted_by(RestartKind::KernelPanic),
                h.healthy_unaided,
                h.not_restored,
                h.no_cpu_left,
                ms(h.downtime.median_ms),
                ms(h.downtime.p95_ms),
            );
        }
    }
    let _ = writeln!(s);
    for p in &profiles {
        let (handled, runs, no_cpu) = handled_share(r, *p);
        let all: Vec<&Healing> = r
            .classes
            .iter()
            .filter(|c| !c.undetectable_by_design)
            .filter_map(|c| c.healing.get(p.name()))
            .collect();
        let restored: usize = all.iter().map(|h| h.restored()).sum();
        let _ = writeln!(
            s,
            "- **{}** ({}): handled {handled}/{runs} ({}) of the injections of the classes that leave a CPU alive; restored by \
             any means {restored}/{runs}.{}",
            p.name(),
            p.describe(),
            pct((runs > 0).then(|| handled as f64 * 100.0 / runs as f64), 1),
            if no_cpu == 0 {
                String::new()
            } else {
                let alive = runs - no_cpu;
                format!(
                    " In {no_cpu} of those not handled the kernel dated a lockup of a second CPU to within 2 s \
                     of the fault (its soft-lockup report): no CPU was left for user space, so the injections that \
                     did leave a CPU alive were {alive}, of which {handled} handled ({}).",
                    pct((alive > 0).then(|| handled as f64 * 100.0 / alive as f64), 1)
                )
            }
        );
    }
    let _ = writeln!(s);
}

/// Plain sentences for every class selfheal missed or misdiagnosed.
pub fn plain_findings(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for c in &r.classes {
        if c.undetectable_by_design {
            out.push(format!(
                "{}: every CPU is stalled, so no user-space detector can run; selfheal detected {}/{} (expected 0).",
                c.class, c.selfheal.detected, c.injections
            ));
            continue;
        }
        if c.missed > 0 {
            out.push(format!(
                "{}: selfheal missed {} of {} injections.",
                c.class, c.missed, c.injections
            ));
        }
        let wrong: Vec<String> = c
            .diagnoses
            .iter()
            .filter(|(d, _)| d.as_str() != c.class.expected_diagnosis())
            .map(|(d, n)| format!("{d} ×{n}"))
            .collect();
        if !wrong.is_empty() {
            out.push(format!(
                "{}: misdiagnosed as {} (expected {}).",
                c.class,
                wrong.join(", "),
                c.class.expected_diagnosis()
            ));
        }
        if c.diagnosed < c.injections && c.missed < c.injections {
            out.push(format!(
                "{}: {} of {} injections got no diagnosis event.",
                c.class,
                c.injections - c.diagnosed,
                c.injections
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(ms(Some(85.0)), "85 ms");
        assert_eq!(ms(Some(2345.0)), "2.35 s");
        assert_eq!(ms(Some(125_000.0)), "125.0 s");
        assert_eq!(ms(None), "—");
    }
}
