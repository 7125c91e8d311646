//! Small real programs that misbehave on purpose, for selfheal's tests and
//! benchmarks, and [`bin`] to find them from a test.
//!
//! | program | does |
//! | --- | --- |
//! | `tp-crash` | exits with a code or dies by a signal (SIGSEGV, SIGABRT, …) after writing to stderr |
//! | `tp-spin` | one thread loops forever in user space without system calls |
//! | `tp-deadlock` | two threads take two mutexes in opposite order and block forever |
//! | `tp-notify` | speaks the systemd notify protocol, then stops sending `WATCHDOG=1` |
//! | `tp-http` | an HTTP server that answers for a while, then stops answering |
//! | `tp-rt-spin` | a SCHED_FIFO busy loop pinned to one CPU (RT hog), exits by itself |
//! | `tp-memhog` | memory growing at a set rate up to a ceiling (or churning) |
//! | `tp-fuse-stall` | a FUSE server that never answers a read: its readers sit in D state |
//!
//! Every program takes `--stamp FILE` and appends `EVENT UNIX_MICROS`
//! lines to it at the moments that matter (start, exit, last heartbeat,
//! last answer), so a benchmark can measure the supervisor against the
//! program's own clock.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Appends `event unix_micros` to `path` (when given), one write per line
/// so concurrent writers never interleave within a line.
pub fn stamp(path: Option<&Path>, event: &str) {
    if let Some(p) = path {
        let line = format!("{event} {}\n", unix_micros());
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Reads the stamps `event` from a stamp file, in order.
pub fn read_stamps(path: &Path, event: &str) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(e, _)| *e == event)
        .filter_map(|(_, t)| t.trim().parse().ok())
        .collect()
}

/// Tiny argument parser: `--key value` pairs and bare words.
#[derive(Debug, Default)]
pub struct Args {
    /// Words that are not options, in order.
    pub words: Vec<String>,
    opts: Vec<(String, String)>,
}

impl Args {
    /// Parses the process's arguments.
    pub fn from_env() -> Args {
        Args::parse(std::env::args().skip(1))
    }

    /// Parses `args`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Args {
        let mut a = Args::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if let Some(key) = arg.strip_prefix("--") {
                let value = it.next().unwrap_or_default();
                a.opts.push((key.to_string(), value));
            } else {
                a.words.push(arg);
            }
        }
        a
    }

    /// The last value of `--key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `--key` as a number, or `default`.
    pub fn num(&self, key: &str, default: u64) -> u64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// `--key` as milliseconds.
    pub fn millis(&self, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.num(key, default))
    }

    /// `--stamp FILE`.
    pub fn stamp_file(&self) -> Option<PathBuf> {
        self.get("stamp").map(PathBuf::from)
    }
}

/// Sleeps forever (the programs' way of hanging politely).
pub fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The path of test program `name` (`tp-crash`, …), building the test
/// programs first (once per process) with the cargo that built the caller,
/// into the caller's target directory and profile.
///
/// Panics with the build output if they cannot be built: a test that needs
/// them cannot run without them.
pub fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    let dir = DIR
        .get_or_init(build)
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The test programs could not be built.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    /// The calling test binary's path is unknown.
    #[error("current_exe: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// The test binary is not inside a cargo target directory.
    #[error("{0}")]
    Layout(&'static str),
    /// cargo did not start.
    #[error("cannot run cargo to build the test programs: {0}")]
    Cargo(#[source] std::io::Error),
    /// cargo ran and failed.
    #[error("building the test programs failed:\n{stderr}")]
    Failed {
        /// cargo's stderr.
        stderr: String,
    },
}

fn build() -> Result<PathBuf, BuildError> {
    let exe = std::env::current_exe().map_err(BuildError::CurrentExe)?;
    // target/<profile>/deps/<test binary>
    let deps = exe
        .parent()
        .ok_or(BuildError::Layout("test binary has no directory"))?;
    let profile_dir = if deps.ends_with("deps") {
        deps.parent()
            .ok_or(BuildError::Layout("no profile directory"))?
    } else {
        deps
    };
    let target = profile_dir
        .parent()
        .ok_or(BuildError::Layout("no target directory"))?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(BuildError::Cargo)?;
    if !out.status.success() {
        return Err(BuildError::Failed {
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(profile_dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_stamps() {
        let a = Args::parse(["exit".to_string(), "--after".into(), "5".into(), "3".into()]);
        assert_eq!(a.words, vec!["exit", "3"]);
        assert_eq!(a.millis("after", 0), Duration::from_millis(5));
        assert_eq!(a.num("missing", 7), 7);
        let dir = std::env::temp_dir().join(format!("tp-stamp-{}", std::process::id()));
        stamp(Some(&dir), "start");
        stamp(Some(&dir), "exit");
        stamp(Some(&dir), "start");
        assert_eq!(read_stamps(&dir, "start").len(), 2);
        assert_eq!(read_stamps(&dir, "exit").len(), 1);
        let _ = std::fs::remove_file(&dir);
    }
}
