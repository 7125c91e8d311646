//! False-positive runs: at least 60 s each of heavy but legitimate load, in
//! a sandbox, with the whole hang pipeline running. The light detector is
//! expected to raise alerts (the load is heavy); the heavy detector must
//! dismiss every one of them and recovery must take no action at all.
//!
//! Long, so opt-in:
//!
//! ```text
//! cargo test -p selfheal-hangwatch --test false_positives -- --ignored --test-threads 1
//! ```
//!
//! `SELFHEAL_LONG_SECS=N` runs each load for N seconds instead of 60.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use selfheal_cgroup::SandboxConfig;
use selfheal_event::EventKind;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn duration() -> Duration {
    let secs = std::env::var("SELFHEAL_LONG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60u64);
    Duration::from_secs(secs.max(1))
}

fn cpus() -> usize {
    selfheal_sys::sched::cpus_configured()
}

/// Runs `start` inside a sandbox for the load duration with the pipeline
/// watching, then checks that nothing was diagnosed as a hang inside the
/// sandbox and that recovery never acted.
fn no_false_positive(
    test: &str,
    config: SandboxConfig,
    start: impl FnOnce(&selfheal_cgroup::Sandbox, &Path) -> Vec<Child>,
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sb) = sandbox_or_skip(test, config) else {
        return;
    };
    let rel = sb.rel_path().to_string();
    let work = tempfile::tempdir().unwrap();
    let h = Harness::start(Options::new(&rel));
    let t0 = Instant::now();
    let mut children = start(&sb, work.path());
    let run_for = duration();
    while t0.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            h.calls().is_empty(),
            "{test}: recovery acted under legitimate load: {:?}",
            h.calls()
        );
    }
    let events = h.events();
    let alerts = events.iter().filter(|e| e.kind == EventKind::Alert).count();
    let dismissed = events
        .iter()
        .filter(|e| e.kind == EventKind::Dismissed)
        .count();
    let hangs_here: Vec<String> = events
        .iter()
        .filter(|e| e.kind == EventKind::Diagnosis)
        .filter(|e| {
            e.culprit
                .as_ref()
                .and_then(|c| c.cgroup.as_deref())
                .is_some_and(|c| c.starts_with(&rel))
        })
        .map(|e| e.message.clone())
        .collect();
    let recoveries_here: Vec<String> = events
        .iter()
        .filter(|e| e.kind == EventKind::Recovery)
        .filter(|e| {
            e.details["target"]["cgroup"]
                .as_str()
                .is_some_and(|c| c.starts_with(&rel))
        })
        .map(|e| e.message.clone())
        .collect();
    eprintln!(
        "{test}: {} s of load: {alerts} alerts, {dismissed} dismissed, {} hang diagnoses about the load, {} recovery steps on it",
        t0.elapsed().as_secs(),
        hangs_here.len(),
        recoveries_here.len()
    );
    drop(sb);
    for c in &mut children {
        let _ = c.wait();
    }
    h.stop();
    assert!(
        hangs_here.is_empty(),
        "{test}: false diagnoses: {hangs_here:#?}"
    );
    assert!(
        recoveries_here.is_empty(),
        "{test}: recovery steps: {recoveries_here:#?}"
    );
}

fn sh(sb: &selfheal_cgroup::Sandbox, script: &str) -> Child {
    sb.spawn(
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap()
}

#[test]
#[ignore = "long: 60 s of load; run with --ignored"]
fn all_cpus_busy_at_normal_priority() {
    let n = cpus();
    no_false_positive(
        "all_cpus_busy_at_normal_priority",
        SandboxConfig::new("fp-cpu")
            .cpus(Some(n as f64))
            .pids_max(64),
        |sb, _| {
            // Four runnable loops per CPU: run queue above the light rule's 3x.
            (0..4 * n).map(|_| sh(sb, "while :; do :; done")).collect()
        },
    );
}

#[test]
#[ignore = "long: 60 s of load; run with --ignored"]
fn heavy_disk_io() {
    no_false_positive(
        "heavy_disk_io",
        SandboxConfig::new("fp-io")
            .cpus(Some(1.0))
            .pids_max(64)
            .memory_max_bytes(512 << 20),
        |sb, dir| {
            let d = dir.display();
            vec![
                sh(sb, &format!("while :; do dd if=/dev/zero of={d}/a bs=1M count=256 oflag=direct conv=fsync; done")),
                sh(sb, &format!("while :; do dd if=/dev/zero of={d}/b bs=64k count=2048 conv=fsync; sync; done")),
                sh(sb, &format!("sleep 2; while :; do dd if={d}/a of=/dev/null bs=1M iflag=direct; done")),
            ]
        },
    );
}

#[test]
#[ignore = "long: 60 s of load; run with --ignored"]
fn parallel_build() {
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIP parallel_build: no C compiler (cc) installed");
        return;
    }
    let n = cpus();
    no_false_positive(
        "parallel_build",
        SandboxConfig::new("fp-build")
            .cpus(Some(n as f64))
            .pids_max(256)
            .memory_max_bytes(1 << 30),
        |sb, dir| {
            // 64 translation units, rebuilt from scratch in a loop with 2 jobs per CPU.
            for i in 0..64 {
                let body: String = (0..200)
                    .map(|k| format!("int f{i}_{k}(int x) {{ return x * {k} + {i}; }}\n"))
                    .collect();
                std::fs::write(dir.join(format!("u{i}.c")), body).unwrap();
            }
            std::fs::write(
                dir.join("Makefile"),
                "SRC := $(wildcard u*.c)\nall: $(SRC:.c=.o)\n%.o: %.c\n\tcc -O2 -c $< -o $@\nclean:\n\trm -f *.o\n",
            )
            .unwrap();
            vec![sh(
                sb,
                &format!(
                    "cd {} && while :; do make -s clean; make -s -j{}; done",
                    dir.display(),
                    2 * n
                ),
            )]
        },
    );
}

#[test]
#[ignore = "long: 60 s of load; run with --ignored"]
fn memory_churn_within_limits() {
    no_false_positive(
        "memory_churn_within_limits",
        SandboxConfig::new("fp-mem")
            .memory_max_bytes(768 << 20)
            .pids_max(32)
            .cpus(Some(1.0)),
        |sb, _| {
            // Two churners: each grows to 300 MiB (78% of the limit together),
            // frees it all and starts again.
            (0..2)
                .map(|_| {
                    sb.spawn(
                        Command::new(selfheal_testprogs::bin("tp-memhog"))
                            .args([
                                "--rate-mib",
                                "400",
                                "--max-mib",
                                "300",
                                "--seconds",
                                "600",
                                "churn",
                            ])
                            .stdout(Stdio::null()),
                    )
                    .unwrap()
                })
                .collect()
        },
    );
}
