//! Cpuset controller: which CPUs (and memory nodes) tasks may use.
//!
//! v1 quirk: a new cpuset cgroup starts with empty `cpuset.cpus` and
//! `cpuset.mems`, and no task can join until both are set. v2 inherits the
//! parent's when empty.

use std::path::Path;

use crate::error::Result;
use crate::fs;

/// CPU numbers from here on are refused: far above any kernel's NR_CPUS
/// (8192 on x86-64), and low enough that a list costs at most this much.
pub const MAX_CPUS: usize = 1 << 16;

/// Parses a kernel CPU list (`0-3,5`, empty for none). `None` for text
/// that is not one, or names a CPU at or above [`MAX_CPUS`]. Linear in the
/// text plus the highest CPU, however many ranges overlap (found by
/// fuzzing: `7-7050005` took seconds).
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    // +1 at a range's start, -1 past its end; a running sum > 0 is "in".
    let mut delta: Vec<i64> = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = part.parse().ok()?;
                (n, n)
            }
        };
        if a > b || b >= MAX_CPUS {
            return None;
        }
        if delta.len() < b + 2 {
            delta.resize(b + 2, 0);
        }
        delta[a] += 1;
        delta[b + 1] -= 1;
    }
    let mut depth = 0;
    let mut cpus = Vec::new();
    for (cpu, d) in delta.iter().enumerate() {
        depth += d;
        if depth > 0 {
            cpus.push(cpu);
        }
    }
    Some(cpus)
}

/// Formats CPUs as a kernel list (`[0, 1, 2, 5]` → `0-2,5`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// The CPUs a cgroup may actually use (`cpuset.effective_cpus` in v1,
/// `cpuset.cpus.effective` in v2; falls back to `cpuset.cpus`).
pub fn read_effective_cpus(dir: &Path) -> Result<Vec<usize>> {
    for name in [
        "cpuset.effective_cpus",
        "cpuset.cpus.effective",
        "cpuset.cpus",
    ] {
        let path = dir.join(name);
        if let Some(text) = fs::read_optional(&path)? {
            return parse_cpu_list(&text)
                .ok_or_else(|| fs::parse_error(&path, &text, "a CPU list"));
        }
    }
    Ok(Vec::new())
}

/// Makes a freshly created v1 cpuset usable by copying the parent's CPUs
/// and memory nodes into whichever of the two is still empty.
pub fn init_v1_from_parent(parent: &Path, dir: &Path) -> Result<()> {
    for name in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(name);
        if fs::read(&own)?.trim().is_empty() {
            fs::write(&own, fs::read(&parent.join(name))?.trim())?;
        }
    }
    Ok(())
}

/// Restricts the cgroup to `cpus` (v1 and v2 use the same file name).
pub fn apply(dir: &Path, cpus: &[usize]) -> Result<()> {
    fs::write(&dir.join("cpuset.cpus"), &format_cpu_list(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("3,1-2,2"), Some(vec![1, 2, 3]));
        assert_eq!(parse_cpu_list("0-65536"), None);
    }

    #[test]
    fn huge_and_overlapping_ranges_are_cheap() {
        // fuzz/artifacts: a cgroup-target timeout (7M CPUs, sorted).
        let t0 = std::time::Instant::now();
        assert_eq!(parse_cpu_list("5,7-7050005,7-70501"), None);
        let many = vec!["0-65535"; 4096].join(",");
        assert_eq!(parse_cpu_list(&many).map(|c| c.len()), Some(65536));
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(format_cpu_list(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpu_list(&[1]), "1");
    }

    #[test]
    fn v1_init_copies_only_empty_files() {
        let d = tempfile::tempdir().unwrap();
        let parent = d.path();
        let child = parent.join("c");
        std::fs::create_dir(&child).unwrap();
        std::fs::write(parent.join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(parent.join("cpuset.mems"), "0\n").unwrap();
        std::fs::write(child.join("cpuset.cpus"), "1\n").unwrap();
        std::fs::write(child.join("cpuset.mems"), "\n").unwrap();
        init_v1_from_parent(parent, &child).unwrap();
        assert_eq!(
            std::fs::read_to_string(child.join("cpuset.cpus")).unwrap(),
            "1\n"
        );
        assert_eq!(
            std::fs::read_to_string(child.join("cpuset.mems")).unwrap(),
            "0"
        );
        assert_eq!(read_effective_cpus(&child).unwrap(), vec![1]);
    }
}
