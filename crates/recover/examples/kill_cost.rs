//! Where `kill_tree`'s time goes per process, on this machine's real /proc:
//! N `sleep` children of this program in a cgroup sandbox (pids, memory and
//! CPU limits), and each piece of a listing and a kill timed over all of
//! them. Needs root (the sandbox); kills only its own children.
//!
//!     cargo run --release -p selfheal-recover --example kill_cost -- [N]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_recover::{LinuxOps, SystemOps};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(2000, |a| a.parse().expect("N"));
    let sb = Sandbox::new(
        SandboxConfig::new("kill-cost")
            .pids_max(n as u64 + 10)
            .memory_max_bytes(2 << 30)
            .cpus(Some(0.5)),
    )
    .expect("a sandbox (root, writable cgroups)");
    let mut kids = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = Command::new("sleep");
        cmd.arg("600").stdout(Stdio::null()).stderr(Stdio::null());
        kids.push(sb.spawn(&mut cmd).expect("spawn sleep"));
    }
    let pids: Vec<i32> = kids.iter().map(|c| c.id() as i32).collect();
    let ops = LinuxOps::new();
    let all = selfheal_procfs::task::list_pids(std::path::Path::new("/proc")).unwrap();
    let per = |what: &str, d: Duration, count: usize| {
        println!(
            "{what:<44} {:>8.1} ms  {:>6.1} us each ({count})",
            d.as_secs_f64() * 1e3,
            d.as_secs_f64() * 1e6 / count as f64
        );
    };
    println!("{} processes on the machine, {n} of them ours", all.len());
    let t = Instant::now();
    let listed = selfheal_procfs::task::list_pids(std::path::Path::new("/proc")).unwrap();
    per("list /proc (getdents)", t.elapsed(), listed.len());
    let read = |file: &str| {
        let t = Instant::now();
        for p in &listed {
            let _ = std::fs::read_to_string(format!("/proc/{p}/{file}"));
        }
        t.elapsed()
    };
    per("read stat", read("stat"), listed.len());
    per("read status", read("status"), listed.len());
    per("read cgroup", read("cgroup"), listed.len());
    let t = Instant::now();
    let infos = ops.processes().unwrap();
    per(
        "LinuxOps::processes (stat+status+cgroup)",
        t.elapsed(),
        infos.len(),
    );
    let st: Vec<u64> = pids
        .iter()
        .map(|&p| ops.process(p).unwrap().unwrap().starttime)
        .collect();
    let t = Instant::now();
    let fds: Vec<_> = pids
        .iter()
        .map(|&p| selfheal_sys::signal::pidfd_open(p).unwrap())
        .collect();
    per("pidfd_open", t.elapsed(), n);
    drop(fds);
    let t = Instant::now();
    let pins: Vec<_> = pids
        .iter()
        .zip(&st)
        .map(|(&p, &s)| ops.pin(p, s).unwrap())
        .collect();
    per("pin (pidfd_open + stat read)", t.elapsed(), n);
    let t = Instant::now();
    for p in &pins {
        ops.signal_pinned(p, 0).unwrap();
    }
    per("pidfd_send_signal (0)", t.elapsed(), n);
    let t = Instant::now();
    for p in &pins {
        ops.signal_pinned(p, libc::SIGKILL).unwrap();
    }
    per("pidfd_send_signal (SIGKILL)", t.elapsed(), n);
    let t = Instant::now();
    for k in &mut kids {
        let _ = k.wait();
    }
    per("reaped", t.elapsed(), n);
}
