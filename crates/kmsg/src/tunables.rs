//! Tightening the kernel's own hang detectors from config, and putting them
//! back afterwards.
//!
//! - `kernel.watchdog_thresh` (default 10): a soft lockup is reported after
//!   2× this many seconds, a hard lockup after about this many.
//! - `kernel.hung_task_timeout_secs` (default 120): a task in
//!   uninterruptible sleep this long is reported. The kernel never reports
//!   *killable* waits (NFS, FUSE), which selfheal's own D-state check covers.
//!
//! Values are only ever lowered ("tightened"); a file the kernel does not
//! have (detector not built in) is skipped with a note.

use std::path::{Path, PathBuf};

/// One sysctl change, so it can be undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableChange {
    /// The sysctl name, e.g. `kernel.watchdog_thresh`.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// The value before.
    pub old: u64,
    /// The value written.
    pub new: u64,
}

/// A sysctl could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TunableError {
    /// Reading or writing the file failed.
    #[error("cannot {action} {path}: {source} (needs root; set the [kmsg] thresholds to 0 to leave the kernel's values alone)")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file did not hold a number.
    #[error("{path} holds {text:?}, not a number")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
}

/// The kernel's detector thresholds under a procfs root.
#[derive(Debug, Clone)]
pub struct KernelTunables {
    root: PathBuf,
}

impl KernelTunables {
    /// Tunables under `proc_root` (normally `/proc`).
    pub fn new(proc_root: &Path) -> KernelTunables {
        KernelTunables {
            root: proc_root.join("sys/kernel"),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// Reads `kernel.<file>`; `None` when the kernel lacks it.
    pub fn read(&self, file: &str) -> Result<Option<u64>, TunableError> {
        let path = self.path(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TunableError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| TunableError::Parse {
                path,
                text: text.trim().to_string(),
            })
    }

    fn write(&self, path: &Path, value: u64) -> Result<(), TunableError> {
        std::fs::write(path, format!("{value}\n")).map_err(|source| TunableError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Lowers `kernel.<file>` to `want` when it is higher, or 0 (= that
    /// detector disabled). Returns the change made, `None` when nothing
    /// needed changing or the kernel lacks the file.
    pub fn tighten(&self, file: &str, want: u64) -> Result<Option<TunableChange>, TunableError> {
        let Some(old) = self.read(file)? else {
            tracing::info!(
                "kernel.{file} does not exist here; that kernel detector is not built in"
            );
            return Ok(None);
        };
        if want == 0 || (old != 0 && old <= want) {
            return Ok(None);
        }
        let path = self.path(file);
        self.write(&path, want)?;
        Ok(Some(TunableChange {
            name: format!("kernel.{file}"),
            path,
            old,
            new: want,
        }))
    }

    /// Undoes changes, newest first; returns the first error after trying all.
    pub fn restore(&self, changes: &[TunableChange]) -> Result<(), TunableError> {
        let mut first = None;
        for c in changes.iter().rev() {
            if let Err(e) = self.write(&c.path, c.old) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(watchdog: &str, hung: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("sys/kernel");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("watchdog_thresh"), watchdog).unwrap();
        if let Some(h) = hung {
            std::fs::write(k.join("hung_task_timeout_secs"), h).unwrap();
        }
        d
    }

    #[test]
    fn only_lowers_and_restores() {
        let d = fake_proc("10\n", Some("120\n"));
        let t = KernelTunables::new(d.path());
        let a = t.tighten("watchdog_thresh", 2).unwrap().unwrap();
        assert_eq!((a.old, a.new), (10, 2));
        assert_eq!(t.read("watchdog_thresh").unwrap(), Some(2));
        // Already tighter: untouched.
        assert!(t.tighten("watchdog_thresh", 5).unwrap().is_none());
        // 0 asks for nothing.
        assert!(t.tighten("hung_task_timeout_secs", 0).unwrap().is_none());
        let b = t.tighten("hung_task_timeout_secs", 5).unwrap().unwrap();
        t.restore(&[a, b]).unwrap();
        assert_eq!(t.read("watchdog_thresh").unwrap(), Some(10));
        assert_eq!(t.read("hung_task_timeout_secs").unwrap(), Some(120));
    }

    #[test]
    fn disabled_detector_is_enabled_and_missing_one_skipped() {
        let d = fake_proc("0\n", None);
        let t = KernelTunables::new(d.path());
        let c = t.tighten("watchdog_thresh", 3).unwrap().unwrap();
        assert_eq!((c.old, c.new), (0, 3));
        assert!(t.tighten("hung_task_timeout_secs", 5).unwrap().is_none());
        std::fs::write(d.path().join("sys/kernel/watchdog_thresh"), "x").unwrap();
        let err = t.read("watchdog_thresh").unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn reads_this_kernel() {
        let t = KernelTunables::new(Path::new("/proc"));
        if let Some(v) = t.read("watchdog_thresh").unwrap() {
            assert!(v <= 60, "{v}");
        }
    }
}
