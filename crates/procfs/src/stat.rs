//! /proc/stat: CPU times, context switches, interrupts, forks, run queue.

use crate::num::{fields, lines, parse_u64};

/// Cumulative CPU time of one CPU (or all), in USER_HZ ticks as the kernel
/// reports them. Fields after `irq` are missing on very old kernels and read
/// as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Time in user mode.
    pub user: u64,
    /// Time in user mode at low priority (nice).
    pub nice: u64,
    /// Time in kernel mode.
    pub system: u64,
    /// Idle time.
    pub idle: u64,
    /// Idle while I/O was outstanding.
    pub iowait: u64,
    /// Servicing hardware interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl CpuTicks {
    /// Sum of every field (guest time is already included in user/nice).
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// Everything selfheal takes from /proc/stat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatCounters {
    /// The aggregate `cpu` line.
    pub total: CpuTicks,
    /// One entry per configured CPU, indexed by CPU number; sized once.
    pub cpus: Vec<CpuTicks>,
    /// Whether each CPU had a line this time (offline CPUs have none).
    pub cpu_present: Vec<bool>,
    /// Total context switches since boot (`ctxt`).
    pub context_switches: u64,
    /// Total interrupts serviced since boot (first number of `intr`).
    pub interrupts: u64,
    /// Forks since boot (`processes`).
    pub forks: u64,
    /// Tasks currently runnable (`procs_running`).
    pub procs_running: u64,
    /// Tasks currently blocked on I/O (`procs_blocked`).
    pub procs_blocked: u64,
}

impl StatCounters {
    /// Counters with room for `cpus` CPUs, so parsing never allocates.
    pub fn with_cpus(cpus: usize) -> StatCounters {
        StatCounters {
            cpus: vec![CpuTicks::default(); cpus],
            cpu_present: vec![false; cpus],
            ..StatCounters::default()
        }
    }
}

impl StatCounters {
    /// Copies `other` into `self` without allocating when both were made
    /// for the same number of CPUs (derived `clone_from` reallocates).
    pub fn copy_from(&mut self, other: &StatCounters) {
        if self.cpus.len() != other.cpus.len() || self.cpu_present.len() != other.cpu_present.len()
        {
            *self = other.clone();
            return;
        }
        self.total = other.total;
        self.cpus.copy_from_slice(&other.cpus);
        self.cpu_present.copy_from_slice(&other.cpu_present);
        self.context_switches = other.context_switches;
        self.interrupts = other.interrupts;
        self.forks = other.forks;
        self.procs_running = other.procs_running;
        self.procs_blocked = other.procs_blocked;
    }
}

fn parse_ticks(rest: &mut dyn Iterator<Item = &[u8]>) -> CpuTicks {
    let mut v = [0u64; 8];
    for slot in v.iter_mut() {
        match rest.next().and_then(parse_u64) {
            Some(n) => *slot = n,
            None => break,
        }
    }
    CpuTicks {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        irq: v[5],
        softirq: v[6],
        steal: v[7],
    }
}

/// Parses /proc/stat text into `out`, which must have been made with
/// [`StatCounters::with_cpus`]. CPUs beyond its capacity are ignored (they
/// were not present at start-up). Returns false when no `cpu` line was found.
pub fn parse_stat(buf: &[u8], out: &mut StatCounters) -> bool {
    let mut saw_total = false;
    out.cpu_present.iter_mut().for_each(|p| *p = false);
    for line in lines(buf) {
        let mut it = fields(line);
        let Some(key) = it.next() else { continue };
        match key {
            b"cpu" => {
                out.total = parse_ticks(&mut it);
                saw_total = true;
            }
            k if k.starts_with(b"cpu") => {
                if let Some(idx) = parse_u64(&k[3..]) {
                    let idx = idx as usize;
                    if idx < out.cpus.len() {
                        out.cpus[idx] = parse_ticks(&mut it);
                        out.cpu_present[idx] = true;
                    }
                }
            }
            b"ctxt" => out.context_switches = it.next().and_then(parse_u64).unwrap_or(0),
            b"intr" => out.interrupts = it.next().and_then(parse_u64).unwrap_or(0),
            b"processes" => out.forks = it.next().and_then(parse_u64).unwrap_or(0),
            b"procs_running" => out.procs_running = it.next().and_then(parse_u64).unwrap_or(0),
            b"procs_blocked" => out.procs_blocked = it.next().and_then(parse_u64).unwrap_or(0),
            _ => {}
        }
    }
    saw_total
}

/// Highest CPU index named in /proc/stat, plus one (0 when none).
pub fn count_cpu_lines(buf: &[u8]) -> usize {
    let mut n = 0;
    for line in lines(buf) {
        if line.starts_with(b"cpu") && line.len() > 3 && line[3].is_ascii_digit() {
            if let Some(idx) = parse_u64(&line[3..]) {
                n = n.max(idx as usize + 1);
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &[u8] = include_bytes!("../tests/fixtures/host-6.18-2cpu/stat");
    const FOUR_OFFLINE: &[u8] = include_bytes!("../tests/fixtures/synthetic-4cpu-offline/stat");

    #[test]
    fn parses_captured_host() {
        let mut c = StatCounters::with_cpus(count_cpu_lines(HOST));
        assert!(parse_stat(HOST, &mut c));
        assert_eq!(c.cpus.len(), 2);
        assert!(c.cpu_present.iter().all(|p| *p));
        assert!(c.total.total() > 0);
        // The aggregate line is the sum of the per-CPU lines, give or take
        // rounding in the kernel's conversion.
        let sum: u64 = c.cpus.iter().map(|t| t.total()).sum();
        assert!(
            c.total.total().abs_diff(sum) <= 4,
            "{} vs {sum}",
            c.total.total()
        );
        assert!(c.context_switches > 0 && c.interrupts > 0 && c.forks > 0);
        assert!(c.procs_running >= 1);
    }

    #[test]
    fn offline_cpu_has_no_line() {
        assert_eq!(count_cpu_lines(FOUR_OFFLINE), 4);
        let mut c = StatCounters::with_cpus(4);
        assert!(parse_stat(FOUR_OFFLINE, &mut c));
        assert_eq!(c.cpu_present, vec![true, true, false, true]);
        assert_eq!(c.cpus[3].steal, 812);
        assert_eq!(c.procs_blocked, 3);
    }

    #[test]
    fn old_kernel_short_lines_and_extra_cpus() {
        let text = b"cpu 10 0 5 100\ncpu0 10 0 5 100\ncpu7 1 1 1 1\nctxt 5\n";
        let mut c = StatCounters::with_cpus(1);
        assert!(parse_stat(text, &mut c));
        assert_eq!(c.total.steal, 0);
        assert_eq!(c.cpus[0].idle, 100);
        assert_eq!(c.context_switches, 5);
        assert!(!parse_stat(b"garbage\n", &mut c));
    }
}
