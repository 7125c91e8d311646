//! The hand-made test guest shared by `tests/guest.rs` and
//! `examples/vm-bench.rs`: the hang lab's Debian cloud kernel booting a
//! busybox initramfs whose init loads the virtio-serial and pvpanic
//! modules, sends a heartbeat every 100 ms over the guest link (a shell
//! loop standing in for the guest's selfheal), runs a work loop printing
//! `WORK n` on the console, and obeys triggers read from a second
//! virtio-serial port (`org.selfheal.trigger`): `panic` (sysrq c) and
//! `hang` (the heartbeat loop spins).
#![allow(dead_code)] // each user takes what it needs

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_vm::Stop;

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

const INIT_HEAD: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
# The kernel's boot id, read first: it is made on the first read, so a
# rollback to before that read would make a new one. A reboot changes it; a
# rollback (which may replay the BOOT line below) does not.
BOOT_ID=$(/bin/busybox cat /proc/sys/kernel/random/boot_id)
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
echo "BOOT id=$BOOT_ID link=$LINK trig=$TRIG"
echo 1 > /proc/sys/kernel/sysrq
# Stand-in for the guest's selfheal: a heartbeat every 100 ms; after the
# hang trigger this loop spins without beating.
if [ -n "$LINK" ]; then
( seq=0; while :; do seq=$((seq+1)); echo "{\"t\":\"heartbeat\",\"seq\":$seq,\"mono_ms\":0,\"unix_ms\":0,\"healthy\":true}"; [ -e /hang ] && while :; do :; done; sleep 0.1; done > $LINK ) &
fi
"#;

const INIT_TAIL: &str = r#"
[ -n "$TRIG" ] || exec sleep 100000
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

/// A light work loop: a counter every 200 ms.
pub const LIGHT_WORK: &str =
    r#"( n=0; while :; do n=$((n+1)); echo "WORK $n"; sleep 0.2; done ) &"#;

/// The init script with `work` (a shell command that prints `WORK n`
/// lines and runs in the background) as the guest's workload.
pub fn init_script(work: &str) -> String {
    format!("{INIT_HEAD}{work}\n{INIT_TAIL}")
}

/// Why the guest cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
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
pub fn kernel() -> Result<PathBuf, String> {
    let cache = selfheal_lab::setup::cache_dir();
    let pin = selfheal_lab::setup::KernelPin::default();
    let tree =
        selfheal_lab::setup::ensure_kernel(&cache, &pin, &mut |m| eprintln!("vm guest: {m}"))
            .map_err(|e| format!("cannot find or fetch the lab's guest kernel: {e}"))?;
    Ok(tree.vmlinuz)
}

/// Writes the guest's initramfs (init script `init`) to `out`.
pub fn initramfs(vmlinuz: &Path, init: &str, out: &Path) -> Result<(), String> {
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
    for d in ["/bin", "/proc", "/sys", "/dev", "/mod", "/tmp"] {
        w.dir(d).map_err(io)?;
    }
    w.file("/init", 0o755, init.as_bytes()).map_err(io)?;
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

/// `-chardev` for a socket QEMU listens on.
pub fn server_socket(id: &str, path: &Path) -> String {
    format!("socket,id={id},path={},server=on,wait=off", path.display())
}

/// The QEMU command: TCG, 2 vCPUs, `mem_mb`, the console on
/// `console` and (with `trigger`) the trigger port. Ports go on the
/// virtio-serial bus `selfheal vm` adds; without it (`own_bus`), one is
/// added here.
pub fn qemu_command(
    vmlinuz: &Path,
    initrd: &Path,
    mem_mb: u32,
    console: &Path,
    trigger: Option<&Path>,
    own_bus: bool,
) -> Vec<String> {
    let mut c: Vec<String> = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        // panic=1: a panicked guest would reboot after 1 s (QEMU then
        // exits, -no-reboot) unless it is rolled back first.
        // no_timer_check: a TCG guest starved of CPU (or stopped for a
        // checkpoint) while the kernel tests its IO-APIC timer at boot
        // fails the test and panics ("IO-APIC + timer doesn't work!"),
        // as one run beside two CPU-bound loops did.
        "-append",
        "console=ttyS0 quiet panic=1 no_timer_check",
        "-serial",
        "chardev:con",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.extend([
        "-m".into(),
        mem_mb.to_string(),
        "-kernel".into(),
        vmlinuz.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-chardev".into(),
        server_socket("con", console),
    ]);
    let bus = if own_bus {
        c.extend(["-device".into(), "virtio-serial-pci,id=vser".into()]);
        "vser.0"
    } else {
        "selfheal-vser.0"
    };
    if let Some(t) = trigger {
        c.extend([
            "-chardev".into(),
            server_socket("trig", t),
            "-device".into(),
            format!("virtserialport,bus={bus},chardev=trig,name=org.selfheal.trigger"),
        ]);
    }
    c
}

/// The console, line by line, with the host time each line arrived.
#[derive(Debug, Default)]
pub struct Console {
    lines: Mutex<Vec<(Instant, String)>>,
}

impl Console {
    /// Reads the socket QEMU listens on at `path` into a console,
    /// reconnecting, until `stop`.
    pub fn follow(path: PathBuf, stop: Stop) -> Arc<Console> {
        let con = Arc::new(Console::default());
        let c = con.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut partial = String::new();
            while !stop.is_set() {
                let Ok(mut s) = UnixStream::connect(&path) else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                while !stop.is_set() {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let now = Instant::now();
                            partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                            let mut lines = c.lines.lock().unwrap();
                            while let Some(i) = partial.find('\n') {
                                let line = partial[..i].trim_end_matches('\r').to_string();
                                partial.drain(..=i);
                                lines.push((now, line));
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
            }
        });
        con
    }

    /// Every line so far.
    pub fn text(&self) -> String {
        let l = self.lines.lock().unwrap();
        l.iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().unwrap();
        let from = l.len().saturating_sub(n);
        l[from..]
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// (arrival, n) of every `WORK n` line.
    pub fn work(&self) -> Vec<(Instant, u64)> {
        let l = self.lines.lock().unwrap();
        l.iter()
            .filter_map(|(t, s)| Some((*t, s.strip_prefix("WORK ")?.trim().parse().ok()?)))
            .collect()
    }

    /// The distinct boot ids the guest printed (one: it never rebooted;
    /// a rollback may print the same one again).
    pub fn boots(&self) -> Vec<String> {
        let l = self.lines.lock().unwrap();
        let mut ids: Vec<String> = l
            .iter()
            .filter_map(|(_, s)| {
                let rest = s.strip_prefix("BOOT id=")?;
                Some(rest.split(' ').next()?.to_string())
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The highest `WORK n` so far (0: none).
    pub fn last_work(&self) -> u64 {
        self.work().iter().map(|(_, n)| *n).max().unwrap_or(0)
    }
}

/// The host's end of the trigger port, kept open for the whole run: a
/// connection QEMU accepted and then lost would make a rollback to a
/// checkpoint from before the loss impossible (its descriptor is gone).
pub struct Triggers(UnixStream);

impl Triggers {
    /// Connects, waiting up to a minute for QEMU to listen.
    pub fn connect(path: &Path) -> Triggers {
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

    /// Sends one trigger line.
    pub fn send(&mut self, what: &str) {
        self.0.write_all(format!("{what}\n").as_bytes()).unwrap();
    }
}

/// Polls `f` every 100 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// QEMU's threads: state, wait channel and system call (for a failure).
pub fn qemu_threads(pid: i32) -> String {
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
