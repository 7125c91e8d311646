//! `/proc/PID/mountinfo` parsing (proc(5)); pure, no I/O.
//!
//! A line looks like
//! `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
//! mount id, parent id, major:minor, root within the filesystem, mount point,
//! per-mount options, zero or more optional fields, a `-` separator, the
//! filesystem type, the source, and the per-superblock options.

use std::path::PathBuf;

use crate::error::{CgroupError, Result};

/// One mount as described by a mountinfo line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique mount id.
    pub mount_id: u32,
    /// Id of the parent mount.
    pub parent_id: u32,
    /// The filesystem's device number (`st_dev` of its files): major …
    pub major: u32,
    /// … and minor (for FUSE, the connection number under
    /// `/sys/fs/fuse/connections`).
    pub minor: u32,
    /// The directory of the filesystem that forms this mount's root
    /// (`/` normally; `/docker/<id>` for a container's cgroup bind mount).
    pub root: String,
    /// Where it is mounted, with `\040`-style escapes decoded.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`, …).
    pub mount_options: Vec<String>,
    /// Filesystem type (`cgroup`, `cgroup2`, `ext4`, …).
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options; for cgroup v1 these name the controllers.
    pub super_options: Vec<String>,
}

impl MountInfo {
    /// True when mounted read-only (per mount or per superblock).
    pub fn is_read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro") || self.super_options.iter().any(|o| o == "ro")
    }
}

/// Parses a whole mountinfo text. Blank lines are skipped; a malformed line is an error.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn malformed(line: &str) -> CgroupError {
    CgroupError::Malformed {
        what: "mountinfo",
        line: line.to_string(),
    }
}

fn parse_line(line: &str) -> Result<MountInfo> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or_else(|| malformed(line))?;
    if sep < 6 || fields.len() < sep + 3 {
        return Err(malformed(line));
    }
    let id = |s: &str| s.parse::<u32>().map_err(|_| malformed(line));
    let (major, minor) = fields[2].split_once(':').ok_or_else(|| malformed(line))?;
    let split_opts = |s: &str| -> Vec<String> {
        s.split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(MountInfo {
        mount_id: id(fields[0])?,
        parent_id: id(fields[1])?,
        major: id(major)?,
        minor: id(minor)?,
        root: unescape(fields[3]),
        mount_point: PathBuf::from(unescape(fields[4])),
        mount_options: split_opts(fields[5]),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
        super_options: fields
            .get(sep + 3)
            .map(|s| split_opts(s))
            .unwrap_or_default(),
    })
}

/// Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash) the kernel uses in mountinfo paths.
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if let Ok(b) = u8::try_from(value) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_man_page_example() {
        let m = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_id, 36);
        assert_eq!(m[0].root, "/mnt1");
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt2"));
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[0].super_options, vec!["rw", "errors=continue"]);
        assert!(!m[0].is_read_only());
    }

    #[test]
    fn decodes_escaped_mount_points() {
        assert_eq!(unescape(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape(r"/not\999octal"), r"/not\999octal");
    }

    #[test]
    fn rejects_lines_without_separator() {
        assert!(parse_mountinfo("36 35 98:0 / /mnt rw\n").is_err());
        assert!(parse_mountinfo("x 35 98:0 / /mnt rw - ext4 /dev/sda rw\n").is_err());
    }

    #[test]
    fn parses_every_captured_layout() {
        for name in [
            "mountinfo-hybrid-this-machine.txt",
            "mountinfo-hybrid-systemd.txt",
            "mountinfo-v2-systemd.txt",
            "mountinfo-v1-docker-container.txt",
        ] {
            let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let mounts = parse_mountinfo(&text).unwrap();
            assert_eq!(mounts.len(), text.lines().count(), "{name}");
            assert!(
                mounts.iter().any(|m| m.fs_type.starts_with("cgroup")),
                "{name}"
            );
        }
    }
}
