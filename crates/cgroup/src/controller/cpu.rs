//! CPU controller: CFS bandwidth (v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`,
//! v2 `cpu.max`) and the v1 real-time budget (`cpu.rt_runtime_us`).

use std::path::Path;

use crate::error::{CgroupError, Result};
use crate::fs;

/// A CFS bandwidth limit: at most `quota_us` of CPU time per `period_us`,
/// summed over all CPUs (quota = 2 × period allows two full CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// CPU time allowed per period; `None` when unlimited.
    pub quota_us: Option<u64>,
    /// The accounting period.
    pub period_us: u64,
}

impl CpuMax {
    /// The default period the kernel uses (100 ms).
    pub const DEFAULT_PERIOD_US: u64 = 100_000;

    /// A limit of `cpus` CPUs' worth of time (0.5 = half of one CPU) per default period.
    pub fn from_cpus(cpus: f64) -> CpuMax {
        let quota = (cpus * CpuMax::DEFAULT_PERIOD_US as f64)
            .round()
            .max(1000.0) as u64;
        CpuMax {
            quota_us: Some(quota),
            period_us: CpuMax::DEFAULT_PERIOD_US,
        }
    }

    /// The limit in CPUs (quota / period); `None` when unlimited.
    pub fn cpus(&self) -> Option<f64> {
        self.quota_us.map(|q| q as f64 / self.period_us as f64)
    }

    /// The text of v2 `cpu.max`.
    pub fn to_v2(&self) -> String {
        match self.quota_us {
            Some(q) => format!("{q} {}", self.period_us),
            None => format!("max {}", self.period_us),
        }
    }
}

/// Parses v2 `cpu.max` (`max 100000`, `50000 100000`).
pub fn parse_v2(text: &str) -> Option<CpuMax> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period_us = it.next()?.parse().ok()?;
    let quota_us = match quota {
        "max" => None,
        q => Some(q.parse().ok()?),
    };
    Some(CpuMax {
        quota_us,
        period_us,
    })
}

/// True when `dir` has v1 CFS bandwidth files.
pub fn present_v1(dir: &Path) -> bool {
    dir.join("cpu.cfs_quota_us").exists()
}

/// True when `dir` has v2 `cpu.max`.
pub fn present_v2(dir: &Path) -> bool {
    dir.join("cpu.max").exists()
}

/// Reads v1 bandwidth (quota -1 means unlimited).
pub fn read_v1(dir: &Path) -> Result<CpuMax> {
    let quota_path = dir.join("cpu.cfs_quota_us");
    let quota_text = fs::read(&quota_path)?;
    let quota: i64 = quota_text
        .trim()
        .parse()
        .map_err(|_| fs::parse_error(&quota_path, &quota_text, "microseconds or -1"))?;
    Ok(CpuMax {
        quota_us: u64::try_from(quota).ok(),
        period_us: fs::read_u64(&dir.join("cpu.cfs_period_us"))?,
    })
}

/// Reads v2 `cpu.max`.
pub fn read_v2(dir: &Path) -> Result<CpuMax> {
    let path = dir.join("cpu.max");
    let text = fs::read(&path)?;
    parse_v2(&text).ok_or_else(|| fs::parse_error(&path, &text, "\"max|QUOTA PERIOD\""))
}

/// Sets v1 bandwidth: period first, then quota (or -1).
pub fn apply_v1(dir: &Path, max: &CpuMax) -> Result<()> {
    fs::write(&dir.join("cpu.cfs_period_us"), &max.period_us.to_string())?;
    let quota = max.quota_us.map_or("-1".to_string(), |q| q.to_string());
    fs::write(&dir.join("cpu.cfs_quota_us"), &quota)
}

/// Sets v2 `cpu.max`.
pub fn apply_v2(dir: &Path, max: &CpuMax) -> Result<()> {
    fs::write(&dir.join("cpu.max"), &max.to_v2())
}

/// Gives v1 cgroup `dir` a real-time budget of `runtime_us` per period.
///
/// The kernel demands that children's budgets fit in the parent's, so the
/// parent (`parent`, not the hierarchy root, whose budget is the system's)
/// is first raised to its children's sum plus this one. Fails with a clear
/// message when the kernel lacks CONFIG_RT_GROUP_SCHED or the system budget
/// (`/proc/sys/kernel/sched_rt_runtime_us`) is exhausted.
pub fn apply_v1_rt(parent: &Path, dir: &Path, runtime_us: u64) -> Result<()> {
    let file = dir.join("cpu.rt_runtime_us");
    if !file.exists() {
        return Err(CgroupError::Unsupported {
            action: "set a real-time budget for",
            path: dir.display().to_string(),
            missing: "cpu.rt_runtime_us (kernel built without CONFIG_RT_GROUP_SCHED)".into(),
        });
    }
    let mut siblings = 0;
    for sibling in fs::child_dirs(parent)? {
        if sibling != dir {
            siblings += fs::read_u64_optional(&sibling.join("cpu.rt_runtime_us"))?.unwrap_or(0);
        }
    }
    let parent_file = parent.join("cpu.rt_runtime_us");
    let needed = siblings + runtime_us;
    if fs::read_u64(&parent_file)? < needed {
        fs::write(&parent_file, &needed.to_string())?;
    }
    fs::write(&file, &runtime_us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_text_round_trips() {
        assert_eq!(
            parse_v2("max 100000\n"),
            Some(CpuMax {
                quota_us: None,
                period_us: 100_000
            })
        );
        let half = parse_v2("50000 100000\n").unwrap();
        assert_eq!(half.cpus(), Some(0.5));
        assert_eq!(parse_v2(&half.to_v2()), Some(half));
        assert_eq!(parse_v2("max"), None);
        assert_eq!(CpuMax::from_cpus(1.0).to_v2(), "100000 100000");
    }

    #[test]
    fn v1_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::write(dir.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(read_v1(dir).unwrap().quota_us, None);
        apply_v1(dir, &CpuMax::from_cpus(0.25)).unwrap();
        assert_eq!(read_v1(dir).unwrap().cpus(), Some(0.25));
    }

    #[test]
    fn rt_budget_raises_the_parent_to_fit_siblings() {
        let d = tempfile::tempdir().unwrap();
        let parent = d.path();
        std::fs::write(parent.join("cpu.rt_runtime_us"), "0\n").unwrap();
        for (name, rt) in [("a", "100000"), ("b", "0")] {
            std::fs::create_dir(parent.join(name)).unwrap();
            std::fs::write(parent.join(name).join("cpu.rt_runtime_us"), rt).unwrap();
        }
        apply_v1_rt(parent, &parent.join("b"), 50_000).unwrap();
        assert_eq!(
            std::fs::read_to_string(parent.join("cpu.rt_runtime_us")).unwrap(),
            "150000"
        );
        assert_eq!(
            std::fs::read_to_string(parent.join("b/cpu.rt_runtime_us")).unwrap(),
            "50000"
        );
        std::fs::create_dir(parent.join("c")).unwrap();
        let err = apply_v1_rt(parent, &parent.join("c"), 1).unwrap_err();
        assert!(err.to_string().contains("CONFIG_RT_GROUP_SCHED"), "{err}");
    }
}
