//! Steady-state availability from the lab's measurements (docs/availability.md).
//!
//! The model is an alternating renewal process. While the machine is up,
//! faults arrive as a Poisson process of rate λ (per year of uptime); a
//! fault is of class c with probability m_c (the mix). Under a profile, a
//! fault of class c ends one of three ways, with the frequencies the lab
//! measured: restored in place (p_ip, mean downtime d_ip: until the
//! heartbeats came back or selfheal's recovery step reported, whichever is
//! later), restarted and serving again (p_r, d_r: detection, grace, restart
//! and boot), or not restored (p_u: hung, or alive with the fault), which
//! costs U = M + R: someone notices after M and restarts it in R. Then
//!
//! ```text
//! E[D_c]  = p_ip·d_ip + p_r·d_r + p_u·(M + R)     expected downtime of one fault
//! E[D]    = Σ_c m_c·E[D_c]
//! A       = E[U] / (E[U] + E[D]) = 1 / (1 + λ·E[D])   (E[U] = 1/λ)
//! downtime per year = (1 − A) · 1 year = λ·A·E[D]
//! ```
//!
//! by the renewal-reward theorem, whatever the distributions of up and down
//! times, provided faults do not arrive while the machine is down and each
//! restoration leaves it as good as new.

mod input;
mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use input::{parse_mix, parse_seconds, positive_rate, MixError, ParamError};
pub use view::{markdown, nines, percent, svg};

use crate::analyze::{Outcome, RunRecord};
use crate::report::Report;
use crate::scenario::{FaultClass, KernelProfile};

/// Seconds in a (Julian) year.
pub const YEAR_S: f64 = 365.25 * 86_400.0;

/// Faults per machine per year when not given: one a month, a fault-prone
/// machine (the table scales: downtime is nearly proportional to λ).
pub const DEFAULT_FAULTS_PER_YEAR: f64 = 12.0;

/// M when not given: a fault nothing restored is noticed by a person (an
/// alert, a user) after an hour on average.
pub const DEFAULT_MANUAL_REPAIR_S: f64 = 3600.0;

/// R when not given: a physical server's restart until it serves again
/// (firmware self-test about a minute, kernel and services another). The
/// lab guest boots in 15–25 s; its measured restarts are used where the
/// lab followed one.
pub const DEFAULT_RESTART_S: f64 = 120.0;

/// The fault mix of docs/availability.md: user-space memory exhaustion and
/// D-state waits most common, kernel bugs rarer, an all-CPU deadlock rarest.
pub fn default_mix() -> Vec<(FaultClass, f64)> {
    use FaultClass::*;
    vec![
        (MemHog, 0.25),
        (DState, 0.15),
        (ForkBomb, 0.10),
        (KmemLeak, 0.10),
        (PreemptLoop, 0.10),
        (SpinSelf, 0.10),
        (RtHog, 0.05),
        (IrqLoop, 0.05),
        (KthreadLoop, 0.05),
        (SpinAbba, 0.05),
    ]
}

/// The model's parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// λ: faults per year of uptime.
    pub faults_per_year: f64,
    /// m_c, not necessarily normalised.
    pub mix: Vec<(FaultClass, f64)>,
    /// M: seconds until someone notices a machine nothing restored.
    pub manual_repair_s: f64,
    /// R: seconds from a restart to serving again, where the lab did not
    /// measure one (a fault nothing restored; a panic the lab did not follow).
    pub restart_s: f64,
}

impl Params {
    /// U = M + R: the downtime of a fault nothing restored, s.
    pub fn unrestored_s(&self) -> f64 {
        self.manual_repair_s + self.restart_s
    }
}

/// How one injection ended, for the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ending {
    /// Serving again without a restart, after this many seconds.
    InPlace(f64),
    /// Serving again after a restart, this many seconds after the fault;
    /// `estimated` when the lab did not follow the restart (d = the last
    /// sign of the fault + R).
    Restarted { downtime_s: f64, estimated: bool },
    /// Not serving at the end of the observation.
    Unrestored,
}

/// How `r` ended; `restart_s` is R.
pub fn ending(r: &RunRecord, restart_s: f64) -> Ending {
    let ms = |v: i64| v.max(0) as f64 / 1000.0;
    match r.outcome {
        // The heartbeats' return, or selfheal's recovery step (the service
        // was degraded until then even where every CPU kept beating).
        Outcome::Healthy => Ending::InPlace(
            r.downtime_ms
                .map_or(0.0, ms)
                .max(r.selfheal.recover_ms.map_or(0.0, ms)),
        ),
        Outcome::Restarted => match r.downtime_ms {
            Some(d) => Ending::Restarted {
                downtime_s: ms(d),
                estimated: false,
            },
            None => Ending::Restarted {
                downtime_s: last_sign_s(r) + restart_s,
                estimated: true,
            },
        },
        // A profile that does not follow reboots ran QEMU with -no-reboot:
        // the kernel panicked and a real machine would have restarted
        // (panic=1). Where the lab followed, the next boot never served.
        Outcome::Rebooted if !r.scenario.profile.follows_reboot() => Ending::Restarted {
            downtime_s: last_sign_s(r) + restart_s,
            estimated: true,
        },
        Outcome::Rebooted | Outcome::Degraded | Outcome::Hung => Ending::Unrestored,
    }
}

/// The latest report of the fault before the guest went down (a kernel
/// detector, or selfheal's detection), s after the fault: a lower bound of
/// when it restarted.
fn last_sign_s(r: &RunRecord) -> f64 {
    let kernel = r.kernel.values().map(|h| h.latency_ms).max();
    kernel.max(r.selfheal.detect_ms).unwrap_or(0).max(0) as f64 / 1000.0
}

/// What the model needs of one class under one profile, from the lab.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassInputs {
    /// Injections measured.
    pub runs: usize,
    /// Restored in place (by selfheal, or by nothing at all).
    pub p_in_place: f64,
    /// Restarted and serving again.
    pub p_restart: f64,
    /// Not restored within the observation.
    pub p_unrestored: f64,
    /// Mean downtime when restored in place, s.
    pub d_in_place_s: f64,
    /// Mean downtime when restarted, s.
    pub d_restart_s: f64,
    /// Restarts whose downtime is estimated with R (not followed by the lab).
    pub restarts_estimated: usize,
}

impl ClassInputs {
    /// From the endings of one class's injections; `None` without any.
    pub fn from_endings(endings: &[Ending]) -> Option<ClassInputs> {
        if endings.is_empty() {
            return None;
        }
        let n = endings.len() as f64;
        let (mut ip, mut rs, mut estimated, mut u) = (vec![], vec![], 0, 0usize);
        for e in endings {
            match *e {
                Ending::InPlace(d) => ip.push(d),
                Ending::Restarted {
                    downtime_s,
                    estimated: est,
                } => {
                    rs.push(downtime_s);
                    estimated += usize::from(est);
                }
                Ending::Unrestored => u += 1,
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        Some(ClassInputs {
            runs: endings.len(),
            p_in_place: ip.len() as f64 / n,
            p_restart: rs.len() as f64 / n,
            p_unrestored: u as f64 / n,
            d_in_place_s: mean(&ip),
            d_restart_s: mean(&rs),
            restarts_estimated: estimated,
        })
    }

    /// E[D_c] = p_ip·d_ip + p_r·d_r + p_u·U, seconds.
    pub fn expected_downtime_s(&self, unrestored_s: f64) -> f64 {
        self.p_in_place * self.d_in_place_s
            + self.p_restart * self.d_restart_s
            + self.p_unrestored * unrestored_s
    }
}

/// The model's result for one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    /// The profile.
    pub profile: KernelProfile,
    /// The measured inputs per class (every class with runs, mix or not).
    pub inputs: BTreeMap<FaultClass, ClassInputs>,
    /// E[D_c] per class of the mix, s.
    pub per_class_s: BTreeMap<FaultClass, f64>,
    /// Each class's part of E[D], m_c·E[D_c] (m normalised), s.
    pub share_s: BTreeMap<FaultClass, f64>,
    /// Mix classes without runs under this profile (then no result).
    pub missing: Vec<FaultClass>,
    /// E[D], s (`None` when classes are missing).
    pub expected_downtime_s: Option<f64>,
    /// A.
    pub availability: Option<f64>,
    /// (1 − A) · year = λ·A·E[D], s.
    pub downtime_per_year_s: Option<f64>,
    /// Restarts per year: λ·A·Σ m_c p_r,c.
    pub restarts_per_year: Option<f64>,
}

impl ProfileResult {
    /// Class c's part of the downtime per year, λ·A·m_c·E[D_c], s.
    pub fn class_per_year_s(&self, class: FaultClass, faults_per_year: f64) -> Option<f64> {
        Some(faults_per_year * self.availability? * self.share_s.get(&class)?)
    }
}

/// The model over every profile of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Per profile, report order.
    pub profiles: Vec<ProfileResult>,
    /// Runs restored in place that were scored before the lab measured
    /// downtime: their downtime is selfheal's recovery time alone.
    pub in_place_unmeasured: usize,
}

/// A = 1 / (1 + λ·E[D]) with λ per year and E[D] in seconds.
pub fn availability(faults_per_year: f64, expected_downtime_s: f64) -> f64 {
    1.0 / (1.0 + faults_per_year / YEAR_S * expected_downtime_s)
}

/// The model for one profile from per-class inputs.
pub fn evaluate(
    profile: KernelProfile,
    inputs: &BTreeMap<FaultClass, ClassInputs>,
    p: &Params,
) -> ProfileResult {
    let total: f64 = p.mix.iter().map(|(_, w)| w).sum();
    let mut per_class_s = BTreeMap::new();
    let mut share_s = BTreeMap::new();
    let mut missing = Vec::new();
    let (mut ed, mut restarts) = (0.0, 0.0);
    for &(class, w) in &p.mix {
        if w <= 0.0 {
            continue;
        }
        match inputs.get(&class) {
            Some(i) => {
                let d = i.expected_downtime_s(p.unrestored_s());
                per_class_s.insert(class, d);
                share_s.insert(class, w / total * d);
                ed += w / total * d;
                restarts += w / total * i.p_restart;
            }
            None => missing.push(class),
        }
    }
    let complete = missing.is_empty();
    let a = complete.then(|| availability(p.faults_per_year, ed));
    ProfileResult {
        profile,
        inputs: inputs.clone(),
        per_class_s,
        share_s,
        missing,
        expected_downtime_s: complete.then_some(ed),
        availability: a,
        downtime_per_year_s: a.map(|a| p.faults_per_year * a * ed),
        restarts_per_year: a.map(|a| p.faults_per_year * a * restarts),
    }
}

/// The fault injections the model counts: the guest booted, the fault
/// started, and selfheal (where it ran) was allowed to act.
fn counted(r: &RunRecord) -> bool {
    r.scenario.class.is_some() && r.booted && r.fault_start_ms.is_some() && !r.scenario.dry_run
}

/// The model for every profile the report has fault runs of, from the run
/// records (so results written before the healing summary existed count too).
pub fn from_report(r: &Report, p: &Params) -> Table {
    let mut profiles = Vec::new();
    let in_place_unmeasured = r
        .runs
        .iter()
        .filter(|run| counted(run) && run.outcome == Outcome::Healthy && run.downtime_ms.is_none())
        .count();
    for &profile in KernelProfile::ALL {
        let mut endings: BTreeMap<FaultClass, Vec<Ending>> = BTreeMap::new();
        for run in r
            .runs
            .iter()
            .filter(|run| run.scenario.profile == profile && counted(run))
        {
            if let Some(c) = run.scenario.class {
                endings.entry(c).or_default().push(ending(run, p.restart_s));
            }
        }
        let inputs: BTreeMap<FaultClass, ClassInputs> = endings
            .into_iter()
            .filter_map(|(c, e)| Some((c, ClassInputs::from_endings(&e)?)))
            .collect();
        if !inputs.is_empty() {
            profiles.push(evaluate(profile, &inputs, p));
        }
    }
    Table {
        profiles,
        in_place_unmeasured,
    }
}

/// Why a results directory cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory does not exist or is not a directory.
    #[error("--results {0}: not a directory; pass the directory a `selfheal-lab run` wrote (e.g. lab/results/full-tight-r20-2026-11-22)")]
    NotDir(PathBuf),
    /// results.json missing or unreadable.
    #[error("reading {path}: {source}; pass the directory a `selfheal-lab run` wrote, or rebuild results.json with `selfheal-lab report --out DIR`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// results.json is not a lab report.
    #[error("{path} is not a lab report ({source}); rebuild it from the raw logs with `selfheal-lab report --out DIR`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// No fault injection in it.
    #[error("{0} holds no fault injection (only fault-free runs, or none booted); run `selfheal-lab run` with fault classes")]
    NoFaultRuns(PathBuf),
}

/// Reads `dir/results.json`.
pub fn load_report(dir: &Path) -> Result<Report, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::NotDir(dir.to_path_buf()));
    }
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let report: Report = serde_json::from_str(&text).map_err(|source| LoadError::Corrupt {
        path: path.clone(),
        source,
    })?;
    if !report.runs.iter().any(counted) {
        return Err(LoadError::NoFaultRuns(path));
    }
    Ok(report)
}
