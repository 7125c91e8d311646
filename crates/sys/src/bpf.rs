//! eBPF without a compiler: a few hand-assembled instructions, a hash map,
//! and a tracepoint to run them on (`bpf(2)`, `perf_event_open(2)`).
//!
//! The one program here, [`dwait_program`], runs on `sched:sched_switch`:
//! when a task switches out in uninterruptible sleep (the tracepoint's
//! `prev_state` is exactly `TASK_UNINTERRUPTIBLE` in the kernel's
//! TASK_REPORT encoding, 2), it stores the task's id and the time
//! (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) in a hash map; when a task
//! switches in, its entry is removed. The map therefore holds every task
//! that is in D right now and since when, whatever it waits for (block
//! I/O, a FUSE or NFS request, a lock), and user space reads that small
//! map instead of every thread's `/proc` files.
//!
//! Field offsets differ between kernels: they come from the tracepoint's
//! `format` file in tracefs ([`SchedSwitchLayout`]), never from constants.
//! Building needs nothing but the Rust toolchain.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Errno, Result, SysError};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PSEUDO_MAP_FD: u8 = 1;

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// Helper function ids (`enum bpf_func_id`, stable ABI).
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_MAP_UPDATE: i32 = 2;
const HELPER_MAP_DELETE: i32 = 3;
const HELPER_KTIME_GET_NS: i32 = 5;

/// `prev_state` of a task that went to sleep in TASK_UNINTERRUPTIBLE, as
/// the tracepoint reports it (killable waits included; TASK_IDLE and
/// preemption are reported differently).
pub const TASK_REPORT_UNINTERRUPTIBLE: i32 = 2;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register in the low nibble, source in the high one.
    pub regs: u8,
    /// Signed offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

/// Registers: r0 return value, r1-r5 arguments, r6-r9 callee-saved, r10
/// the read-only frame pointer.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R7: u8 = 7;
const R10: u8 = 10;

/// Width of a load or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Width {
    fn bits(self) -> u8 {
        match self {
            Width::W => 0x00,
            Width::DW => 0x18,
        }
    }

    /// The width of a tracepoint field of `size` bytes, if loadable as is.
    pub fn of_size(size: usize) -> Option<Width> {
        match size {
            4 => Some(Width::W),
            8 => Some(Width::DW),
            _ => None,
        }
    }
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (dst & 0x0f) | (src << 4),
        off,
        imm,
    }
}

/// `dst = *(width *)(src + off)`.
fn ldx(w: Width, dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61 | w.bits(), dst, src, off, 0)
}
/// `*(width *)(dst + off) = src`.
fn stx(w: Width, dst: u8, src: u8, off: i16) -> Insn {
    insn(0x63 | w.bits(), dst, src, off, 0)
}
/// `dst = src` (64 bit).
fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst = imm` (64 bit).
fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst += imm` (64 bit).
fn add_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// `if dst == imm goto +off`.
fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x15, dst, 0, off, imm)
}
/// `if dst != imm goto +off`.
fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm)
}
fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// `dst = map` (a 16-byte load of the map's fd, which the kernel resolves).
fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    [
        insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
    ]
}

/// Where `sched:sched_switch` keeps the fields the program reads, from
/// its `format` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedSwitchLayout {
    /// Offset of `prev_pid` (4 bytes).
    pub prev_pid: i16,
    /// Offset of `prev_state`.
    pub prev_state: i16,
    /// Width of `prev_state` (`long` on most kernels).
    pub prev_state_width: Width,
    /// Offset of `next_pid` (4 bytes).
    pub next_pid: i16,
}

/// The D-wait program for `map_fd` (a hash map u32 tid → u64 ns).
///
/// ```text
/// r6 = ctx
/// key = next_pid; if key != 0 && lookup(map, key) then delete(map, key)
/// if prev_state != 2 goto out
/// key = prev_pid; value = ktime_get_ns(); update(map, key, value, BPF_ANY)
/// out: return 0
/// ```
///
/// The switch-in side looks up before it deletes: a lookup takes no lock,
/// a delete takes the bucket's, and almost every task switching in is not
/// in the map. The idle task (0) is skipped outright.
pub fn dwait_program(layout: &SchedSwitchLayout, map_fd: i32) -> Vec<Insn> {
    let mut p = Vec::with_capacity(32);
    p.push(mov_reg(R6, R1));
    // Switch-in: forget next_pid.
    p.push(ldx(Width::W, R1, R6, layout.next_pid));
    let skip_in = p.len();
    p.push(jeq_imm(R1, 0, 0)); // patched: to `state`
    p.push(stx(Width::W, R10, R1, -4));
    p.extend(ld_map_fd(R1, map_fd));
    p.push(mov_reg(R2, R10));
    p.push(add_imm(R2, -4));
    p.push(call(HELPER_MAP_LOOKUP));
    let not_found = p.len();
    p.push(jeq_imm(R0, 0, 0)); // patched: to `state`
    p.extend(ld_map_fd(R1, map_fd));
    p.push(mov_reg(R2, R10));
    p.push(add_imm(R2, -4));
    p.push(call(HELPER_MAP_DELETE));
    // Switch-out in D: remember prev_pid and now.
    let state = p.len();
    p.push(ldx(layout.prev_state_width, R7, R6, layout.prev_state));
    let not_d = p.len();
    p.push(jne_imm(R7, TASK_REPORT_UNINTERRUPTIBLE, 0)); // patched: to `out`
    p.push(ldx(Width::W, R1, R6, layout.prev_pid));
    p.push(stx(Width::W, R10, R1, -8));
    p.push(call(HELPER_KTIME_GET_NS));
    p.push(stx(Width::DW, R10, R0, -16));
    p.extend(ld_map_fd(R1, map_fd));
    p.push(mov_reg(R2, R10));
    p.push(add_imm(R2, -8));
    p.push(mov_reg(R3, R10));
    p.push(add_imm(R3, -16));
    p.push(mov_imm(R4, 0)); // BPF_ANY
    p.push(call(HELPER_MAP_UPDATE));
    let out = p.len();
    p.push(mov_imm(R0, 0));
    p.push(exit());
    let rel = |from: usize, to: usize| (to - from - 1) as i16;
    p[skip_in].off = rel(skip_in, state);
    p[not_found].off = rel(not_found, state);
    p[not_d].off = rel(not_d, out);
    p
}

fn bpf(cmd: libc::c_int, attr: &mut [u64], what: impl FnOnce() -> String) -> Result<i64> {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` prefix of
    // `attr.len() * 8` bytes, which is the size we pass; the kernel reads
    // (and for some commands writes) only within it. Pointers stored in it
    // by the callers point to buffers that outlive this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(SysError::last(what()))
    } else {
        Ok(rc)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new fd and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A BPF hash map from u32 keys to u64 values.
#[derive(Debug)]
pub struct HashMapU32U64 {
    fd: OwnedFd,
    max_entries: u32,
}

impl HashMapU32U64 {
    /// Creates a map holding at most `max_entries` entries.
    pub fn create(max_entries: u32) -> Result<HashMapU32U64> {
        // map_type, key_size | value_size, max_entries | map_flags, …
        let mut attr = [0u64; 16];
        attr[0] = u64::from(BPF_MAP_TYPE_HASH) | (4u64 << 32);
        attr[1] = 8 | (u64::from(max_entries) << 32);
        let fd = bpf(BPF_MAP_CREATE, &mut attr, || {
            format!("bpf(BPF_MAP_CREATE, hash u32->u64, {max_entries} entries)")
        })?;
        Ok(HashMapU32U64 {
            fd: owned(fd),
            max_entries,
        })
    }

    /// The map's fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Its capacity.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    fn elem_attr(&self, key: *const u32, value: *mut u64) -> [u64; 4] {
        [
            self.fd.as_raw_fd() as u32 as u64,
            key as u64,
            value as u64,
            0,
        ]
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: u32) -> Result<Option<u64>> {
        let mut value = 0u64;
        let mut attr = self.elem_attr(&key, &mut value);
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr, || {
            format!("bpf(BPF_MAP_LOOKUP_ELEM, {key})")
        }) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.errno.0 == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `key`; true when it was there.
    pub fn remove(&self, key: u32) -> Result<bool> {
        let mut attr = self.elem_attr(&key, std::ptr::null_mut());
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr, || {
            format!("bpf(BPF_MAP_DELETE_ELEM, {key})")
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.errno.0 == libc::ENOENT => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every entry, appended to `out` (cleared first). Entries that change
    /// while the map is walked may be missed or seen twice; each key is
    /// kept once. Never walks more than twice the capacity.
    pub fn entries(&self, out: &mut Vec<(u32, u64)>) -> Result<()> {
        out.clear();
        let mut key: Option<u32> = None;
        for _ in 0..self.max_entries.saturating_mul(2).max(2) {
            let mut next = 0u32;
            let cur = key.as_ref().map_or(std::ptr::null(), |k| k as *const u32);
            let mut attr = self.elem_attr(cur, std::ptr::null_mut());
            attr[2] = &mut next as *mut u32 as u64;
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr, || {
                "bpf(BPF_MAP_GET_NEXT_KEY)".to_string()
            }) {
                Ok(_) => {}
                Err(e) if e.errno.0 == libc::ENOENT => break,
                Err(e) => return Err(e),
            }
            if let Some(v) = self.get(next)? {
                if !out.iter().any(|(k, _)| *k == next) {
                    out.push((next, v));
                }
            }
            key = Some(next);
        }
        Ok(())
    }
}

/// The verifier refused a program, or loading failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}{}", if log.is_empty() { String::new() } else { format!("; verifier: {log}") })]
pub struct LoadError {
    /// The failed call.
    pub error: SysError,
    /// The verifier's log (its last lines).
    pub log: String,
}

/// Loads a tracepoint program; on failure the verifier's log says why.
pub fn load_tracepoint_program(
    insns: &[Insn],
    license: &str,
) -> std::result::Result<OwnedFd, LoadError> {
    let license = std::ffi::CString::new(license).map_err(|_| LoadError {
        error: SysError {
            call: "bpf(BPF_PROG_LOAD): license with a NUL".into(),
            errno: Errno(libc::EINVAL),
        },
        log: String::new(),
    })?;
    let mut log = vec![0u8; 64 * 1024];
    let load = |log_level: u32, log: &mut [u8]| {
        // prog_type | insn_cnt, insns, license, log_level | log_size,
        // log_buf, kern_version | prog_flags, prog_name[16], …
        let mut attr = [0u64; 16];
        attr[0] = u64::from(BPF_PROG_TYPE_TRACEPOINT) | ((insns.len() as u64) << 32);
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        if log_level > 0 {
            attr[3] = u64::from(log_level) | ((log.len() as u64) << 32);
            attr[4] = log.as_mut_ptr() as u64;
        }
        let name = b"selfheal_dwait\0\0";
        attr[6] = u64::from_ne_bytes(name[..8].try_into().unwrap_or_default());
        attr[7] = u64::from_ne_bytes(name[8..].try_into().unwrap_or_default());
        bpf(BPF_PROG_LOAD, &mut attr, || {
            format!("bpf(BPF_PROG_LOAD, tracepoint, {} insns)", insns.len())
        })
    };
    match load(0, &mut log) {
        Ok(fd) => Ok(owned(fd)),
        Err(error) => {
            // Again with the verifier's log, to say why.
            let _ = load(1, &mut log);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            Err(LoadError {
                error,
                log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            })
        }
    }
}

/// Runs `prog` on every hit of the tracepoint with id `tracepoint_id` (on
/// every CPU) until the returned fd is closed.
pub fn attach_tracepoint(tracepoint_id: u64, prog: BorrowedFd<'_>) -> Result<OwnedFd> {
    let call = || format!("perf_event_open(tracepoint {tracepoint_id})");
    // type, size | config, … (the first 64 bytes of perf_event_attr).
    let mut attr = [0u64; 8];
    attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | (64u64 << 32);
    attr[1] = tracepoint_id;
    // SAFETY: `attr` is a zeroed 64-byte perf_event_attr (size field = 64)
    // living across the call; the other arguments are integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            0i32,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(SysError::last(call()));
    }
    let event = owned(fd);
    // SAFETY: ioctl on the perf event fd we own, with the program's fd as
    // an integer argument, as PERF_EVENT_IOC_SET_BPF expects.
    let rc = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            prog.as_raw_fd(),
        )
    };
    if rc != 0 {
        return Err(SysError::last(format!(
            "ioctl(PERF_EVENT_IOC_SET_BPF) on tracepoint {tracepoint_id}"
        )));
    }
    // SAFETY: ioctl on the fd we own; ENABLE takes no argument.
    let rc = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) };
    if rc != 0 {
        return Err(SysError::last(format!(
            "ioctl(PERF_EVENT_IOC_ENABLE) on tracepoint {tracepoint_id}"
        )));
    }
    Ok(event)
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns` (and of
/// `std::time::Instant` on Linux).
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain old data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a live out-pointer for the call; CLOCK_MONOTONIC
    // always exists, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of this development machine's kernel (6.18), as its
    /// tracefs `format` file gives it.
    const LAYOUT: SchedSwitchLayout = SchedSwitchLayout {
        prev_pid: 24,
        prev_state: 32,
        prev_state_width: Width::DW,
        next_pid: 56,
    };

    #[test]
    fn program_jumps_land_where_meant() {
        let p = dwait_program(&LAYOUT, 7);
        // Every jump stays inside the program and the last two are `r0 = 0; exit`.
        for (i, ins) in p.iter().enumerate() {
            if matches!(ins.code, 0x15 | 0x55) {
                let to = i as i64 + 1 + i64::from(ins.off);
                assert!(to > i as i64 && (to as usize) < p.len(), "jump at {i}");
            }
        }
        assert_eq!(p[p.len() - 2], mov_imm(R0, 0));
        assert_eq!(p[p.len() - 1], exit());
        // The D check reads prev_state as a 64-bit field at offset 32.
        let state = p.iter().position(|i| i.code == 0x79).unwrap();
        assert_eq!((p[state].off, p[state + 1].imm), (32, 2));
        assert_eq!(
            p.iter().filter(|i| i.code == 0x18).count(),
            3,
            "map used three times"
        );
        assert!(p.iter().filter(|i| i.code == 0x18).all(|i| i.imm == 7));
    }

    #[test]
    fn loads_and_sees_our_own_uninterruptible_sleep() {
        if !crate::process::is_root() {
            eprintln!("SKIP: loading BPF needs root");
            return;
        }
        let Ok(map) = HashMapU32U64::create(64) else {
            eprintln!("SKIP: no BPF maps here");
            return;
        };
        let p = dwait_program(&LAYOUT, map.fd().as_raw_fd());
        match load_tracepoint_program(&p, "Apache-2.0") {
            Ok(_) => {}
            Err(e) => panic!("the verifier refused the program: {e}"),
        }
        assert_eq!(map.get(1).unwrap(), None);
        assert!(!map.remove(1).unwrap());
        let mut out = Vec::new();
        map.entries(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
