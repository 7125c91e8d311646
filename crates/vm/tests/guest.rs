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

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_config::VmConfig;
use selfheal_event::{Event, EventKind, MemorySink};
use selfheal_vm::{Stop, VmMetrics};

/// Modules the guest loads, under lib/modules/RELEASE/kernel/.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/char/virtio_console.ko",
    "drivers/misc/pvpanic/pvpanic.ko",
    "drivers/misc/pvpanic/pvpanic-mmio.ko",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
for m in virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console pvpanic pvpanic-mmio; do
    insmod /mod/$m.ko || echo "insmod $m failed"
done
port() { for d in /sys/class/virtio-ports/*; do [ "$(cat $d/name 2>/dev/null)" = "$1" ] && echo /dev/${d##*/}; done; }
i=0
while [ -z "$(port org.selfheal.0)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
LINK=$(port org.selfheal.0); TRIG=$(port org.selfheal.trigger)
echo "BOOT link=$LINK trig=$TRIG"
echo 1 > /proc/sys/kernel/sysrq
# Stand-in for the guest's selfheal: a heartbeat every 100 ms; after the
# hang trigger this loop spins without beating.
( seq=0; while :; do seq=$((seq+1)); echo "{\"t\":\"heartbeat\",\"seq\":$seq,\"mono_ms\":0,\"unix_ms\":0,\"healthy\":true}"; [ -e /hang ] && while :; do :; done; sleep 0.1; done > $LINK ) &
( n=0; while :; do n=$((n+1)); echo "WORK $n"; sleep 0.2; done ) &
exec 4<$TRIG
while :; do
    read -r cmd <&4 || { sleep 0.2; continue; }
    echo "TRIGGER $cmd"
    case "$cmd" in
    panic) echo c > /proc/sysrq-trigger ;;
    hang) touch /hang ;;
    esac
done
"#;

fn skip_reason() -> Option<String> {
    if std::env::var("CI_VM").as_deref() == Ok("0") {
        return Some("CI_VM=0".into());
    }
    if !selfheal_sys::process::is_root() {
        return Some("needs root (ptrace and userfaultfd for VM checkpoints)".into());
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    if !on_path {
        return Some(
            "qemu-system-x86_64 is not installed (scripts/install-deps installs qemu-system-x86)"
                .into(),
        );
    }
    match selfheal_lab::build::is_dynamic_elf(Path::new("/bin/busybox")) {
        Ok(false) => None,
        _ => Some("no static /bin/busybox (apt-get install busybox-static)".into()),
    }
}

/// The lab's kernel image, from its cache or fetched into it.
fn kernel() -> Result<PathBuf, String> {
    let cache = selfheal_lab::setup::cache_dir();
    let pin = selfheal_lab::setup::KernelPin::default();
    let tree = selfheal_lab::setup::ensure_kernel(&cache, &pin, &mut |m| eprintln!("vm test: {m}"))
        .map_err(|e| format!("cannot find or fetch the lab's guest kernel: {e}"))?;
    Ok(tree.vmlinuz)
}

fn initramfs(vmlinuz: &Path, out: &Path) -> Result<(), String> {
    let root = vmlinuz
        .parent()
        .and_then(Path::parent)
        .ok_or("odd kernel path")?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or("odd kernel file name")?;
    let f = std::fs::File::create(out).map_err(|e| e.to_string())?;
    let mut w = selfheal_lab::cpio::CpioWriter::new(std::io::BufWriter::new(f));
    let io = |e: std::io::Error| e.to_string();
    for d in ["/bin", "/proc", "/sys", "/dev", "/mod"] {
        w.dir(d).map_err(io)?;
    }
    w.file("/init", 0o755, INIT.as_bytes()).map_err(io)?;
    let busybox = std::fs::read("/bin/busybox").map_err(io)?;
    w.file("/bin/busybox", 0o755, &busybox).map_err(io)?;
    for m in MODULES {
        let p = root.join(format!("lib/modules/{release}/kernel/{m}"));
        let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let name = Path::new(m)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        w.file(&format!("/mod/{name}"), 0o644, &data).map_err(io)?;
    }
    w.finish().map_err(io)?;
    Ok(())
}

/// Reads a socket QEMU listens on into a shared string, reconnecting.
fn follow(path: PathBuf, into: Arc<Mutex<String>>, stop: Stop) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop.is_set() {
            let Ok(mut s) = UnixStream::connect(&path) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            while !stop.is_set() {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => into
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
    });
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn last_work(console: &Mutex<String>) -> u64 {
    console
        .lock()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("WORK ")?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

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

/// The host's end of the trigger port, kept open for the whole run: a
/// connection QEMU accepted and then lost would make a rollback to a
/// checkpoint from before the loss impossible (its descriptor is gone).
struct Triggers(UnixStream);

impl Triggers {
    fn connect(path: &Path) -> Triggers {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return Triggers(s),
                Err(e) => {
                    assert!(Instant::now() < deadline, "trigger socket {path:?}: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn send(&mut self, what: &str) {
        self.0.write_all(format!("{what}\n").as_bytes()).unwrap();
    }
}

/// QEMU's threads: state, wait channel and system call (for a failure).
fn qemu_threads(pid: i32) -> String {
    let mut out = String::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("pid {pid} is gone");
    };
    for t in dir.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|r| r.split(' ').next())
            .unwrap_or("?")
            .to_string();
        out.push_str(&format!(
            "  tid {} {} state {} wchan {} syscall {}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            state,
            read("wchan"),
            read("syscall").trim()
        ));
    }
    out
}

#[test]
fn guest_hang_and_panic_are_rolled_back_in_place_and_a_stopped_qemu_is_left_alone() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED vm guest test: {why}");
        return;
    }
    let vmlinuz = match kernel() {
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
    initramfs(&vmlinuz, &initrd).unwrap();
    let console_sock = dir.path().join("console.sock");
    let trig = dir.path().join("trig.sock");
    let sock =
        |id: &str, p: &Path| format!("socket,id={id},path={},server=on,wait=off", p.display());
    let command: Vec<String> = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "512",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-kernel",
        vmlinuz.to_str().unwrap(),
        "-initrd",
        initrd.to_str().unwrap(),
        // panic=1: a panicked guest would reboot after 1 s (QEMU then exits,
        // -no-reboot) unless it is rolled back first.
        "-append",
        "console=ttyS0 quiet panic=1",
        "-chardev",
        &sock("con", &console_sock),
        "-serial",
        "chardev:con",
        "-chardev",
        &sock("trig", &trig),
        "-device",
        "virtserialport,bus=selfheal-vser.0,chardev=trig,name=org.selfheal.trigger",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut cfg = VmConfig::new("ci", command);
    // The console and trigger sockets: a line reader, and bytes a rollback
    // may take back (that is what makes the triggers transient).
    cfg.replay_tolerant_sockets = vec![console_sock.clone(), trig.clone()];
    cfg.restart = selfheal_config::RestartPolicy::Never;
    cfg.validate().unwrap();

    let sink = Arc::new(MemorySink::new());
    let metrics = Arc::new(VmMetrics::default());
    let stop = Stop::default();
    let console = Arc::new(Mutex::new(String::new()));
    follow(console_sock, console.clone(), stop.clone());
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
        while last_work(&console) < 5 {
            assert!(
                Instant::now() < deadline,
                "the guest's work loop did not start; QEMU:\n{}",
                qemu_threads(qemu_pid)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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

        // A kernel panic, seen through pvpanic.
        let before = last_work(&console);
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
            last_work(&console) > before + 5
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
        let before = last_work(&console);
        wait_for("work after SIGCONT", Duration::from_secs(60), || {
            last_work(&console) > before + 3
        });
        assert_eq!(
            kinds(&sink, EventKind::VmRollback).len(),
            rollbacks,
            "a stopped QEMU was acted on:\n{}",
            dump(&sink)
        );

        // Both rolled back in place: one boot, no restart.
        let text = console.lock().unwrap().clone();
        assert_eq!(
            text.matches("BOOT link=").count(),
            1,
            "the guest rebooted:\n{text}"
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
        eprintln!("console tail:\n{}", {
            let t = console.lock().unwrap().clone();
            t.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        });
        std::panic::resume_unwind(e);
    }
    assert!(finish.stopped, "{finish:?}");
    eprintln!("events:\n{}", dump(&sink));
}
