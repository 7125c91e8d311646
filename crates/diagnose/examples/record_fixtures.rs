//! Records the /proc and cgroup files the heavy detector reads while real
//! faults run in sandboxes, as test fixtures (root only).
//!
//! `cargo run -p selfheal-diagnose --example record_fixtures -- OUT_DIR [CASE...]`
//! after `cargo build -p selfheal-testprogs --bins`.
//!
//! Cases: `rt_hog`, `d_state`, `fork_bomb`, `mem_hog`, `busy` (legitimate
//! load). Each case writes `OUT_DIR/<case>/{t0,t1}.txt` (two snapshots 100
//! ms apart, 2.5 s for D state) and `meta.json`. A snapshot archive holds
//! `@@@ <path> <length>` headers each followed by the file's bytes: `proc/…`
//! and `cgroup/<controller>/<path>/…`. Files are copied verbatim except
//! `status`, of which only the lines selfheal reads are kept, and kernel
//! threads, which are kept only when running or blocked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};

const STATUS_KEEP: &[&str] = &[
    "Name:",
    "State:",
    "Tgid:",
    "Pid:",
    "PPid:",
    "Uid:",
    "Gid:",
    "VmRSS:",
    "Threads:",
    "Kthread:",
    "voluntary_ctxt_switches:",
    "nonvoluntary_ctxt_switches:",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .expect("usage: record_fixtures OUT_DIR [CASE...]"),
    );
    let mut cases: Vec<String> = args.collect();
    if cases.is_empty() {
        cases = ["rt_hog", "d_state", "fork_bomb", "mem_hog", "busy"]
            .map(String::from)
            .to_vec();
    }
    let bin = tp_dir();
    for case in cases {
        let dir = out.join(&case);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        match case.as_str() {
            "rt_hog" => rt_hog(&dir, &bin),
            "d_state" => d_state(&dir, &bin),
            "fork_bomb" => fork_bomb(&dir),
            "mem_hog" => mem_hog(&dir, &bin),
            "busy" => busy(&dir),
            other => panic!("unknown case {other}"),
        }
        eprintln!("recorded {}", dir.display());
    }
}

fn tp_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/examples/record_fixtures -> target/debug
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn record_pair(dir: &Path, gap: Duration, cgroup: Option<&Sandbox>, note: &str) {
    let t = Instant::now();
    copy_snapshot(&dir.join("t0"), cgroup);
    let first = t.elapsed();
    std::thread::sleep(gap.saturating_sub(first));
    let start1 = Instant::now();
    copy_snapshot(&dir.join("t1"), cgroup);
    let interval = start1.duration_since(t);
    let meta = serde_json::json!({
        "interval_ms": interval.as_secs_f64() * 1000.0,
        "note": note,
        "cgroup": cgroup.map(|s| s.rel_path().to_string()),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": selfheal_sys::sched::cpus_configured(),
    });
    std::fs::write(
        dir.join("meta.json"),
        serde_json::to_string_pretty(&meta).unwrap(),
    )
    .unwrap();
}

/// Files read for one snapshot, written out only after all were read so
/// that the snapshot spans as little time as possible.
struct Files(Vec<(PathBuf, Vec<u8>)>);

impl Files {
    fn put(&mut self, to: &Path, bytes: impl Into<Vec<u8>>) {
        self.0.push((to.to_path_buf(), bytes.into()));
    }

    /// One archive file per snapshot: `@@@ <path> <len>` then the bytes.
    fn write_archive(self, root: &Path, archive: &Path) {
        let mut out = Vec::new();
        for (path, bytes) in self.0 {
            let rel = path.strip_prefix(root).unwrap();
            out.extend(format!("@@@ {} {}\n", rel.display(), bytes.len()).into_bytes());
            out.extend(bytes);
            out.push(b'\n');
        }
        std::fs::write(archive, out).unwrap();
    }
}

fn copy_snapshot(to: &Path, cgroup: Option<&Sandbox>) {
    let mut files = Files(Vec::new());
    // Read like the hang pipeline does, at a real-time priority, so a busy
    // machine does not stretch a snapshot over a long time; back to normal
    // before spawning anything (an RT child cannot join a cgroup without an
    // RT budget).
    let rt = selfheal_sys::sched::set_fifo(0, 40).is_ok();
    read_snapshot(&mut files, to, cgroup);
    if rt {
        let _ = selfheal_sys::sched::set_other(0);
    }
    files.write_archive(to, &to.with_extension("txt"));
}

fn read_snapshot(files: &mut Files, to: &Path, cgroup: Option<&Sandbox>) {
    let proc_ = Path::new("/proc");
    for f in [
        "stat",
        "meminfo",
        "vmstat",
        "diskstats",
        "loadavg",
        "uptime",
    ] {
        copy(files, &proc_.join(f), &to.join("proc").join(f));
    }
    for f in ["cpu", "memory", "io"] {
        copy(
            files,
            &proc_.join("pressure").join(f),
            &to.join("proc/pressure").join(f),
        );
    }
    for entry in std::fs::read_dir(proc_).unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let src = proc_.join(pid.to_string());
        let Ok(stat) = std::fs::read_to_string(src.join("stat")) else {
            continue;
        };
        let Some(s) = selfheal_procfs::task::parse_task_stat(&stat) else {
            continue;
        };
        let tids: Vec<String> = std::fs::read_dir(src.join("task"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut task_stats = Vec::new();
        for tid in &tids {
            if let Ok(t) = std::fs::read_to_string(src.join("task").join(tid).join("stat")) {
                task_stats.push((tid.clone(), t));
            }
        }
        let busy = task_stats.iter().any(|(_, t)| {
            selfheal_procfs::task::parse_task_stat(t).is_some_and(|t| matches!(t.state, 'R' | 'D'))
        });
        if s.is_kernel_thread() && !busy {
            continue;
        }
        let dst = to.join("proc").join(pid.to_string());
        files.put(&dst.join("stat"), stat.as_bytes());
        copy(files, &src.join("cgroup"), &dst.join("cgroup"));
        if let Ok(status) = std::fs::read_to_string(src.join("status")) {
            let kept: String = status
                .lines()
                .filter(|l| STATUS_KEEP.iter().any(|k| l.starts_with(k)))
                .map(|l| format!("{l}\n"))
                .collect();
            files.put(&dst.join("status"), kept);
        }
        for (tid, tstat) in task_stats {
            let tsrc = src.join("task").join(&tid);
            let tdst = dst.join("task").join(&tid);
            files.put(&tdst.join("stat"), tstat.as_bytes());
            copy(files, &tsrc.join("schedstat"), &tdst.join("schedstat"));
            copy(files, &tsrc.join("wchan"), &tdst.join("wchan"));
            let state = selfheal_procfs::task::parse_task_stat(&tstat).map(|t| t.state);
            if matches!(state, Some('D')) {
                copy(files, &tsrc.join("stack"), &tdst.join("stack"));
            }
        }
    }
    if let Some(sb) = cgroup {
        for dir in sb.cgroup().dirs() {
            // /sys/fs/cgroup/<ctrl>/<rel> -> cgroup/<ctrl>/<rel>
            let Ok(rel) = dir.strip_prefix("/sys/fs/cgroup") else {
                continue;
            };
            let dst = to.join("cgroup").join(rel);
            for f in [
                "cgroup.procs",
                "memory.stat",
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "memory.failcnt",
                "memory.max",
                "memory.current",
                "memory.events",
                "memory.pressure",
                "pids.current",
                "pids.max",
                "pids.events",
            ] {
                copy(files, &dir.join(f), &dst.join(f));
            }
        }
    }
}

fn copy(files: &mut Files, from: &Path, to: &Path) {
    if let Ok(b) = std::fs::read(from) {
        files.put(to, b);
    }
}

fn sandbox(name: &str, config: SandboxConfig) -> Sandbox {
    Sandbox::new(config).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn rt_hog(dir: &Path, bin: &Path) {
    // Throttled by the sandbox's real-time budget (90%): the machine keeps
    // a tenth of CPU 1 for everyone else while we record.
    let sb = sandbox(
        "rec-rt-hog",
        SandboxConfig::new("rec-rt-hog")
            .pin_cpu(1)
            .rt_runtime_us(900_000)
            .cpus(None),
    );
    let mut child = sb
        .spawn(
            Command::new(bin.join("tp-rt-spin"))
                .args(["--priority", "20", "--cpu", "1", "--seconds", "5"])
                .stdout(Stdio::null()),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    record_pair(
        dir,
        Duration::from_millis(100),
        Some(&sb),
        "SCHED_FIFO 20 busy loop pinned to cpu 1 (tp-rt-spin), sandbox rt budget 90%",
    );
    drop(sb);
    let _ = child.wait();
}

fn d_state(dir: &Path, bin: &Path) {
    let sb = sandbox("rec-dstate", SandboxConfig::new("rec-dstate"));
    let mnt = std::env::temp_dir().join(format!("selfheal-rec-fuse-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).unwrap();
    let mut server = Command::new(bin.join("tp-fuse-stall"))
        .arg(&mnt)
        .args(["--seconds", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("mounted"), "{line}");
    let mut reader = sb
        .spawn(
            Command::new("cat")
                .arg(mnt.join("stall"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    record_pair(
        dir,
        Duration::from_millis(2500),
        Some(&sb),
        "cat reading a FUSE file whose server never answers (tp-fuse-stall); t1 is 2.5 s after t0",
    );
    drop(server.stdin.take());
    let _ = server.wait();
    drop(sb);
    let _ = reader.wait();
    let _ = std::fs::remove_dir(&mnt);
}

fn fork_bomb(dir: &Path) {
    let sb = sandbox(
        "rec-forkbomb",
        SandboxConfig::new("rec-forkbomb")
            .pids_max(32)
            .cpus(Some(0.5)),
    );
    let mut child = sb
        .spawn(
            Command::new("bash")
                .args(["-c", "f() { while :; do f & done; }; f"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    record_pair(
        dir,
        Duration::from_millis(100),
        Some(&sb),
        "bash fork bomb under pids.max=32, cpu limit 0.5",
    );
    drop(sb);
    let _ = child.wait();
}

fn mem_hog(dir: &Path, bin: &Path) {
    let sb = sandbox(
        "rec-memhog",
        SandboxConfig::new("rec-memhog").memory_max_bytes(256 << 20),
    );
    let mut child = sb
        .spawn(
            Command::new(bin.join("tp-memhog"))
                .args(["--rate-mib", "40", "--max-mib", "236", "--seconds", "20"])
                .stdout(Stdio::null()),
        )
        .unwrap();
    // 236 MiB at 40 MiB/s: ~5.9 s. Record while it approaches the limit.
    std::thread::sleep(Duration::from_millis(5500));
    record_pair(
        dir,
        Duration::from_millis(100),
        Some(&sb),
        "tp-memhog growing 40 MiB/s towards 236 MiB in a 256 MiB sandbox",
    );
    drop(sb);
    let _ = child.wait();
}

fn busy(dir: &Path) {
    let sb = sandbox(
        "rec-busy",
        SandboxConfig::new("rec-busy").cpus(Some(2.0)).pids_max(64),
    );
    let mut children: Vec<_> = (0..4)
        .map(|_| {
            sb.spawn(Command::new("sh").args(["-c", "while :; do :; done"]))
                .unwrap()
        })
        .collect();
    children.push(
        sb.spawn(
            Command::new("sh")
                .args(["-c", "while :; do dd if=/dev/zero of=/tmp/selfheal-rec-busy bs=1M count=64 oflag=direct 2>/dev/null; done"]),
        )
        .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    record_pair(
        dir,
        Duration::from_millis(100),
        Some(&sb),
        "legitimate load: 4 normal-priority busy loops + direct-I/O dd loop",
    );
    drop(sb);
    for mut c in children {
        let _ = c.wait();
    }
    let _ = std::fs::remove_file("/tmp/selfheal-rec-busy");
}
