//! A throwaway cgroup with memory, pids and CPU limits, for running test
//! and benchmark programs we inject faults into. Works with cgroup v2
//! (unified) and v1 (one directory per controller); removed on drop.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Limits of a [`Sandbox`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Most tasks (threads included).
    pub pids: u32,
    /// CPU quota in percent of one core.
    pub cpu_percent: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 1 << 30,
            pids: 64,
            cpu_percent: 100,
        }
    }
}

/// A cgroup (one per controller under v1) that exists while this lives.
#[derive(Debug)]
pub struct Sandbox {
    dirs: Vec<PathBuf>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}/{file}: {e}", dir.display())))
}

impl Sandbox {
    /// Creates the cgroup(s) under `root` (normally `/sys/fs/cgroup`).
    /// Needs write access there (root). Fails if memory or pids limits
    /// cannot be set: never run fault injection unconfined.
    pub fn create(root: &Path, limits: Limits) -> io::Result<Sandbox> {
        let name = format!(
            "selfheal-ckpt-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let period = 100_000u64;
        let quota = period * limits.cpu_percent as u64 / 100;
        if root.join("cgroup.controllers").exists() {
            let _ = write(root, "cgroup.subtree_control", "+memory +pids +cpu");
            let dir = root.join(&name);
            fs::create_dir(&dir)?;
            let sb = Sandbox {
                dirs: vec![dir.clone()],
            };
            write(&dir, "memory.max", &limits.memory_bytes.to_string())?;
            write(&dir, "pids.max", &limits.pids.to_string())?;
            let _ = write(&dir, "cpu.max", &format!("{quota} {period}"));
            return Ok(sb);
        }
        let mut sb = Sandbox { dirs: Vec::new() };
        for ctrl in ["memory", "pids", "cpu"] {
            let base = root.join(ctrl);
            if !base.is_dir() {
                if ctrl == "cpu" {
                    continue;
                }
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no {ctrl} cgroup controller at {}", base.display()),
                ));
            }
            let dir = base.join(&name);
            fs::create_dir(&dir)?;
            sb.dirs.push(dir.clone());
            match ctrl {
                "memory" => write(
                    &dir,
                    "memory.limit_in_bytes",
                    &limits.memory_bytes.to_string(),
                )?,
                "pids" => write(&dir, "pids.max", &limits.pids.to_string())?,
                _ => {
                    let _ = write(&dir, "cpu.cfs_period_us", &period.to_string());
                    let _ = write(&dir, "cpu.cfs_quota_us", &quota.to_string());
                }
            }
        }
        Ok(sb)
    }

    /// The `cgroup.procs` files to put a process in.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Peak memory use of the sandbox, if the kernel reports it.
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.dirs.iter().find_map(|d| {
            ["memory.peak", "memory.max_usage_in_bytes"]
                .iter()
                .find_map(|f| fs::read_to_string(d.join(f)).ok()?.trim().parse().ok())
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for d in &self.dirs {
            // The processes may take a moment to be fully gone.
            for _ in 0..50 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
