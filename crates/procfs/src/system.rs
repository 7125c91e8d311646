//! The system-wide reader: keeps /proc files open and re-reads them into
//! buffers sized at start-up, so that [`SystemReader::read`] allocates nothing
//! once the buffers have reached the files' size.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::diskstats::{is_interesting_device, parse_diskstats, DiskCounters};
use crate::error::ProcError;
use crate::meminfo::{parse_meminfo, MemInfo};
use crate::pressure::{parse_pressure, Pressure};
use crate::stat::{count_cpu_lines, parse_stat, StatCounters};
use crate::uptime::parse_uptime_idle_cs;
use crate::vmstat::{parse_vmstat, VmStat};

/// Most block devices tracked; further ones are ignored.
pub const MAX_DISKS: usize = 64;

/// See [`ProcFile::refresh`].
const SHORT_READ_IS_EOF: usize = 2048;

/// How often (in samples) the device list is rescanned for hot-plugged disks
/// when per-device sysfs files are used.
const DISK_RESCAN_EVERY: u64 = 100;

/// One open /proc file and its read buffer.
#[derive(Debug)]
struct ProcFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    len: usize,
}

impl ProcFile {
    fn open(path: PathBuf) -> Result<ProcFile, ProcError> {
        let file = File::open(&path).map_err(|e| ProcError::io(&path, e))?;
        let mut f = ProcFile {
            path,
            file,
            buf: vec![0; 4096],
            len: 0,
        };
        // Size the buffer from a first read, with headroom for growth.
        f.refresh()?;
        let want = (f.len * 2).max(4096);
        if f.buf.len() < want {
            f.buf.resize(want, 0);
        }
        Ok(f)
    }

    /// Re-reads the whole file from offset 0. Allocates only if the file grew
    /// past the buffer, which after start-up happens rarely if ever.
    fn refresh(&mut self) -> Result<&[u8], ProcError> {
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let want = self.buf.len() - len;
            match self.file.read_at(&mut self.buf[len..], len as u64) {
                Ok(0) => break,
                // A seq_file returns a short read before EOF only when its
                // page-sized buffer filled up, so a short read of less than
                // half a page is the whole remaining file: skip the extra
                // read that would return 0.
                Ok(n) if n < want && n < SHORT_READ_IS_EOF => {
                    len += n;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ProcError::io(&self.path, e)),
            }
        }
        self.len = len;
        Ok(&self.buf[..len])
    }
}

/// Which optional sources the running kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// /proc/pressure/* readable (PSI built in and enabled).
    pub psi: bool,
    /// MemAvailable present in /proc/meminfo (3.14+).
    pub mem_available: bool,
    /// /proc/diskstats readable.
    pub diskstats: bool,
}

/// How the reader finds and paces its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// sysfs root for per-device `block/<dev>/stat` files (cheaper than
    /// scanning all of /proc/diskstats); `None` reads /proc/diskstats.
    pub sys_root: Option<PathBuf>,
    /// Read the slow sources (/proc/vmstat, /proc/pressure/*) every this
    /// many reads. vmstat is the most expensive file (the kernel sums
    /// per-CPU event counters) and PSI averages only change every 2 s.
    /// When above 1, a *quiet* read (see [`SystemReader::read`]) also
    /// leaves /proc/meminfo and the disks to the slow cadence, and an
    /// *idle* one (see [`SystemReader::read`]) leaves /proc/stat too.
    pub slow_every: u64,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            sys_root: Some(PathBuf::from("/sys")),
            slow_every: 5,
        }
    }
}

/// Everything one system-wide sample reads, as raw cumulative counters.
#[derive(Debug, Clone)]
pub struct SystemCounters {
    /// When the read finished.
    pub taken_at: Instant,
    /// /proc/stat.
    pub stat: StatCounters,
    /// /proc/meminfo.
    pub mem: MemInfo,
    /// True when this read refreshed the slow sources (`vm`, `psi_*`);
    /// otherwise they hold what an earlier read left.
    pub slow_fresh: bool,
    /// True when this read refreshed `mem` and `disks`; false after a
    /// quiet read, where they repeat the last refresh.
    pub mem_fresh: bool,
    /// True when this read took /proc/stat; false after an *idle* read
    /// (see [`SystemReader::read`]), where `stat` repeats the last read of
    /// it and `idle_read` says what /proc/uptime showed instead.
    pub stat_fresh: bool,
    /// After an idle read: what /proc/uptime showed since the previous
    /// read. Meaningless when `stat_fresh`.
    pub idle_read: IdleRead,
    /// /proc/vmstat (see `slow_fresh`).
    pub vm: VmStat,
    /// Tracked block devices; capacity [`MAX_DISKS`], never reallocated.
    pub disks: Vec<DiskCounters>,
    /// Whether each tracked device was present in the latest read.
    pub disk_present: Vec<bool>,
    /// /proc/pressure/cpu (see `slow_fresh`).
    pub psi_cpu: Option<Pressure>,
    /// /proc/pressure/memory (see `slow_fresh`).
    pub psi_memory: Option<Pressure>,
    /// /proc/pressure/io (see `slow_fresh`).
    pub psi_io: Option<Pressure>,
}

impl SystemCounters {
    /// Counters sized for `cpus` CPUs.
    pub fn with_cpus(cpus: usize) -> SystemCounters {
        SystemCounters {
            taken_at: Instant::now(),
            stat: StatCounters::with_cpus(cpus),
            mem: MemInfo::default(),
            slow_fresh: false,
            mem_fresh: false,
            stat_fresh: false,
            idle_read: IdleRead::default(),
            vm: VmStat::default(),
            disks: Vec::with_capacity(MAX_DISKS),
            disk_present: Vec::with_capacity(MAX_DISKS),
            psi_cpu: None,
            psi_memory: None,
            psi_io: None,
        }
    }
}

/// What an idle read (see [`SystemReader::read`]) knows of the interval
/// since the previous read, from /proc/uptime's idle time summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IdleRead {
    /// Share of the online CPUs' time that was idle (I/O wait is not
    /// idle), percent, at most 100.
    pub machine_idle_percent: f64,
    /// Lower bound on each online CPU's idle share, percent: the busy time
    /// summed over all CPUs, had it all fallen on one CPU.
    pub min_cpu_idle_percent: f64,
}

/// Reads the system-wide /proc files.
#[derive(Debug)]
pub struct SystemReader {
    root: PathBuf,
    options: ReaderOptions,
    cpus: usize,
    reads: u64,
    /// Reads left before the next slow one is due (0: due now).
    slow_in: u64,
    /// Idle reads taken in place of the due slow one (see
    /// [`IDLE_SLOW_DEFER`]).
    slow_deferred: u64,
    stat: ProcFile,
    meminfo: ProcFile,
    vmstat: ProcFile,
    diskstats: Option<ProcFile>,
    /// Per-device sysfs stat files, parallel to the tracked-disk table.
    disk_files: Vec<Option<ProcFile>>,
    /// The tracked-disk table the reader maintains between reads.
    disks: Vec<DiskCounters>,
    disk_present: Vec<bool>,
    psi: [Option<ProcFile>; 3],
    features: Features,
    notes: Vec<String>,
    /// /proc/stat at the previous read, to tell whether this one is quiet.
    last_stat: StatCounters,
    /// When the previous read finished (`None` before the first).
    last_read_at: Option<Instant>,
    /// /proc/meminfo at its last refresh.
    last_mem: MemInfo,
    /// Clock ticks per second of /proc/stat's counters.
    ticks_per_second: f64,
    /// /proc/uptime, the idle gate (`None` when missing or `slow_every`
    /// is 1).
    uptime: Option<ProcFile>,
    /// Idle time summed over CPUs (centiseconds) and when it was read, at
    /// the last read that may be followed by an idle one.
    gate_base: Option<(u64, Instant)>,
    /// Idle reads so far.
    idle_reads: u64,
}

/// An idle read: since the previous read, the CPUs online at the last
/// /proc/stat read were idle all but this many milliseconds summed over
/// all of them (/proc/uptime counts in 10 ms steps, so the busy time
/// allowed is up to 10 ms more).
const IDLE_GATE_BUSY_MS: f64 = 20.0;

/// At idle, an idle read may stand in for the due slow one this many
/// times `slow_every` reads in a row: the slow sources are then refreshed
/// every `(1 + IDLE_SLOW_DEFER) * slow_every` reads (1 s at the defaults)
/// instead of every `slow_every`. With every CPU idle nothing they report
/// can build up unseen (swapping, reclaim, faults and OOM kills take CPU
/// time; a task stalled on I/O turns idle time into I/O wait), PSI's
/// averages change only every 2 s, and the first read that is not idle
/// takes the overdue slow read at once.
const IDLE_SLOW_DEFER: u64 = 1;

/// A quiet interval: every CPU idle (not waiting for I/O) at least this
/// share of its ticks.
const QUIET_IDLE_PERCENT: u64 = 50;
/// ... and accounted at least this share of the ticks the interval should
/// have had (a CPU looping with interrupts off takes none).
const QUIET_ACCOUNTED_PERCENT: f64 = 75.0;
/// ... and at least this share of memory available at the last refresh.
const QUIET_MEM_AVAILABLE_PERCENT: u64 = 25;

impl SystemReader {
    /// Opens the files under `root` (normally `/proc`) with default options
    /// when `root` is `/proc`, and without sysfs otherwise (tests).
    pub fn new(root: impl AsRef<Path>) -> Result<SystemReader, ProcError> {
        let root = root.as_ref();
        let mut options = ReaderOptions::default();
        if root != Path::new("/proc") {
            options.sys_root = None;
        }
        SystemReader::with_options(root, options)
    }

    /// Opens the files under `root`. /proc/stat, /proc/meminfo and
    /// /proc/vmstat are required; diskstats and pressure are optional and
    /// their absence is recorded in [`SystemReader::notes`].
    pub fn with_options(
        root: impl AsRef<Path>,
        options: ReaderOptions,
    ) -> Result<SystemReader, ProcError> {
        let root = root.as_ref().to_path_buf();
        let mut stat = ProcFile::open(root.join("stat"))?;
        let text = stat.refresh()?;
        if count_cpu_lines(text) == 0 {
            return Err(ProcError::Parse {
                path: root.join("stat"),
                what: "no cpuN lines",
            });
        }
        let cpus = count_cpu_lines(text).max(selfheal_sys::sched::cpus_configured().min(4096));
        let meminfo = ProcFile::open(root.join("meminfo"))?;
        let vmstat = ProcFile::open(root.join("vmstat"))?;
        let mut notes = Vec::new();
        let diskstats = match ProcFile::open(root.join("diskstats")) {
            Ok(f) => Some(f),
            Err(e) => {
                notes.push(format!("disk utilisation unavailable: {e}"));
                None
            }
        };
        let mut psi_missing = Vec::new();
        let psi =
            ["cpu", "memory", "io"].map(|r| match ProcFile::open(root.join("pressure").join(r)) {
                Ok(f) => Some(f),
                Err(e) => {
                    psi_missing.push(format!("{r}: {e}"));
                    None
                }
            });
        if !psi_missing.is_empty() {
            notes.push(format!(
                "PSI (pressure stall information) unavailable, PSI metrics and rules are off: {}. \
                 Enable CONFIG_PSI (or boot with psi=1) to get them.",
                psi_missing.join("; ")
            ));
        }
        let mut reader = SystemReader {
            root,
            options: ReaderOptions {
                slow_every: options.slow_every.max(1),
                ..options
            },
            cpus,
            reads: 0,
            slow_in: 0,
            slow_deferred: 0,
            stat,
            meminfo,
            vmstat,
            diskstats,
            disk_files: Vec::with_capacity(MAX_DISKS),
            disks: Vec::with_capacity(MAX_DISKS),
            disk_present: Vec::with_capacity(MAX_DISKS),
            psi,
            features: Features::default(),
            notes,
            last_stat: StatCounters::with_cpus(cpus),
            last_read_at: None,
            last_mem: MemInfo::default(),
            ticks_per_second: selfheal_sys::sched::clock_ticks_per_second() as f64,
            uptime: None,
            gate_base: None,
            idle_reads: 0,
        };
        if reader.options.slow_every > 1 {
            reader.uptime = ProcFile::open(reader.root.join("uptime")).ok();
        }
        reader.rescan_disks()?;
        let mut probe = SystemCounters::with_cpus(cpus);
        reader.read(&mut probe)?;
        // The caller's first read should be a full one (its baseline).
        reader.reads = 0;
        reader.slow_in = 0;
        reader.slow_deferred = 0;
        reader.last_read_at = None;
        reader.gate_base = None;
        reader.features = Features {
            psi: reader.psi.iter().any(Option::is_some),
            mem_available: probe.mem.available_bytes.is_some(),
            diskstats: reader.diskstats.is_some(),
        };
        if !reader.features.mem_available {
            reader.notes.push(
                "MemAvailable missing from meminfo (kernel < 3.14): available memory is \
                 estimated as MemFree + Cached"
                    .to_string(),
            );
        }
        Ok(reader)
    }

    /// The procfs root this reader uses.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of CPU slots (configured CPUs, or CPU lines seen at start).
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Optional sources found at start-up.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Human-readable notes about degraded sources, for logging once.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Takes /proc/stat on every read from now on, never an idle read
    /// (for callers that want every sample's shares, not bounds).
    pub fn disable_idle_reads(&mut self) {
        self.uptime = None;
        self.gate_base = None;
    }

    /// Reads that took /proc/uptime instead of /proc/stat so far.
    pub fn idle_reads(&self) -> u64 {
        self.idle_reads
    }

    /// Counters sized for this reader.
    pub fn new_counters(&self) -> SystemCounters {
        SystemCounters::with_cpus(self.cpus)
    }

    /// Re-reads /proc/diskstats to find new devices and opens their sysfs
    /// stat files. Allocates only when a new device appears.
    fn rescan_disks(&mut self) -> Result<(), ProcError> {
        let Some(f) = self.diskstats.as_mut() else {
            return Ok(());
        };
        let text = f.refresh()?;
        let before = self.disks.len();
        merge_disks(text, &mut self.disks, &mut self.disk_present);
        if let Some(sys) = &self.options.sys_root {
            for d in &self.disks[before..] {
                let path = sys.join("block").join(d.name.as_str()).join("stat");
                self.disk_files.push(ProcFile::open(path).ok());
            }
        }
        Ok(())
    }

    /// Reads the files into `out`. Allocation-free once buffers are sized.
    ///
    /// /proc/stat is read every time; /proc/vmstat and /proc/pressure/*
    /// every `slow_every` reads. /proc/meminfo and the disks are read every
    /// time too, except on a *quiet* read between two slow ones: since the
    /// previous read every CPU was idle at least half its ticks (iowait
    /// does not count as idle) with its accounting running, no task was
    /// blocked on I/O, no more tasks were runnable than CPUs are online,
    /// and at least a quarter of memory was available at the last refresh.
    /// Memory cannot run out without some CPU working to take it, so a
    /// quiet read repeats the last `mem` and `disks` (`mem_fresh` false)
    /// and the first busy read refreshes them again: at idle the reader
    /// costs one file per read instead of three or more.
    ///
    /// An *idle* read takes only /proc/uptime: it is one between two slow
    /// ones, following a quiet read or another idle one, where uptime's
    /// idle time summed over CPUs shows the CPUs online at the last
    /// /proc/stat read idle all but [`IDLE_GATE_BUSY_MS`] (plus uptime's
    /// 10 ms step) of the interval, summed over all of them. No CPU can
    /// have been busy, stalled or without accounting (a CPU that stops
    /// taking ticks stops adding idle time) for longer than that; a task
    /// blocked on I/O turns its idle CPU's time into I/O wait, which is not
    /// idle; and more tasks runnable than CPUs leave no CPU idle.
    /// `stat` then repeats the last read of /proc/stat (`stat_fresh`
    /// false) and `idle_read` says what uptime showed; the next read that
    /// is not idle takes /proc/stat again, and the caller charges the idle
    /// reads' time to idle (see `selfheal_sampler`). At idle most reads
    /// cost /proc/uptime only; under load no read is quiet, so none is
    /// idle and /proc/uptime is not read at all.
    ///
    /// While the machine stays idle, an idle read also stands in for a
    /// due slow read, up to [`IDLE_SLOW_DEFER`] times `slow_every` reads
    /// in a row: at idle the slow sources are read every 10th read, not
    /// every 5th, at the defaults (9 reads of 10 cost /proc/uptime only),
    /// and the first read that is not idle is the overdue slow one.
    pub fn read(&mut self, out: &mut SystemCounters) -> Result<(), ProcError> {
        let slow = self.slow_in == 0;
        self.reads += 1;
        let mut gate_now = None;
        if !slow || self.slow_deferred < IDLE_SLOW_DEFER * self.options.slow_every {
            if let (Some((base_cs, base_at)), Some(f)) = (self.gate_base, self.uptime.as_mut()) {
                let idle_cs = f.refresh().ok().and_then(parse_uptime_idle_cs);
                let now = Instant::now();
                let online = self.last_stat.cpu_present.iter().filter(|p| **p).count();
                if let Some(idle_cs) = idle_cs {
                    let elapsed_ms = now.saturating_duration_since(base_at).as_secs_f64() * 1e3;
                    let idle_ms = idle_cs.saturating_sub(base_cs) as f64 * 10.0;
                    if let Some(read) = idle_gate(idle_ms, elapsed_ms, online) {
                        self.gate_base = Some((idle_cs, now));
                        self.idle_reads += 1;
                        if slow {
                            self.slow_deferred += 1;
                        } else {
                            self.slow_in -= 1;
                        }
                        out.stat.copy_from(&self.last_stat);
                        out.stat_fresh = false;
                        out.idle_read = read;
                        out.mem = self.last_mem;
                        out.mem_fresh = false;
                        out.slow_fresh = false;
                        out.disks.clear();
                        out.disks.extend_from_slice(&self.disks);
                        out.disk_present.clear();
                        out.disk_present.extend_from_slice(&self.disk_present);
                        out.taken_at = now;
                        return Ok(());
                    }
                    gate_now = Some(idle_cs);
                }
            }
        }
        self.gate_base = None;
        if slow {
            self.slow_in = self.options.slow_every - 1;
            self.slow_deferred = 0;
        } else {
            self.slow_in -= 1;
        }
        let text = self.stat.refresh()?;
        if !parse_stat(text, &mut out.stat) {
            return Err(ProcError::Parse {
                path: self.stat.path.clone(),
                what: "no aggregate cpu line",
            });
        }
        let now = Instant::now();
        let machine_quiet = self.quiet_since_last(&out.stat, now);
        let quiet = !slow && machine_quiet;
        // Worth an uptime read for the next read's gate only when this
        // interval would (nearly) have passed it: on a half-busy machine
        // every read is quiet and none idle, and uptime would be read for
        // nothing every time.
        let gate_next = machine_quiet && self.nearly_idle_since_last(&out.stat, now);
        self.last_stat.copy_from(&out.stat);
        self.last_read_at = Some(now);
        out.stat_fresh = true;
        out.idle_read = IdleRead::default();
        out.mem_fresh = !quiet;
        if quiet {
            out.mem = self.last_mem;
        } else {
            let text = self.meminfo.refresh()?;
            if !parse_meminfo(text, &mut out.mem) {
                return Err(ProcError::Parse {
                    path: self.meminfo.path.clone(),
                    what: "no MemTotal",
                });
            }
            self.last_mem = out.mem;
            self.read_disks()?;
        }
        out.disks.clear();
        out.disks.extend_from_slice(&self.disks);
        out.disk_present.clear();
        out.disk_present.extend_from_slice(&self.disk_present);
        out.slow_fresh = slow;
        if slow {
            let text = self.vmstat.refresh()?;
            parse_vmstat(text, &mut out.vm);
            let slots = [&mut out.psi_cpu, &mut out.psi_memory, &mut out.psi_io];
            for (file, slot) in self.psi.iter_mut().zip(slots) {
                *slot = match file {
                    Some(f) => match f.refresh() {
                        Ok(text) => {
                            let mut p = Pressure::default();
                            parse_pressure(text, &mut p).then_some(p)
                        }
                        // EOPNOTSUPP: PSI compiled in but disabled at boot.
                        Err(_) => None,
                    },
                    None => None,
                };
            }
        }
        out.taken_at = Instant::now();
        // After a quiet interval the next read may be an idle one: note
        // uptime's idle time now (this read's own gate value when it had
        // one: the two are microseconds apart).
        if gate_next && self.options.slow_every > 1 {
            let idle_cs = match gate_now {
                Some(cs) => Some(cs),
                None => self
                    .uptime
                    .as_mut()
                    .and_then(|f| f.refresh().ok().and_then(parse_uptime_idle_cs)),
            };
            self.gate_base = idle_cs.map(|cs| (cs, out.taken_at));
        }
        Ok(())
    }

    /// Whether the interval since the previous read was quiet (see
    /// [`SystemReader::read`]), judged from `stat` just read.
    fn quiet_since_last(&self, stat: &StatCounters, now: Instant) -> bool {
        let Some(last) = self.last_read_at else {
            return false;
        };
        let m = &self.last_mem;
        let available = m.available_bytes.unwrap_or(m.free_bytes + m.cached_bytes);
        let online = stat.cpu_present.iter().filter(|p| **p).count() as u64;
        if stat.procs_blocked > 0
            || stat.procs_running > online
            || m.total_bytes == 0
            || available.saturating_mul(100)
                < m.total_bytes.saturating_mul(QUIET_MEM_AVAILABLE_PERCENT)
        {
            return false;
        }
        let expected = now.saturating_duration_since(last).as_secs_f64() * self.ticks_per_second;
        let prev = &self.last_stat;
        for (i, cur) in stat.cpus.iter().enumerate() {
            let was = prev.cpu_present.get(i).copied().unwrap_or(false);
            let is = stat.cpu_present[i];
            if was != is {
                return false;
            }
            if !is {
                continue;
            }
            let Some(p) = prev.cpus.get(i) else {
                return false;
            };
            let total = cur.total().saturating_sub(p.total());
            let idle = cur.idle.saturating_sub(p.idle);
            if total == 0
                || (total as f64) < expected * QUIET_ACCOUNTED_PERCENT / 100.0
                || idle * 100 < total * QUIET_IDLE_PERCENT
            {
                return false;
            }
        }
        true
    }

    /// Whether /proc/stat's idle ticks since the previous read, summed over
    /// CPUs, come within the idle gate's allowance (plus one tick per CPU:
    /// /proc/stat counts in ticks).
    fn nearly_idle_since_last(&self, stat: &StatCounters, now: Instant) -> bool {
        let Some(last) = self.last_read_at else {
            return false;
        };
        let elapsed_ms = now.saturating_duration_since(last).as_secs_f64() * 1e3;
        let tick_ms = 1e3 / self.ticks_per_second.max(1.0);
        let mut idle_ms = 0.0;
        let mut online = 0.0;
        for (i, cur) in stat.cpus.iter().enumerate() {
            if !stat.cpu_present[i] {
                continue;
            }
            let Some(p) = self.last_stat.cpus.get(i) else {
                return false;
            };
            online += 1.0;
            idle_ms += cur.idle.saturating_sub(p.idle) as f64 * tick_ms;
        }
        online > 0.0 && idle_ms + IDLE_GATE_BUSY_MS + online * tick_ms >= online * elapsed_ms
    }

    fn read_disks(&mut self) -> Result<(), ProcError> {
        let use_sysfs = self.options.sys_root.is_some()
            && !self.disk_files.is_empty()
            && self.disk_files.iter().all(Option::is_some);
        if !use_sysfs {
            if let Some(f) = self.diskstats.as_mut() {
                let text = f.refresh()?;
                merge_disks(text, &mut self.disks, &mut self.disk_present);
            }
            return Ok(());
        }
        if self.reads.is_multiple_of(DISK_RESCAN_EVERY) {
            self.rescan_disks()?;
        }
        for (i, file) in self.disk_files.iter_mut().enumerate() {
            let Some(f) = file else { continue };
            match f.refresh() {
                Ok(text) => {
                    self.disk_present[i] = parse_sysfs_disk_stat(text, &mut self.disks[i]);
                }
                // The device went away (hot-unplug): keep its slot, mark it absent.
                Err(_) => self.disk_present[i] = false,
            }
        }
        Ok(())
    }
}

/// The idle gate: `idle_ms` of idle time summed over `online` CPUs in
/// `elapsed_ms`. `Some` when every CPU was idle all but
/// [`IDLE_GATE_BUSY_MS`] (plus uptime's 10 ms step) summed over them; `None`
/// too when more idle time than `online` CPUs can have shows up (a CPU came
/// online: /proc/stat must be read to see it).
fn idle_gate(idle_ms: f64, elapsed_ms: f64, online: usize) -> Option<IdleRead> {
    if online == 0 || elapsed_ms <= 0.0 {
        return None;
    }
    let expected = online as f64 * elapsed_ms;
    if idle_ms + IDLE_GATE_BUSY_MS < expected || idle_ms > expected + IDLE_GATE_BUSY_MS {
        return None;
    }
    // Uptime rounds each reading down to 10 ms: the busy time is known to
    // within one step.
    let busy = (expected - idle_ms + 10.0).max(0.0);
    Some(IdleRead {
        machine_idle_percent: (100.0 * idle_ms / expected).min(100.0),
        min_cpu_idle_percent: (100.0 * (1.0 - busy / elapsed_ms)).clamp(0.0, 100.0),
    })
}

/// Parses `/sys/block/<dev>/stat` (the diskstats fields without the device
/// numbers and name) into `d`. Returns false on malformed text.
fn parse_sysfs_disk_stat(text: &[u8], d: &mut DiskCounters) -> bool {
    let mut v = [0u64; 11];
    let mut n = 0;
    for (i, f) in crate::num::fields(text.strip_suffix(b"\n").unwrap_or(text))
        .enumerate()
        .take(11)
    {
        v[i] = crate::num::parse_u64(f).unwrap_or(0);
        n = i + 1;
    }
    if n < 11 {
        return false;
    }
    d.reads = v[0];
    d.writes = v[4];
    d.in_flight = v[8];
    d.io_ticks_ms = v[9];
    d.weighted_ms = v[10];
    true
}

/// Updates the tracked-device table from diskstats text without allocating:
/// known devices are matched by (major, minor); new whole, interesting disks
/// are appended while capacity remains.
fn merge_disks(text: &[u8], disks: &mut Vec<DiskCounters>, present: &mut Vec<bool>) {
    present.iter_mut().for_each(|p| *p = false);
    parse_diskstats(text, |d| {
        if let Some(i) = disks
            .iter()
            .position(|k| k.major == d.major && k.minor == d.minor)
        {
            disks[i] = d;
            present[i] = true;
            return;
        }
        let name = d.name.as_bytes();
        if !is_interesting_device(name) || disks.len() >= disks.capacity().min(MAX_DISKS) {
            return;
        }
        if disks
            .iter()
            .any(|k| is_partition_of(name, k.name.as_bytes()))
        {
            return;
        }
        disks.push(d);
        present.push(true);
    });
}

/// `sda1` of `sda`, `nvme0n1p2` of `nvme0n1`, `mmcblk0p1` of `mmcblk0`.
fn is_partition_of(name: &[u8], disk: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(disk) else {
        return false;
    };
    let rest = rest.strip_prefix(b"p").unwrap_or(rest);
    !rest.is_empty() && rest.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests;
