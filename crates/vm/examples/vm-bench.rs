//! VM-μCheckpoint numbers on a real guest (bench/vm/run.sh runs this in
//! release). The test guest of `tests/guest.rs` (TCG, 2 vCPUs, `--mem` MiB)
//! runs a work loop: gzip -1 of 512 KiB of random data in tmpfs, a
//! `WORK n` console line per round. Printed:
//!
//! - overhead: rounds per second over `--window` s with no checkpoints and
//!   under the checkpoint engine at 50 ms (the `selfheal vm` defaults),
//!   `--pairs` alternating pairs in one run, so load changes hit both;
//! - checkpoint pauses (QEMU stopped), p50/p99/max, from every checkpoint;
//! - rollback time: `--rollbacks` rollbacks of the running guest to its
//!   newest checkpoint, QEMU stopped (engine report) and request → resumed;
//! - detection to rollback under `selfheal vm` (run_vm): `--incidents`
//!   hangs and panics triggered from the host: trigger → detection,
//!   detection → rolled back, detection → first heartbeat after it.
//!
//! `cargo run --release -p selfheal-vm --example vm-bench -- [--pairs 2]
//! [--window 30] [--rollbacks 4] [--incidents 3] [--mem 512]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_checkpoint::{self as ckpt, Engine, LaunchSpec, Older, Target};
use selfheal_config::VmConfig;
use selfheal_event::{Event, EventKind, EventSink};
use selfheal_vm::{Stop, VmMetrics};
use support::{wait_for, Console, Triggers};

const WORK: &str = r#"( dd if=/dev/urandom of=/tmp/blob bs=64k count=8 2>/dev/null; n=0; while :; do gzip -1 -c /tmp/blob > /tmp/out.gz; n=$((n+1)); echo "WORK $n"; done ) &"#;

struct Opts {
    pairs: u32,
    window: u64,
    rollbacks: u32,
    incidents: u32,
    mem: u32,
}

fn opts() -> Opts {
    let mut o = Opts {
        pairs: 2,
        window: 30,
        rollbacks: 4,
        incidents: 3,
        mem: 512,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v = || -> u64 {
            w.get(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("vm-bench: {} needs a number", w[0]);
                std::process::exit(2)
            })
        };
        match w[0].as_str() {
            "--pairs" => o.pairs = v() as u32,
            "--window" => o.window = v(),
            "--rollbacks" => o.rollbacks = v() as u32,
            "--incidents" => o.incidents = v() as u32,
            "--mem" => o.mem = v() as u32,
            other => {
                eprintln!(
                    "vm-bench: unknown option {other}; see the header of examples/vm-bench.rs"
                );
                std::process::exit(2)
            }
        }
    }
    o
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn stats(name: &str, unit: &str, v: &mut [f64]) {
    println!(
        "{name}: n={} p50 {:.1} {unit}  p99 {:.1} {unit}  max {:.1} {unit}",
        v.len(),
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

/// user + system CPU of a process (all its threads), ms.
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, r)| r.split(' ').collect());
    // utime and stime are fields 14 and 15 (11 and 12 after the state).
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) * 10.0
}

/// Work over a window, from the 3rd work line on (the first rounds share
/// the CPU with the end of the boot).
struct Rate {
    /// Rounds per second of host time.
    per_s: f64,
    /// Rounds.
    rounds: u64,
    /// CPU QEMU used meanwhile, ms.
    qemu_cpu_ms: f64,
    /// CPU this process used meanwhile (the checkpoint engine's tracer), ms.
    own_cpu_ms: f64,
}

impl Rate {
    /// Host CPU per round (QEMU plus the engine), ms.
    fn cpu_per_round(&self) -> f64 {
        (self.qemu_cpu_ms + self.own_cpu_ms) / self.rounds.max(1) as f64
    }
}

fn rate(con: &Console, window: u64, qemu_pid: i32) -> Rate {
    wait_for("the work loop", Duration::from_secs(300), || {
        con.last_work() >= 3
    });
    let start = Instant::now();
    let qemu = qemu_pid.to_string();
    let (q0, o0, n0) = (cpu_ms(&qemu), cpu_ms("self"), con.last_work());
    std::thread::sleep(Duration::from_secs(window));
    let (q1, o1, n1) = (cpu_ms(&qemu), cpu_ms("self"), con.last_work());
    let w: Vec<_> = con
        .work()
        .into_iter()
        .filter(|(t, _)| *t >= start)
        .collect();
    let per_s = match (w.first(), w.last()) {
        (Some(a), Some(b)) if b.1 > a.1 => {
            (b.1 - a.1) as f64 / b.0.duration_since(a.0).as_secs_f64()
        }
        _ => 0.0,
    };
    Rate {
        per_s,
        rounds: n1.saturating_sub(n0),
        qemu_cpu_ms: q1 - q0,
        own_cpu_ms: o1 - o0,
    }
}

struct Guest {
    dir: tempfile::TempDir,
    vmlinuz: std::path::PathBuf,
    initrd: std::path::PathBuf,
}

impl Guest {
    fn command(
        &self,
        console: &Path,
        trigger: Option<&Path>,
        own_bus: bool,
        mem: u32,
    ) -> Vec<String> {
        support::qemu_command(&self.vmlinuz, &self.initrd, mem, console, trigger, own_bus)
    }
}

/// One run with no checkpoints: rounds per second.
fn plain(g: &Guest, o: &Opts, tag: &str) -> Rate {
    let sock = g.dir.path().join(format!("con-{tag}.sock"));
    let argv = g.command(&sock, None, true, o.mem);
    let stop = Stop::default();
    let con = Console::follow(sock, stop.clone());
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu");
    let r = rate(&con, o.window, child.id() as i32);
    stop.stop();
    let _ = child.kill();
    let _ = child.wait();
    r
}

/// One run under the engine: rounds per second, pauses (ms), and
/// rollbacks (QEMU stopped ms, request → event ms, pages).
fn traced(
    g: &Guest,
    o: &Opts,
    tag: &str,
    rollbacks: u32,
) -> (Rate, Vec<f64>, Vec<(f64, f64, u64)>) {
    let sock = g.dir.path().join(format!("con-{tag}.sock"));
    let argv = g.command(&sock, None, true, o.mem);
    let d = VmConfig::new("bench", argv.clone()).checkpoint;
    let config = ckpt::Config {
        interval: d.interval.get(),
        keep: d.keep,
        recurrence_window: d.recurrence_window.get(),
        report_checkpoints: true,
        older: Some(Older {
            every: d.older_every.get(),
            span: d.older_span.get(),
        }),
        replay_tolerant_sockets: vec![sock.clone()],
        ..ckpt::Config::default()
    };
    let stop = Stop::default();
    let con = Console::follow(sock, stop.clone());
    let engine = Engine::start(
        Target::Launch(LaunchSpec {
            program: ckpt::Program {
                argv,
                new_process_group: true,
                ..ckpt::Program::default()
            },
            ..LaunchSpec::default()
        }),
        config,
    )
    .expect("engine");
    let control = engine.control();
    let qemu_pid = engine.pid();
    let events: Arc<Mutex<Vec<(Instant, ckpt::Event)>>> = Arc::default();
    let ev = events.clone();
    let reader = std::thread::spawn(move || {
        while let Ok(e) = engine.events().recv() {
            let end = matches!(e, ckpt::Event::Exited(_) | ckpt::Event::Detached);
            ev.lock().unwrap().push((Instant::now(), e));
            if end {
                break;
            }
        }
        engine.join();
    });
    let r = rate(&con, o.window, qemu_pid);
    let pauses_until = Instant::now();
    let mut rolled = Vec::new();
    for _ in 0..rollbacks {
        // Past the recurrence window: each is a first rollback to the
        // newest checkpoint, and checkpoints have resumed.
        std::thread::sleep(d.recurrence_window.get() + Duration::from_secs(1));
        let asked = Instant::now();
        control.request_rollback(None);
        let deadline = asked + Duration::from_secs(30);
        loop {
            let got = events.lock().unwrap().iter().find_map(|(t, e)| match e {
                ckpt::Event::RolledBack(r) if *t >= asked => Some((
                    r.duration_us as f64 / 1e3,
                    t.duration_since(asked).as_secs_f64() * 1e3,
                    r.pages_restored,
                )),
                ckpt::Event::RollbackImpossible { why, .. } => {
                    panic!("rollback impossible: {why:?}")
                }
                _ => None,
            });
            if let Some(x) = got {
                rolled.push(x);
                break;
            }
            assert!(Instant::now() < deadline, "no rollback within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if rollbacks > 0 {
        let n = con.last_work();
        wait_for("work after the rollbacks", Duration::from_secs(60), || {
            con.last_work() > n + 2
        });
    }
    control.kill();
    stop.stop();
    reader.join().unwrap();
    let pauses = events
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t <= pauses_until)
        .filter_map(|(_, e)| match e {
            ckpt::Event::Checkpoint(s) => Some((s.pause_us + s.registration_pause_us) as f64 / 1e3),
            _ => None,
        })
        .collect();
    (r, pauses, rolled)
}

/// Events with the host time they were emitted.
#[derive(Default)]
struct TimedSink(Mutex<Vec<(Instant, Event)>>);

impl EventSink for TimedSink {
    fn emit(&self, e: Event) -> bool {
        self.0.lock().unwrap().push((Instant::now(), e));
        true
    }
}

impl TimedSink {
    fn after(&self, t: Instant, kind: EventKind, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, e)| *at >= t && e.kind == kind && pred(e))
            .map(|(at, _)| *at)
    }
}

/// `selfheal vm` (run_vm) with hangs and panics triggered from the host.
fn incidents(g: &Guest, o: &Opts) {
    let sock = g.dir.path().join("con-vm.sock");
    let trig = g.dir.path().join("trig-vm.sock");
    let mut cfg = VmConfig::new("bench", g.command(&sock, Some(&trig), false, o.mem));
    cfg.replay_tolerant_sockets = vec![sock.clone(), trig.clone()];
    cfg.restart = selfheal_config::RestartPolicy::Never;
    let sink = Arc::new(TimedSink::default());
    let stop = Stop::default();
    let con = Console::follow(sock, stop.clone());
    let vm = {
        let (sink, stop) = (sink.clone(), stop.clone());
        std::thread::spawn(move || {
            selfheal_vm::run_vm(&cfg, sink, Arc::new(VmMetrics::default()), stop)
        })
    };
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        incident_rounds(o, &sink, &con, &trig)
    }));
    stop.stop();
    let _ = vm.join();
    if res.is_err() {
        for (_, e) in sink.0.lock().unwrap().iter() {
            eprintln!("  {} {}", e.kind, e.message);
        }
        eprintln!("console tail:\n{}", con.tail(30));
        std::process::exit(1);
    }
    let boots = con.boots().len();
    println!("incidents: guest boots {boots} (1 = every incident rolled back in place)");
}

fn incident_rounds(o: &Opts, sink: &TimedSink, con: &Console, trig: &Path) {
    let t0 = Instant::now();
    wait_for("QEMU", Duration::from_secs(60), || {
        sink.after(t0, EventKind::VmStart, |_| true).is_some()
    });
    let mut triggers = Triggers::connect(trig);
    wait_for("the work loop", Duration::from_secs(300), || {
        con.last_work() >= 3
    });
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let mut rows: Vec<(&str, f64, f64, f64)> = Vec::new();
    for _ in 0..o.incidents {
        for (what, kind) in [("hang", EventKind::VmHang), ("panic", EventKind::VmCrash)] {
            let sent = Instant::now();
            triggers.send(what);
            let mut found = None;
            wait_for("recovery", Duration::from_secs(120), || {
                let detected = sink.after(sent, kind, |_| true);
                let rolled = detected.and_then(|d| {
                    sink.after(d, EventKind::VmRollback, |e| {
                        e.details.get("report").is_some()
                    })
                });
                let serving = sink
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(at, e)| {
                        *at >= sent
                            && e.kind == EventKind::VmRollback
                            && e.details["outcome"] == "recovered"
                    })
                    .and_then(|(_, e)| e.details["detect_to_serving_ms"].as_f64());
                if let (Some(d), Some(r), Some(s)) = (detected, rolled, serving) {
                    found = Some((ms(sent, d), ms(d, r), s));
                }
                found.is_some()
            });
            let (a, b, c) = found.expect("found");
            println!("incident {what}: trigger->detected {a:.0} ms, detected->rolled back {b:.0} ms, detected->serving {c:.0} ms");
            rows.push((what, a, b, c));
        }
    }
    for what in ["hang", "panic"] {
        let pick = |f: fn(&(&str, f64, f64, f64)) -> f64| -> Vec<f64> {
            rows.iter().filter(|r| r.0 == what).map(f).collect()
        };
        stats(
            &format!("{what} trigger->detected"),
            "ms",
            &mut pick(|r| r.1),
        );
        stats(
            &format!("{what} detected->rolled back"),
            "ms",
            &mut pick(|r| r.2),
        );
        stats(
            &format!("{what} detected->serving"),
            "ms",
            &mut pick(|r| r.3),
        );
    }
}

fn main() {
    let o = opts();
    if let Some(why) = support::skip_reason() {
        eprintln!("vm-bench: cannot run: {why}");
        std::process::exit(2);
    }
    let vmlinuz = support::kernel().unwrap_or_else(|e| {
        eprintln!("vm-bench: {e}");
        std::process::exit(2)
    });
    let dir = tempfile::Builder::new()
        .prefix("shvm-bench-")
        .tempdir()
        .unwrap();
    let initrd = dir.path().join("initrd.cpio");
    support::initramfs(&vmlinuz, &support::init_script(WORK), &initrd).unwrap();
    let g = Guest {
        dir,
        vmlinuz,
        initrd,
    };
    println!(
        "vm-bench: guest {} MiB, 2 vCPUs TCG, work = gzip -1 of 512 KiB per round; window {} s, {} pairs",
        o.mem, o.window, o.pairs
    );
    let (mut plain_r, mut ck_r, mut pauses, mut rolls) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..o.pairs {
        // Alternate which goes first.
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for ck in order {
            if ck {
                let rb = if i == 0 { o.rollbacks } else { 0 };
                let (r, p, rl) = traced(&g, &o, &format!("ck{i}"), rb);
                println!(
                    "pair {i}: checkpoints 50 ms: {:.3} rounds/s, {} rounds, CPU/round {:.1} ms (QEMU {:.0} ms + engine {:.0} ms), {} checkpoints",
                    r.per_s, r.rounds, r.cpu_per_round(), r.qemu_cpu_ms, r.own_cpu_ms, p.len()
                );
                ck_r.push(r);
                pauses.extend(p);
                rolls.extend(rl);
            } else {
                let r = plain(&g, &o, &format!("pl{i}"));
                println!(
                    "pair {i}: no checkpoints:     {:.3} rounds/s, {} rounds, CPU/round {:.1} ms (QEMU {:.0} ms + own {:.0} ms)",
                    r.per_s, r.rounds, r.cpu_per_round(), r.qemu_cpu_ms, r.own_cpu_ms
                );
                plain_r.push(r);
            }
        }
    }
    let sum = |v: &[Rate], f: fn(&Rate) -> f64| v.iter().map(f).sum::<f64>();
    let (sp, sc) = (sum(&plain_r, |r| r.per_s), sum(&ck_r, |r| r.per_s));
    let pairs = |f: &dyn Fn(&Rate, &Rate) -> f64| {
        plain_r
            .iter()
            .zip(&ck_r)
            .map(|(p, c)| format!("{:.1} %", f(p, c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "throughput overhead at 50 ms: {:.1} % (rounds/s {:.3} without, {:.3} with; per pair {})",
        (1.0 - sc / sp) * 100.0,
        sp / plain_r.len() as f64,
        sc / ck_r.len() as f64,
        pairs(&|p, c| (1.0 - c.per_s / p.per_s) * 100.0)
    );
    let cpu = |v: &[Rate]| {
        (sum(v, |r| r.qemu_cpu_ms) + sum(v, |r| r.own_cpu_ms)) / sum(v, |r| r.rounds as f64)
    };
    let (cp, cc) = (cpu(&plain_r), cpu(&ck_r));
    println!(
        "CPU overhead at 50 ms: {:.1} % (host CPU per round, QEMU + engine: {cp:.1} ms without, {cc:.1} ms with; per pair {})",
        (cc / cp - 1.0) * 100.0,
        pairs(&|p, c| (c.cpu_per_round() / p.cpu_per_round() - 1.0) * 100.0)
    );
    stats("checkpoint pause (QEMU stopped)", "ms", &mut pauses);
    for (i, (d, w, p)) in rolls.iter().enumerate() {
        println!("rollback {i}: QEMU stopped {d:.1} ms, request->resumed {w:.1} ms, {p} pages");
    }
    stats(
        "rollback, QEMU stopped",
        "ms",
        &mut rolls.iter().map(|r| r.0).collect::<Vec<_>>(),
    );
    stats(
        "rollback, request->resumed",
        "ms",
        &mut rolls.iter().map(|r| r.1).collect::<Vec<_>>(),
    );
    if o.incidents > 0 {
        incidents(&g, &o);
    }
}
