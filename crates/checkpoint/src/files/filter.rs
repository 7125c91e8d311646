//! The seccomp filter that makes the tracee ask us before it changes a
//! file, and its installation by remote system calls.
//!
//! Only calls that can change file contents or names (or write output that
//! cannot be taken back) go to the listener; everything else, reads
//! included, runs at full speed. `open`/`openat` are asked about only with
//! `O_CREAT` or `O_TRUNC`, `mmap` only with `MAP_SHARED`, `ioctl` only for
//! the clone requests: the flags are checked in the filter itself. A call
//! from another ABI (int 0x80, x32) is always asked about, so nothing slips
//! past.
//!
//! The filter also asks about the few calls that change per-thread or
//! per-process kernel state a checkpoint holds but cannot read without
//! running a call inside the program ([`KERNEL_STATE`]: the break, the
//! alternate signal stack, the clear-tid address, `PR_SET_MM`). Programs
//! make them rarely; counting them lets a checkpoint re-use the previous
//! checkpoint's values when none ran, instead of three injected calls
//! (each a single-step round trip, ~130 µs) every time.

use selfheal_sys::seccomp::{self as sc, bpf_insn};

use crate::error::TraceError;
use crate::remote::Remote;
use crate::tracee::Tracee;

/// `ioctl` requests that rewrite a file's contents.
pub(crate) const FICLONE: u32 = 0x4004_9409;
/// See [`FICLONE`].
pub(crate) const FICLONERANGE: u32 = 0x4020_940d;

/// System calls always sent to the listener.
pub(crate) const ALWAYS: &[i64] = &[
    libc::SYS_write,
    libc::SYS_pwrite64,
    libc::SYS_writev,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_vmsplice,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_sendmmsg,
    libc::SYS_ftruncate,
    libc::SYS_truncate,
    libc::SYS_fallocate,
    libc::SYS_creat,
    libc::SYS_openat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rmdir,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_io_uring_setup,
    libc::SYS_io_submit,
    libc::SYS_process_vm_writev,
];

/// Calls that change kernel state a checkpoint keeps (see the module
/// comment): `brk` and `sigaltstack` only with a first argument (without
/// one they only ask), `prctl` only for `PR_SET_MM`, `set_tid_address`
/// always.
pub(crate) const KERNEL_STATE: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_sigaltstack,
    libc::SYS_set_tid_address,
    libc::SYS_prctl,
];

/// `PR_SET_MM`: rewrites the break among other fields of the memory map.
const PR_SET_MM: u32 = 35;

/// True if the call asked about may have changed the kernel state in
/// [`KERNEL_STATE`]. Calls of another ABI count too: the filter cannot
/// tell what they are.
pub(crate) fn changes_kernel_state(arch: u32, nr: i32) -> bool {
    arch != sc::AUDIT_ARCH_X86_64 || nr as u32 >= 0x4000_0000 || KERNEL_STATE.contains(&(nr as i64))
}

// Classic BPF opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

/// A jump target while assembling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Native,
    Notify,
    Open,
    Openat,
    Mmap,
    Ioctl,
    FirstArgSet,
    Prctl,
}

#[derive(Debug, Clone, Copy)]
enum Insn {
    /// Load a 32-bit word of seccomp_data.
    Ld(u32),
    /// Jump to the label if the test holds, fall through otherwise.
    If(u16, u32, Label),
    /// Return an action.
    Ret(u32),
    /// Where a label points (no instruction).
    Mark(Label),
}

/// The filter as the kernel reads it (`struct sock_filter[]`).
pub(crate) fn program() -> Vec<[u8; 8]> {
    use Insn::*;
    let create_or_trunc = (libc::O_CREAT | libc::O_TRUNC) as u32;
    let notify = Ret(sc::SECCOMP_RET_USER_NOTIF);
    let allow = Ret(sc::SECCOMP_RET_ALLOW);
    let mut p = vec![
        Ld(ARCH),
        If(JEQ_K, sc::AUDIT_ARCH_X86_64, Label::Native),
        // Another ABI (int 0x80): ask, whatever the call.
        notify,
        Mark(Label::Native),
        Ld(NR),
        // x32 system calls have bit 30 set: ask.
        If(JGE_K, 0x4000_0000, Label::Notify),
    ];
    for &nr in ALWAYS {
        p.push(If(JEQ_K, nr as u32, Label::Notify));
    }
    p.extend([
        If(JEQ_K, libc::SYS_open as u32, Label::Open),
        If(JEQ_K, libc::SYS_openat as u32, Label::Openat),
        If(JEQ_K, libc::SYS_mmap as u32, Label::Mmap),
        If(JEQ_K, libc::SYS_ioctl as u32, Label::Ioctl),
        If(JEQ_K, libc::SYS_set_tid_address as u32, Label::Notify),
        If(JEQ_K, libc::SYS_brk as u32, Label::FirstArgSet),
        If(JEQ_K, libc::SYS_sigaltstack as u32, Label::FirstArgSet),
        If(JEQ_K, libc::SYS_prctl as u32, Label::Prctl),
        allow,
        Mark(Label::Open),
        Ld(arg_lo(1)),
        If(JSET_K, create_or_trunc, Label::Notify),
        allow,
        Mark(Label::Openat),
        Ld(arg_lo(2)),
        If(JSET_K, create_or_trunc, Label::Notify),
        allow,
        Mark(Label::Mmap),
        Ld(arg_lo(3)),
        If(JSET_K, libc::MAP_SHARED as u32, Label::Notify),
        allow,
        Mark(Label::Ioctl),
        Ld(arg_lo(1)),
        If(JEQ_K, FICLONE, Label::Notify),
        If(JEQ_K, FICLONERANGE, Label::Notify),
        allow,
        // A pointer or address in the first argument: a change (either
        // half may be the non-zero one).
        Mark(Label::FirstArgSet),
        Ld(arg_lo(0)),
        If(JSET_K, u32::MAX, Label::Notify),
        Ld(arg_hi(0)),
        If(JSET_K, u32::MAX, Label::Notify),
        allow,
        Mark(Label::Prctl),
        Ld(arg_lo(0)),
        If(JEQ_K, PR_SET_MM, Label::Notify),
        allow,
        Mark(Label::Notify),
        notify,
    ]);
    assemble(&p)
}

/// Resolves labels into relative jumps (forward only, at most 255).
fn assemble(p: &[Insn]) -> Vec<[u8; 8]> {
    let mut at = Vec::new();
    let mut n = 0usize;
    for i in p {
        match i {
            Insn::Mark(l) => at.push((*l, n)),
            _ => n += 1,
        }
    }
    let target = |l: Label| at.iter().find(|(m, _)| *m == l).expect("label placed").1;
    let mut out = Vec::with_capacity(n);
    for i in p {
        let pc = out.len();
        match *i {
            Insn::Ld(off) => out.push(bpf_insn(LD_W_ABS, 0, 0, off)),
            Insn::If(code, k, l) => {
                let jt = target(l) - pc - 1;
                let jt = u8::try_from(jt).expect("filter jumps fit in 255 instructions");
                out.push(bpf_insn(code, jt, 0, k));
            }
            Insn::Ret(k) => out.push(bpf_insn(RET_K, 0, 0, k)),
            Insn::Mark(_) => {}
        }
    }
    out
}

/// Why the filter could not be installed: files are then not tracked
/// (the engine runs on without, and says this in its events).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterRefused {
    /// The process already has a listener (one per process).
    #[error(
        "another seccomp listener already watches this process (a container runtime or sandbox)"
    )]
    Busy,
    /// No user notification with thread sync.
    #[error("the kernel lacks seccomp user notification with TSYNC (needs Linux 5.7+)")]
    NoTsync,
    /// Any other refusal of `seccomp()`.
    #[error("seccomp() inside the process failed: {0}")]
    Seccomp(#[source] std::io::Error),
}

/// Installs the filter in every thread of the stopped tracee and returns
/// the listener. `Ok(Err(why))`: the kernel or the process refuses, and
/// files cannot be tracked (the caller falls back).
pub(crate) fn install(
    t: &mut Tracee,
    r: &mut Remote,
) -> Result<Result<std::os::fd::OwnedFd, FilterRefused>, TraceError> {
    let prog = program();
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    // followed by the instructions, in the scratch page.
    let base = r.scratch(t)?;
    let mut bytes = Vec::with_capacity(16 + prog.len() * 8);
    bytes.extend_from_slice(&(prog.len() as u16).to_ne_bytes());
    bytes.extend_from_slice(&[0u8; 6]);
    bytes.extend_from_slice(&(base + 16).to_ne_bytes());
    for i in &prog {
        bytes.extend_from_slice(i);
    }
    r.put_bytes(t, &bytes)?;
    let flags = sc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        | sc::SECCOMP_FILTER_FLAG_TSYNC
        | sc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    let args = [sc::SECCOMP_SET_MODE_FILTER, flags, base, 0, 0, 0];
    let mut set_nnp = false;
    let fd = loop {
        match r.syscall(t, libc::SYS_seccomp, args) {
            Ok(fd) => break fd as i32,
            // Without CAP_SYS_ADMIN a filter needs no_new_privs.
            Err(TraceError::Remote {
                errno: libc::EACCES,
                ..
            }) if !set_nnp => {
                set_nnp = true;
                r.syscall(
                    t,
                    libc::SYS_prctl,
                    [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
                )?;
            }
            Err(TraceError::Remote { errno, .. }) => {
                let why = match errno {
                    libc::EBUSY => FilterRefused::Busy,
                    libc::EINVAL => FilterRefused::NoTsync,
                    e => FilterRefused::Seccomp(std::io::Error::from_raw_os_error(e)),
                };
                return Ok(Err(why));
            }
            Err(e) => return Err(e),
        }
    };
    let ours = selfheal_sys::ptrace::pidfd_getfd(&t.pidfd, fd);
    // Leave no descriptor behind in the program.
    r.syscall(t, libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])?;
    match ours {
        Ok(l) => {
            // Faster round trips where the kernel has it (6.6+).
            let _ = sc::notif_set_flags(
                std::os::fd::AsFd::as_fd(&l),
                sc::SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            );
            Ok(Ok(l))
        }
        // The filter is in place but nobody can answer it: every call it
        // asks about would fail with ENOSYS. Never leave the program so.
        Err(e) => Err(TraceError::sys(t.pid, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_events_said_before() {
        assert_eq!(
            FilterRefused::Busy.to_string(),
            "another seccomp listener already watches this process (a container runtime or sandbox)"
        );
        assert_eq!(
            FilterRefused::NoTsync.to_string(),
            "the kernel lacks seccomp user notification with TSYNC (needs Linux 5.7+)"
        );
        let e = FilterRefused::Seccomp(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            e.to_string(),
            format!(
                "seccomp() inside the process failed: {}",
                std::io::Error::from_raw_os_error(libc::EPERM)
            )
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let p = program();
        let code = |i: usize| u16::from_ne_bytes([p[i][0], p[i][1]]);
        let k = |i: usize| u32::from_ne_bytes([p[i][4], p[i][5], p[i][6], p[i][7]]);
        // The last instruction asks; every "ask" jump lands there.
        let last = p.len() - 1;
        assert_eq!((code(last), k(last)), (RET_K, sc::SECCOMP_RET_USER_NOTIF));
        for (i, nr) in ALWAYS.iter().enumerate() {
            let pc = 5 + i;
            assert_eq!(k(pc), *nr as u32);
            assert_eq!(pc + 1 + p[pc][2] as usize, last);
        }
        // A foreign ABI falls through to "ask".
        assert_eq!(p[1][2], 1);
        assert_eq!(k(2), sc::SECCOMP_RET_USER_NOTIF);
        assert!(p.len() < 100);
    }

    /// Runs the filter on one call, as the kernel would (the opcodes the
    /// program uses only).
    fn verdict(arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&(nr as i32).to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let p = program();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            let code = u16::from_ne_bytes([i[0], i[1]]);
            let (jt, jf) = (i[2] as usize, i[3] as usize);
            let k = u32::from_ne_bytes([i[4], i[5], i[6], i[7]]);
            let jump = |taken: bool| pc + 1 + if taken { jt } else { jf };
            pc = match code {
                LD_W_ABS => {
                    let at = k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                    pc + 1
                }
                JEQ_K => jump(acc == k),
                JGE_K => jump(acc >= k),
                JSET_K => jump(acc & k != 0),
                RET_K => return k,
                other => panic!("opcode {other:#x} not modelled"),
            };
        }
    }

    #[test]
    fn kernel_state_changes_are_asked_about_and_queries_are_not() {
        let ask = |nr: i64, args: [u64; 6]| {
            verdict(sc::AUDIT_ARCH_X86_64, nr, args) == sc::SECCOMP_RET_USER_NOTIF
        };
        let z = [0u64; 6];
        let with = |a0: u64| [a0, 0x7fff_0000_1000, 0, 0, 0, 0];
        // Queries run at full speed.
        assert!(!ask(libc::SYS_brk, z));
        assert!(!ask(libc::SYS_sigaltstack, with(0)));
        assert!(!ask(libc::SYS_prctl, with(libc::PR_SET_NAME as u64)));
        assert!(!ask(libc::SYS_prctl, with(40))); // PR_GET_TID_ADDRESS
        assert!(!ask(libc::SYS_read, z));
        assert!(!ask(libc::SYS_getpid, z));
        // Changes are asked about, a pointer whose low half is zero too.
        assert!(ask(libc::SYS_brk, with(0x5555_5555_9000)));
        assert!(ask(libc::SYS_brk, with(0x7f00_0000_0000)));
        assert!(ask(libc::SYS_sigaltstack, with(0x7ffd_1234_5678)));
        assert!(ask(libc::SYS_sigaltstack, with(0x7f00_0000_0000)));
        assert!(ask(libc::SYS_set_tid_address, z));
        assert!(ask(libc::SYS_prctl, with(PR_SET_MM as u64)));
        // What the filter was for stays as it was.
        assert!(ask(libc::SYS_write, z));
        assert!(ask(libc::SYS_openat, [0, 0, libc::O_CREAT as u64, 0, 0, 0]));
        assert!(!ask(
            libc::SYS_openat,
            [0, 0, libc::O_RDONLY as u64, 0, 0, 0]
        ));
        assert!(ask(
            libc::SYS_mmap,
            [0, 4096, 3, libc::MAP_SHARED as u64, 3, 0]
        ));
        assert!(!ask(
            libc::SYS_mmap,
            [0, 4096, 3, libc::MAP_PRIVATE as u64, 3, 0]
        ));
        // Another ABI: always asked, and counted as a possible change.
        assert_eq!(verdict(0x4000_0003, 45, z), sc::SECCOMP_RET_USER_NOTIF);
        assert!(changes_kernel_state(0x4000_0003, 45));
        assert!(changes_kernel_state(
            sc::AUDIT_ARCH_X86_64,
            libc::SYS_brk as i32
        ));
        assert!(!changes_kernel_state(
            sc::AUDIT_ARCH_X86_64,
            libc::SYS_write as i32
        ));
    }

    #[test]
    fn an_auto_disarming_or_unreadable_alternate_stack_turns_the_cache_off() {
        use super::super::responder::{may_autodisarm, SS_AUTODISARM};
        // ss_flags is an int followed by 4 bytes of padding.
        assert!(!may_autodisarm(Some(0)));
        assert!(!may_autodisarm(Some(libc::SS_DISABLE as u64)));
        assert!(!may_autodisarm(Some(0xdead_beef_0000_0000)));
        assert!(may_autodisarm(Some(SS_AUTODISARM as u64)));
        assert!(may_autodisarm(Some(0x1234_5678_8000_0000)));
        assert!(may_autodisarm(None));
    }
}
