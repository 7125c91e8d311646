//! Cgroups with a memory or pids limit, and how close they are to it.
//!
//! A sandbox (or a systemd unit with `MemoryMax=`) can run out of memory or
//! tasks while the machine as a whole looks fine, so the machine-wide
//! metrics of the light detector never fire. The sweep therefore watches
//! every cgroup that has a finite limit:
//! - memory: unreclaimable memory (anon + shmem; there is no swap to push
//!   it to) against the limit (v1 `hierarchical_memory_limit`, v2
//!   `memory.max`), plus PSI (`memory.pressure`, v2 or the unified part of
//!   a hybrid) and limit hits (v1 `memory.failcnt`, v2 `memory.events max`);
//! - pids: `pids.current` against `pids.max`, and refused forks
//!   (`pids.events max`).
//!
//! The list of limited cgroups, with their limits, is rebuilt every few
//! seconds (walking the hierarchy, reading only each cgroup's limit file);
//! usage counters are read on every sweep (three small files per cgroup),
//! `memory.stat` (costly: the kernel sums per-CPU counters) only for
//! cgroups whose total usage comes near the threshold. A changed limit is
//! therefore seen at the next walk, and so is a new cgroup.
//!
//! The three counter files are kept open between sweeps and re-read with
//! `pread` ([`KeptFile`]): opening a cgroupfs file costs several times
//! reading it, and the sweep reads them every second. A cgroup removed
//! meanwhile answers `ENODEV`; its files are opened again by path (a
//! cgroup created again under the same name is read from then on) and,
//! when that fails, the cgroup is dropped as before. At most
//! [`KEPT_FILES_MAX`] descriptors are held; the files of further cgroups
//! are opened on each read.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_cgroup::hierarchy::ControllerLocation;
use selfheal_cgroup::Hierarchy;

use crate::pseudo_file::{read_small, KeptFile};

/// v1 reports "no limit" as a number near 2^63.
const V1_UNLIMITED_FROM: u64 = 1 << 62;
/// Deepest level walked below a hierarchy root.
const MAX_DEPTH: usize = 6;
/// Most cgroups watched.
const MAX_WATCHED: usize = 512;
/// Most counter files kept open (about 100 cgroups' worth): the daemon
/// raises its open-file limit by 1024 over what its HTTP server may use,
/// and the rest of it needs some of those. Never more than an eighth of
/// the open-file limit in force, should raising it have failed.
pub const KEPT_FILES_MAX: usize = 320;

/// Where the controllers' hierarchies are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupRoots {
    /// The memory controller's hierarchy root and whether it is v2.
    pub memory: Option<(PathBuf, bool)>,
    /// The pids controller's hierarchy root and whether it is v2.
    pub pids: Option<(PathBuf, bool)>,
    /// The unified (v2) root, for per-cgroup PSI even in a hybrid layout.
    pub unified: Option<PathBuf>,
}

impl CgroupRoots {
    /// The roots of this machine's hierarchies (empty when none is mounted).
    pub fn detect() -> CgroupRoots {
        match Hierarchy::detect() {
            Ok(h) => CgroupRoots::from_hierarchy(&h),
            Err(e) => {
                tracing::warn!("cgroup limits will not be watched: {e}");
                CgroupRoots::default()
            }
        }
    }

    /// The roots of the given hierarchies.
    pub fn from_hierarchy(h: &Hierarchy) -> CgroupRoots {
        let loc = |c: &str| match h.controller_location(c) {
            Some(ControllerLocation::V1(m)) => m.dir("/").map(|d| (d, false)),
            Some(ControllerLocation::V2(m)) => m.dir("/").map(|d| (d, true)),
            None => None,
        };
        CgroupRoots {
            memory: loc("memory"),
            pids: loc("pids"),
            unified: h.v2.as_ref().and_then(|m| m.dir("/")),
        }
    }
}

/// Memory of one limited cgroup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgroupMemory {
    /// The effective limit.
    pub limit_bytes: u64,
    /// Charged memory, page cache included.
    pub usage_bytes: u64,
    /// anon + shmem: what cannot be reclaimed without swap.
    pub unreclaimable_bytes: u64,
    /// PSI memory `some` avg10, when the cgroup has a pressure file.
    pub psi_some_avg10: Option<f64>,
    /// PSI memory `full` avg10.
    pub psi_full_avg10: Option<f64>,
    /// Times the limit was hit (v1 failcnt, v2 events `max`).
    pub limit_hits: Option<u64>,
}

impl CgroupMemory {
    /// Unreclaimable memory as a share of the limit, percent.
    pub fn percent(&self) -> f64 {
        if self.limit_bytes == 0 {
            return 0.0;
        }
        self.unreclaimable_bytes as f64 * 100.0 / self.limit_bytes as f64
    }
}

/// Tasks of one limited cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupPids {
    /// Tasks now.
    pub current: u64,
    /// The limit.
    pub max: u64,
    /// Forks refused since the cgroup was created.
    pub refused: Option<u64>,
    /// Forks refused since the previous sweep.
    pub refused_recently: u64,
}

impl CgroupPids {
    /// Tasks as a share of the limit, percent.
    pub fn percent(&self) -> f64 {
        if self.max == 0 {
            return 0.0;
        }
        self.current as f64 * 100.0 / self.max as f64
    }
}

/// One limited cgroup's readings.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupUsage {
    /// Path as in /proc/PID/cgroup (`/selfheal-sandbox/x`).
    pub path: String,
    /// Memory, when it has a memory limit.
    pub memory: Option<CgroupMemory>,
    /// Tasks, when it has a pids limit.
    pub pids: Option<CgroupPids>,
}

#[derive(Debug)]
struct Watched {
    path: String,
    /// The memory limit, as of the last walk.
    memory: Option<u64>,
    /// `pids.max`, as of the last walk.
    pids: Option<u64>,
    last_refused: Option<u64>,
    /// The counter files read on every sweep (set up after each walk).
    files: Files,
}

/// A watched cgroup's counter files, kept open between sweeps.
#[derive(Debug, Default)]
struct Files {
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    usage: Option<KeptFile>,
    /// `pids.current`.
    pids_current: Option<KeptFile>,
    /// `pids.events`.
    pids_events: Option<KeptFile>,
}

/// Finds limited cgroups and reads their counters.
#[derive(Debug)]
pub struct CgroupScanner {
    roots: CgroupRoots,
    watched: Vec<Watched>,
    walked_at: Option<Instant>,
    rewalk: Duration,
    detail_above: Option<f64>,
    kept_max: usize,
    last_walk_dirs: usize,
}

impl CgroupScanner {
    /// A scanner over `roots`, re-walking the hierarchies every `rewalk`.
    pub fn new(roots: CgroupRoots, rewalk: Duration) -> CgroupScanner {
        CgroupScanner {
            roots,
            watched: Vec::new(),
            walked_at: None,
            rewalk,
            detail_above: None,
            kept_max: KEPT_FILES_MAX,
            last_walk_dirs: 0,
        }
    }

    /// Hold at most `max` counter files open from the next walk on
    /// (default [`KEPT_FILES_MAX`]; 0 opens each file on every read, as
    /// the sweep did before: `examples/sweep_cost.rs` compares the two).
    pub fn set_kept_files_max(&mut self, max: usize) {
        self.kept_max = max;
        self.walked_at = None;
    }

    /// Read `memory.stat` only for cgroups whose total usage (page cache
    /// included) is at least `percent` of the limit; below it, the
    /// unreclaimable figure reported is the usage (an upper bound).
    /// `None` always reads it.
    pub fn set_detail_above(&mut self, percent: Option<f64>) {
        self.detail_above = percent;
    }

    /// The roots.
    pub fn roots(&self) -> &CgroupRoots {
        &self.roots
    }

    /// Directories listed by the last walk (each hierarchy's own).
    pub fn last_walk_dirs(&self) -> usize {
        self.last_walk_dirs
    }

    /// Counter files held open now.
    pub fn open_files(&self) -> usize {
        self.watched
            .iter()
            .flat_map(|w| [&w.files.usage, &w.files.pids_current, &w.files.pids_events])
            .flatten()
            .filter(|f| f.is_open())
            .count()
    }

    #[cfg(test)]
    fn files_of(&self, path: &str) -> Vec<&KeptFile> {
        self.watched
            .iter()
            .filter(|w| w.path == path)
            .flat_map(|w| [&w.files.usage, &w.files.pids_current, &w.files.pids_events])
            .flatten()
            .collect()
    }

    #[cfg(test)]
    fn files_open_for(&self, path: &str) -> usize {
        self.files_of(path).iter().filter(|f| f.is_open()).count()
    }

    #[cfg(test)]
    fn reopens_for(&self, path: &str) -> u64 {
        self.files_of(path).iter().map(|f| f.reopens()).sum()
    }

    /// Reads every limited cgroup (re-walking first when due).
    pub fn scan(&mut self) -> Vec<CgroupUsage> {
        if self.walked_at.is_none_or(|t| t.elapsed() >= self.rewalk) {
            self.walk();
        }
        let mut out = Vec::with_capacity(self.watched.len());
        let roots = &self.roots;
        let lazy = self.detail_above;
        self.watched.retain_mut(|w| {
            let memory = match (w.memory, &roots.memory, w.files.usage.as_mut()) {
                (Some(limit), Some((root, v2)), Some(usage)) => read_memory(
                    &join(root, &w.path),
                    usage,
                    *v2,
                    roots.unified.as_deref(),
                    &w.path,
                    lazy,
                    limit,
                ),
                _ => None,
            };
            let mut pids = match (w.pids, &mut w.files.pids_current) {
                (Some(max), Some(current)) => read_pids(current, w.files.pids_events.as_mut(), max),
                _ => None,
            };
            if let Some(p) = &mut pids {
                p.refused_recently = match (p.refused, w.last_refused) {
                    (Some(now), Some(before)) => now.saturating_sub(before),
                    (Some(now), None) => now,
                    _ => 0,
                };
                w.last_refused = p.refused;
            }
            if memory.is_none() && pids.is_none() {
                return false; // removed meanwhile
            }
            out.push(CgroupUsage {
                path: w.path.clone(),
                memory,
                pids,
            });
            true
        });
        out
    }

    /// Rebuilds the list of limited cgroups.
    pub fn walk(&mut self) {
        self.walked_at = Some(Instant::now());
        let mut found: Vec<Watched> = Vec::new();
        let mut dirs = 0;
        match (self.roots.memory.clone(), self.roots.pids.clone()) {
            // One hierarchy holds both (v2, or v1 controllers mounted
            // together): list each directory once, read both limits.
            (Some((root, v2)), Some((pids_root, _))) if root == pids_root => {
                dirs += walk_dirs(&root, &mut |rel, dir| {
                    let memory = memory_limit(dir, v2);
                    let pids = read_max(&dir.join("pids.max"));
                    if memory.is_some() || pids.is_some() {
                        let w = upsert(&mut found, rel);
                        (w.memory, w.pids) = (memory, pids);
                    }
                });
            }
            (memory, pids) => {
                if let Some((root, v2)) = memory {
                    dirs += walk_dirs(&root, &mut |rel, dir| {
                        if let Some(limit) = memory_limit(dir, v2) {
                            upsert(&mut found, rel).memory = Some(limit);
                        }
                    });
                }
                if let Some((root, _)) = pids {
                    dirs += walk_dirs(&root, &mut |rel, dir| {
                        if let Some(max) = read_max(&dir.join("pids.max")) {
                            upsert(&mut found, rel).pids = Some(max);
                        }
                    });
                }
            }
        }
        self.last_walk_dirs = dirs;
        found.truncate(MAX_WATCHED);
        // Keep refusal counts and open files across walks.
        let mut old: std::collections::HashMap<String, Watched> = self
            .watched
            .drain(..)
            .map(|w| (w.path.clone(), w))
            .collect();
        let mut kept = 0;
        let soft = selfheal_sys::rlimit::raise_nofile_limit(0).unwrap_or(1024);
        let budget = self
            .kept_max
            .min(usize::try_from(soft / 8).unwrap_or(usize::MAX));
        for f in &mut found {
            let before = old.remove(&f.path);
            if let Some(o) = &before {
                f.last_refused = o.last_refused;
            }
            f.files = self.files_for(f, before.map(|o| o.files), &mut kept, budget);
        }
        self.watched = found;
    }

    /// The counter files `w` needs: those it had (`before`), else new
    /// ones; kept open while `kept` stays within `budget`.
    fn files_for(
        &self,
        w: &Watched,
        before: Option<Files>,
        kept: &mut usize,
        budget: usize,
    ) -> Files {
        let mut before = before.unwrap_or_default();
        let mut file = |old: &mut Option<KeptFile>, root: Option<&Path>, name: &str| {
            let root = root?;
            let path = join(root, &w.path).join(name);
            let keep = *kept < budget;
            *kept += 1;
            let mut f = old
                .take()
                .filter(|f| f.path() == path)
                .unwrap_or_else(|| KeptFile::new(path, keep));
            f.set_keep(keep);
            Some(f)
        };
        let memory = self.roots.memory.as_ref().filter(|_| w.memory.is_some());
        let pids = self
            .roots
            .pids
            .as_ref()
            .filter(|_| w.pids.is_some())
            .map(|(root, _)| root.as_path());
        Files {
            usage: file(
                &mut before.usage,
                memory.map(|(root, _)| root.as_path()),
                if memory.is_some_and(|(_, v2)| *v2) {
                    "memory.current"
                } else {
                    "memory.usage_in_bytes"
                },
            ),
            pids_current: file(&mut before.pids_current, pids, "pids.current"),
            pids_events: file(&mut before.pids_events, pids, "pids.events"),
        }
    }

    /// Processes in cgroup `path` and its descendants (from whichever
    /// hierarchy holds it), sorted.
    pub fn members(&self, path: &str) -> Vec<i32> {
        let mut pids = Vec::new();
        for (root, _) in [&self.roots.memory, &self.roots.pids].into_iter().flatten() {
            let dir = join(root, path);
            if dir.is_dir() {
                collect_procs(&dir, &mut pids, 0);
                break;
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

fn upsert<'a>(found: &'a mut Vec<Watched>, rel: &str) -> &'a mut Watched {
    if let Some(i) = found.iter().position(|w| w.path == rel) {
        return &mut found[i];
    }
    found.push(Watched {
        path: rel.to_string(),
        memory: None,
        pids: None,
        last_refused: None,
        files: Files::default(),
    });
    let last = found.len() - 1;
    &mut found[last]
}

/// `root` + cgroup path.
fn join(root: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Calls `f(rel_path, dir)` for every cgroup below `root` (not the root
/// itself); returns how many directories it listed.
fn walk_dirs(root: &Path, f: &mut dyn FnMut(&str, &Path)) -> usize {
    fn go(root: &Path, dir: &Path, depth: usize, f: &mut dyn FnMut(&str, &Path)) -> usize {
        if depth > MAX_DEPTH {
            return 0;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut listed = 1;
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if let Ok(rel) = path.strip_prefix(root) {
                let rel = format!("/{}", rel.display());
                f(&rel, &path);
            }
            listed += go(root, &path, depth + 1, f);
        }
        listed
    }
    go(root, root, 1, f)
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>, depth: usize) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), out, depth + 1);
            }
        }
    }
}

/// A `max`-style limit file: `None` for "max", unreadable or absent.
fn read_max(path: &Path) -> Option<u64> {
    let t = read_small(path)?;
    let t = t.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|v| *v < V1_UNLIMITED_FROM)
}

/// Value of `key` in a flat-keyed file.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// The memory limit of a cgroup dir, if finite. A cgroup without its own
/// limit under a limited parent is covered by watching the parent.
fn memory_limit(dir: &Path, v2: bool) -> Option<u64> {
    if v2 {
        read_max(&dir.join("memory.max"))
    } else {
        read_max(&dir.join("memory.limit_in_bytes"))
    }
}

/// Parses a cgroup's memory files (pure, for tests): `stat` is memory.stat.
pub fn parse_memory(
    v2: bool,
    stat: &str,
    limit_bytes: u64,
    usage_bytes: u64,
    limit_hits: Option<u64>,
    pressure: Option<&str>,
) -> CgroupMemory {
    let unreclaimable = if v2 {
        keyed(stat, "anon").unwrap_or(0) + keyed(stat, "shmem").unwrap_or(0)
    } else {
        keyed(stat, "total_rss")
            .or_else(|| keyed(stat, "rss"))
            .unwrap_or(0)
            + keyed(stat, "total_shmem")
                .or_else(|| keyed(stat, "shmem"))
                .unwrap_or(0)
    };
    let psi = |which: &str| {
        pressure?.lines().find_map(|l| {
            let rest = l.strip_prefix(which)?;
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix("avg10="))
                .and_then(|v| v.parse::<f64>().ok())
        })
    };
    CgroupMemory {
        limit_bytes,
        usage_bytes,
        unreclaimable_bytes: unreclaimable,
        psi_some_avg10: psi("some "),
        psi_full_avg10: psi("full "),
        limit_hits,
    }
}

/// `None` when the cgroup is gone. `usage` is the cgroup's kept-open
/// usage file (`memory.current` or `memory.usage_in_bytes`).
fn read_memory(
    dir: &Path,
    usage: &mut KeptFile,
    v2: bool,
    unified: Option<&Path>,
    rel: &str,
    lazy: Option<f64>,
    limit: u64,
) -> Option<CgroupMemory> {
    let read_u64 =
        |name: &str| read_small(&dir.join(name)).and_then(|t| t.trim().parse::<u64>().ok());
    let usage = usage.read()?.trim().parse::<u64>().ok()?;
    if lazy.is_some_and(|p| (usage as f64) * 100.0 < p * limit as f64) {
        return Some(CgroupMemory {
            limit_bytes: limit,
            usage_bytes: usage,
            unreclaimable_bytes: usage,
            psi_some_avg10: None,
            psi_full_avg10: None,
            limit_hits: None,
        });
    }
    let stat = read_small(&dir.join("memory.stat"))?;
    let hits = if v2 {
        read_small(&dir.join("memory.events")).and_then(|e| keyed(&e, "max"))
    } else {
        read_u64("memory.failcnt")
    };
    let pressure_dir = if v2 {
        Some(dir.to_path_buf())
    } else {
        unified.map(|u| join(u, rel))
    };
    let pressure = pressure_dir.and_then(|d| read_small(&d.join("memory.pressure")));
    Some(parse_memory(
        v2,
        &stat,
        limit,
        usage,
        hits,
        pressure.as_deref(),
    ))
}

/// `None` when the cgroup is gone (from its kept-open `pids.current` and
/// `pids.events`).
fn read_pids(
    current: &mut KeptFile,
    events: Option<&mut KeptFile>,
    max: u64,
) -> Option<CgroupPids> {
    let current = current.read()?.trim().parse().ok()?;
    let refused = events.and_then(|e| keyed(e.read()?, "max"));
    Some(CgroupPids {
        current,
        max,
        refused,
        refused_recently: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_stat_from_this_machine() {
        // Lines captured from /sys/fs/cgroup/memory/memory.stat (v1).
        let stat = "cache 9891840\nrss 8519680\nshmem 9084928\ntotal_cache 4970516480\n\
                    total_rss 935165952\ntotal_shmem 9084928\nhierarchical_memory_limit 268435456\n";
        let m = parse_memory(false, stat, 268_435_456, 300_000_000, Some(7), None);
        assert_eq!(m.unreclaimable_bytes, 935_165_952 + 9_084_928);
        assert!(m.percent() > 100.0);
        assert_eq!(m.limit_hits, Some(7));
        assert_eq!(m.psi_some_avg10, None);
    }

    #[test]
    fn v2_memory_with_pressure() {
        let stat = "anon 200000000\nfile 50000000\nshmem 1000000\n";
        let pressure = "some avg10=12.50 avg60=3.00 avg300=0.00 total=15314\n\
                        full avg10=4.00 avg60=0.00 avg300=0.00 total=3024\n";
        let m = parse_memory(true, stat, 256 << 20, 251_000_000, Some(3), Some(pressure));
        assert_eq!(m.unreclaimable_bytes, 201_000_000);
        assert!((m.percent() - 74.88).abs() < 0.1, "{}", m.percent());
        assert_eq!(
            (m.psi_some_avg10, m.psi_full_avg10),
            (Some(12.5), Some(4.0))
        );
    }

    #[test]
    fn walks_limited_cgroups_in_a_fake_tree() {
        let d = tempfile::tempdir().unwrap();
        let mem = d.path().join("memory");
        let pids = d.path().join("pids");
        let box_mem = mem.join("selfheal-sandbox/hog");
        let box_pids = pids.join("selfheal-sandbox/hog");
        std::fs::create_dir_all(&box_mem).unwrap();
        std::fs::create_dir_all(&box_pids).unwrap();
        std::fs::create_dir_all(mem.join("unlimited")).unwrap();
        std::fs::write(
            mem.join("unlimited/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            box_mem.join("memory.stat"),
            "total_rss 241172480\ntotal_shmem 0\nhierarchical_memory_limit 268435456\n",
        )
        .unwrap();
        std::fs::write(box_mem.join("memory.limit_in_bytes"), "268435456\n").unwrap();
        std::fs::write(box_mem.join("memory.usage_in_bytes"), "250000000\n").unwrap();
        std::fs::write(box_mem.join("memory.failcnt"), "0\n").unwrap();
        std::fs::write(box_mem.join("cgroup.procs"), "41\n42\n").unwrap();
        std::fs::write(box_pids.join("pids.max"), "20\n").unwrap();
        std::fs::write(box_pids.join("pids.current"), "20\n").unwrap();
        std::fs::write(box_pids.join("pids.events"), "max 5\n").unwrap();
        let roots = CgroupRoots {
            memory: Some((mem.clone(), false)),
            pids: Some((pids.clone(), false)),
            unified: None,
        };
        let mut s = CgroupScanner::new(roots, Duration::from_secs(60));
        let first = s.scan();
        assert_eq!(first.len(), 1, "{first:?}");
        let u = &first[0];
        assert_eq!(u.path, "/selfheal-sandbox/hog");
        assert!((u.memory.unwrap().percent() - 89.84).abs() < 0.1);
        let p = u.pids.unwrap();
        assert_eq!((p.current, p.max, p.refused_recently), (20, 20, 5));
        std::fs::write(box_pids.join("pids.events"), "max 9\n").unwrap();
        assert_eq!(s.scan()[0].pids.unwrap().refused_recently, 4);
        assert_eq!(s.members("/selfheal-sandbox/hog"), vec![41, 42]);
        // Lazy: usage (250 MB, 93%) is below 95%, so memory.stat is skipped
        // and the usage stands in for the unreclaimable figure.
        s.set_detail_above(Some(95.0));
        let lazy = s.scan()[0].memory.unwrap();
        assert_eq!(lazy.unreclaimable_bytes, 250_000_000);
        s.set_detail_above(Some(50.0));
        assert_eq!(s.scan()[0].memory.unwrap().unreclaimable_bytes, 241_172_480);
        // The counter files stay open between sweeps, and across a walk.
        assert_eq!(s.open_files(), 3);
        s.walk();
        assert_eq!(s.scan().len(), 1);
        assert_eq!(s.open_files(), 3);
        std::fs::remove_dir_all(mem.join("selfheal-sandbox")).unwrap();
        std::fs::remove_dir_all(pids.join("selfheal-sandbox")).unwrap();
        // Unlinked plain files still read through their descriptors (a
        // removed cgroup's do not: see the test on real cgroups below);
        // the next walk forgets them.
        s.walk();
        assert!(s.scan().is_empty());
        assert_eq!(s.open_files(), 0);
    }

    #[test]
    fn one_hierarchy_for_both_controllers_is_listed_once() {
        // v2: memory.max and pids.max side by side in each cgroup.
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_path_buf();
        let put = |cg: &str, file: &str, text: &str| {
            std::fs::create_dir_all(root.join(cg)).unwrap();
            std::fs::write(root.join(cg).join(file), text).unwrap();
        };
        put("both", "memory.max", "1073741824\n");
        put("both", "pids.max", "50\n");
        put("both", "memory.current", "1000\n");
        put("both", "pids.current", "3\n");
        put("both", "pids.events", "max 0\n");
        put("both/pids-only", "memory.max", "max\n");
        put("both/pids-only", "pids.max", "10\n");
        put("both/pids-only", "pids.current", "1\n");
        put("unlimited", "memory.max", "max\n");
        put("unlimited", "pids.max", "max\n");
        let roots = CgroupRoots {
            memory: Some((root.clone(), true)),
            pids: Some((root.clone(), true)),
            unified: Some(root.clone()),
        };
        let mut s = CgroupScanner::new(roots, Duration::from_secs(60));
        s.set_detail_above(Some(90.0));
        let mut u = s.scan();
        u.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            s.last_walk_dirs(),
            4,
            "root, both, both/pids-only, unlimited"
        );
        assert_eq!(u.len(), 2, "{u:?}");
        assert_eq!(u[0].path, "/both");
        assert_eq!(u[0].memory.unwrap().usage_bytes, 1000);
        assert_eq!(
            (u[0].pids.unwrap().current, u[0].pids.unwrap().max),
            (3, 50)
        );
        assert_eq!(u[1].path, "/both/pids-only");
        assert!(u[1].memory.is_none());
        assert_eq!(u[1].pids.unwrap().max, 10);
    }

    #[test]
    fn a_descriptor_budget_caps_the_kept_files() {
        let d = tempfile::tempdir().unwrap();
        let pids = d.path().join("pids");
        let n = KEPT_FILES_MAX / 2 + 5;
        for i in 0..n {
            let dir = pids.join(format!("c{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("pids.max"), "100\n").unwrap();
            std::fs::write(dir.join("pids.current"), format!("{i}\n")).unwrap();
            std::fs::write(dir.join("pids.events"), "max 0\n").unwrap();
        }
        let roots = CgroupRoots {
            memory: None,
            pids: Some((pids, false)),
            unified: None,
        };
        let mut s = CgroupScanner::new(roots, Duration::from_secs(60));
        let usages = s.scan();
        assert_eq!(usages.len(), n);
        // Every cgroup is read, over the budget too; only the budget is held.
        let mut current: Vec<u64> = usages.iter().map(|u| u.pids.unwrap().current).collect();
        current.sort_unstable();
        assert_eq!(current, (0..n as u64).collect::<Vec<_>>());
        let soft = selfheal_sys::rlimit::raise_nofile_limit(0).unwrap();
        let budget = KEPT_FILES_MAX.min(soft as usize / 8);
        assert_eq!(s.open_files(), budget, "open-file limit {soft}");
    }

    /// Removes what the test created, children first, even when it fails.
    struct Cleanup {
        child: Option<std::process::Child>,
        dirs: Vec<PathBuf>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for d in self.dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }

    #[test]
    fn kept_files_follow_real_cgroups_that_vanish_appear_and_come_back() {
        let test = "kept_files_follow_real_cgroups_that_vanish_appear_and_come_back";
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIP {test}: creating cgroups needs root");
            return;
        }
        let Some((root, v2)) = CgroupRoots::detect().pids else {
            eprintln!("SKIP {test}: no pids controller mounted");
            return;
        };
        let name = format!("selfheal-scan-test-{}", std::process::id());
        let parent = root.join(&name);
        if let Err(e) = std::fs::create_dir(&parent) {
            eprintln!("SKIP {test}: cannot create {}: {e}", parent.display());
            return;
        }
        let mut cleanup = Cleanup {
            child: None,
            dirs: vec![parent.clone()],
        };
        let mkcg = |leaf: &str, max: u64| {
            let dir = parent.join(leaf);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("pids.max"), format!("{max}\n")).unwrap();
            dir
        };
        let a = mkcg("a", 7);
        cleanup.dirs.push(a.clone());
        let roots = CgroupRoots {
            memory: None,
            pids: Some((root.clone(), v2)),
            unified: None,
        };
        // Walks only when told to (a walk is what finds new cgroups).
        let mut s = CgroupScanner::new(roots, Duration::from_secs(3600));
        let (pa, pb) = (format!("/{name}/a"), format!("/{name}/b"));
        let find = |u: &[CgroupUsage], p: &str| u.iter().find(|u| u.path == p).cloned();
        let first = s.scan();
        let ua = find(&first, &pa).expect("the limited cgroup is watched");
        assert_eq!((ua.pids.unwrap().current, ua.pids.unwrap().max), (0, 7));
        assert_eq!(
            s.files_open_for(&pa),
            2,
            "pids.current and pids.events kept open"
        );

        // A new cgroup is seen at the next walk, and then read.
        let b = mkcg("b", 9);
        cleanup.dirs.push(b.clone());
        assert!(find(&s.scan(), &pb).is_none(), "not walked yet");
        s.walk();
        let ub = find(&s.scan(), &pb).expect("found by the walk");
        assert_eq!(ub.pids.unwrap().max, 9);
        assert_eq!(s.files_open_for(&pa), 2, "a's files survive the walk");

        // A removed cgroup: its kept descriptors fail (ENODEV), the path
        // no longer opens, and it is dropped at once, without a walk.
        std::fs::remove_dir(&a).unwrap();
        let after = s.scan();
        assert!(find(&after, &pa).is_none(), "{after:?}");
        assert!(find(&after, &pb).is_some());

        // Removed and created again under the same path with a task in
        // it: the stale descriptors are replaced and the new cgroup read.
        std::fs::remove_dir(&b).unwrap();
        let b = mkcg("b", 9);
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        cleanup.child = Some(child);
        std::fs::write(b.join("cgroup.procs"), format!("{pid}\n")).unwrap();
        let ub = find(&s.scan(), &pb).expect("the new b is read through the old path");
        assert_eq!(ub.pids.unwrap().current, 1);
        assert!(s.reopens_for(&pb) >= 1, "the stale descriptor was replaced");
        assert_eq!(s.files_open_for(&pb), 2);
        drop(cleanup);
        assert!(!parent.exists(), "cleaned up");
    }
}
