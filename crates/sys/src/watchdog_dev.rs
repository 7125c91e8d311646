//! A hardware (or softdog) watchdog device, `/dev/watchdog*`: the last line
//! of defence. Once opened, the machine resets unless the device is petted
//! within its timeout; a clean close writes the magic `V` first so that
//! stopping selfheal does not reboot the machine (unless the driver is
//! built with NOWAYOUT).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Errno, Result, SysError};

// ioctl numbers from <linux/watchdog.h>: _IOR('W', n, int) etc.
const WDIOC_GETSUPPORT: libc::c_ulong = 0x8028_5700;
const WDIOC_KEEPALIVE: libc::c_ulong = 0x8004_5705;
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
const WDIOC_GETTIMEOUT: libc::c_ulong = 0x8004_5707;

/// `struct watchdog_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

/// An open watchdog device. Dropping it disarms it with the magic close.
#[derive(Debug)]
pub struct WatchdogDevice {
    file: Option<File>,
    path: PathBuf,
}

impl WatchdogDevice {
    /// Opens (and thereby arms) the device at `path`.
    pub fn open(path: &Path) -> Result<WatchdogDevice> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| SysError {
                call: format!("open({})", path.display()),
                errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        Ok(WatchdogDevice {
            file: Some(file),
            path: path.to_path_buf(),
        })
    }

    fn fd(&self) -> i32 {
        self.file.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// The driver's identity string (e.g. `iTCO_wdt`, `Software Watchdog`).
    pub fn identity(&self) -> Result<String> {
        let mut info = WatchdogInfo {
            options: 0,
            firmware_version: 0,
            identity: [0; 32],
        };
        // SAFETY: `info` is a valid watchdog_info the kernel fills; it lives
        // for the duration of the call.
        let rc = unsafe { libc::ioctl(self.fd(), WDIOC_GETSUPPORT, &mut info) };
        if rc != 0 {
            return Err(SysError::last(format!(
                "ioctl({}, WDIOC_GETSUPPORT)",
                self.path.display()
            )));
        }
        let len = info.identity.iter().position(|b| *b == 0).unwrap_or(32);
        Ok(String::from_utf8_lossy(&info.identity[..len]).into_owned())
    }

    /// Sets the timeout in seconds; returns the value the driver accepted.
    pub fn set_timeout(&self, seconds: u32) -> Result<u32> {
        let mut v = seconds.min(i32::MAX as u32) as i32;
        // SAFETY: `v` is a valid int the kernel reads and overwrites.
        let rc = unsafe { libc::ioctl(self.fd(), WDIOC_SETTIMEOUT, &mut v) };
        if rc != 0 {
            return Err(SysError::last(format!(
                "ioctl({}, WDIOC_SETTIMEOUT {seconds})",
                self.path.display()
            )));
        }
        Ok(v.max(0) as u32)
    }

    /// The current timeout in seconds.
    pub fn timeout(&self) -> Result<u32> {
        let mut v: i32 = 0;
        // SAFETY: `v` is a valid int the kernel writes.
        let rc = unsafe { libc::ioctl(self.fd(), WDIOC_GETTIMEOUT, &mut v) };
        if rc != 0 {
            return Err(SysError::last(format!(
                "ioctl({}, WDIOC_GETTIMEOUT)",
                self.path.display()
            )));
        }
        Ok(v.max(0) as u32)
    }

    /// Pets the watchdog (restarts its countdown).
    pub fn keepalive(&self) -> Result<()> {
        let mut dummy: i32 = 0;
        // SAFETY: `dummy` is a valid int; KEEPALIVE ignores it.
        let rc = unsafe { libc::ioctl(self.fd(), WDIOC_KEEPALIVE, &mut dummy) };
        if rc == 0 {
            return Ok(());
        }
        // Some drivers only implement the write interface.
        match self.file.as_ref().map(|mut f| f.write_all(b"\0")) {
            Some(Ok(())) => Ok(()),
            _ => Err(SysError::last(format!(
                "ioctl({}, WDIOC_KEEPALIVE)",
                self.path.display()
            ))),
        }
    }

    /// Disarms with the magic close and closes the device.
    pub fn disarm(mut self) -> Result<()> {
        self.magic_close()
    }

    fn magic_close(&mut self) -> Result<()> {
        if let Some(mut f) = self.file.take() {
            f.write_all(b"V").map_err(|e| SysError {
                call: format!("write({}, magic close)", self.path.display()),
                errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        }
        Ok(())
    }
}

impl Drop for WatchdogDevice {
    fn drop(&mut self) {
        let _ = self.magic_close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_a_clear_error() {
        let err = WatchdogDevice::open(Path::new("/nonexistent/watchdog")).unwrap_err();
        assert!(err.is_gone(), "{err}");
        assert!(err.to_string().contains("/nonexistent/watchdog"), "{err}");
    }

    #[test]
    fn ioctls_on_a_non_watchdog_file_fail_cleanly() {
        let dir = std::env::temp_dir().join(format!("wd-test-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        let dev = WatchdogDevice::open(&dir).unwrap();
        assert!(dev.identity().is_err());
        assert!(dev.set_timeout(10).is_err());
        dev.disarm().unwrap();
        assert_eq!(std::fs::read(&dir).unwrap(), b"V");
        std::fs::remove_file(&dir).unwrap();
    }
}
