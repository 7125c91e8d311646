//! Finding the guest's end of the link.
//!
//! udev makes `/dev/virtio-ports/NAME` symlinks; a minimal guest (busybox,
//! devtmpfs, no udev) only has `/dev/vportNpM`, whose name is in
//! `/sys/class/virtio-ports/vportNpM/name`.

use std::path::{Path, PathBuf};

/// Where to look: the roots are parameters so tests use a temp dir.
#[derive(Debug, Clone)]
pub struct PortLookup {
    /// `/dev`.
    pub dev: PathBuf,
    /// `/sys`.
    pub sys: PathBuf,
}

impl Default for PortLookup {
    fn default() -> PortLookup {
        PortLookup {
            dev: PathBuf::from("/dev"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// The device of port `name_or_path`: a path (anything with a `/`) is
/// taken as is when it exists; a name is looked up by its udev symlink,
/// then in sysfs. `None` when the port is absent.
pub fn find_port(name_or_path: &str, roots: &PortLookup) -> Option<PathBuf> {
    if name_or_path.is_empty() {
        return None;
    }
    if name_or_path.contains('/') {
        let p = PathBuf::from(name_or_path);
        return p.exists().then_some(p);
    }
    let link = roots.dev.join("virtio-ports").join(name_or_path);
    if link.exists() {
        return Some(link);
    }
    let class = roots.sys.join("class/virtio-ports");
    for entry in std::fs::read_dir(&class).ok()?.flatten() {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim_end() == name_or_path {
            let dev = roots.dev.join(entry.file_name());
            if Path::new(&dev).exists() {
                return Some(dev);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_port_by_udev_link_by_sysfs_name_or_by_path() {
        let d = tempfile::tempdir().unwrap();
        let roots = PortLookup {
            dev: d.path().join("dev"),
            sys: d.path().join("sys"),
        };
        assert_eq!(find_port("org.selfheal.0", &roots), None);
        // No udev: only sysfs knows the name.
        std::fs::create_dir_all(roots.sys.join("class/virtio-ports/vport1p1")).unwrap();
        std::fs::create_dir_all(roots.sys.join("class/virtio-ports/vport1p2")).unwrap();
        std::fs::write(
            roots.sys.join("class/virtio-ports/vport1p1/name"),
            "other\n",
        )
        .unwrap();
        std::fs::write(
            roots.sys.join("class/virtio-ports/vport1p2/name"),
            "org.selfheal.0\n",
        )
        .unwrap();
        std::fs::create_dir_all(&roots.dev).unwrap();
        std::fs::write(roots.dev.join("vport1p2"), "").unwrap();
        assert_eq!(
            find_port("org.selfheal.0", &roots),
            Some(roots.dev.join("vport1p2"))
        );
        // udev's link wins.
        std::fs::create_dir_all(roots.dev.join("virtio-ports")).unwrap();
        std::fs::write(roots.dev.join("virtio-ports/org.selfheal.0"), "").unwrap();
        assert_eq!(
            find_port("org.selfheal.0", &roots),
            Some(roots.dev.join("virtio-ports/org.selfheal.0"))
        );
        let p = roots.dev.join("vport1p2");
        assert_eq!(find_port(p.to_str().unwrap(), &roots), Some(p));
        assert_eq!(find_port("/nope/x", &roots), None);
        assert_eq!(find_port("", &roots), None);
    }
}
