//! Cost of the cgroup operations recovery and the lab use. Needs root for
//! everything but parsing; prints why it skips otherwise.
//!
//! `cargo bench -p selfheal-cgroup --bench operations`

use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use selfheal_cgroup::{parse_proc_pid_cgroup, Hierarchy, Sandbox, SandboxConfig};

const MOUNTINFO: &str = include_str!("../testdata/mountinfo-hybrid-this-machine.txt");
const PROC_CGROUP: &str = include_str!("../testdata/cgroup-hybrid-systemd-nginx.txt");

fn parsing(c: &mut Criterion) {
    c.bench_function("parse/mountinfo_hybrid", |b| {
        b.iter(|| Hierarchy::from_mountinfo(std::hint::black_box(MOUNTINFO)).unwrap())
    });
    c.bench_function("parse/proc_pid_cgroup_hybrid", |b| {
        b.iter(|| parse_proc_pid_cgroup(std::hint::black_box(PROC_CGROUP)).unwrap())
    });
}

fn sandbox_or_skip(what: &str, config: SandboxConfig) -> Option<Sandbox> {
    match Sandbox::new(config) {
        Ok(s) => Some(s),
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP {what}: {e}");
            None
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

fn sandbox_lifecycle(c: &mut Criterion) {
    let Some(probe) = sandbox_or_skip("sandbox benches", SandboxConfig::new("bench-probe")) else {
        return;
    };
    probe.close().unwrap();
    c.bench_function("sandbox/create_and_close", |b| {
        b.iter(|| {
            Sandbox::new(SandboxConfig::new("bench"))
                .unwrap()
                .close()
                .unwrap()
        })
    });
    c.bench_function("spawn/plain_true", |b| {
        b.iter(|| Command::new("true").status().unwrap())
    });
    let sandbox = Sandbox::new(SandboxConfig::new("bench-spawn")).unwrap();
    c.bench_function("spawn/sandboxed_true", |b| {
        b.iter(|| {
            sandbox
                .spawn(&mut Command::new("true"))
                .unwrap()
                .wait()
                .unwrap()
        })
    });
    sandbox.close().unwrap();
}

fn freeze_thaw(c: &mut Criterion) {
    for (name, unified) in [
        ("freeze_thaw/v2_unified", true),
        ("freeze_thaw/v1_freezer", false),
    ] {
        let Some(sandbox) = sandbox_or_skip(
            name,
            SandboxConfig::new("bench-freeze").use_unified(unified),
        ) else {
            return;
        };
        let mut child = sandbox.spawn(Command::new("sleep").arg("600")).unwrap();
        c.bench_function(name, |b| {
            b.iter(|| {
                sandbox.cgroup().freeze().unwrap();
                sandbox.cgroup().thaw().unwrap();
            })
        });
        sandbox.close().unwrap();
        child.wait().unwrap();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = parsing, sandbox_lifecycle, freeze_thaw
}
criterion_main!(benches);
