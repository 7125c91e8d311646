//! Computing a [`Sample`] from two consecutive reads of the /proc counters.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use selfheal_procfs::diskstats::{DevName, DiskCounters};
use selfheal_procfs::stat::CpuTicks;
use selfheal_procfs::system::{Features, ReaderOptions, SystemCounters, SystemReader, MAX_DISKS};
use selfheal_procfs::vmstat::VmStat;
use selfheal_procfs::ProcError;

use crate::metric::{CpuMetric, DiskMetric, SystemMetric};

/// The sampler could not start or read.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// A required /proc file is missing or malformed.
    #[error("sampling /proc failed: {0}")]
    Proc(#[from] ProcError),
}

/// One sample: every metric's value over the interval since the previous
/// sample. Sized once by [`Sampler::new_sample`]; filling it never allocates.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sequence number, starting at 1 for the first computed sample.
    pub seq: u64,
    /// Monotonic time at which the counters were read.
    pub taken_at: Instant,
    /// Wall-clock time of the read, milliseconds since the Unix epoch.
    pub wall_unix_ms: i64,
    /// Time since the previous read: the interval rates are computed over.
    pub interval: Duration,
    /// Machine-wide values, indexed by [`SystemMetric::index`].
    pub system: [f64; SystemMetric::COUNT],
    /// Per-CPU values, indexed by CPU then [`CpuMetric::index`]. `NaN` for
    /// CPUs that are offline.
    pub cpus: Vec<[f64; CpuMetric::COUNT]>,
    /// Per-disk values, indexed like [`Sample::disk_names`].
    pub disks: Vec<[f64; DiskMetric::COUNT]>,
    /// Tracked block devices.
    pub disk_names: Vec<DevName>,
    /// False after an idle read (see [`Sampler::sample`]): the CPU values
    /// are what /proc/uptime proved, not /proc/stat's shares.
    pub stat_read: bool,
}

impl Sample {
    /// An empty sample with room for `cpus` CPUs and [`MAX_DISKS`] disks.
    pub fn with_cpus(cpus: usize) -> Sample {
        Sample {
            seq: 0,
            taken_at: Instant::now(),
            wall_unix_ms: 0,
            interval: Duration::ZERO,
            system: [f64::NAN; SystemMetric::COUNT],
            cpus: vec![[f64::NAN; CpuMetric::COUNT]; cpus],
            disks: Vec::with_capacity(MAX_DISKS),
            disk_names: Vec::with_capacity(MAX_DISKS),
            stat_read: true,
        }
    }

    /// A machine-wide value.
    pub fn system(&self, m: SystemMetric) -> f64 {
        self.system[m.index()]
    }

    /// A per-CPU value (`NaN` for unknown CPUs).
    pub fn cpu(&self, cpu: usize, m: CpuMetric) -> f64 {
        self.cpus.get(cpu).map_or(f64::NAN, |v| v[m.index()])
    }

    /// A per-disk value.
    pub fn disk(&self, disk: usize, m: DiskMetric) -> f64 {
        self.disks.get(disk).map_or(f64::NAN, |v| v[m.index()])
    }
}

/// Reads /proc and turns counters into [`Sample`]s.
#[derive(Debug)]
pub struct Sampler {
    reader: SystemReader,
    prev: SystemCounters,
    cur: SystemCounters,
    seq: u64,
    ticks_per_second: f64,
    /// The slow sources (vmstat, PSI) at their last refresh, and when.
    slow_prev: SlowState,
    /// Slow metrics as last computed, carried into every sample until the
    /// next refresh.
    slow_values: [f64; SLOW_METRICS.len()],
    /// Disk counters at their last refresh, and when (the reader skips the
    /// disks on quiet reads: rates are over the time between refreshes).
    disk_base: Vec<DiskCounters>,
    disk_base_at: Instant,
    /// Disk metrics as last computed, carried until the next refresh.
    disk_values: Vec<[f64; DiskMetric::COUNT]>,
    disk_names: Vec<DevName>,
    /// When the previous sample was read (idle or not).
    last_taken_at: Instant,
    /// Time covered by idle reads since `prev` (the last /proc/stat read).
    idle_span: Duration,
    /// Recent MemAvailable readings, for how fast it falls.
    mem_trend: MemTrend,
}

/// The last [`MemTrend::SLOTS`] fresh MemAvailable readings. The fall rate
/// is taken against the oldest reading at most [`MemTrend::WINDOW`] old
/// and at least [`MemTrend::MIN_SPAN`] old: one 100 ms step of a busy
/// machine's page cache is noise, a second of steady fall is a trend.
#[derive(Debug, Clone)]
struct MemTrend {
    readings: [Option<(Instant, u64)>; MemTrend::SLOTS],
    next: usize,
}

impl MemTrend {
    const SLOTS: usize = 32;
    const WINDOW: Duration = Duration::from_millis(1500);
    const MIN_SPAN: Duration = Duration::from_millis(500);

    fn new() -> MemTrend {
        MemTrend {
            readings: [None; MemTrend::SLOTS],
            next: 0,
        }
    }

    /// Records a fresh reading and returns the seconds until MemAvailable
    /// reaches zero at the rate it fell since the reference reading; NaN
    /// while it is not falling or the readings span too little time.
    fn push(&mut self, at: Instant, available: u64) -> f64 {
        let reference = self
            .readings
            .iter()
            .flatten()
            .filter(|(t, _)| {
                let age = at.saturating_duration_since(*t);
                age >= MemTrend::MIN_SPAN && age <= MemTrend::WINDOW
            })
            .min_by_key(|(t, _)| *t)
            .copied();
        self.readings[self.next] = Some((at, available));
        self.next = (self.next + 1) % MemTrend::SLOTS;
        let Some((then, before)) = reference else {
            return f64::NAN;
        };
        let secs = at.saturating_duration_since(then).as_secs_f64();
        if before <= available || secs <= 0.0 {
            return f64::NAN;
        }
        let rate = (before - available) as f64 / secs;
        available as f64 / rate
    }
}

/// Metrics computed from the slow sources.
const SLOW_METRICS: [SystemMetric; 10] = [
    SystemMetric::SwapOutPagesPerSecond,
    SystemMetric::SwapInPagesPerSecond,
    SystemMetric::MajorFaultsPerSecond,
    SystemMetric::OomKillsPerSecond,
    SystemMetric::PsiCpuSomeAvg10,
    SystemMetric::PsiCpuFullAvg10,
    SystemMetric::PsiMemorySomeAvg10,
    SystemMetric::PsiMemoryFullAvg10,
    SystemMetric::PsiIoSomeAvg10,
    SystemMetric::PsiIoFullAvg10,
];

#[derive(Debug, Clone, Copy)]
struct SlowState {
    vm: VmStat,
    at: Instant,
}

impl Sampler {
    /// Opens the /proc files under `root` and takes a baseline read.
    pub fn new(root: impl AsRef<Path>) -> Result<Sampler, SamplerError> {
        Sampler::from_reader(SystemReader::new(root)?)
    }

    /// Opens /proc under `root` with explicit reader options.
    pub fn with_options(
        root: impl AsRef<Path>,
        options: ReaderOptions,
    ) -> Result<Sampler, SamplerError> {
        Sampler::from_reader(SystemReader::with_options(root, options)?)
    }

    fn from_reader(mut reader: SystemReader) -> Result<Sampler, SamplerError> {
        let mut prev = reader.new_counters();
        // The first read refreshes everything: it is the baseline for rates.
        reader.read(&mut prev)?;
        let cur = prev.clone();
        let mut disk_base = Vec::with_capacity(MAX_DISKS);
        disk_base.extend_from_slice(&prev.disks);
        Ok(Sampler {
            disk_base,
            disk_base_at: prev.taken_at,
            disk_values: Vec::with_capacity(MAX_DISKS),
            disk_names: Vec::with_capacity(MAX_DISKS),
            last_taken_at: prev.taken_at,
            idle_span: Duration::ZERO,
            mem_trend: MemTrend::new(),
            reader,
            slow_prev: SlowState {
                vm: prev.vm,
                at: prev.taken_at,
            },
            prev,
            cur,
            seq: 0,
            ticks_per_second: selfheal_sys::sched::clock_ticks_per_second() as f64,
            slow_values: [f64::NAN; SLOW_METRICS.len()],
        })
    }

    /// Number of CPU slots in each sample.
    pub fn cpus(&self) -> usize {
        self.reader.cpus()
    }

    /// Optional sources this kernel offers.
    pub fn features(&self) -> Features {
        self.reader.features()
    }

    /// Notes about degraded sources, to log once at start-up.
    pub fn notes(&self) -> &[String] {
        self.reader.notes()
    }

    /// A sample sized for this machine.
    pub fn new_sample(&self) -> Sample {
        Sample::with_cpus(self.cpus())
    }

    /// Takes /proc/stat on every sample from now on: no idle reads (see
    /// [`Sampler::sample`]), every sample carries /proc/stat's shares.
    pub fn disable_idle_reads(&mut self) {
        self.reader.disable_idle_reads();
    }

    /// Reads that took /proc/uptime instead of /proc/stat so far (see
    /// [`Sampler::sample`]).
    pub fn idle_reads(&self) -> u64 {
        self.reader.idle_reads()
    }

    /// Reads the counters and fills `out` with values over the interval since
    /// the previous call (or since construction). Allocation-free.
    ///
    /// After an *idle* read (the reader took only /proc/uptime, see
    /// `SystemReader::read`) each CPU's idle share is the lower bound
    /// uptime proves (at least 70 % over a 100 ms interval), the machine's
    /// its measured idle share; user, system, I/O wait, steal, accounting
    /// and the event rates are `NaN` (not read), the run queue, blocked
    /// tasks, memory and disks repeat the last read. The next read of
    /// /proc/stat charges the idle reads' span to idle on every CPU: its
    /// shares cover its own interval, and what little the CPUs did during
    /// the idle reads counts as done in it (busy-biased, never diluted),
    /// so a CPU turning busy is seen in the same sample as with every
    /// read taking /proc/stat.
    pub fn sample(&mut self, out: &mut Sample) -> Result<(), SamplerError> {
        self.reader.read(&mut self.cur)?;
        self.seq += 1;
        if !self.cur.stat_fresh {
            compute_idle_read(&self.cur, self.last_taken_at, out);
            self.idle_span += self
                .cur
                .taken_at
                .saturating_duration_since(self.last_taken_at);
            self.last_taken_at = self.cur.taken_at;
            self.finish(out);
            // `prev` stays the last /proc/stat read.
            return Ok(());
        }
        compute(
            &self.prev,
            &self.cur,
            self.ticks_per_second,
            self.idle_span,
            out,
        );
        self.idle_span = Duration::ZERO;
        self.last_taken_at = self.cur.taken_at;
        self.finish(out);
        std::mem::swap(&mut self.prev, &mut self.cur);
        Ok(())
    }

    /// Disks, slow metrics and stamps, the same after any read.
    fn finish(&mut self, out: &mut Sample) {
        if self.cur.mem_fresh {
            compute_disks(
                &self.disk_base,
                self.disk_base_at,
                &self.cur,
                &mut self.disk_values,
                &mut self.disk_names,
            );
            self.disk_base.clear();
            self.disk_base.extend_from_slice(&self.cur.disks);
            self.disk_base_at = self.cur.taken_at;
        }
        out.disks.clear();
        out.disks.extend_from_slice(&self.disk_values);
        out.disk_names.clear();
        out.disk_names.extend_from_slice(&self.disk_names);
        if self.cur.slow_fresh {
            compute_slow(&self.slow_prev, &self.cur, &mut self.slow_values);
            self.slow_prev = SlowState {
                vm: self.cur.vm,
                at: self.cur.taken_at,
            };
        }
        for (m, v) in SLOW_METRICS.iter().zip(self.slow_values) {
            out.system[m.index()] = v;
        }
        // Only a fresh read of /proc/meminfo says where memory is going;
        // a quiet read (memory cannot be running out) carries no trend.
        out.system[SystemMetric::MemExhaustionSeconds.index()] = match self.cur.mem_fresh {
            true => {
                let m = &self.cur.mem;
                let available = m.available_bytes.unwrap_or(m.free_bytes + m.cached_bytes);
                self.mem_trend.push(self.cur.taken_at, available)
            }
            false => f64::NAN,
        };
        out.seq = self.seq;
        out.wall_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    }
}

/// Per-second rate of a cumulative counter; a counter that went backwards
/// (reset, wrap) yields 0 rather than a huge bogus number.
fn rate(prev: u64, cur: u64, secs: f64) -> f64 {
    if secs <= 0.0 || cur < prev {
        0.0
    } else {
        (cur - prev) as f64 / secs
    }
}

/// Percentages of one CPU's time over the interval:
/// (user, system, iowait, steal, idle, total ticks). `idle_skip` ticks of
/// idle time are left out (the span of idle reads before the interval).
fn cpu_shares(prev: &CpuTicks, cur: &CpuTicks, idle_skip: f64) -> Option<[f64; 6]> {
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let user = d(prev.user, cur.user) + d(prev.nice, cur.nice);
    let system = d(prev.system, cur.system) + d(prev.irq, cur.irq) + d(prev.softirq, cur.softirq);
    let iowait = d(prev.iowait, cur.iowait);
    let steal = d(prev.steal, cur.steal);
    let idle = (d(prev.idle, cur.idle) - idle_skip).max(0.0);
    let total = user + system + iowait + steal + idle;
    if total <= 0.0 {
        return None;
    }
    let pct = |x: f64| 100.0 * x / total;
    Some([
        pct(user),
        pct(system),
        pct(iowait),
        pct(steal),
        pct(idle),
        total,
    ])
}

/// The one place rates and shares are computed: from (previous, current,
/// elapsed). `idle_span` is the time idle reads covered since `prev`: CPU
/// shares leave it out as idle time, rates are over the whole span.
fn compute(
    prev: &SystemCounters,
    cur: &SystemCounters,
    ticks_per_second: f64,
    idle_span: Duration,
    out: &mut Sample,
) {
    let elapsed = cur.taken_at.saturating_duration_since(prev.taken_at);
    let secs = elapsed.as_secs_f64();
    let interval = elapsed.saturating_sub(idle_span);
    let skip_ticks = idle_span.as_secs_f64() * ticks_per_second;
    out.taken_at = cur.taken_at;
    out.interval = interval;
    out.stat_read = true;
    let s = &mut out.system;
    s.iter_mut().for_each(|v| *v = f64::NAN);

    let was_online = prev.stat.cpu_present.iter().filter(|p| **p).count() as f64;
    if let Some([u, sy, io, st, id, _]) =
        cpu_shares(&prev.stat.total, &cur.stat.total, skip_ticks * was_online)
    {
        s[SystemMetric::UserPercent.index()] = u;
        s[SystemMetric::SystemPercent.index()] = sy;
        s[SystemMetric::IowaitPercent.index()] = io;
        s[SystemMetric::StealPercent.index()] = st;
        s[SystemMetric::IdlePercent.index()] = id;
    }

    let mut online = 0usize;
    for (i, slot) in out.cpus.iter_mut().enumerate() {
        slot.iter_mut().for_each(|v| *v = f64::NAN);
        let (Some(p), Some(c)) = (prev.stat.cpus.get(i), cur.stat.cpus.get(i)) else {
            continue;
        };
        if !cur.stat.cpu_present[i] {
            continue;
        }
        online += 1;
        let expected_ticks = interval.as_secs_f64() * ticks_per_second;
        let skip = if prev.stat.cpu_present.get(i).copied().unwrap_or(false) {
            skip_ticks
        } else {
            0.0
        };
        match cpu_shares(p, c, skip) {
            Some([u, sy, io, st, id, total]) => {
                slot[CpuMetric::UserPercent.index()] = u;
                slot[CpuMetric::SystemPercent.index()] = sy;
                slot[CpuMetric::IowaitPercent.index()] = io;
                slot[CpuMetric::StealPercent.index()] = st;
                slot[CpuMetric::IdlePercent.index()] = id;
                if expected_ticks > 0.0 {
                    slot[CpuMetric::AccountedPercent.index()] = 100.0 * total / expected_ticks;
                }
            }
            // No tick accounted at all over the interval: the CPU's
            // accounting stopped (or the interval was shorter than a tick).
            None if expected_ticks >= 2.0 => slot[CpuMetric::AccountedPercent.index()] = 0.0,
            None => {}
        }
    }
    let online_f = online.max(1) as f64;
    s[SystemMetric::OnlineCpus.index()] = online as f64;

    let st = (&prev.stat, &cur.stat);
    s[SystemMetric::ContextSwitchesPerSecond.index()] =
        rate(st.0.context_switches, st.1.context_switches, secs);
    s[SystemMetric::InterruptsPerSecond.index()] = rate(st.0.interrupts, st.1.interrupts, secs);
    s[SystemMetric::ForksPerSecond.index()] = rate(st.0.forks, st.1.forks, secs);
    s[SystemMetric::RunnableTasks.index()] = st.1.procs_running as f64;
    s[SystemMetric::RunnableTasksPerCpu.index()] = st.1.procs_running as f64 / online_f;
    s[SystemMetric::BlockedTasks.index()] = st.1.procs_blocked as f64;
    s[SystemMetric::BlockedTasksPerCpu.index()] = st.1.procs_blocked as f64 / online_f;

    memory_metrics(cur, s);
}

fn memory_metrics(cur: &SystemCounters, s: &mut [f64; SystemMetric::COUNT]) {
    let m = &cur.mem;
    let available = m.available_bytes.unwrap_or(m.free_bytes + m.cached_bytes);
    s[SystemMetric::MemTotalBytes.index()] = m.total_bytes as f64;
    s[SystemMetric::MemFreeBytes.index()] = m.free_bytes as f64;
    s[SystemMetric::MemAvailableBytes.index()] = available as f64;
    if m.total_bytes > 0 {
        s[SystemMetric::MemAvailablePercent.index()] =
            100.0 * available as f64 / m.total_bytes as f64;
    }
}

/// A sample after an idle read (see [`Sampler::sample`]): what /proc/uptime
/// proved, the run queue and memory as last read, the rest `NaN`.
fn compute_idle_read(cur: &SystemCounters, last_taken_at: Instant, out: &mut Sample) {
    out.taken_at = cur.taken_at;
    out.interval = cur.taken_at.saturating_duration_since(last_taken_at);
    out.stat_read = false;
    let s = &mut out.system;
    s.iter_mut().for_each(|v| *v = f64::NAN);
    let r = cur.idle_read;
    s[SystemMetric::IdlePercent.index()] = r.machine_idle_percent;
    let mut online = 0usize;
    for (i, slot) in out.cpus.iter_mut().enumerate() {
        slot.iter_mut().for_each(|v| *v = f64::NAN);
        if cur.stat.cpu_present.get(i).copied().unwrap_or(false) {
            online += 1;
            slot[CpuMetric::IdlePercent.index()] = r.min_cpu_idle_percent;
        }
    }
    let online_f = online.max(1) as f64;
    let st = &cur.stat;
    s[SystemMetric::OnlineCpus.index()] = online as f64;
    s[SystemMetric::RunnableTasks.index()] = st.procs_running as f64;
    s[SystemMetric::RunnableTasksPerCpu.index()] = st.procs_running as f64 / online_f;
    s[SystemMetric::BlockedTasks.index()] = st.procs_blocked as f64;
    s[SystemMetric::BlockedTasksPerCpu.index()] = st.procs_blocked as f64 / online_f;
    memory_metrics(cur, s);
}

/// Disk metrics from the counters at their previous refresh (`base`, read
/// at `base_at`) to `cur`'s. The current table may have grown (hot-plug).
fn compute_disks(
    base: &[DiskCounters],
    base_at: Instant,
    cur: &SystemCounters,
    values: &mut Vec<[f64; DiskMetric::COUNT]>,
    names: &mut Vec<DevName>,
) {
    values.clear();
    names.clear();
    let ms = cur
        .taken_at
        .saturating_duration_since(base_at)
        .as_secs_f64()
        * 1000.0;
    for (i, d) in cur.disks.iter().enumerate() {
        let mut v = [f64::NAN; DiskMetric::COUNT];
        if cur.disk_present.get(i).copied().unwrap_or(false) {
            v[DiskMetric::InFlight.index()] = d.in_flight as f64;
            if let Some(p) = base.get(i) {
                if ms > 0.0 && d.io_ticks_ms >= p.io_ticks_ms {
                    let busy = 100.0 * (d.io_ticks_ms - p.io_ticks_ms) as f64 / ms;
                    v[DiskMetric::BusyPercent.index()] = busy.min(100.0);
                }
            }
        }
        values.push(v);
        names.push(d.name);
    }
}

/// Rates and levels from the slow sources, over the interval since their
/// previous refresh. Writes values in [`SLOW_METRICS`] order.
fn compute_slow(prev: &SlowState, cur: &SystemCounters, out: &mut [f64; SLOW_METRICS.len()]) {
    let secs = cur
        .taken_at
        .saturating_duration_since(prev.at)
        .as_secs_f64();
    out.iter_mut().for_each(|v| *v = f64::NAN);
    let (a, b) = (&prev.vm, &cur.vm);
    out[0] = rate(a.pswpout, b.pswpout, secs);
    out[1] = rate(a.pswpin, b.pswpin, secs);
    out[2] = rate(a.pgmajfault, b.pgmajfault, secs);
    if let (Some(x), Some(y)) = (a.oom_kill, b.oom_kill) {
        out[3] = rate(x, y, secs);
    }
    for (i, p) in [cur.psi_cpu, cur.psi_memory, cur.psi_io].iter().enumerate() {
        if let Some(p) = p {
            if let Some(l) = p.some {
                out[4 + 2 * i] = l.avg10;
            }
            if let Some(l) = p.full {
                out[5 + 2 * i] = l.avg10;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(user: u64, system: u64, idle: u64, iowait: u64, steal: u64) -> CpuTicks {
        CpuTicks {
            user,
            system,
            idle,
            iowait,
            steal,
            ..CpuTicks::default()
        }
    }

    fn counters(cpus: &[CpuTicks]) -> SystemCounters {
        let mut c = SystemCounters::with_cpus(cpus.len());
        for (i, t) in cpus.iter().enumerate() {
            c.stat.cpus[i] = *t;
            c.stat.cpu_present[i] = true;
            c.stat.total.user += t.user;
            c.stat.total.system += t.system;
            c.stat.total.idle += t.idle;
            c.stat.total.iowait += t.iowait;
            c.stat.total.steal += t.steal;
        }
        c.mem.total_bytes = 1000;
        c.mem.free_bytes = 100;
        c
    }

    #[test]
    fn shares_and_rates() {
        let mut a = counters(&[ticks(0, 0, 0, 0, 0), ticks(0, 0, 0, 0, 0)]);
        a.stat.context_switches = 1000;
        a.vm.pgmajfault = 5;
        let mut b = counters(&[ticks(1, 9, 0, 0, 0), ticks(0, 0, 5, 5, 0)]);
        b.stat.context_switches = 1500;
        b.stat.procs_running = 7;
        b.vm.pgmajfault = 4; // went backwards: must read as 0, not huge
        b.mem.available_bytes = Some(250);
        b.taken_at = a.taken_at + Duration::from_millis(100);
        let mut out = Sample::with_cpus(2);
        compute(&a, &b, 100.0, Duration::ZERO, &mut out);
        assert_eq!(out.cpu(0, CpuMetric::SystemPercent), 90.0);
        assert_eq!(out.cpu(0, CpuMetric::UserPercent), 10.0);
        assert_eq!(out.cpu(1, CpuMetric::IowaitPercent), 50.0);
        assert_eq!(out.cpu(0, CpuMetric::AccountedPercent), 100.0);
        assert_eq!(out.system(SystemMetric::SystemPercent), 45.0);
        assert_eq!(out.system(SystemMetric::ContextSwitchesPerSecond), 5000.0);
        let mut slow = [0.0; SLOW_METRICS.len()];
        let prev = SlowState {
            vm: a.vm,
            at: a.taken_at,
        };
        compute_slow(&prev, &b, &mut slow);
        assert_eq!(slow[2], 0.0, "a counter that went backwards reads as 0");
        assert_eq!(out.system(SystemMetric::RunnableTasksPerCpu), 3.5);
        assert_eq!(out.system(SystemMetric::MemAvailablePercent), 25.0);
        assert!(out.system(SystemMetric::PsiCpuSomeAvg10).is_nan());
    }

    #[test]
    fn stopped_accounting_and_offline_cpu() {
        let a = counters(&[ticks(0, 0, 0, 0, 0), ticks(10, 0, 0, 0, 0)]);
        let mut b = counters(&[ticks(0, 0, 0, 0, 0), ticks(20, 0, 0, 0, 0)]);
        b.taken_at = a.taken_at + Duration::from_millis(100);
        let mut out = Sample::with_cpus(2);
        compute(&a, &b, 100.0, Duration::ZERO, &mut out);
        assert_eq!(out.cpu(0, CpuMetric::AccountedPercent), 0.0);
        assert!(out.cpu(0, CpuMetric::SystemPercent).is_nan());
        b.stat.cpu_present[1] = false;
        compute(&a, &b, 100.0, Duration::ZERO, &mut out);
        assert!(out.cpu(1, CpuMetric::UserPercent).is_nan());
        assert_eq!(out.system(SystemMetric::OnlineCpus), 1.0);
    }

    #[test]
    fn idle_span_is_charged_to_idle_not_diluted() {
        // 300 ms since the last /proc/stat read, the first 200 ms covered
        // by idle reads; CPU 1 spent the last 100 ms in the kernel.
        let a = counters(&[ticks(0, 0, 100, 0, 0), ticks(0, 0, 100, 0, 0)]);
        let mut b = counters(&[ticks(0, 0, 130, 0, 0), ticks(0, 10, 120, 0, 0)]);
        b.taken_at = a.taken_at + Duration::from_millis(300);
        let mut out = Sample::with_cpus(2);
        compute(&a, &b, 100.0, Duration::from_millis(200), &mut out);
        assert_eq!(out.interval, Duration::from_millis(100));
        assert_eq!(out.cpu(1, CpuMetric::SystemPercent), 100.0);
        assert_eq!(out.cpu(1, CpuMetric::IdlePercent), 0.0);
        assert_eq!(out.cpu(1, CpuMetric::AccountedPercent), 100.0);
        assert_eq!(out.cpu(0, CpuMetric::IdlePercent), 100.0);
        assert_eq!(out.system(SystemMetric::SystemPercent), 50.0);
        // Without the span the busy 100 ms would read as a third.
        compute(&a, &b, 100.0, Duration::ZERO, &mut out);
        assert!((out.cpu(1, CpuMetric::SystemPercent) - 100.0 / 3.0).abs() < 1e-9);
    }

    /// 100 ms readings of MemAvailable falling 32 MiB/s (the lab's kernel
    /// leak) from 200 MiB: the time left is what remains at that rate.
    #[test]
    fn memory_trend_reads_the_time_left_at_the_fall_rate() {
        let t0 = Instant::now();
        let mib = 1u64 << 20;
        let mut trend = MemTrend::new();
        let mut last = f64::NAN;
        for i in 0..20u64 {
            let at = t0 + Duration::from_millis(100 * i);
            last = trend.push(at, 200 * mib - i * 32 * mib / 10);
            if i < 5 {
                assert!(last.is_nan(), "under half a second of readings: {last}");
            }
        }
        // At i = 19: 139.2 MiB left, falling 32 MiB/s: 4.35 s.
        assert!((last - 4.35).abs() < 0.01, "{last}");
        // Memory back above where it was a second ago: no trend at all.
        let back = trend.push(t0 + Duration::from_millis(2000), 190 * mib);
        assert!(back.is_nan(), "{back}");
    }

    /// A fall long ago does not count: only the last 1.5 s.
    #[test]
    fn memory_trend_forgets_old_readings() {
        let t0 = Instant::now();
        let mib = 1u64 << 20;
        let mut trend = MemTrend::new();
        trend.push(t0, 500 * mib);
        // Steady for the next 3 s, after a drop before it.
        let mut last = 0.0;
        for i in 1..=30u64 {
            last = trend.push(t0 + Duration::from_millis(3000 + 100 * i), 100 * mib);
        }
        assert!(last.is_nan(), "steady memory has no time left: {last}");
    }

    #[test]
    fn live_sampler() {
        let mut s = Sampler::new("/proc").unwrap();
        let mut out = s.new_sample();
        std::thread::sleep(Duration::from_millis(50));
        s.sample(&mut out).unwrap();
        assert_eq!(out.seq, 1);
        assert!(out.interval >= Duration::from_millis(40));
        assert!(out.system(SystemMetric::MemTotalBytes) > 0.0);
        assert!(out.system(SystemMetric::RunnableTasks) >= 1.0);
        let sum: f64 = [
            SystemMetric::UserPercent,
            SystemMetric::SystemPercent,
            SystemMetric::IowaitPercent,
            SystemMetric::StealPercent,
            SystemMetric::IdlePercent,
        ]
        .iter()
        .map(|m| out.system(*m))
        .sum();
        assert!((sum - 100.0).abs() < 0.01, "shares sum to {sum}");
    }
}
