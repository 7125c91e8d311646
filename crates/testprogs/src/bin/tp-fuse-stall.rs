//! A FUSE file system whose server never answers a read: whoever reads its
//! one file waits in uninterruptible (killable) sleep, state D. For the
//! D-state tests and benchmarks; root only.
//!
//! `tp-fuse-stall MOUNTPOINT [--seconds S] [--stamp FILE] [--answer-after MS]`
//!
//! Mounts at MOUNTPOINT (which must exist) a directory holding `stall`
//! (1 MiB) and `lookup-stall`, prints `mounted conn=<n>` and serves until
//! SIGTERM/SIGINT, stdin closing, or S seconds (default 60, at most 600).
//! A read of `stall` is never answered, unless `--answer-after MS` is given:
//! then every read is answered MS ms after it arrived (a slow server that
//! answers), with byte `i` of the file equal to `i % 251`. Looking up
//! `lookup-stall` (e.g. `stat`) is never answered: the caller waits for the
//! reply itself, a wait that is not block I/O. On the way out it
//! aborts the connection (`/sys/fs/fuse/connections/<n>/abort` when fusectl
//! is mounted, and in any case by closing /dev/fuse: every blocked reader
//! gets an error and wakes) and lazily unmounts. If this process dies
//! instead, the kernel aborts the connection itself when /dev/fuse is
//! closed, so no reader can stay stuck.
//!
//! The kernel is told FUSE_ASYNC_READ, so reads go through readahead in the
//! background and the reader sleeps on the page lock (D), not in the
//! interruptible request wait.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_STATFS: u32 = 17;
const FUSE_RELEASE: u32 = 18;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_READDIR: u32 = 28;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_ACCESS: u32 = 34;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;
const FUSE_ASYNC_READ: u32 = 1;
const IN_HEADER: usize = 40;
const FILE_SIZE: u64 = 1 << 20;
const ROOT: u64 = 1;
/// Attributes and names are cached this long (s): after the first lookup
/// only reads go to the server, so a reader that opened the file before
/// the server stopped waits in the read (D), not in a lookup.
const ATTR_VALID_S: u64 = 3600;
const FILE: u64 = 2;

fn main() {
    let args = selfheal_testprogs::Args::from_env();
    let Some(mnt) = args.words.first().map(PathBuf::from) else {
        fail("usage: tp-fuse-stall MOUNTPOINT [--seconds S] [--stamp FILE]");
    };
    let seconds = args.num("seconds", 60).min(600);
    let answer_after = args
        .get("answer-after")
        .map(|_| args.millis("answer-after", 0));
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap_or_else(|e| fail(&format!("open /dev/fuse: {e}")));
    if let Err(e) = selfheal_sys::fuse::mount_fuse(&mnt, dev.as_fd(), "selfheal-stall") {
        fail(&format!("{e}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    // Stdin closing (the test that started us is gone) stops us too.
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n) = std::io::stdin().read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    let server = {
        let dev = dev
            .try_clone()
            .unwrap_or_else(|e| fail(&format!("dup: {e}")));
        let stop = stop.clone();
        std::thread::spawn(move || serve(dev, &stop, answer_after))
    };
    // stat() makes the kernel ask for the root's attributes: the server runs.
    let conn = selfheal_sys::fuse::device_of(&mnt)
        .map(selfheal_sys::fuse::minor)
        .unwrap_or_else(|e| fail(&format!("{e}")));
    selfheal_testprogs::stamp(args.stamp_file().as_deref(), "mounted");
    println!("mounted conn={conn}");
    let _ = std::io::stdout().flush();
    let end = Instant::now() + Duration::from_secs(seconds);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end && !server.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    // Abort through fusectl when it is mounted; closing the last /dev/fuse
    // descriptor (below) aborts the connection as well.
    let abort = Path::new("/sys/fs/fuse/connections")
        .join(conn.to_string())
        .join("abort");
    if abort.exists() {
        if let Err(e) = std::fs::write(&abort, "1") {
            eprintln!("tp-fuse-stall: {}: {e}", abort.display());
        }
    }
    let _ = server.join();
    drop(dev);
    if let Err(e) = selfheal_sys::fuse::umount_lazy(&mnt) {
        eprintln!("tp-fuse-stall: {e}");
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("tp-fuse-stall: {msg}");
    std::process::exit(2)
}

/// A read to answer later: (when, unique, offset, size).
type Delayed = (Instant, u64, u64, u32);

fn reply(dev: &mut File, unique: u64, r: Result<Vec<u8>, i32>) {
    let (err, payload) = match r {
        Ok(p) => (0i32, p),
        Err(e) => (-e, Vec::new()),
    };
    let mut msg = Vec::with_capacity(16 + payload.len());
    msg.extend(((16 + payload.len()) as u32).to_ne_bytes());
    msg.extend(err.to_ne_bytes());
    msg.extend(unique.to_ne_bytes());
    msg.extend(payload);
    let _ = dev.write_all(&msg);
}

/// The file's content at `offset`: byte i is i % 251.
fn content(offset: u64, size: u32) -> Vec<u8> {
    let end = (offset + u64::from(size)).min(FILE_SIZE);
    (offset.min(end)..end).map(|i| (i % 251) as u8).collect()
}

fn serve(mut dev: File, stop: &AtomicBool, answer_after: Option<Duration>) {
    let mut buf = vec![0u8; 1 << 20 | 4096];
    // Requests we never answer stay here so the kernel keeps waiting.
    let mut unanswered = 0u64;
    let mut delayed: Vec<Delayed> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        delayed.retain(|&(due, unique, offset, size)| {
            if due <= now {
                reply(&mut dev, unique, Ok(content(offset, size)));
                false
            } else {
                true
            }
        });
        let wait = delayed
            .iter()
            .map(|d| d.0.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(200))
            .min(Duration::from_millis(200));
        match selfheal_sys::poll::poll_readable(dev.as_fd(), Some(wait)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let n = match dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // interrupted request
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return, // ENODEV: unmounted or aborted
        };
        if n < IN_HEADER {
            continue;
        }
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap());
        let opcode = u32_at(4);
        let unique = u64_at(8);
        let nodeid = u64_at(16);
        let body = &buf[IN_HEADER..n];
        let answer: Option<Result<Vec<u8>, i32>> = match opcode {
            FUSE_INIT => {
                let minor = u32::from_ne_bytes(body[4..8].try_into().unwrap()).min(31);
                let max_readahead = u32::from_ne_bytes(body[8..12].try_into().unwrap());
                let mut out = Vec::with_capacity(64);
                out.extend(7u32.to_ne_bytes());
                out.extend(minor.to_ne_bytes());
                out.extend(max_readahead.to_ne_bytes());
                out.extend(FUSE_ASYNC_READ.to_ne_bytes());
                out.extend(16u16.to_ne_bytes()); // max_background
                out.extend(12u16.to_ne_bytes()); // congestion_threshold
                out.extend((128u32 * 1024).to_ne_bytes()); // max_write
                out.extend(1u32.to_ne_bytes()); // time_gran
                out.resize(64, 0);
                Some(Ok(out))
            }
            FUSE_GETATTR => Some(attr(nodeid).map(|a| {
                let mut out = vec![0u8; 16];
                out[0..8].copy_from_slice(&ATTR_VALID_S.to_ne_bytes()); // attr_valid
                out.extend(a);
                out
            })),
            FUSE_LOOKUP => {
                let name = body.split(|b| *b == 0).next().unwrap_or(&[]);
                if nodeid == ROOT && name == b"lookup-stall" {
                    unanswered += 1;
                    None
                } else if nodeid == ROOT && name == b"stall" {
                    let mut out = Vec::new();
                    out.extend(FILE.to_ne_bytes()); // nodeid
                    out.extend(0u64.to_ne_bytes()); // generation
                    out.extend(ATTR_VALID_S.to_ne_bytes()); // entry_valid
                    out.extend(ATTR_VALID_S.to_ne_bytes()); // attr_valid
                    out.extend([0u8; 8]);
                    out.extend(attr(FILE).unwrap_or_default());
                    Some(Ok(out))
                } else {
                    Some(Err(libc::ENOENT))
                }
            }
            FUSE_OPEN | FUSE_OPENDIR => Some(Ok(vec![0u8; 16])),
            FUSE_READ => {
                // fuse_read_in: fh, offset, size, …
                let offset = u64::from_ne_bytes(body[8..16].try_into().unwrap());
                let size = u32::from_ne_bytes(body[16..20].try_into().unwrap());
                match answer_after {
                    Some(d) => delayed.push((Instant::now() + d, unique, offset, size)),
                    None => unanswered += 1,
                }
                None
            }
            FUSE_READDIR | FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_FLUSH | FUSE_ACCESS => {
                Some(Ok(Vec::new()))
            }
            FUSE_STATFS => Some(Ok(vec![0u8; 80])),
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT | FUSE_DESTROY => None,
            _ => Some(Err(libc::ENOSYS)),
        };
        if let Some(r) = answer {
            reply(&mut dev, unique, r);
        }
    }
    std::hint::black_box(unanswered);
}

/// `struct fuse_attr` (88 bytes) for the root directory or the file.
fn attr(nodeid: u64) -> Result<Vec<u8>, i32> {
    let (mode, size, nlink) = match nodeid {
        ROOT => (libc::S_IFDIR | 0o755, 0u64, 2u32),
        FILE => (libc::S_IFREG | 0o444, FILE_SIZE, 1),
        _ => return Err(libc::ENOENT),
    };
    let mut a = Vec::with_capacity(88);
    a.extend(nodeid.to_ne_bytes()); // ino
    a.extend(size.to_ne_bytes());
    a.extend(size.div_ceil(512).to_ne_bytes()); // blocks
    a.extend([0u8; 24]); // atime, mtime, ctime
    a.extend([0u8; 12]); // their nsec
    a.extend(mode.to_ne_bytes());
    a.extend(nlink.to_ne_bytes());
    a.extend(0u32.to_ne_bytes()); // uid
    a.extend(0u32.to_ne_bytes()); // gid
    a.extend(0u32.to_ne_bytes()); // rdev
    a.extend(4096u32.to_ne_bytes()); // blksize
    a.extend(0u32.to_ne_bytes()); // flags
    Ok(a)
}
