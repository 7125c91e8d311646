//! `LinuxOps` against real processes this test starts (and only those).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_recover::{LinuxOps, OpsError, SystemOps};

fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

#[test]
fn signals_only_the_process_that_started_at_the_given_time() {
    let ops = LinuxOps::new();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let info = ops.process(pid).unwrap().expect("our child is visible");
    assert_eq!(info.comm, "sleep");
    assert_eq!(info.ppid, std::process::id() as i32);
    assert!(!info.kernel_thread);
    // A different start time means "not the process you mean".
    assert_eq!(
        ops.signal(pid, info.starttime + 1, libc::SIGKILL),
        Err(OpsError::Gone)
    );
    assert!(state(pid).is_some());
    ops.signal(pid, info.starttime, libc::SIGSTOP).unwrap();
    assert!(wait_for(Duration::from_secs(5), || state(pid) == Some('T')));
    ops.signal(pid, info.starttime, libc::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(
        ops.signal(pid, info.starttime, libc::SIGKILL),
        Err(OpsError::Gone)
    );
    assert_eq!(ops.process(pid).unwrap(), None);
}

#[test]
fn demotes_a_real_time_child() {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP demotes_a_real_time_child: setting SCHED_FIFO needs root");
        return;
    }
    let ops = LinuxOps::new();
    let mut child = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    if let Err(e) = selfheal_sys::sched::set_fifo(pid, 1) {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("SKIP demotes_a_real_time_child: no real-time budget here: {e}");
        return;
    }
    assert_eq!(ops.threads(pid).unwrap(), vec![(pid, true)]);
    ops.set_normal_policy(pid).unwrap();
    assert_eq!(ops.threads(pid).unwrap(), vec![(pid, false)]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ops.threads(pid), Err(OpsError::Gone));
}

#[test]
fn own_lineage_includes_this_process_and_init() {
    let ops = LinuxOps::new();
    let lineage = selfheal_recover::Policy::own_lineage(&ops);
    assert!(lineage.contains(&(std::process::id() as i32)));
    assert!(lineage.contains(&(std::os::unix::process::parent_id() as i32)));
}
