//! Turns one guest run's raw logs into a scored [`RunRecord`]: when the fault
//! started, when selfheal and each kernel detector noticed, what selfheal
//! diagnosed and did, and whether the guest survived.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::parse::{self, KernelLine, LabEvent, LabLog};
use crate::scenario::{FaultClass, KernelDetector, Scenario};

/// How the guest ended, as far as the host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QemuExit {
    /// QEMU exited by itself (guest powered off, or rebooted under -no-reboot).
    Exited,
    /// The host killed QEMU after the scenario's timeout.
    Killed,
}

/// The guest's fate after the injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Alive at the end, the fault gone and every CPU's heartbeat regular.
    Healthy,
    /// Alive at the end (the scenario script finished) but the fault persists.
    Degraded,
    /// The guest restarted and its next boot served again with every CPU's
    /// heartbeat regular (profiles that follow reboots).
    Restarted,
    /// The guest panicked or rebooted (and was not followed, or its next
    /// boot never served).
    Rebooted,
    /// The guest never finished its script; the lab had to power it off.
    Hung,
}

pub use heal::RestartKind;

/// selfheal's view of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelfhealResult {
    /// Events on the channel (all kinds).
    pub events: usize,
    /// Lines on the channel that were not events.
    pub bad_lines: usize,
    /// The binary was the plumbing placeholder, not selfheal.
    pub placeholder: bool,
    /// ms from fault start to selfheal's first detection event.
    pub detect_ms: Option<i64>,
    /// Kind and rule of that first detection.
    pub detect_by: Option<String>,
    /// ms from fault start to the first diagnosis.
    pub diagnose_ms: Option<i64>,
    /// Its `details.class`.
    pub diagnosis: Option<String>,
    /// Its culprit, `comm[pid] cpu=N`.
    pub culprit: Option<String>,
    /// The class matched the fault (`None` when there was no diagnosis).
    pub diagnosed_correctly: Option<bool>,
    /// The culprit named the fault's task (comm prefix) or its CPU.
    pub culprit_correct: Option<bool>,
    /// ms from fault start to the first recovery step reporting `recovered`
    /// (or `mitigated`).
    pub recover_ms: Option<i64>,
    /// Every recovery step after the fault, `action→outcome`, in order.
    pub recovery: Option<String>,
    /// Detection events in a fault-free run (false positives), or before
    /// the injection in a fault run.
    pub false_alarms: usize,
    /// selfheal's CPU use over its lifetime, % of one CPU.
    pub cpu_pct: Option<f64>,
}

/// One kernel detector's first report after the fault started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelHit {
    /// ms from fault start.
    pub latency_ms: i64,
    /// The report line.
    pub line: String,
}

/// Everything the report needs from one run, traceable to its logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The scenario as run.
    pub scenario: Scenario,
    /// Directory of the raw logs, relative to the output directory.
    pub log_dir: String,
    /// Host wall time the run took, ms.
    pub host_ms: u64,
    /// How QEMU ended.
    pub qemu_exit: QemuExit,
    /// The guest booted and printed its BOOT marker.
    pub booted: bool,
    /// Guest CPUs.
    pub guest_cpus: Option<u32>,
    /// Guest CLOCK_REALTIME at fault start, ms (module's start line when
    /// there is one, else the INJECT marker).
    pub fault_start_ms: Option<i64>,
    /// The module confirmed the fault started (kernel classes).
    pub fault_confirmed: bool,
    /// selfheal's results.
    pub selfheal: SelfhealResult,
    /// First report per kernel detector after the fault (name → hit).
    pub kernel: BTreeMap<String, KernelHit>,
    /// Kernel detector reports in a fault-free run (false positives).
    pub kernel_false_alarms: BTreeMap<String, usize>,
    /// The guest's fate.
    pub outcome: Outcome,
    /// Why the outcome is what it is, for a reader of the report.
    pub outcome_note: String,
    /// Workload operations completed (fault-free runs).
    pub workload_ops: Option<u64>,
    /// Workload wall time, ms (fault-free runs).
    pub workload_elapsed_ms: Option<u64>,
    /// Problems with the run itself (missing markers, insmod failed, …).
    pub errors: Vec<String>,
    /// Boots the lab channel shows (more than 1: the guest restarted).
    #[serde(default)]
    pub boots: u32,
    /// Why the guest restarted, when it did.
    #[serde(default)]
    pub restart: Option<RestartKind>,
    /// The next boot's selfheal recorded a `restart` event naming the
    /// incident (the evidence written before the restart survived it).
    #[serde(default)]
    pub restart_recorded: bool,
    /// From the fault's start to the guest serving again, ms; `None` when it
    /// did not serve again within the observation (hung, or degraded).
    #[serde(default)]
    pub downtime_ms: Option<i64>,
    /// Which clock measured the downtime (`host`: across a restart).
    #[serde(default)]
    pub downtime_clock: Option<String>,
    /// `vm-rollback`: what the host's `selfheal vm` saw and did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<vm::VmResult>,
    /// The kernel reported a CPU the fault does not occupy locked up too
    /// (first boot, after the fault): the evidence that the fault took
    /// every CPU, not only its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_cpu_lockup: Option<OtherCpuLockup>,
}

/// A soft lockup, after the fault, of a CPU the fault is not pinned to: an
/// interrupts-off loop that takes a second CPU with it (that CPU waits for
/// the first to answer a cross-CPU call, a TLB shootdown, and spins there
/// with preemption off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherCpuLockup {
    /// The CPU.
    pub cpu: u32,
    /// When its stall began, ms after the fault's start: the report's time
    /// less the "stuck for Ns" it gives (to the second).
    pub onset_ms: i64,
    /// The kernel's line.
    pub line: String,
}

/// A second CPU that locked up this soon after the fault left no CPU for
/// user space from the start: no user-space recovery could act, whatever
/// its grace. The kernel's soft-lockup threshold in the lab is 2 s
/// (`watchdog_thresh=1`), so its reports date a stall to about a second.
pub const NO_CPU_LEFT_MS: i64 = 2_000;

/// The first soft lockup after `fault_start_us` of a CPU outside `pinned`.
fn other_cpu_lockup(
    reports: &[parse::KernelReport],
    pinned: &[u32],
    fault_start_us: u64,
) -> Option<OtherCpuLockup> {
    reports
        .iter()
        .filter(|r| r.detector == KernelDetector::SoftLockup && r.ts_us >= fault_start_us)
        .find_map(|r| {
            let cpu = r.cpu.filter(|c| !pinned.contains(c))?;
            let onset_us = r
                .ts_us
                .saturating_sub(r.stuck_for_s.unwrap_or(0) * 1_000_000);
            Some(OtherCpuLockup {
                cpu,
                onset_ms: (onset_us as i64 - fault_start_us as i64).max(0) / 1000,
                line: r.line.clone(),
            })
        })
}

impl RunRecord {
    /// True when the kernel dated another CPU's lockup to within
    /// [`NO_CPU_LEFT_MS`] of the fault: the injection left no CPU
    /// alive, as `spin_abba` does by design.
    pub fn left_no_cpu(&self) -> bool {
        self.other_cpu_lockup
            .as_ref()
            .is_some_and(|l| l.onset_ms <= NO_CPU_LEFT_MS)
    }

    /// Workload throughput in operations per second.
    pub fn ops_per_s(&self) -> Option<f64> {
        match (self.workload_ops, self.workload_elapsed_ms) {
            (Some(ops), Some(ms)) if ms > 0 => Some(ops as f64 * 1000.0 / ms as f64),
            _ => None,
        }
    }

    /// True when selfheal can see the fault at all (some CPU left to run on).
    pub fn detectable(&self) -> bool {
        match self.scenario.class {
            Some(c) => !c.stalls_every_cpu(self.guest_cpus.unwrap_or(2)),
            None => true,
        }
    }
}

/// The raw inputs of one run.
#[derive(Debug, Clone, Copy)]
pub struct RawRun<'a> {
    /// ttyS0 text.
    pub console: &'a str,
    /// ttyS1 text.
    pub lab: &'a str,
    /// ttyS2 text.
    pub events: &'a str,
    /// `host-marks.log` text (empty for runs recorded before it existed).
    pub host_marks: &'a str,
    /// How QEMU ended.
    pub qemu_exit: QemuExit,
    /// Host wall time, ms.
    pub host_ms: u64,
}

/// Scores one run.
pub fn analyze(scenario: &Scenario, log_dir: &str, raw: RawRun<'_>) -> RunRecord {
    let all_console = parse::parse_console(raw.console);
    // Detection and the fault's effect are judged on the first boot; a
    // boot after a restart is judged for its health only (see `heal`).
    let console = parse::first_boot(&all_console).to_vec();
    let lab = parse::parse_lab(raw.lab);
    let (all_events, bad_lines) = parse::parse_events(raw.events);
    let events: Vec<LabEvent> = all_events.iter().filter(|e| e.boot == 1).cloned().collect();
    let mut errors = Vec::new();

    let boot = lab.mark("BOOT");
    let guest_cpus = boot.and_then(|m| m.int("ncpu")).map(|n| n as u32);
    let inject = lab.mark("INJECT");
    let end = lab.mark_in(1, "END");
    if boot.is_none() {
        errors.push("guest never printed its BOOT marker (boot failed?)".into());
    }
    for m in lab.marks_tagged("ERROR") {
        errors.push(format!("guest error: {:?}", m.fields));
    }

    // printk µs → guest realtime ms, from the INJECT marker that was written to
    // both /dev/kmsg (stamped by printk) and the lab channel.
    let inject_kmsg = find_marker_on_console(&console, "INJECT");
    let to_real = |ts_us: u64| -> Option<i64> {
        let (k_us, m) = (inject_kmsg?, inject?);
        Some(m.real_ms + (ts_us as i64 - k_us as i64) / 1000)
    };
    let fault_line = scenario.class.and_then(|c| fault_start_line(&console, c));
    let fault_confirmed = fault_line.is_some();
    let fault_start_ms = fault_line.and_then(to_real).or(inject.map(|m| m.real_ms));
    let fault_start_us = fault_line.or(inject_kmsg);
    if let Some(class) = scenario.class {
        if class.is_kernel() && !fault_confirmed && inject.is_some() {
            errors.push(format!("lab_fault never confirmed that {class} started"));
        }
    }

    let selfheal = score_selfheal(scenario, &events, bad_lines, fault_start_ms, &lab);
    let reports = parse::kernel_reports(&console);
    let mut kernel = BTreeMap::new();
    let mut kernel_false_alarms = BTreeMap::new();
    for r in &reports {
        let name = r.detector.name().to_string();
        match (scenario.class, fault_start_us) {
            (Some(_), Some(start)) if r.ts_us >= start => {
                kernel.entry(name).or_insert_with(|| KernelHit {
                    latency_ms: (r.ts_us - start) as i64 / 1000,
                    line: r.line.clone(),
                });
            }
            (None, _) => *kernel_false_alarms.entry(name).or_insert(0) += 1,
            _ => {}
        }
    }

    let (mut outcome, mut outcome_note) =
        judge_outcome(scenario, raw.qemu_exit, &console, &lab, end.is_some());
    let boots = lab.boots();
    let mut restart = None;
    let mut restart_recorded = false;
    if boots > 1 {
        let h = heal::judge_restarted(&console, &events, &all_events, &lab);
        (outcome, outcome_note, restart, restart_recorded) =
            (h.outcome, h.note, Some(h.kind), h.recorded);
    }
    let downtime = heal::downtime(
        outcome,
        fault_start_ms,
        inject.map(|m| m.real_ms),
        &lab,
        &parse::parse_host_marks(raw.host_marks),
    );
    let other_cpu_lockup = match (scenario.class, fault_start_us) {
        (Some(c), Some(start)) => c
            .pinned_cpus(scenario.fault_cpu)
            .filter(|p| p.len() < guest_cpus.unwrap_or(2) as usize)
            .and_then(|p| other_cpu_lockup(&reports, &p, start)),
        _ => None,
    };
    if let Some(l) = &other_cpu_lockup {
        outcome_note.push_str(&format!(
            "; the kernel dated a lockup of CPU {} to {:.1} s after the fault ({})",
            l.cpu,
            l.onset_ms as f64 / 1000.0,
            l.line
        ));
    }
    let done = lab.mark("WORKLOAD_DONE");
    RunRecord {
        scenario: scenario.clone(),
        log_dir: log_dir.to_string(),
        host_ms: raw.host_ms,
        qemu_exit: raw.qemu_exit,
        booted: boot.is_some(),
        guest_cpus,
        fault_start_ms,
        fault_confirmed,
        selfheal,
        kernel,
        kernel_false_alarms,
        outcome,
        outcome_note,
        workload_ops: done.and_then(|m| m.int("ops")).map(|v| v as u64),
        workload_elapsed_ms: done.and_then(|m| m.int("elapsed_ms")).map(|v| v as u64),
        errors,
        boots,
        restart,
        restart_recorded,
        downtime_ms: downtime.map(|d| d.0),
        downtime_clock: downtime.map(|d| d.1.to_string()),
        vm: None,
        other_cpu_lockup,
    }
}

fn find_marker_on_console(console: &[KernelLine], tag: &str) -> Option<u64> {
    let needle = format!("LAB {tag} ");
    console
        .iter()
        .find(|l| l.text.starts_with(&needle))
        .map(|l| l.ts_us)
}

/// printk time of the module's "the fault is running now" line.
fn fault_start_line(console: &[KernelLine], class: FaultClass) -> Option<u64> {
    if !class.is_kernel() {
        return None;
    }
    let needle = match class {
        FaultClass::DState => "lab_fault: d_state holder".to_string(),
        c => format!("lab_fault: {} started", c.name()),
    };
    parse::find_kernel_line(console, &needle)
}

fn score_selfheal(
    scenario: &Scenario,
    events: &[LabEvent],
    bad_lines: usize,
    fault_start_ms: Option<i64>,
    lab: &LabLog,
) -> SelfhealResult {
    let mut r = SelfhealResult {
        events: events.len(),
        bad_lines,
        placeholder: events.iter().any(|e| e.source == "placeholder"),
        ..SelfhealResult::default()
    };
    r.cpu_pct = selfheal_cpu_pct(lab);
    let Some(class) = scenario.class else {
        r.false_alarms = events.iter().filter(|e| e.is_detection()).count();
        return r;
    };
    let Some(start) = fault_start_ms else {
        return r;
    };
    // A detection up to 50 ms "before" the start is the same fault: the module's
    // start line is stamped after the loop may already be running.
    // An event that names another CPU than the one a pinned fault occupies
    // is about something else (the workload, usually): not credited.
    let pinned = class.pinned_cpus(scenario.fault_cpu);
    let about_fault = |e: &&LabEvent| match (&pinned, e.culprit_cpu) {
        (Some(cpus), Some(c)) => cpus.iter().any(|&p| i64::from(p) == c),
        _ => true,
    };
    let after: Vec<&LabEvent> = events
        .iter()
        .filter(|e| e.time_unix_ms >= start - 50)
        .filter(about_fault)
        .collect();
    r.false_alarms = events
        .iter()
        .filter(|e| e.time_unix_ms < start - 50 && e.is_detection())
        .count();
    if let Some(e) = after.iter().find(|e| e.is_detection()) {
        r.detect_ms = Some((e.time_unix_ms - start).max(0));
        r.detect_by = Some(format!("{}:{}", e.kind, e.rule.as_deref().unwrap_or("-")));
    }
    if let Some(e) = after
        .iter()
        .find(|e| e.kind == "diagnosis" && e.class.as_deref() != Some("legitimate_load"))
        .or_else(|| after.iter().find(|e| e.kind == "diagnosis"))
    {
        r.diagnose_ms = Some((e.time_unix_ms - start).max(0));
        r.diagnosis = e.class.clone();
        r.diagnosed_correctly = Some(e.class.as_deref() == Some(class.expected_diagnosis()));
        let comm_ok = e
            .culprit_comm
            .as_deref()
            .is_some_and(|c| c.starts_with(class.culprit_comm()));
        let cpu_ok = class.is_kernel() && e.culprit_cpu == Some(i64::from(scenario.fault_cpu));
        r.culprit_correct = Some(comm_ok || cpu_ok);
        r.culprit = Some(format!(
            "{}[{}] cpu={}",
            e.culprit_comm.as_deref().unwrap_or("?"),
            e.culprit_pid.map_or("?".into(), |p| p.to_string()),
            e.culprit_cpu.map_or("?".into(), |c| c.to_string()),
        ));
    }
    // The recovery ladder reports each step (record, demote/stop/kill, …);
    // show the chain, and time the first step that says it cleared the hang.
    let steps: Vec<String> = after
        .iter()
        .filter(|e| e.kind == "recovery")
        .map(|e| {
            format!(
                "{}→{}",
                e.action.as_deref().unwrap_or("?"),
                e.outcome.as_deref().unwrap_or("?")
            )
        })
        .collect();
    if !steps.is_empty() {
        r.recovery = Some(steps.join(", "));
    }
    // `mitigated`: a runaway kernel thread moved out of the way; it still
    // spins, but the guest serves (its health is judged on its own).
    if let Some(e) = after.iter().find(|e| {
        e.kind == "recovery" && matches!(e.outcome.as_deref(), Some("recovered" | "mitigated"))
    }) {
        r.recover_ms = Some((e.time_unix_ms - start).max(0));
    }
    r
}

fn selfheal_cpu_pct(lab: &LabLog) -> Option<f64> {
    let start = lab.mark("SELFHEAL_START")?;
    let cpu = lab.mark("PROCCPU")?;
    let ticks = cpu.int("utime_ticks")? + cpu.int("stime_ticks")?;
    let hz = cpu.int("hz")?.max(1);
    // END follows PROCCPU at once and always carries its own clock.
    let until = lab.mark("END").map_or(cpu.real_ms, |e| e.real_ms);
    let wall_ms = until - start.real_ms;
    (wall_ms > 0).then(|| ticks as f64 * 1000.0 / hz as f64 / wall_ms as f64 * 100.0)
}

/// Heartbeat gaps this long in the final window mean a CPU is still starved;
/// after a fault, the guest serves again from the end of its last such gap.
pub(crate) const HEALTHY_MAX_GAP_MS: i64 = 500;
/// More processes than this over the pre-injection count is a symptom (fork bomb left over).
const MAX_EXTRA_PROCS: i64 = 50;
/// The final window over which the guest must look healthy.
pub(crate) const HEALTH_WINDOW_MS: i64 = 3000;

fn judge_outcome(
    scenario: &Scenario,
    exit: QemuExit,
    console: &[KernelLine],
    lab: &LabLog,
    ended: bool,
) -> (Outcome, String) {
    if let Some(panic) = parse::kernel_panicked(console) {
        return (Outcome::Rebooted, format!("kernel: {panic}"));
    }
    if !ended {
        return match exit {
            QemuExit::Exited => (
                Outcome::Rebooted,
                "guest reset before its END marker".into(),
            ),
            QemuExit::Killed => (
                Outcome::Hung,
                "no END marker before the host timeout".into(),
            ),
        };
    }
    let Some(class) = scenario.class else {
        return (Outcome::Healthy, "fault-free run".into());
    };
    let Some(end) = lab.mark_in(1, "END") else {
        return (Outcome::Hung, "END marker missing".into());
    };
    let mut problems = Vec::new();
    let ncpu = lab.mark("BOOT").and_then(|m| m.int("ncpu")).unwrap_or(1) as u32;
    for cpu in 0..ncpu {
        match lab.max_heartbeat_gap_ms(cpu, end.real_ms - HEALTH_WINDOW_MS, end.real_ms) {
            Some(gap) if gap <= HEALTHY_MAX_GAP_MS => {}
            Some(gap) => problems.push(format!("cpu{cpu} heartbeat gap {gap} ms")),
            None => problems.push(format!("cpu{cpu} heartbeat never seen")),
        }
    }
    let statuses: Vec<_> = lab.marks_tagged("STATUS").filter(|m| m.boot == 1).collect();
    // The fault's task may legitimately survive a recovery (a demoted RT hog
    // keeps running at normal priority), so it is reported, not judged: the
    // outcome rests on the symptoms a user would notice.
    let mut remarks = Vec::new();
    if let (Some(before), Some(after)) = (statuses.first(), statuses.last()) {
        let int = |m: &parse::Mark, k: &str| m.int(k).unwrap_or(0);
        if int(after, "faulty") > 0 {
            remarks.push(format!(
                "{} fault task(s) still present",
                int(after, "faulty")
            ));
        }
        if int(after, "dstate") > int(before, "dstate") {
            problems.push(format!("{} task(s) in D state", int(after, "dstate")));
        }
        if int(after, "procs") > int(before, "procs") + MAX_EXTRA_PROCS {
            problems.push(format!(
                "{} processes, {} before",
                int(after, "procs"),
                int(before, "procs")
            ));
        }
        if let (Some(b), Some(a)) = (before.int("memavail_kb"), after.int("memavail_kb")) {
            if a * 2 < b {
                problems.push(format!("MemAvailable {a} kB, was {b} kB"));
            }
        }
    } else {
        problems.push("status lines missing".into());
    }
    if problems.is_empty() {
        remarks.insert(0, format!("{class}: symptoms cleared, all CPUs beating"));
        (Outcome::Healthy, remarks.join("; "))
    } else {
        problems.extend(remarks);
        (Outcome::Degraded, problems.join("; "))
    }
}

mod heal;
#[cfg(test)]
mod tests;
pub mod vm;
