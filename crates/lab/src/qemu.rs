//! Boots one guest with QEMU, its four serial ports written to files, and
//! waits for it to power off, reboot (QEMU runs with -no-reboot unless the
//! profile follows reboots) or time out. While it runs, the host stamps
//! every `LAB` marker line with its own clock (`host-marks.log`): the only
//! clock that runs on across a guest restart.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::analyze::QemuExit;
use crate::scenario::Scenario;

/// The serial log files of one run, in port order (ttyS0..ttyS3).
pub const LOG_FILES: [&str; 4] = [
    "console.log",
    "lab.log",
    "events.log",
    "selfheal-stderr.log",
];

/// The host's own clock for the lab channel's markers, one line each:
/// `<ms since QEMU started>\t<the LAB line>`.
pub const HOST_MARKS: &str = "host-marks.log";

/// The guest's state disk (profiles that follow reboots); deleted after the
/// run, it only lives as long as the guest.
pub const STATE_DISK: &str = "disk.img";

/// Size of the state disk: selfheal's store and state dir.
const STATE_DISK_BYTES: u64 = 64 << 20;

/// Boots after which the host stops a guest that keeps restarting (a
/// restart loop: the first boot, the one after the fault's restart, and one
/// more to show the loop).
const MAX_BOOTS: u32 = 3;

/// How often the host reads the lab channel while the guest runs: the
/// resolution of the host's marker clock.
const TAIL_EVERY: Duration = Duration::from_millis(20);

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Pure emulation (works everywhere, the lab's default).
    Tcg,
    /// Hardware virtualisation, used only when a timing check says it is fast.
    Kvm,
}

impl Accel {
    /// The `-accel` value.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Machine shape and files shared by every run.
#[derive(Debug, Clone)]
pub struct Guest {
    /// qemu-system-x86_64.
    pub qemu: PathBuf,
    /// Kernel image.
    pub kernel: PathBuf,
    /// initramfs.
    pub initrd: PathBuf,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub mem_mb: u32,
    /// Accelerator.
    pub accel: Accel,
}

/// A failure to run QEMU at all (a guest that hangs is not an error).
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// QEMU could not be started.
    #[error("starting {qemu}: {source}. Install qemu-system-x86")]
    Spawn {
        /// The binary.
        qemu: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The log directory could not be made.
    #[error("creating log directory {dir}: {source}")]
    LogDir {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// QEMU exited at once with an error (bad option, missing file).
    #[error("qemu failed immediately ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
}

/// How a run ended, with the host time it took.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd {
    /// Exited or killed.
    pub exit: QemuExit,
    /// Host wall time, ms.
    pub host_ms: u64,
}

impl Guest {
    fn command(&self, scenario: &Scenario, cmdline: &str, dir: &Path) -> Command {
        let mut c = Command::new(&self.qemu);
        // TCG emulates every feature of "max"; KVM must mirror the host CPU.
        let cpu = match self.accel {
            Accel::Tcg => "max",
            Accel::Kvm => "host",
        };
        c.args(["-accel", self.accel.name(), "-cpu", cpu, "-smp"])
            .arg(self.cpus.to_string())
            .arg("-m")
            .arg(self.mem_mb.to_string())
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-monitor",
                "none",
            ]);
        if !scenario.profile.follows_reboot() {
            c.arg("-no-reboot");
        }
        if scenario.profile.watchdog_device() {
            // Intel 6300ESB: the guest's i6300esb driver makes /dev/watchdog0;
            // when nobody pets it once armed, QEMU resets the guest.
            c.args(["-device", "i6300esb", "-action", "watchdog=reset"]);
        }
        if scenario.profile.follows_reboot() {
            c.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio",
                dir.join(STATE_DISK).display()
            ));
        }
        c.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(cmdline);
        for f in LOG_FILES {
            c.arg("-serial")
                .arg(format!("file:{}", dir.join(f).display()));
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Boots `scenario`, writing logs under `dir`; returns when the guest is
    /// gone. A guest that printed `LAB END` but does not power off within
    /// 10 s (a stalled CPU can block poweroff) is killed; so is one past the
    /// scenario's timeout.
    pub fn run(&self, scenario: &Scenario, dir: &Path) -> Result<RunEnd, QemuError> {
        fs::create_dir_all(dir).map_err(|source| QemuError::LogDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let cmdline = scenario.cmdline();
        let _ = fs::write(dir.join("cmdline.txt"), format!("{cmdline}\n"));
        if scenario.profile.follows_reboot() {
            let disk = dir.join(STATE_DISK);
            fs::File::create(&disk)
                .and_then(|f| f.set_len(STATE_DISK_BYTES))
                .map_err(|source| QemuError::LogDir {
                    dir: disk.clone(),
                    source,
                })?;
        }
        let started = Instant::now();
        let mut child = self
            .command(scenario, &cmdline, dir)
            .spawn()
            .map_err(|source| QemuError::Spawn {
                qemu: self.qemu.clone(),
                source,
            })?;
        let timeout = scenario.host_timeout();
        let mut tail = MarkTail::new(dir.join(LOG_FILES[1]), dir.join(HOST_MARKS));
        let mut end_seen: Option<Instant> = None;
        // Once the fault is in, the guest has its observation window (plus
        // the workload, for fault-free runs) and a margin for slow TCG; a
        // guest that may reboot has time to reset and boot again, and each
        // boot after that its own window.
        let mut deadline: Option<Instant> = None;
        let after_inject = Duration::from_secs(
            scenario.observe_s
                + 30
                + if scenario.class.is_none() {
                    scenario.workload_s
                } else {
                    0
                }
                + if scenario.profile.follows_reboot() {
                    crate::scenario::REBOOT_ALLOWANCE_S
                } else {
                    0
                },
        );
        let after_boot = Duration::from_secs(
            40 + scenario.second_observe_s + crate::scenario::REBOOT_ALLOWANCE_S,
        );
        let mut boots = 0u32;
        let finish = |child: &mut Child, exit| {
            let _ = child.kill();
            let _ = child.wait();
            RunEnd {
                exit,
                host_ms: started.elapsed().as_millis() as u64,
            }
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let host_ms = started.elapsed().as_millis() as u64;
                tail.poll(started);
                if !status.success() && host_ms < 2000 {
                    return Err(QemuError::Failed {
                        status: status.to_string(),
                        stderr: read_stderr(&mut child),
                    });
                }
                return Ok(RunEnd {
                    exit: QemuExit::Exited,
                    host_ms,
                });
            }
            for tag in tail.poll(started) {
                match tag.as_str() {
                    "INJECT" if deadline.is_none() => {
                        deadline = Some(Instant::now() + after_inject)
                    }
                    "BOOT" => {
                        boots += 1;
                        end_seen = None;
                        if boots > 1 {
                            let d = Instant::now() + after_boot;
                            deadline = Some(deadline.map_or(d, |x| x.max(d)));
                        }
                    }
                    "END" => end_seen = Some(Instant::now()),
                    _ => {}
                }
            }
            let overdue = end_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(10))
                || deadline.is_some_and(|t| Instant::now() > t)
                || boots > MAX_BOOTS;
            if overdue || started.elapsed() > timeout {
                tail.poll(started);
                return Ok(finish(&mut child, QemuExit::Killed));
            }
            std::thread::sleep(TAIL_EVERY);
        }
    }
}

/// Follows the lab channel as QEMU writes it, stamping each `LAB` marker
/// line with the host's clock.
struct MarkTail {
    path: PathBuf,
    out: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// `vm-rollback`: every lab-channel line (markers and heartbeats),
    /// stamped with the host's Unix time in ms, goes here too.
    vm_host: Option<PathBuf>,
}

impl MarkTail {
    fn new(path: PathBuf, out: PathBuf) -> MarkTail {
        let _ = fs::write(&out, b"");
        MarkTail {
            path,
            out,
            offset: 0,
            partial: Vec::new(),
            vm_host: None,
        }
    }

    /// Reads what was appended; returns the tags of new markers.
    fn poll(&mut self, started: Instant) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut tags = Vec::new();
        let Ok(mut f) = fs::File::open(&self.path) else {
            return tags;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return tags;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return tags;
        }
        self.offset += buf.len() as u64;
        let now_ms = started.elapsed().as_millis();
        self.partial.extend_from_slice(&buf);
        let mut stamped = String::new();
        let mut host = String::new();
        let unix_ms = unix_ms();
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_matches(['\r', '\n', '\0', ' ']);
            if self.vm_host.is_some() && (text.starts_with("LAB ") || text.starts_with("HB ")) {
                host.push_str(&format!("{unix_ms}\t{text}\n"));
            }
            if let Some(rest) = text.strip_prefix("LAB ") {
                if let Some(tag) = rest.split_whitespace().next() {
                    tags.push(tag.to_string());
                }
                stamped.push_str(&format!("{now_ms}\t{text}\n"));
            }
        }
        if !stamped.is_empty() {
            if let Ok(mut o) = fs::OpenOptions::new().append(true).open(&self.out) {
                let _ = o.write_all(stamped.as_bytes());
            }
        }
        if let (Some(p), false) = (&self.vm_host, host.is_empty()) {
            append(p, &host);
        }
        tags
    }
}

/// Host wall-clock time, ms since the Unix epoch.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut o) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = o.write_all(text.as_bytes());
    }
}

fn read_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s.trim().to_string()
}

/// `vm-rollback`: the events of the host's `selfheal vm` (JSON lines).
pub const VM_EVENTS: &str = "vm-events.log";
/// `vm-rollback`: every lab-channel line and what the host sent the guest,
/// `<host Unix ms>\t<line>` (`HOST inject`, `HOST inject again=N`,
/// `HOST end`).
pub const VM_HOST: &str = "vm-host.log";
/// `vm-rollback`: `selfheal vm`'s own log and QEMU's output.
pub const VM_STDERR: &str = "vm-stderr.log";
/// The extra logs of a `vm-rollback` run.
pub const VM_FILES: [&str; 3] = [VM_EVENTS, VM_HOST, VM_STDERR];

/// The host side of a `vm-rollback` run: the `selfheal` binary that runs
/// `selfheal vm` (the same static build the guest gets).
#[derive(Debug, Clone)]
pub struct VmHost {
    /// The binary.
    pub selfheal: PathBuf,
}

/// Reads a socket QEMU listens on into `file`, reconnecting (a rollback
/// to before a connection was accepted closes it), until `stop`.
fn follow_socket(
    path: PathBuf,
    file: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let Ok(mut out) = fs::OpenOptions::new().create(true).append(true).open(&file) else {
            return;
        };
        let mut buf = [0u8; 8192];
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = out.write_all(&buf[..n]);
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
    })
}

/// The lab's end of the trigger port: connected once, as soon as QEMU
/// listens, and kept (a connection accepted after a checkpoint is closed
/// by a rollback to it; reconnected then).
struct TriggerPort {
    path: PathBuf,
    conn: Option<std::os::unix::net::UnixStream>,
}

impl TriggerPort {
    fn connect(&mut self) {
        if self.conn.is_none() {
            self.conn = std::os::unix::net::UnixStream::connect(&self.path).ok();
        }
    }

    /// Sends one line; false if not connected or the write failed.
    fn send(&mut self, line: &str) -> bool {
        use std::io::Write;
        self.connect();
        let ok = self
            .conn
            .as_mut()
            .is_some_and(|c| c.write_all(format!("{line}\n").as_bytes()).is_ok());
        if !ok {
            self.conn = None;
        }
        ok
    }
}

impl Guest {
    /// QEMU's arguments for a `vm-rollback` run: the serial ports on
    /// sockets under `socks` (the lab reads them; bytes a rollback takes
    /// back are harmless there) and the trigger port on the virtio-serial
    /// bus `selfheal vm` adds.
    fn vm_qemu_args(&self, cmdline: &str, socks: &Path) -> Vec<String> {
        let cpu = match self.accel {
            Accel::Tcg => "max",
            Accel::Kvm => "host",
        };
        let mut a: Vec<String> = vec![
            self.qemu.display().to_string(),
            "-accel".into(),
            self.accel.name().into(),
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            self.cpus.to_string(),
            "-m".into(),
            self.mem_mb.to_string(),
        ];
        a.extend(
            [
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
            ]
            .map(String::from),
        );
        a.extend([
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            cmdline.into(),
        ]);
        for i in 0..LOG_FILES.len() {
            a.extend([
                "-chardev".into(),
                format!(
                    "socket,id=labs{i},path={},server=on,wait=off",
                    socks.join(format!("s{i}.sock")).display()
                ),
                "-serial".into(),
                format!("chardev:labs{i}"),
            ]);
        }
        a.extend([
            "-chardev".into(),
            format!(
                "socket,id=labtrig,path={},server=on,wait=off",
                socks.join("trig.sock").display()
            ),
            "-device".into(),
            "virtserialport,bus=selfheal-vser.0,chardev=labtrig,name=org.selfheal.trigger".into(),
        ]);
        a
    }

    /// Boots a `vm-rollback` scenario under the host's `selfheal vm`:
    /// checkpoints every 50 ms (none with `vm_checkpoints_off`), restart
    /// never (a reboot would be a failure here, not a remedy); in a
    /// fault-free run it acts on nothing (the pair measures the
    /// checkpoints' cost). The fault
    /// is triggered once: `inject` sent on the trigger port `inject_ms`
    /// after the guest's selfheal started, `end` `observe_s` later (again
    /// every 5 s until the guest ends its script).
    pub fn run_vm(
        &self,
        scenario: &Scenario,
        dir: &Path,
        host: &VmHost,
    ) -> Result<RunEnd, QemuError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let logdir = |source| QemuError::LogDir {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(logdir)?;
        let cmdline = scenario.cmdline();
        let _ = fs::write(dir.join("cmdline.txt"), format!("{cmdline}\n"));
        // Unix socket paths are short (108 bytes): a private directory in /tmp.
        let socks = tempdir_in_tmp().map_err(logdir)?;
        let sp = socks.clone();
        let _cleanup = Cleanup(sp);
        for f in LOG_FILES.iter().chain(&VM_FILES) {
            let _ = fs::remove_file(dir.join(f));
        }
        let mut cmd = Command::new(&host.selfheal);
        cmd.args(["vm", "--name", "lab", "--no-store", "--restart", "never"])
            .arg("--event-log")
            .arg(dir.join(VM_EVENTS))
            .arg("--checkpoint-interval")
            .arg(if scenario.vm_checkpoints_off {
                "0"
            } else {
                "50ms"
            });
        if scenario.class.is_none() {
            // Fault-free pairs measure what checkpoints cost, alone:
            // `selfheal vm` acts on nothing (a false positive of the
            // guest's would otherwise cost a rollback in one run of the
            // pair and nothing in the other).
            cmd.args(["--rollback-on", "", "--heartbeat-timeout", "0"]);
        }
        for i in 0..LOG_FILES.len() {
            cmd.arg("--replay-tolerant-socket")
                .arg(socks.join(format!("s{i}.sock")));
        }
        cmd.arg("--replay-tolerant-socket")
            .arg(socks.join("trig.sock"))
            .arg("--")
            .args(self.vm_qemu_args(&cmdline, &socks));
        let stderr = fs::File::create(dir.join(VM_STDERR)).map_err(logdir)?;
        cmd.stdin(Stdio::null())
            .stdout(stderr.try_clone().map_err(logdir)?)
            .stderr(stderr);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| QemuError::Spawn {
            qemu: host.selfheal.clone(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = LOG_FILES
            .iter()
            .enumerate()
            .map(|(i, f)| {
                follow_socket(socks.join(format!("s{i}.sock")), dir.join(f), stop.clone())
            })
            .collect();
        let mut trig = TriggerPort {
            path: socks.join("trig.sock"),
            conn: None,
        };
        let mut tail = MarkTail::new(dir.join(LOG_FILES[1]), dir.join(HOST_MARKS));
        tail.vm_host = Some(dir.join(VM_HOST));
        let host_log =
            |what: &str| append(&dir.join(VM_HOST), &format!("{}\tHOST {what}\n", unix_ms()));
        let timeout = scenario.host_timeout();
        let after_inject = Duration::from_secs(
            scenario.observe_s
                + 60
                + if scenario.class.is_none() {
                    scenario.workload_s
                } else {
                    0
                },
        );
        let (mut deadline, mut end_seen) = (None::<Instant>, None::<Instant>);
        let (mut trigger_at, mut armed, mut sent) = (None::<Instant>, false, None::<Instant>);
        let (mut sends, mut injected) = (0u32, false);
        const RESEND: Duration = Duration::from_secs(2);
        const MAX_SENDS: u32 = 5;
        let mut next_end: Option<Instant> = None;
        let exit = loop {
            if let Ok(Some(status)) = child.try_wait() {
                let host_ms = started.elapsed().as_millis() as u64;
                if !status.success() && host_ms < 2000 {
                    stop.store(true, Ordering::Relaxed);
                    for r in readers {
                        let _ = r.join();
                    }
                    return Err(QemuError::Failed {
                        status: status.to_string(),
                        stderr: fs::read_to_string(dir.join(VM_STDERR)).unwrap_or_default(),
                    });
                }
                break QemuExit::Exited;
            }
            trig.connect();
            for tag in tail.poll(started) {
                match tag.as_str() {
                    "SELFHEAL_START" if trigger_at.is_none() => {
                        trigger_at =
                            Some(Instant::now() + Duration::from_millis(scenario.inject_ms))
                    }
                    "ARMED" => armed = true,
                    "INJECT" => {
                        injected = true;
                        if deadline.is_none() {
                            deadline = Some(Instant::now() + after_inject)
                        }
                    }
                    "END" => end_seen = Some(Instant::now()),
                    _ => {}
                }
            }
            let now = Instant::now();
            // A trigger line the guest did not act on within RESEND (no
            // INJECT marker: the fault did not run, so sending it again
            // cannot repeat it) is sent again: lines on the trigger port
            // are sometimes lost (docs/vm.md).
            let due = match sent {
                None => trigger_at.is_some_and(|t| now >= t),
                Some(t) => !injected && sends < MAX_SENDS && now.duration_since(t) > RESEND,
            };
            if scenario.class.is_some() && armed && due && trig.send("inject") {
                host_log(&if sends == 0 {
                    "inject".to_string()
                } else {
                    format!("inject again={sends}")
                });
                sends += 1;
                sent = Some(now);
                next_end = Some(now + Duration::from_secs(scenario.observe_s));
                deadline = Some(now + after_inject);
            }
            if end_seen.is_none() && next_end.is_some_and(|t| now >= t) {
                if trig.send("end") {
                    host_log("end");
                }
                next_end = Some(now + Duration::from_secs(5));
            }
            let overdue = end_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(10))
                || deadline.is_some_and(|t| now > t);
            if overdue || started.elapsed() > timeout {
                break QemuExit::Killed;
            }
            std::thread::sleep(TAIL_EVERY);
        };
        if exit == QemuExit::Killed {
            // Our child: `selfheal vm` stops QEMU on SIGTERM.
            let _ = selfheal_sys::signal::kill_process(child.id() as i32, libc::SIGTERM);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        tail.poll(started);
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let _ = r.join();
        }
        tail.poll(started);
        Ok(RunEnd {
            exit,
            host_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// A new private directory under /tmp.
fn tempdir_in_tmp() -> std::io::Result<PathBuf> {
    for n in 0..1000u32 {
        let p = PathBuf::from(format!("/tmp/shlab-{}-{n}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free /tmp/shlab-* name"))
}

/// Removes a directory when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// True when /dev/kvm can be opened read-write.
pub fn kvm_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Which accelerator to use: KVM only when a timed boot under it reaches the
/// guest's BOOT marker clearly faster than TCG. `probe` boots one fault-free
/// guest with the given accelerator and returns its host time (None = failed).
pub fn choose_accel(mut probe: impl FnMut(Accel) -> Option<Duration>) -> (Accel, String) {
    if !kvm_usable() {
        return (Accel::Tcg, "/dev/kvm not usable: TCG".into());
    }
    let tcg = probe(Accel::Tcg);
    let kvm = probe(Accel::Kvm);
    match (tcg, kvm) {
        (Some(t), Some(k)) if k.as_secs_f64() * 1.5 < t.as_secs_f64() => (
            Accel::Kvm,
            format!(
                "KVM boot {:.1} s vs TCG {:.1} s: KVM",
                k.as_secs_f64(),
                t.as_secs_f64()
            ),
        ),
        (t, k) => (
            Accel::Tcg,
            format!(
                "KVM boot {} vs TCG {}: TCG (KVM is used only when 1.5x faster)",
                k.map_or("failed".into(), |k| format!("{:.1} s", k.as_secs_f64())),
                t.map_or("failed".into(), |t| format!("{:.1} s", t.as_secs_f64())),
            ),
        ),
    }
}
