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
//!
//! What the files say is parsed by `selfheal-cgroup`'s controllers
//! (`controller::parse_max`, `flat_keyed_value`, `memory::v1_limit`), the
//! one reader of these formats; only the kept-open I/O is done here, since
//! the controllers' `read` functions open each file by path every time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_cgroup::controller::{flat_keyed_value, memory, parse_max};
use selfheal_cgroup::hierarchy::ControllerLocation;
use selfheal_cgroup::{Controller, Hierarchy};

use crate::pseudo_file::{read_small, KeptFile};

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
        let loc = |c: Controller| match h.controller_location(c) {
            Some(ControllerLocation::V1(m)) => m.dir("/").map(|d| (d, false)),
            Some(ControllerLocation::V2(m)) => m.dir("/").map(|d| (d, true)),
            None => None,
        };
        CgroupRoots {
            memory: loc(Controller::Memory),
            pids: loc(Controller::Pids),
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

/// A `max`-style limit file: `None` for "max" (v2), v1's "unlimited"
/// (`memory::v1_limit`), unreadable or absent. Parsed by the cgroup
/// controllers' own `parse_max`.
fn read_max(path: &Path) -> Option<u64> {
    parse_max(&read_small(path)?)
        .flatten()
        .and_then(memory::v1_limit)
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
        flat_keyed_value(stat, "anon").unwrap_or(0) + flat_keyed_value(stat, "shmem").unwrap_or(0)
    } else {
        flat_keyed_value(stat, "total_rss")
            .or_else(|| flat_keyed_value(stat, "rss"))
            .unwrap_or(0)
            + flat_keyed_value(stat, "total_shmem")
                .or_else(|| flat_keyed_value(stat, "shmem"))
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
        read_small(&dir.join("memory.events")).and_then(|e| flat_keyed_value(&e, "max"))
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
    let refused = events.and_then(|e| flat_keyed_value(e.read()?, "max"));
    Some(CgroupPids {
        current,
        max,
        refused,
        refused_recently: 0,
    })
}

#[cfg(test)]
mod tests;
