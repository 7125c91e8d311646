//! A thread that follows `/dev/kmsg` and hands each assembled
//! [`KernelReport`] to a callback.
//!
//! Each `read(2)` of /dev/kmsg returns exactly one record. The device is
//! opened non-blocking and waited on with `poll(2)` together with a socket
//! that a stop request writes to, so an idle follower sleeps without a
//! timer (a timeout only while a report is open, to close it once its
//! last line has arrived). `EPIPE` means the ring buffer overwrote records before we read
//! them: they are counted and reading continues with the oldest record left.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::assemble::{Assembler, KernelReport};
use crate::record::{parse_record, Record};
use crate::verdict::VerdictKind;

/// How long without a new record closes the open report.
const QUIET_FLUSH: Duration = Duration::from_millis(300);

/// A callback that sees every record (tests, debugging).
pub type RecordHook = Box<dyn FnMut(&Record) + Send>;

/// Where and how to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowOptions {
    /// The device (default `/dev/kmsg`).
    pub path: PathBuf,
    /// Also report verdicts already in the ring buffer at start (default:
    /// only new records).
    pub replay: bool,
    /// `/proc/uptime`, used to date records (wall clock = now − (uptime − record time)).
    pub uptime_path: PathBuf,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            path: PathBuf::from("/dev/kmsg"),
            replay: false,
            uptime_path: PathBuf::from("/proc/uptime"),
        }
    }
}

/// The follower could not start.
#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    /// /dev/kmsg could not be opened (needs root or CAP_SYSLOG when
    /// `kernel.dmesg_restrict = 1`).
    #[error("cannot open {path} to follow kernel reports: {source}; run as root or grant CAP_SYSLOG, or set [kmsg] enabled = false")]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reader thread could not be spawned.
    #[error("cannot start the kmsg thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct KmsgStats {
    /// Records read.
    pub records: AtomicU64,
    /// Records overwritten before we could read them.
    pub records_lost: AtomicU64,
    /// Reports per [`VerdictKind`], in [`VerdictKind::ALL`] order.
    pub reports: [AtomicU64; 11],
    /// Read errors other than lost records.
    pub read_errors: AtomicU64,
}

impl KmsgStats {
    /// Reports seen of `kind`.
    pub fn reports_of(&self, kind: VerdictKind) -> u64 {
        let i = VerdictKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.reports[i].load(Ordering::Relaxed)
    }

    fn count(&self, kind: VerdictKind) {
        if let Some(i) = VerdictKind::ALL.iter().position(|k| *k == kind) {
            self.reports[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running follower thread.
#[derive(Debug)]
pub struct KmsgFollower {
    stop: Arc<AtomicBool>,
    /// Written to on stop: wakes the thread's `poll` at once.
    stop_wake: UnixStream,
    handle: Option<JoinHandle<()>>,
    stats: Arc<KmsgStats>,
}

impl KmsgFollower {
    /// Opens the device and starts the thread. `on_report` runs on that
    /// thread for every report; `on_record`, if given, for every record
    /// (tests and debugging).
    pub fn spawn(
        options: FollowOptions,
        mut on_report: impl FnMut(KernelReport) + Send + 'static,
        mut on_record: Option<RecordHook>,
    ) -> Result<KmsgFollower, KmsgError> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&options.path)
            .map_err(|source| KmsgError::Open {
                path: options.path.clone(),
                source,
            })?;
        if !options.replay {
            // SEEK_END on /dev/kmsg skips to after the newest record.
            let _ = file.seek(SeekFrom::End(0));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_wake, stop_wait) = UnixStream::pair().map_err(KmsgError::Spawn)?;
        let stats = Arc::new(KmsgStats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let boot_unix_ms = boot_time_unix_ms(&options.uptime_path);
        let handle = std::thread::Builder::new()
            .name("selfheal-kmsg".into())
            .spawn(move || {
                let mut asm = Assembler::new();
                let mut buf = vec![0u8; 16 * 1024];
                let mut emit = |mut r: KernelReport, stats: &KmsgStats| {
                    r.wall_unix_ms = boot_unix_ms.map(|b| b + (r.ts_us / 1000) as i64);
                    stats.count(r.kind);
                    on_report(r);
                };
                while !stop2.load(Ordering::Relaxed) {
                    // Idle: no timeout. A stop request wakes the poll
                    // through `stop_wait`; no periodic wake-up is needed.
                    let wait = asm.is_open().then_some(QUIET_FLUSH);
                    match selfheal_sys::child::poll_readable_any(
                        &[file.as_fd(), stop_wait.as_fd()],
                        wait,
                    ) {
                        Ok(mask) if mask & 0b10 != 0 => break,
                        Ok(mask) if mask & 0b01 != 0 => {}
                        Ok(_) => {
                            if let Some(r) = asm.flush() {
                                emit(r, &stats2);
                            }
                            continue;
                        }
                        Err(e) => {
                            tracing::error!("kmsg follower stops: poll failed: {e}");
                            return;
                        }
                    }
                    // Drain everything available before waiting again.
                    loop {
                        match read_record(&mut file, &mut buf) {
                            ReadOutcome::Record(text) => {
                                stats2.records.fetch_add(1, Ordering::Relaxed);
                                let Some(rec) = parse_record(&text) else {
                                    continue;
                                };
                                if let Some(f) = on_record.as_mut() {
                                    f(&rec);
                                }
                                for r in asm.push(&rec) {
                                    emit(r, &stats2);
                                }
                            }
                            ReadOutcome::Lost => {
                                stats2.records_lost.fetch_add(1, Ordering::Relaxed);
                            }
                            ReadOutcome::Empty => break,
                            ReadOutcome::Error(e) => {
                                if stats2.read_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                    tracing::warn!("reading kernel log: {e}");
                                }
                                std::thread::sleep(Duration::from_millis(100));
                                break;
                            }
                        }
                    }
                }
                if let Some(r) = asm.flush() {
                    emit(r, &stats2);
                }
            })
            .map_err(KmsgError::Spawn)?;
        Ok(KmsgFollower {
            stop,
            stop_wake,
            handle: Some(handle),
            stats,
        })
    }

    /// Counters.
    pub fn stats(&self) -> Arc<KmsgStats> {
        self.stats.clone()
    }

    /// True while the thread runs.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops the thread (at once, unless it is handing a report over).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&self.stop_wake).write_all(b"x");
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for KmsgFollower {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

enum ReadOutcome {
    Record(String),
    Lost,
    Empty,
    Error(std::io::Error),
}

fn read_record(file: &mut File, buf: &mut [u8]) -> ReadOutcome {
    loop {
        match file.read(buf) {
            Ok(0) => return ReadOutcome::Empty,
            Ok(n) => return ReadOutcome::Record(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return ReadOutcome::Empty,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return ReadOutcome::Lost,
            Err(e) => return ReadOutcome::Error(e),
        }
    }
}

/// Wall-clock time of boot as printk counts it, from /proc/uptime.
fn boot_time_unix_ms(uptime: &std::path::Path) -> Option<i64> {
    let text = std::fs::read_to_string(uptime).ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    let now = selfheal_event::unix_ms(SystemTime::now());
    Some(now - (secs * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;
    use std::time::Instant;

    #[test]
    fn missing_device_says_what_to_do() {
        let err = KmsgFollower::spawn(
            FollowOptions {
                path: "/nonexistent/kmsg".into(),
                ..FollowOptions::default()
            },
            |_| {},
            None,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/kmsg") && msg.contains("CAP_SYSLOG"),
            "{msg}"
        );
    }

    /// Writes a user-facility record to the real /dev/kmsg and sees it
    /// arrive; user records are never taken as kernel verdicts even when
    /// their text looks like one.
    #[test]
    fn follows_the_real_device() {
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIP follows_the_real_device: writing /dev/kmsg needs root");
            return;
        }
        let seen: Arc<Mutex<Vec<Record>>> = Arc::default();
        let reports: Arc<Mutex<Vec<KernelReport>>> = Arc::default();
        let (s2, r2) = (seen.clone(), reports.clone());
        let follower = match KmsgFollower::spawn(
            FollowOptions::default(),
            move |r| r2.lock().unwrap().push(r),
            Some(Box::new(move |rec: &Record| {
                s2.lock().unwrap().push(rec.clone())
            })),
        ) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("SKIP follows_the_real_device: {e}");
                return;
            }
        };
        let token = format!("selfheal-kmsg-test-{}", std::process::id());
        // <12> = facility user, level warning.
        let line =
            format!("<12>{token}: watchdog: BUG: soft lockup - CPU#0 stuck for 1s! [fake:1]\n");
        let mut dev = OpenOptions::new().write(true).open("/dev/kmsg").unwrap();
        dev.write_all(line.as_bytes()).unwrap();
        let start = Instant::now();
        let found = loop {
            if let Some(r) = seen
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.text.contains(&token))
            {
                break Some(r.clone());
            }
            if start.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let rec = found.expect("our record arrived within 10 s");
        assert_eq!((rec.facility, rec.level), (1, 4));
        assert!(follower.stats().records.load(Ordering::Relaxed) >= 1);
        let t = Instant::now();
        follower.stop();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "stop took {:?}",
            t.elapsed()
        );
        assert!(
            reports
                .lock()
                .unwrap()
                .iter()
                .all(|r| !r.headline.contains(&token)),
            "a user record was taken as a kernel verdict"
        );
    }
}
