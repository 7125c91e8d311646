//! I/O throttling rules: v1 `blkio.throttle.{read,write}_{bps,iops}_device`
//! and v2 `io.max`. A task waiting on a throttled device is being held back
//! on purpose (slow progress is progress), not hung.

use std::path::{Path, PathBuf};

/// One limit on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleRule {
    /// The file that holds it.
    pub file: PathBuf,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// `rbps`, `wbps`, `riops` or `wiops`.
    pub limit: &'static str,
    /// The limit, bytes or I/Os per second.
    pub value: u64,
}

/// The v1 throttle files and the limit each sets.
const V1_FILES: &[(&str, &str)] = &[
    ("blkio.throttle.read_bps_device", "rbps"),
    ("blkio.throttle.write_bps_device", "wbps"),
    ("blkio.throttle.read_iops_device", "riops"),
    ("blkio.throttle.write_iops_device", "wiops"),
];

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses a v1 throttle file (`8:0 1048576` per line) setting `limit`.
pub fn parse_v1_throttle(text: &str, file: &Path, limit: &'static str) -> Vec<ThrottleRule> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (major, minor) = parse_dev(it.next()?)?;
            let value = it.next()?.parse().ok()?;
            Some(ThrottleRule {
                file: file.to_path_buf(),
                major,
                minor,
                limit,
                value,
            })
        })
        .collect()
}

/// Parses v2 `io.max` (`8:0 rbps=1048576 wbps=max riops=max wiops=max`);
/// `max` is no limit and gives no rule.
pub fn parse_io_max(text: &str, file: &Path) -> Vec<ThrottleRule> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let Some((major, minor)) = it.next().and_then(parse_dev) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let limit = match k {
                "rbps" => "rbps",
                "wbps" => "wbps",
                "riops" => "riops",
                "wiops" => "wiops",
                _ => continue,
            };
            if let Ok(value) = v.parse() {
                out.push(ThrottleRule {
                    file: file.to_path_buf(),
                    major,
                    minor,
                    limit,
                    value,
                });
            }
        }
    }
    out
}

/// Every throttle rule set in cgroup directory `dir` (v1 files or v2
/// `io.max`, whichever exist; unreadable files give none).
pub fn read_throttle_rules(dir: &Path) -> Vec<ThrottleRule> {
    let mut out = Vec::new();
    for (name, limit) in V1_FILES {
        let file = dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&file) {
            out.extend(parse_v1_throttle(&text, &file, limit));
        }
    }
    let file = dir.join("io.max");
    if let Ok(text) = std::fs::read_to_string(&file) {
        out.extend(parse_io_max(&text, &file));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_rules() {
        // Captured: blkio.throttle.read_bps_device after
        // `echo "7:0 16" > …` on kernel 6.18.
        let f = Path::new("/x/blkio.throttle.read_bps_device");
        let r = parse_v1_throttle("7:0 16\n", f, "rbps");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].major, r[0].minor, r[0].value), (7, 0, 16));
        assert!(parse_v1_throttle("", f, "rbps").is_empty());
        let f = Path::new("/x/io.max");
        let r = parse_io_max("8:16 rbps=2097152 wbps=max riops=max wiops=120\n", f);
        assert_eq!(
            r.iter().map(|r| (r.limit, r.value)).collect::<Vec<_>>(),
            vec![("rbps", 2_097_152), ("wiops", 120)]
        );
        assert!(parse_io_max("8:16 rbps=max wbps=max riops=max wiops=max\n", f).is_empty());
        assert!(parse_io_max("garbage\n", f).is_empty());
    }
}
