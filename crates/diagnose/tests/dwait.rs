//! The eBPF D-wait tracer against a real uninterruptible sleep: a read
//! from a FUSE server that never answers. Root only; skips otherwise.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_diagnose::dwait::{DWait, DwaitTracer};

#[test]
fn a_task_blocked_on_fuse_is_in_the_map_from_the_moment_it_blocked() {
    const TEST: &str = "a_task_blocked_on_fuse_is_in_the_map_from_the_moment_it_blocked";
    if !selfheal_sys::process::is_root() || !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("SKIP {TEST}: needs root and /dev/fuse");
        return;
    }
    let mut tracer = match DwaitTracer::start() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIP {TEST}: no BPF tracer here: {e}");
            return;
        }
    };
    let dir = PathBuf::from(format!("/tmp/selfheal-dwait-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(selfheal_testprogs::bin("tp-fuse-stall"));
    cmd.arg(&dir)
        .args(["--seconds", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    selfheal_sys::child::parent_death_signal_before_exec(&mut cmd, libc::SIGTERM);
    let mut server = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("mounted"), "{line}");
    let t0 = Instant::now();
    let mut reader = Command::new("cat")
        .arg(dir.join("stall"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tid = reader.id() as i32;
    std::thread::sleep(Duration::from_millis(700));
    let mut seen: Vec<DWait> = Vec::new();
    tracer.read(&mut seen).unwrap();
    let hit = seen.iter().find(|w| w.tid == tid).copied();
    // Release the reader: stop the server (it aborts its connection).
    drop(server.stdin.take());
    let _ = server.wait();
    let _ = reader.wait();
    let _ = selfheal_sys::fuse::umount_lazy(&dir);
    let _ = std::fs::remove_dir(&dir);
    let hit = hit.unwrap_or_else(|| panic!("reader {tid} not in the map: {seen:?}"));
    let since = hit.since.saturating_duration_since(t0);
    assert!(
        since < Duration::from_millis(600),
        "blocked {since:?} after it started"
    );
    std::thread::sleep(Duration::from_millis(100));
    tracer.read(&mut seen).unwrap();
    assert!(
        seen.iter().all(|w| w.tid != tid),
        "still in the map after it ran again"
    );
}
