//! Memory controller: v1 `memory.usage_in_bytes`/`memory.limit_in_bytes`;
//! v2 `memory.current`/`memory.max`.

use std::path::Path;

use super::{flat_keyed_value, parse_max};
use crate::error::Result;
use crate::fs;

/// v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 on
/// x86-64); anything this large is unlimited.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// Memory use and limit of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes charged now (page cache included).
    pub usage_bytes: u64,
    /// The hard limit; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// Highest usage seen, if the kernel offers it (v1 always, v2 5.19+).
    pub peak_bytes: Option<u64>,
    /// Tasks killed by the OOM killer inside this cgroup, if offered (v1 4.13+).
    pub oom_kills: Option<u64>,
}

/// True when `dir` has the v1 memory files.
pub fn present_v1(dir: &Path) -> bool {
    dir.join("memory.usage_in_bytes").exists()
}

/// True when `dir` has the v2 memory files (controller enabled, not the root).
pub fn present_v2(dir: &Path) -> bool {
    dir.join("memory.max").exists()
}

/// Maps a v1 limit value to `None` when it means "unlimited".
pub fn v1_limit(raw: u64) -> Option<u64> {
    (raw < V1_UNLIMITED_FROM).then_some(raw)
}

/// Reads v1 counters.
pub fn read_v1(dir: &Path) -> Result<MemoryStats> {
    let oom_kills = fs::read_optional(&dir.join("memory.oom_control"))?
        .and_then(|text| flat_keyed_value(&text, "oom_kill"));
    Ok(MemoryStats {
        usage_bytes: fs::read_u64(&dir.join("memory.usage_in_bytes"))?,
        limit_bytes: v1_limit(fs::read_u64(&dir.join("memory.limit_in_bytes"))?),
        peak_bytes: fs::read_u64_optional(&dir.join("memory.max_usage_in_bytes"))?,
        oom_kills,
    })
}

/// Reads v2 counters.
pub fn read_v2(dir: &Path) -> Result<MemoryStats> {
    let max_path = dir.join("memory.max");
    let max_text = fs::read(&max_path)?;
    let limit_bytes = parse_max(&max_text)
        .ok_or_else(|| fs::parse_error(&max_path, &max_text, "\"max\" or bytes"))?;
    let oom_kills = fs::read_optional(&dir.join("memory.events"))?
        .and_then(|text| flat_keyed_value(&text, "oom_kill"));
    Ok(MemoryStats {
        usage_bytes: fs::read_u64(&dir.join("memory.current"))?,
        limit_bytes,
        peak_bytes: fs::read_u64_optional(&dir.join("memory.peak"))?,
        oom_kills,
    })
}

/// Sets the v1 limit; with `swap_off`, memory+swap gets the same limit so
/// the cgroup cannot escape it by swapping. The kernel demands
/// memsw >= limit at every moment, so the order depends on the direction.
pub fn apply_v1(dir: &Path, max_bytes: u64, swap_off: bool) -> Result<()> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let value = max_bytes.to_string();
    if !swap_off || !memsw.exists() {
        return fs::write(&limit, &value);
    }
    let current = fs::read_u64(&limit)?;
    if max_bytes > current {
        fs::write(&memsw, &value)?;
        fs::write(&limit, &value)
    } else {
        fs::write(&limit, &value)?;
        fs::write(&memsw, &value)
    }
}

/// Sets v2 `memory.max`; with `swap_off`, `memory.swap.max` = 0 when present.
pub fn apply_v2(dir: &Path, max_bytes: u64, swap_off: bool) -> Result<()> {
    fs::write(&dir.join("memory.max"), &max_bytes.to_string())?;
    let swap = dir.join("memory.swap.max");
    if swap_off && swap.exists() {
        fs::write(&swap, "0")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v1_unlimited_and_oom_kills() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        // Values captured from this machine's v1 memory hierarchy.
        put(dir, "memory.usage_in_bytes", "1597440\n");
        put(dir, "memory.limit_in_bytes", "9223372036854771712\n");
        put(dir, "memory.max_usage_in_bytes", "2052096\n");
        put(
            dir,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        let s = read_v1(dir).unwrap();
        assert_eq!(s.usage_bytes, 1_597_440);
        assert_eq!(s.limit_bytes, None);
        assert_eq!(s.peak_bytes, Some(2_052_096));
        assert_eq!(s.oom_kills, Some(2));
        assert!(present_v1(dir) && !present_v2(dir));
    }

    #[test]
    fn v1_limit_orders_memsw_writes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        put(dir, "memory.limit_in_bytes", "9223372036854771712\n");
        put(dir, "memory.memsw.limit_in_bytes", "9223372036854771712\n");
        apply_v1(dir, 64 << 20, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap(),
            "67108864"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.memsw.limit_in_bytes")).unwrap(),
            "67108864"
        );
        assert_eq!(v1_limit(67108864), Some(67108864));
    }

    #[test]
    fn v2_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        put(dir, "memory.current", "8192\n");
        put(dir, "memory.max", "max\n");
        put(
            dir,
            "memory.events",
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        put(dir, "memory.swap.max", "max\n");
        let s = read_v2(dir).unwrap();
        assert_eq!(
            (s.usage_bytes, s.limit_bytes, s.peak_bytes, s.oom_kills),
            (8192, None, None, Some(1))
        );
        apply_v2(dir, 1 << 20, true).unwrap();
        assert_eq!(read_v2(dir).unwrap().limit_bytes, Some(1 << 20));
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.swap.max")).unwrap(),
            "0"
        );
    }
}
