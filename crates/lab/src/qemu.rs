//! Boots one guest with QEMU, its four serial ports written to files, and
//! waits for it to power off, reboot (QEMU runs with -no-reboot) or time out.

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
    fn command(&self, cmdline: &str, dir: &Path) -> Command {
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
                "-no-reboot",
                "-monitor",
                "none",
            ])
            .arg("-kernel")
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
        let started = Instant::now();
        let mut child = self
            .command(&cmdline, dir)
            .spawn()
            .map_err(|source| QemuError::Spawn {
                qemu: self.qemu.clone(),
                source,
            })?;
        let timeout = scenario.host_timeout();
        let lab_log = dir.join(LOG_FILES[1]);
        let mut end_seen: Option<Instant> = None;
        // Once the fault is in, the guest has its observation window (plus
        // the workload, for fault-free runs) and a margin for slow TCG.
        let mut inject_seen: Option<Instant> = None;
        let after_inject = Duration::from_secs(
            scenario.observe_s
                + 30
                + if scenario.class.is_none() {
                    scenario.workload_s
                } else {
                    0
                },
        );
        let mut last_check = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let host_ms = started.elapsed().as_millis() as u64;
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
            if last_check.elapsed() >= Duration::from_millis(500) {
                last_check = Instant::now();
                let text = fs::read(&lab_log).unwrap_or_default();
                if inject_seen.is_none() && contains(&text, b"LAB INJECT ") {
                    inject_seen = Some(Instant::now());
                }
                if end_seen.is_none() && contains(&text, b"LAB END ") {
                    end_seen = Some(Instant::now());
                }
            }
            let overdue = end_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(10))
                || inject_seen.is_some_and(|t| t.elapsed() > after_inject);
            if overdue || started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(RunEnd {
                    exit: QemuExit::Killed,
                    host_ms: started.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
