//! Restarting the machine: `sync(2)`, `reboot(2)` and `kexec_file_load(2)`.
//!
//! Only the controlled restart (`selfheal_recover`'s `reboot` step, after
//! the evidence is written and the disks synced) calls [`restart`]; tests
//! never do (they replace it with a recording fake). [`restart`] refuses
//! while `SELFHEAL_RESTART_FORBIDDEN` is set, which the project's test
//! scripts set, so a test that reached it by mistake cannot take the
//! machine down.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Errno, Result, SysError};

/// Environment variable that makes [`restart`] refuse (test harnesses).
pub const RESTART_FORBIDDEN_ENV: &str = "SELFHEAL_RESTART_FORBIDDEN";

/// How `reboot(2)` restarts the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCmd {
    /// `LINUX_REBOOT_CMD_RESTART`: firmware reset, then a full boot.
    Restart,
    /// `LINUX_REBOOT_CMD_KEXEC`: straight into the kernel loaded with kexec.
    Kexec,
    /// The kernel's emergency restart (`b` to /proc/sysrq-trigger, which
    /// root may write whatever `kernel.sysrq` allows): a reset with no
    /// reboot notifiers and no device shutdown. For a machine with a CPU
    /// that takes no interrupts, where `reboot(2)` waits forever in its
    /// notifiers for that CPU to answer a cross-CPU call (perf_reboot).
    Emergency,
}

/// Flushes every filesystem's dirty data (`sync(2)`). May block for as long
/// as a device does: call it from a thread you can give up on.
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// Restarts the machine at once (no shutdown: the caller synced first).
/// Returns only when the kernel refused (EPERM without CAP_SYS_BOOT, EINVAL
/// for kexec with no kernel loaded), or when [`RESTART_FORBIDDEN_ENV`] is set.
pub fn restart(cmd: RestartCmd) -> Result<()> {
    let name = match cmd {
        RestartCmd::Restart => "reboot(LINUX_REBOOT_CMD_RESTART)",
        RestartCmd::Kexec => "reboot(LINUX_REBOOT_CMD_KEXEC)",
        RestartCmd::Emergency => "write(/proc/sysrq-trigger, \"b\")",
    };
    if std::env::var_os(RESTART_FORBIDDEN_ENV).is_some() {
        return Err(SysError {
            call: format!("{name} refused: {RESTART_FORBIDDEN_ENV} is set"),
            errno: Errno(libc::EPERM),
        });
    }
    let how = match cmd {
        RestartCmd::Restart => libc::RB_AUTOBOOT,
        RestartCmd::Kexec => libc::RB_KEXEC,
        RestartCmd::Emergency => {
            return match std::fs::write("/proc/sysrq-trigger", b"b") {
                // The machine is resetting; this is not reached.
                Ok(()) => Ok(()),
                Err(e) => Err(SysError {
                    call: name.to_string(),
                    errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                }),
            };
        }
    };
    // SAFETY: reboot takes one integer command; on success it does not return.
    let rc = unsafe { libc::reboot(how) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(name))
    }
}

/// True when a kernel is loaded for kexec (`/sys/kernel/kexec_loaded`
/// under `sys_root`).
pub fn kexec_loaded(sys_root: &Path) -> bool {
    std::fs::read_to_string(sys_root.join("kernel/kexec_loaded")).is_ok_and(|s| s.trim() == "1")
}

/// Loads `kernel` (and `initrd`, if any) with `cmdline` for a later
/// [`RestartCmd::Kexec`] (`kexec_file_load(2)`; needs CAP_SYS_BOOT, and a
/// signed kernel where the kernel enforces signatures).
pub fn kexec_file_load(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<()> {
    let open = |p: &Path| {
        std::fs::File::open(p).map_err(|e| SysError {
            call: format!("open({})", p.display()),
            errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    };
    let k = open(kernel)?;
    let i = initrd.map(open).transpose()?;
    let c = CString::new(cmdline).map_err(|_| SysError {
        call: "kexec_file_load: the command line holds a NUL byte".into(),
        errno: Errno(libc::EINVAL),
    })?;
    // KEXEC_FILE_NO_INITRAMFS
    let flags: libc::c_ulong = if i.is_some() { 0 } else { 0x4 };
    let len = c.as_bytes_with_nul().len() as libc::c_ulong;
    // SAFETY: the fds are open for the duration of the call, the command
    // line is NUL-terminated and `len` counts that NUL, as the syscall wants.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            k.as_raw_fd(),
            i.as_ref().map_or(-1, |f| f.as_raw_fd()),
            len,
            c.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "kexec_file_load({}, {})",
            kernel.display(),
            initrd.map_or("no initrd".to_string(), |p| p.display().to_string())
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_is_refused_while_forbidden() {
        // The one call in this crate that must never run on a test host:
        // with the variable set it returns before the system call.
        std::env::set_var(RESTART_FORBIDDEN_ENV, "1");
        let err = restart(RestartCmd::Restart).unwrap_err();
        assert!(err.is_permission(), "{err}");
        assert!(err.to_string().contains(RESTART_FORBIDDEN_ENV), "{err}");
    }

    #[test]
    fn kexec_state_and_load_errors_are_plain() {
        let dir = std::env::temp_dir().join(format!("kexec-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::write(dir.join("kernel/kexec_loaded"), "0\n").unwrap();
        assert!(!kexec_loaded(&dir));
        std::fs::write(dir.join("kernel/kexec_loaded"), "1\n").unwrap();
        assert!(kexec_loaded(&dir));
        assert!(!kexec_loaded(Path::new("/nonexistent")));
        // A missing kernel fails at open, before any system call.
        let err = kexec_file_load(Path::new("/nonexistent/vmlinuz"), None, "").unwrap_err();
        assert!(
            err.is_gone() && err.to_string().contains("/nonexistent/vmlinuz"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
