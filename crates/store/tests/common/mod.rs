//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use selfheal_event::{Culprit, Event, EventKind, Severity};

/// Environment variable telling a re-executed test that it is the
/// unprivileged child and where its files are.
pub const CHILD_DIR: &str = "SELFHEAL_STORE_TEST_CHILD_DIR";
/// uid/gid the child runs as when the tests run as root (`nobody`).
const NOBODY: u32 = 65534;

/// A fresh temporary directory that other users can traverse (the
/// unprivileged child must reach files inside it).
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create tempdir");
    chmod(dir.path(), 0o755);
    dir
}

/// Sets a path's permission bits.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// An event at `time_unix_ms` with a culprit and evidence.
pub fn event(time_unix_ms: i64, kind: EventKind, app: Option<&str>, pid: Option<i32>) -> Event {
    Event {
        id: None,
        time_unix_ms,
        kind,
        severity: Severity::Warning,
        source: "test".into(),
        rule: Some("rule".to_string()),
        culprit: Some(Culprit {
            pid,
            app: app.map(str::to_string),
            ..Culprit::default()
        }),
        message: format!("{kind} at {time_unix_ms}"),
        details: serde_json::json!({ "t": time_unix_ms }),
    }
}

/// Path of a sibling file SQLite keeps next to the store (`-wal`, `-shm`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The directory the unprivileged child should work in, when this process
/// is that child.
pub fn child_dir() -> Option<PathBuf> {
    std::env::var_os(CHILD_DIR).map(PathBuf::from)
}

/// Runs `check` without the privilege to bypass file permissions: inline
/// when not root, otherwise by re-running test `name` of this binary as
/// uid/gid 65534 (std's `Command::uid` drops supplementary groups too),
/// where [`child_dir`] returns `dir`. Root ignores permission bits, so this
/// is the only way these tests can see what an ordinary user sees.
pub fn unprivileged(name: &str, dir: &Path, check: impl FnOnce(&Path)) {
    if selfheal_sys::process::geteuid() != 0 {
        check(dir);
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            // Typically a target dir under a private (0700) directory.
            println!("SKIP {name}: cannot run this test binary as uid {NOBODY}: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture: proves the check ran unprivileged, and how.
    println!("[child as uid {NOBODY}]\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "unprivileged child for {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
