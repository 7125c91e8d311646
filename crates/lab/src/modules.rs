//! The guest kernel's own modules the lab loads from its initramfs (the
//! i6300esb watchdog driver, virtio-blk and ext4 for the state disk), in
//! dependency order. The Debian .deb ships no `modules.dep` (depmod runs at
//! install time), so dependencies are read from each module's `.modinfo`
//! (`depends=a,b`), as depmod does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Neither a module file nor built into the kernel.
    #[error("kernel module `{name}` is neither under {dir} nor built in (modules.builtin); this kernel flavour lacks it: pick another with --kernel-flavour")]
    Missing {
        /// The module name.
        name: String,
        /// `lib/modules/<release>`.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Module names compare with `-` and `_` alike, as the kernel does.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn index(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), ModuleError> {
    let io = |source| ModuleError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for e in fs::read_dir(dir).map_err(io)? {
        let path = e.map_err(io)?.path();
        if path.is_dir() {
            index(&path, out)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            out.insert(normalize(stem), path.clone());
        }
    }
    Ok(())
}

/// The `depends=` list of a module's `.modinfo`.
pub fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko
        .windows(key.len() + 1)
        .position(|w| w[0] == 0 && &w[1..] == key)
    else {
        return Vec::new();
    };
    let rest = &ko[at + 1 + key.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(normalize)
        .collect()
}

/// The module files to load for `wanted` (names), dependencies first;
/// modules built into the kernel are left out.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, ModuleError> {
    let mut files = BTreeMap::new();
    let kernel = modules_dir.join("kernel");
    if kernel.is_dir() {
        index(&kernel, &mut files)?;
    }
    let builtin: BTreeSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko"))
        .map(normalize)
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit(
            &normalize(name),
            &files,
            &builtin,
            modules_dir,
            &mut seen,
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    dir: &Path,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<PathBuf>,
) -> Result<(), ModuleError> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(path) = files.get(name) else {
        if builtin.contains(name) {
            return Ok(());
        }
        return Err(ModuleError::Missing {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        });
    };
    let data = fs::read(path).map_err(|source| ModuleError::Io {
        path: path.clone(),
        source,
    })?;
    for dep in depends(&data) {
        visit(&dep, files, builtin, dir, seen, order)?;
    }
    order.push(path.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_builtins_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel/drivers");
        fs::create_dir_all(k.join("watchdog")).unwrap();
        // .modinfo strings as the kernel's build writes them.
        fs::write(
            k.join("watchdog/i6300esb.ko"),
            b"\x7fELF...\0license=GPL\0depends=watchdog\0retpoline=Y\0",
        )
        .unwrap();
        fs::write(
            k.join("watchdog/watchdog.ko"),
            b"\x7fELF\0depends=pretimeout-core\0",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/watchdog/pretimeout_core.ko\n",
        )
        .unwrap();
        fs::write(k.join("lonely.ko"), b"\x7fELF\0name=lonely\0").unwrap();
        let got = resolve(dir.path(), &["i6300esb", "lonely", "watchdog"]).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["watchdog.ko", "i6300esb.ko", "lonely.ko"]);
        let err = resolve(dir.path(), &["nope"]).unwrap_err().to_string();
        assert!(
            err.contains("`nope`") && err.contains("--kernel-flavour"),
            "{err}"
        );
    }

    #[test]
    fn a_module_without_dependencies_has_none() {
        assert!(depends(b"\0depends=\0vermagic=6.1").is_empty());
        assert_eq!(
            depends(b"\0depends=virtio,virtio_ring\0"),
            ["virtio", "virtio_ring"]
        );
    }
}
