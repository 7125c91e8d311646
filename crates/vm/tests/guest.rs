//! A real guest under `selfheal vm`: a hang (heartbeat stops while a vCPU
//! spins) and a kernel panic (pvpanic), each injected once from the host,
//! are seen and rolled back in place — the guest keeps its boot and its
//! work counter goes on — and a QEMU stopped with SIGSTOP (a bystander: not
//! hung) is left alone.
//!
//! Needs root, qemu-system-x86_64, busybox-static and the hang lab's
//! Debian cloud kernel (found in the lab's cache, or fetched into it with
//! apt-get download); prints `SKIPPED vm guest test: <why>` and passes
//! otherwise, or when `CI_VM=0`.
//!
//! The guest's heartbeat comes from a shell loop standing in for the
//! guest's selfheal (the real one runs in the hang lab's vm-rollback
//! profile); faults are triggered over a second virtio-serial port whose
//! bytes a rollback takes back with the rest of QEMU, so they happen once.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_config::VmConfig;
use selfheal_event::{Event, EventKind, MemorySink};
use selfheal_vm::incident::{IncidentTrigger, StoredVmIncident};
use selfheal_vm::{Stop, VmMetrics};
use support::{qemu_threads, wait_for, Console, Triggers};

fn kinds(sink: &MemorySink, kind: EventKind) -> Vec<Event> {
    sink.events()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

fn dump(sink: &MemorySink) -> String {
    sink.events()
        .iter()
        .map(|e| format!("  {} {}", e.kind, e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn guest_hang_and_panic_are_rolled_back_in_place_and_a_stopped_qemu_is_left_alone() {
    if let Some(why) = support::skip_reason() {
        eprintln!("SKIPPED vm guest test: {why}");
        return;
    }
    let vmlinuz = match support::kernel() {
        Ok(k) => k,
        Err(why) => {
            eprintln!("SKIPPED vm guest test: {why}");
            return;
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("shvm-test-")
        .tempdir()
        .unwrap();
    let initrd = dir.path().join("initrd.cpio");
    let init = support::init_script(support::LIGHT_WORK);
    support::initramfs(&vmlinuz, &init, &initrd).unwrap();
    let console_sock = dir.path().join("console.sock");
    let trig = dir.path().join("trig.sock");
    let command = support::qemu_command(&vmlinuz, &initrd, 512, &console_sock, Some(&trig), false);
    let mut cfg = VmConfig::new("ci", command);
    // The console and trigger sockets: a line reader, and bytes a rollback
    // may take back (that is what makes the triggers transient).
    cfg.replay_tolerant_sockets = vec![console_sock.clone(), trig.clone()];
    cfg.restart = selfheal_config::RestartPolicy::Never;
    cfg.validate().unwrap();

    let sink = Arc::new(MemorySink::new());
    let metrics = Arc::new(VmMetrics::default());
    let stop = Stop::default();
    let console = Console::follow(console_sock, stop.clone());
    let vm = {
        let (sink, metrics, stop) = (sink.clone(), metrics.clone(), stop.clone());
        std::thread::spawn(move || selfheal_vm::run_vm(&cfg, sink, metrics, stop))
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("QEMU", Duration::from_secs(60), || {
            !kinds(&sink, EventKind::VmStart).is_empty()
        });
        let qemu_pid = kinds(&sink, EventKind::VmStart)[0].details["pid"]
            .as_i64()
            .unwrap() as i32;
        let mut triggers = Triggers::connect(&trig);
        // TCG boots take 5–10 s on an idle machine, several times that when
        // others build.
        let deadline = Instant::now() + Duration::from_secs(240);
        while console.last_work() < 5 {
            assert!(
                Instant::now() < deadline,
                "the guest's work loop did not start; QEMU:\n{}",
                qemu_threads(qemu_pid)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // A rollback reaches back up to 10 s (further on a second
        // attempt); faults come once the boot is further back than that, so
        // the guest never re-runs its init (the console would show that as
        // a second BOOT line, with the same boot id).
        std::thread::sleep(Duration::from_secs(12));
        wait_for("heartbeats", Duration::from_secs(30), || {
            metrics
                .heartbeats
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 5
        });
        assert!(
            kinds(&sink, EventKind::VmRollback).is_empty(),
            "no fault yet:\n{}",
            dump(&sink)
        );
        let qemu_pid = kinds(&sink, EventKind::VmStart)[0].details["pid"]
            .as_i64()
            .unwrap() as i32;

        // A hang: the heartbeat stops while a vCPU spins.
        triggers.send("hang");
        wait_for("the hang's recovery", Duration::from_secs(120), || {
            kinds(&sink, EventKind::VmRollback)
                .iter()
                .any(|e| e.details["outcome"] == "recovered" && e.details["trigger"] == "hang")
        });
        let hang = &kinds(&sink, EventKind::VmHang)[0];
        // The guest resumed its heartbeat from a checkpoint before the hang
        // (perhaps after a second, further rollback if the first landed
        // between the trigger and the last heartbeat).
        assert_eq!(hang.details["trigger"], "hang", "{}", dump(&sink));
        assert!(hang.details["evidence"]["qemu_cpu_ms"].as_f64().unwrap() > 1.0);
        // The incident reads back typed, as the run wrote it.
        let StoredVmIncident::Acted(typed) = StoredVmIncident::from_event(hang).unwrap() else {
            panic!("not an incident acted on: {}", hang.details);
        };
        assert_eq!(typed.trigger, IncidentTrigger::Hang);
        assert!(typed.evidence.and_then(|e| e.qemu_cpu_ms).unwrap() > 1.0);

        // A kernel panic, seen through pvpanic.
        let before = console.last_work();
        triggers.send("panic");
        wait_for("the panic's recovery", Duration::from_secs(120), || {
            kinds(&sink, EventKind::VmRollback)
                .iter()
                .any(|e| e.details["outcome"] == "recovered" && e.details["trigger"] == "panic")
        });
        assert!(
            !kinds(&sink, EventKind::VmCrash).is_empty(),
            "{}",
            dump(&sink)
        );
        wait_for("work after the panic", Duration::from_secs(60), || {
            console.last_work() > before + 5
        });

        // Bystander: QEMU stopped on the host is not a hung guest. (Last:
        // checkpoints taken while QEMU is stopped cannot be rolled back to,
        // as the threads' kernel state cannot be read then.)
        let rollbacks = kinds(&sink, EventKind::VmRollback).len();
        selfheal_sys::signal::kill_process(qemu_pid, libc::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        selfheal_sys::signal::kill_process(qemu_pid, libc::SIGCONT).unwrap();
        wait_for("the not-hung verdict", Duration::from_secs(30), || {
            !kinds(&sink, EventKind::Dismissed).is_empty()
        });
        let before = console.last_work();
        wait_for("work after SIGCONT", Duration::from_secs(60), || {
            console.last_work() > before + 3
        });
        assert_eq!(
            kinds(&sink, EventKind::VmRollback).len(),
            rollbacks,
            "a stopped QEMU was acted on:\n{}",
            dump(&sink)
        );

        // Both rolled back in place: one boot, no restart.
        assert_eq!(
            console.boots().len(),
            1,
            "the guest rebooted:\n{}",
            console.text()
        );
        assert!(
            kinds(&sink, EventKind::VmRestart).is_empty(),
            "{}",
            dump(&sink)
        );
        let rolled = kinds(&sink, EventKind::VmRollback)
            .iter()
            .filter(|e| e.details.get("report").is_some())
            .count();
        assert!(rolled >= 2, "{}", dump(&sink));
    }));
    stop.stop();
    let finish = vm.join().unwrap();
    if let Err(e) = result {
        eprintln!("events:\n{}", dump(&sink));
        eprintln!("console tail:\n{}", console.tail(40));
        std::panic::resume_unwind(e);
    }
    assert!(finish.stopped, "{finish:?}");
    eprintln!("events:\n{}", dump(&sink));
}
