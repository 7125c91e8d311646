//! Host preparation: Debian packages through apt, and the pinned cloud
//! kernel with its headers, downloaded with `apt-get download`, verified
//! against the package index's SHA256 and unpacked into the lab's cache
//! (never installed: the host's /boot is not touched).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Host packages the lab runs: QEMU, the guest's busybox, and the compiler
/// and make for the kernel module and the static guest helper.
pub const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "gcc-12",
    "make",
    "libc6-dev",
];

/// The Debian kernel the guest boots. Pinned so every run measures the
/// same kernel; this version lives in bookworm's main archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPin {
    /// ABI part of the package names, e.g. `6.1.0-50`.
    pub abi: String,
    /// Debian package version, e.g. `6.1.176-1`.
    pub version: String,
    /// Flavour: `cloud-amd64` (small, the lab's default) or `amd64` (the
    /// generic kernel: it has the i6300esb watchdog driver, which the
    /// cloud kernel lacks).
    pub flavour: String,
}

/// The cloud flavour: boots fastest, every driver the basic lab needs built in.
pub const FLAVOUR_CLOUD: &str = "cloud-amd64";
/// The generic flavour: has the i6300esb watchdog and virtio-blk as modules.
pub const FLAVOUR_GENERIC: &str = "amd64";

impl Default for KernelPin {
    fn default() -> KernelPin {
        KernelPin {
            abi: "6.1.0-50".into(),
            version: "6.1.176-1".into(),
            flavour: FLAVOUR_CLOUD.into(),
        }
    }
}

impl KernelPin {
    /// `uname -r` of the guest kernel.
    pub fn release(&self) -> String {
        format!("{}-{}", self.abi, self.flavour)
    }

    /// The kbuild series (`6.1`) from the ABI.
    fn series(&self) -> String {
        self.abi.split('.').take(2).collect::<Vec<_>>().join(".")
    }

    /// (package, version) pairs to fetch.
    pub fn packages(&self) -> Vec<(String, String)> {
        let v = self.version.clone();
        vec![
            (format!("linux-image-{}", self.release()), v.clone()),
            (format!("linux-headers-{}", self.release()), v.clone()),
            (format!("linux-headers-{}-common", self.abi), v.clone()),
            (format!("linux-kbuild-{}", self.series()), v),
        ]
    }
}

/// A setup step that failed, saying which and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// apt-get install failed.
    #[error("installing host packages ({packages}) with apt-get failed: {step}{source}. The lab needs them; run `apt-get install {packages}` by hand to see why")]
    AptInstall {
        /// Space-separated package list.
        packages: String,
        /// `apt-get update: ` when the update before the retry failed,
        /// else empty.
        step: &'static str,
        /// How apt-get failed.
        source: CommandFailed,
    },
    /// The pinned version is not in the package index.
    #[error("{package}={version} is not in the apt package index ({source}). Run `apt-get update`; if it is still missing Debian has dropped it: choose another with --kernel-abi/--kernel-version (see `apt-cache search linux-image | grep cloud-amd64`)")]
    NotInIndex {
        /// Package name.
        package: String,
        /// Pinned version.
        version: String,
        /// What apt said.
        source: IndexError,
    },
    /// apt-get download failed.
    #[error("downloading {package}={version} with apt-get download failed: {source}")]
    Download {
        /// Package name.
        package: String,
        /// Pinned version.
        version: String,
        /// What went wrong.
        source: DownloadError,
    },
    /// A downloaded or cached file does not match its checksum.
    #[error("{path}: SHA256 is {actual}, expected {expected}; the file was deleted, run again to re-download it")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// From the package index.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// dpkg-deb -x failed.
    #[error("unpacking {path} with dpkg-deb failed: {source}")]
    Extract {
        /// The .deb.
        path: PathBuf,
        /// How dpkg-deb failed.
        source: CommandFailed,
    },
    /// Some file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tool could not be started at all.
    #[error("cannot run `{cmd}`: {source}. Is it installed and on PATH?")]
    Spawn {
        /// The command.
        cmd: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A tool ran and exited unsuccessfully: the last lines of its stderr
/// and its exit status, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stderr_tail} ({status})")]
pub struct CommandFailed {
    /// Its last four stderr lines, joined by ` | `.
    pub stderr_tail: String,
    /// How it exited.
    pub status: std::process::ExitStatus,
}

/// Why the package index gave no checksum for a pinned package.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// `apt-cache show` failed (usually: the version is not in the index).
    #[error(transparent)]
    AptCache(#[from] CommandFailed),
    /// The index entry has no SHA256 line.
    #[error("no SHA256 field")]
    NoSha256,
}

/// Why `apt-get download` gave no package file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// apt-get failed.
    #[error(transparent)]
    AptGet(#[from] CommandFailed),
    /// apt-get succeeded but wrote no matching file.
    #[error("apt-get reported success but no {prefix}*.deb appeared in {}", dir.display())]
    NoDeb {
        /// The file name prefix looked for.
        prefix: String,
        /// Where.
        dir: PathBuf,
    },
}

/// Wraps an io::Error with what and where.
pub fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SetupError + 'a {
    move |source| SetupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The lab's cache directory: `$SELFHEAL_LAB_CACHE`, else `~/.cache/selfheal-lab`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SELFHEAL_LAB_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("selfheal-lab")
}

/// Runs a command: `Ok(Ok(stdout))` if it succeeded, `Ok(Err(..))` with its
/// stderr tail if it ran and failed, `Err` if it could not be started.
pub fn run_capture(cmd: &mut Command) -> Result<Result<String, CommandFailed>, SetupError> {
    let out = cmd.output().map_err(|source| SetupError::Spawn {
        cmd: format!("{cmd:?}"),
        source,
    })?;
    if out.status.success() {
        Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Ok(Err(CommandFailed {
            stderr_tail: tail.join(" | "),
            status: out.status,
        }))
    }
}

/// Host packages from `wanted` that dpkg does not report installed.
pub fn missing_packages(wanted: &[&str]) -> Result<Vec<String>, SetupError> {
    let mut missing = Vec::new();
    for pkg in wanted {
        let status = run_capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))?;
        if !matches!(status, Ok(s) if s.contains("install ok installed")) {
            missing.push(pkg.to_string());
        }
    }
    Ok(missing)
}

/// Installs the missing host packages; runs `apt-get update` once if the
/// first attempt fails (a fresh machine has no package lists).
pub fn ensure_host_packages(log: &mut dyn FnMut(&str)) -> Result<(), SetupError> {
    let missing = missing_packages(HOST_PACKAGES)?;
    if missing.is_empty() {
        return Ok(());
    }
    log(&format!("installing host packages: {}", missing.join(" ")));
    let install = || {
        run_capture(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install()?.is_ok() {
        return Ok(());
    }
    log("apt-get install failed; running apt-get update and retrying");
    if let Err(source) = run_capture(Command::new("apt-get").arg("update"))? {
        return Err(SetupError::AptInstall {
            packages: missing.join(" "),
            step: "apt-get update: ",
            source,
        });
    }
    install()?
        .map(|_| ())
        .map_err(|source| SetupError::AptInstall {
            packages: missing.join(" "),
            step: "",
            source,
        })
}

/// SHA256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, SetupError> {
    let data = fs::read(path).map_err(io_err("reading", path))?;
    Ok(sha256_hex(&data))
}

/// SHA256 of bytes, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA256 the package index gives for `pkg=version`.
fn index_sha256(pkg: &str, version: &str) -> Result<String, SetupError> {
    let spec = format!("{pkg}={version}");
    let out = run_capture(Command::new("apt-cache").args(["show", "--no-all-versions", &spec]))?;
    let text = out.map_err(|e| SetupError::NotInIndex {
        package: pkg.into(),
        version: version.into(),
        source: e.into(),
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("SHA256: "))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| SetupError::NotInIndex {
            package: pkg.into(),
            version: version.into(),
            source: IndexError::NoSha256,
        })
}

/// The unpacked kernel: where the image and the module build tree are.
#[derive(Debug, Clone)]
pub struct KernelTree {
    /// `uname -r`.
    pub release: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// The kernel's build config.
    pub config: PathBuf,
    /// `make -C` target for out-of-tree modules.
    pub headers: PathBuf,
    /// `lib/modules/<release>`: the kernel's own modules.
    pub modules: PathBuf,
}

/// Downloads (or reuses) and unpacks the pinned kernel, verifying every .deb.
pub fn ensure_kernel(
    cache: &Path,
    pin: &KernelPin,
    log: &mut dyn FnMut(&str),
) -> Result<KernelTree, SetupError> {
    let release = pin.release();
    let debs = cache.join("debs");
    let root = cache.join("kernel").join(&release);
    let stamp = root.join(".selfheal-lab-unpacked");
    fs::create_dir_all(&debs).map_err(io_err("creating", &debs))?;
    let mut sums = Vec::new();
    for (pkg, version) in pin.packages() {
        let deb = fetch_deb(&debs, &pkg, &version, log)?;
        sums.push(format!("{} {}", sha256_file(&deb)?, deb.display()));
    }
    let manifest = sums.join("\n");
    let tree = KernelTree {
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        config: root.join(format!("boot/config-{release}")),
        headers: root.join(format!("usr/src/linux-headers-{release}")),
        modules: root.join(format!("lib/modules/{release}")),
        release: release.clone(),
    };
    if fs::read_to_string(&stamp).ok().as_deref() == Some(manifest.as_str())
        && tree.vmlinuz.is_file()
    {
        return Ok(tree);
    }
    log(&format!(
        "unpacking kernel {release} into {}",
        root.display()
    ));
    if root.exists() {
        fs::remove_dir_all(&root).map_err(io_err("removing", &root))?;
    }
    fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
    for line in &sums {
        let deb = PathBuf::from(line.split_once(' ').map_or("", |(_, p)| p));
        run_capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?.map_err(
            |source| SetupError::Extract {
                path: deb.clone(),
                source,
            },
        )?;
    }
    // The headers' Makefile includes the -common tree by absolute path
    // (/usr/src/…); point it at our unpacked copy instead.
    let mk = tree.headers.join("Makefile");
    let text = fs::read_to_string(&mk).map_err(io_err("reading", &mk))?;
    let fixed = text.replace("/usr/src/", &format!("{}/usr/src/", root.display()));
    fs::write(&mk, fixed).map_err(io_err("writing", &mk))?;
    fs::write(&stamp, &manifest).map_err(io_err("writing", &stamp))?;
    Ok(tree)
}

/// Returns a verified .deb for `pkg=version` in `dir`, downloading it if needed.
fn fetch_deb(
    dir: &Path,
    pkg: &str,
    version: &str,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf, SetupError> {
    // apt names files pkg_version_arch.deb with ':' in the version escaped.
    let prefix = format!("{pkg}_{}_", version.replace(':', "%3a"));
    let find = || -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
    };
    // A checksum recorded at first download lets a cached file be verified
    // even when the package index is not available (offline re-runs).
    let record = dir.join(format!("{prefix}sha256"));
    let expected = match index_sha256(pkg, version) {
        Ok(sum) => sum,
        Err(e) => match fs::read_to_string(&record) {
            Ok(sum) => {
                log(&format!(
                    "{e}; using the checksum recorded at first download"
                ));
                sum.trim().to_string()
            }
            Err(_) => return Err(e),
        },
    };
    if let Some(path) = find() {
        let actual = sha256_file(&path)?;
        if actual == expected {
            return Ok(path);
        }
        log(&format!(
            "{} fails its checksum; downloading again",
            path.display()
        ));
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
    }
    log(&format!("downloading {pkg}={version}"));
    run_capture(
        Command::new("apt-get")
            .args([
                "download",
                "-o",
                "APT::Sandbox::User=root",
                &format!("{pkg}={version}"),
            ])
            .current_dir(dir),
    )?
    .map_err(|e| SetupError::Download {
        package: pkg.into(),
        version: version.into(),
        source: e.into(),
    })?;
    let path = find().ok_or_else(|| SetupError::Download {
        package: pkg.into(),
        version: version.into(),
        source: DownloadError::NoDeb {
            prefix: prefix.clone(),
            dir: dir.to_path_buf(),
        },
    })?;
    let actual = sha256_file(&path)?;
    if actual != expected {
        let _ = fs::remove_file(&path);
        return Err(SetupError::Checksum {
            path,
            expected,
            actual,
        });
    }
    fs::write(&record, &expected).map_err(io_err("writing", &record))?;
    Ok(path)
}

/// Kernel config options that decide what the lab can measure, as found.
pub fn kernel_features(config_text: &str) -> Vec<(String, String)> {
    const KEYS: &[&str] = &[
        "CONFIG_SOFTLOCKUP_DETECTOR",
        "CONFIG_HARDLOCKUP_DETECTOR",
        "CONFIG_HARDLOCKUP_DETECTOR_PERF",
        "CONFIG_DETECT_HUNG_TASK",
        "CONFIG_DEFAULT_HUNG_TASK_TIMEOUT",
        "CONFIG_RCU_CPU_STALL_TIMEOUT",
        "CONFIG_MODULE_SIG",
        "CONFIG_MODULE_SIG_FORCE",
        "CONFIG_PSI",
        "CONFIG_PREEMPT_DYNAMIC",
        "CONFIG_PREEMPT_VOLUNTARY",
    ];
    KEYS.iter()
        .map(|k| {
            let set = format!("{k}=");
            let unset = format!("# {k} is not set");
            let v = config_text
                .lines()
                .find_map(|l| {
                    if let Some(v) = l.strip_prefix(&set) {
                        Some(v.to_string())
                    } else if l == unset {
                        Some("n".to_string())
                    } else {
                        None
                    }
                })
                .unwrap_or_else(|| "absent".into());
            (k.to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_the_four_packages() {
        let p = KernelPin::default();
        let names: Vec<String> = p.packages().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "linux-image-6.1.0-50-cloud-amd64",
                "linux-headers-6.1.0-50-cloud-amd64",
                "linux-headers-6.1.0-50-common",
                "linux-kbuild-6.1"
            ]
        );
    }

    #[test]
    fn kernel_features_reads_set_unset_and_absent() {
        let cfg =
            "CONFIG_PSI=y\n# CONFIG_MODULE_SIG_FORCE is not set\nCONFIG_RCU_CPU_STALL_TIMEOUT=21\n";
        let f: std::collections::BTreeMap<_, _> = kernel_features(cfg).into_iter().collect();
        assert_eq!(f["CONFIG_PSI"], "y");
        assert_eq!(f["CONFIG_MODULE_SIG_FORCE"], "n");
        assert_eq!(f["CONFIG_RCU_CPU_STALL_TIMEOUT"], "21");
        assert_eq!(f["CONFIG_SOFTLOCKUP_DETECTOR"], "absent");
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_failed_tool_reads_as_its_stderr_tail_and_status() {
        let sh =
            |script: &str| run_capture(Command::new("sh").args(["-c", script])).expect("sh starts");
        assert_eq!(sh("echo out").unwrap(), "out\n");
        let failed = sh("for i in 1 2 3 4 5; do echo line$i >&2; done; exit 3").unwrap_err();
        assert_eq!(failed.status.code(), Some(3));
        let e = SetupError::Extract {
            path: "k.deb".into(),
            source: failed,
        };
        // The same text the lab printed when the detail was a string.
        assert_eq!(
            e.to_string(),
            "unpacking k.deb with dpkg-deb failed: line2 | line3 | line4 | line5 (exit status: 3)"
        );
        assert!(std::error::Error::source(&e).is_some());
        let missing = SetupError::Download {
            package: "p".into(),
            version: "1".into(),
            source: DownloadError::NoDeb {
                prefix: "p_1_".into(),
                dir: "/c".into(),
            },
        };
        assert_eq!(
            missing.to_string(),
            "downloading p=1 with apt-get download failed: apt-get reported success but no p_1_*.deb appeared in /c"
        );
        let spawn = run_capture(&mut Command::new("/nonexistent/tool")).unwrap_err();
        assert!(matches!(spawn, SetupError::Spawn { .. }), "{spawn}");
    }
}
