//! Grouping a report's records into one [`KernelReport`].
//!
//! A kernel report is many printk records: the verdict line, then lines
//! naming the CPU and task, registers, a call trace. The OOM killer even
//! names its victim's cgroup *before* the verdict line (`oom-kill:…` comes
//! just before `Killed process`). The [`Assembler`] keeps one report open,
//! folds the facts of its context lines into it, and closes it when the
//! next report starts, when it grows too long, or when no record has
//! arrived for a while (the follower calls [`Assembler::flush`]).

use serde::Serialize;

use selfheal_event::{Culprit, Event, EventKind, Severity, Source};

use crate::record::Record;
use crate::verdict::{classify, context_of, VerdictKind};

/// Most lines kept per report (the call trace beyond is dropped).
pub const MAX_LINES: usize = 40;

/// Records further than this (kernel time) from a report's start close it.
const REPORT_SPAN_US: u64 = 2_000_000;

/// One kernel verdict with everything its lines said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelReport {
    /// The detector.
    pub kind: VerdictKind,
    /// Sequence number of the first record.
    pub seq: u64,
    /// printk time of the first record, µs since boot.
    pub ts_us: u64,
    /// Syslog level of the verdict line.
    pub level: u8,
    /// The CPU the report is about.
    pub cpu: Option<u32>,
    /// The task the report is about (for OOM: the victim).
    pub pid: Option<i32>,
    /// Its command name.
    pub comm: Option<String>,
    /// Its cgroup, when the kernel named one (OOM: the victim's memory cgroup).
    pub cgroup: Option<String>,
    /// OOM: the constraint (`CONSTRAINT_MEMCG` for a memory cgroup's limit).
    pub oom_constraint: Option<String>,
    /// OOM: the memory cgroup whose limit was hit.
    pub oom_memcg: Option<String>,
    /// How long the kernel says it has been stuck, seconds.
    pub stuck_for_s: Option<u64>,
    /// The verdict line.
    pub headline: String,
    /// The report's lines, verdict first, at most [`MAX_LINES`].
    pub lines: Vec<String>,
    /// Wall-clock time of the first record, ms since the epoch, when known.
    pub wall_unix_ms: Option<i64>,
}

impl KernelReport {
    /// The store event: kind `kernel`, source `kmsg`, rule = the verdict name.
    pub fn to_event(&self) -> Event {
        let severity = match self.kind {
            VerdictKind::Warning | VerdictKind::RtThrottling | VerdictKind::ForkRejected => {
                Severity::Warning
            }
            _ => Severity::Critical,
        };
        let culprit = Culprit {
            pid: self.pid,
            comm: self.comm.clone(),
            cgroup: self.cgroup.clone(),
            cpu: self.cpu,
            ..Culprit::default()
        };
        let mut event = Event::now(
            EventKind::Kernel,
            severity,
            Source::Kmsg,
            format!("kernel: {}", self.headline),
        )
        .with_rule(self.kind.as_str());
        if let Some(ms) = self.wall_unix_ms {
            event.time_unix_ms = ms;
        }
        if !culprit.is_empty() {
            event = event.with_culprit(culprit);
        }
        event.with_details_of(&KernelDetails {
            verdict: self.kind.as_str(),
            seq: self.seq,
            kernel_ts_us: self.ts_us,
            level: self.level,
            stuck_for_s: self.stuck_for_s,
            oom_constraint: self.oom_constraint.as_deref(),
            oom_memcg: self.oom_memcg.as_deref(),
            lines: &self.lines,
        })
    }
}

/// `details` of a kernel-verdict event (kind `kernel`): what the store,
/// `/api/events` and the lab read. Unknown values are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelDetails<'a> {
    /// Which kernel detector spoke (`soft_lockup`, `hung_task`, …).
    pub verdict: &'static str,
    /// Sequence number of the report's first record.
    pub seq: u64,
    /// Its kernel timestamp, µs since boot.
    pub kernel_ts_us: u64,
    /// Its syslog level.
    pub level: u8,
    /// How long the kernel said the task or CPU was stuck, s.
    pub stuck_for_s: Option<u64>,
    /// The OOM killer's constraint (`CONSTRAINT_MEMCG`, …).
    pub oom_constraint: Option<&'a str>,
    /// The memory cgroup the OOM killer acted in.
    pub oom_memcg: Option<&'a str>,
    /// The report's lines.
    pub lines: &'a [String],
}

/// Folds records into reports.
#[derive(Debug, Default)]
pub struct Assembler {
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    report: KernelReport,
    /// An OOM report opened by `invoked oom-killer` waits for `Killed process`.
    awaiting_victim: bool,
}

impl Assembler {
    /// An assembler with no open report.
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// Adds one record; returns the reports it completed (usually none or one).
    /// Records not written by the kernel are ignored.
    pub fn push(&mut self, rec: &Record) -> Vec<KernelReport> {
        let mut done = Vec::new();
        if !rec.is_kernel() {
            return done;
        }
        if let Some(open) = &self.open {
            if rec.ts_us.saturating_sub(open.report.ts_us) > REPORT_SPAN_US {
                done.extend(self.flush());
            }
        }
        if let Some(v) = classify(&rec.text) {
            let kind = v.kind.unwrap_or(VerdictKind::Bug);
            // `Killed process` completes the OOM report `invoked oom-killer` opened.
            if let Some(open) = &mut self.open {
                if open.awaiting_victim && kind == VerdictKind::OomKill && !v.opens_oom {
                    open.report.pid = v.pid.or(open.report.pid);
                    open.report.comm = v.comm.or(open.report.comm.take());
                    open.report.headline = rec.text.clone();
                    add_line(&mut open.report, &rec.text);
                    open.awaiting_victim = false;
                    done.extend(self.flush());
                    return done;
                }
            }
            done.extend(self.flush());
            let report = KernelReport {
                kind,
                seq: rec.seq,
                ts_us: rec.ts_us,
                level: rec.level,
                cpu: v.cpu,
                pid: v.pid,
                comm: v.comm,
                cgroup: v.cgroup,
                oom_constraint: None,
                oom_memcg: None,
                stuck_for_s: v.stuck_for_s,
                headline: rec.text.clone(),
                lines: vec![rec.text.clone()],
                wall_unix_ms: None,
            };
            // A lone `Killed process` line, a fork rejection or RT throttling
            // have nothing more to come.
            let complete = matches!(
                kind,
                VerdictKind::OomKill | VerdictKind::ForkRejected | VerdictKind::RtThrottling
            ) && !v.opens_oom;
            if complete {
                done.push(report);
            } else {
                self.open = Some(Open {
                    report,
                    awaiting_victim: v.opens_oom,
                });
            }
            return done;
        }
        if let Some(open) = &mut self.open {
            add_line(&mut open.report, &rec.text);
            if let Some(ctx) = context_of(&rec.text) {
                let r = &mut open.report;
                let oom = open.awaiting_victim;
                // For OOM the `oom-kill:` line names the victim: it wins over
                // the allocating task named on the `CPU:` line.
                if oom && ctx.oom_constraint.is_some() {
                    r.pid = ctx.pid.or(r.pid);
                    r.comm = ctx.comm.or(r.comm.take());
                    r.cgroup = ctx.cgroup.or(r.cgroup.take());
                    r.oom_constraint = ctx.oom_constraint;
                    r.oom_memcg = ctx.oom_memcg;
                } else if !oom {
                    // A backtrace of another CPU (the detecting one) must not
                    // rename the stalled CPU's task.
                    let same_cpu = match (r.cpu, ctx.cpu) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    };
                    if same_cpu {
                        r.cpu = r.cpu.or(ctx.cpu);
                        if r.pid.is_none() {
                            r.pid = ctx.pid;
                        }
                        if r.comm.is_none() {
                            r.comm = ctx.comm;
                        }
                    }
                }
            }
            if open.report.lines.len() >= MAX_LINES && !open.awaiting_victim {
                done.extend(self.flush());
            }
        }
        done
    }

    /// Closes the open report, if any.
    pub fn flush(&mut self) -> Option<KernelReport> {
        self.open.take().map(|o| o.report)
    }

    /// True while a report is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }
}

fn add_line(r: &mut KernelReport, text: &str) {
    if r.lines.len() < MAX_LINES {
        r.lines.push(text.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_record, split_records};

    const LAB: &str = include_str!("../tests/fixtures/lab-guest-6.1-console.txt");
    const HOST: &str = include_str!("../tests/fixtures/host-6.18-kmsg.txt");

    /// Console lines of one lab case as kernel records.
    fn lab_records(case: &str) -> Vec<Record> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in LAB.lines() {
            if let Some(name) = line.strip_prefix("# --- ") {
                inside = name.starts_with(case);
                continue;
            }
            let Some((ts, text)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
                continue;
            };
            if !inside {
                continue;
            }
            let (s, us) = ts.trim().split_once('.').unwrap();
            out.push(Record {
                level: 4,
                facility: 0,
                seq: out.len() as u64,
                ts_us: s.parse::<u64>().unwrap() * 1_000_000 + us.parse::<u64>().unwrap(),
                continuation: false,
                text: text.to_string(),
                dict: Vec::new(),
            });
        }
        out
    }

    fn assemble(records: &[Record]) -> Vec<KernelReport> {
        let mut a = Assembler::new();
        let mut out: Vec<KernelReport> = records.iter().flat_map(|r| a.push(r)).collect();
        out.extend(a.flush());
        out
    }

    #[test]
    fn rcu_stall_report_names_the_stalled_cpu_and_its_task() {
        let reports = assemble(&lab_records("irq_loop"));
        let rcu = reports
            .iter()
            .find(|r| r.kind == VerdictKind::RcuStall)
            .unwrap();
        assert_eq!(rcu.cpu, Some(1));
        assert_eq!(rcu.comm.as_deref(), Some("lab_irq_loop/1"));
        assert_eq!(rcu.pid, Some(118));
        assert!(rcu.lines.len() > 3 && rcu.lines.len() <= MAX_LINES);
        // The later soft lockup of CPU 0 (poweroff waiting for CPU 1) is its own report.
        let soft = reports
            .iter()
            .find(|r| r.kind == VerdictKind::SoftLockup)
            .unwrap();
        assert_eq!(
            (soft.cpu, soft.comm.as_deref()),
            (Some(0), Some("poweroff"))
        );
    }

    #[test]
    fn hung_task_reports_one_per_task() {
        let reports = assemble(&lab_records("d_state"));
        let hung: Vec<&KernelReport> = reports
            .iter()
            .filter(|r| r.kind == VerdictKind::HungTask)
            .collect();
        assert!(hung.len() >= 3);
        assert_eq!(hung[0].comm.as_deref(), Some("lab_dholder"));
        assert_eq!(hung[1].comm.as_deref(), Some("lab_dwaiter"));
        assert_eq!(hung[1].pid, Some(713));
        let ev = hung[0].to_event();
        assert_eq!(ev.kind, EventKind::Kernel);
        assert_eq!(ev.rule.as_deref(), Some("hung_task"));
        assert_eq!(ev.culprit.as_ref().unwrap().pid, Some(680));
        assert_eq!(ev.details["stuck_for_s"], 1);
    }

    #[test]
    fn memcg_oom_report_names_victim_and_cgroup() {
        let records: Vec<Record> = split_records(HOST)
            .into_iter()
            .filter_map(parse_record)
            .collect();
        let reports = assemble(&records);
        let oom: Vec<&KernelReport> = reports
            .iter()
            .filter(|r| r.kind == VerdictKind::OomKill)
            .collect();
        assert!(!oom.is_empty());
        let first = oom[0];
        assert_eq!(first.pid, Some(27202));
        assert_eq!(first.comm.as_deref(), Some("tail"));
        assert_eq!(
            first.cgroup.as_deref(),
            Some("/selfheal-sandbox/memhog-27069-4")
        );
        assert!(first
            .headline
            .starts_with("Memory cgroup out of memory: Killed process 27202"));
        assert_eq!(first.oom_constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(
            first.oom_memcg.as_deref(),
            Some("/selfheal-sandbox/memhog-27069-4")
        );
        let forks = reports
            .iter()
            .filter(|r| r.kind == VerdictKind::ForkRejected)
            .count();
        assert!(forks >= 5, "{forks}");
        let ev = first.to_event();
        assert_eq!(ev.severity, Severity::Critical);
        assert_eq!(
            ev.culprit.unwrap().cgroup.as_deref(),
            Some("/selfheal-sandbox/memhog-27069-4")
        );
    }

    #[test]
    fn global_oom_victim_is_not_the_allocating_task() {
        let reports = assemble(&lab_records("kmem_leak"));
        let oom = reports
            .iter()
            .find(|r| r.kind == VerdictKind::OomKill)
            .unwrap();
        // lab_kmem_leak invoked the killer; `sleep` was killed.
        assert_eq!((oom.pid, oom.comm.as_deref()), (Some(120), Some("sleep")));
        assert_eq!(oom.cgroup.as_deref(), Some("/"));
        assert!(reports.iter().any(|r| r.kind == VerdictKind::Panic));
    }

    #[test]
    fn user_records_are_ignored_and_reports_close_by_time() {
        let mut a = Assembler::new();
        let fake =
            parse_record("12,1,10,-;watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [x:1]")
                .unwrap();
        assert!(a.push(&fake).is_empty() && !a.is_open());
        let real = Record {
            facility: 0,
            ..fake.clone()
        };
        assert!(a.push(&real).is_empty() && a.is_open());
        let later = Record {
            facility: 0,
            ts_us: 10 + 3_000_000,
            text: "random: crng init done".into(),
            ..fake
        };
        let done = a.push(&later);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].kind, VerdictKind::SoftLockup);
        assert_eq!(done[0].lines.len(), 1);
    }

    /// The kernel event carries exactly the document the old `json!`
    /// literal built, unknown values as `null`.
    #[test]
    fn kernel_details_match_the_documented_json() {
        let r = KernelReport {
            kind: VerdictKind::SoftLockup,
            seq: 17,
            ts_us: 12_300_000,
            level: 0,
            cpu: Some(1),
            pid: None,
            comm: None,
            cgroup: None,
            oom_constraint: None,
            oom_memcg: Some("/a".into()),
            stuck_for_s: Some(22),
            headline: "watchdog: BUG: soft lockup - CPU#1 stuck for 22s!".into(),
            lines: vec!["watchdog: BUG: soft lockup - CPU#1 stuck for 22s!".into()],
            wall_unix_ms: None,
        };
        assert_eq!(
            r.to_event().details,
            serde_json::json!({
                "verdict": "soft_lockup",
                "seq": 17,
                "kernel_ts_us": 12_300_000,
                "level": 0,
                "stuck_for_s": 22,
                "oom_constraint": null,
                "oom_memcg": "/a",
                "lines": ["watchdog: BUG: soft lockup - CPU#1 stuck for 22s!"],
            })
        );
    }
}
