//! Rolling the stopped process back to a checkpoint, in place.
//!
//! First every reason the rollback could leave the process inconsistent is
//! checked, without changing anything. Then: program break, mapping layout,
//! memory (pages written since, pages older checkpoints changed, re-created
//! mappings), re-protection, descriptors, and last the registers (remote
//! system calls borrow a thread's registers until then).

use std::collections::BTreeSet;
use std::time::Instant;

use crate::debug;
use crate::error::TraceError;
use crate::events::{Failure, RollbackReport, SignalRefusal, Unrecoverable};
use crate::fds::{self, FdKind, FdSnap};
use crate::layout::{self, LayoutOp};
use crate::memio;
use crate::pages::PAGE;
use crate::procfs::{self, Vma};
use crate::ranges::Ranges;
use crate::remote::is_scratch;
use crate::session::{Checkpoint, Session};
use crate::threads::{self, KernelState};
use crate::tracker::RunKind;

/// Why a rollback did not happen.
#[derive(Debug)]
pub(crate) enum RollbackError {
    /// Refused before anything changed; the process is intact.
    Refused(Unrecoverable),
    /// Failed midway: the process may be inconsistent and must be killed.
    Broken(TraceError),
}

impl From<TraceError> for RollbackError {
    fn from(e: TraceError) -> RollbackError {
        RollbackError::Broken(e)
    }
}

fn refuse(u: Unrecoverable) -> RollbackError {
    RollbackError::Refused(u)
}

fn failed(e: impl std::fmt::Display) -> RollbackError {
    refuse(Unrecoverable::Failed {
        error: e.to_string(),
    })
}

fn considered(scratch: Option<u64>) -> impl Fn(&Vma) -> bool {
    move |v: &Vma| !v.is_special() && !is_scratch(v, scratch)
}

/// Everything that makes `target` impossible to restore faithfully.
fn check(
    s: &Session,
    target: &Checkpoint,
    maps: &[Vma],
    fds_now: &[FdSnap],
) -> Result<(), RollbackError> {
    let pid = s.t.pid;
    // The threads we know of, and those the kernel lists (a thread we
    // were never told about must not survive a rollback unaccounted).
    let now = s.t.tids();
    let then: Vec<i32> = target.threads.iter().map(|t| t.tid).collect();
    let listed = procfs::read_tids(pid).map_err(failed)?;
    if now != then || listed != now || s.t.generation != target.thread_generation {
        let now = if listed != now { listed } else { now };
        return Err(refuse(Unrecoverable::ThreadsChanged { then, now }));
    }
    if let Some(u) = target.untracked.first() {
        return Err(refuse(Unrecoverable::UntrackableMemory {
            start: u.start,
            why: u.reason.clone(),
        }));
    }
    let keep = considered(s.remote.scratch);
    if let Some(v) = maps
        .iter()
        .chain(&target.layout)
        .find(|v| keep(v) && v.shared && v.write)
    {
        return Err(refuse(Unrecoverable::SharedMemory {
            start: v.start,
            path: v.path.clone(),
        }));
    }
    let tolerated = tolerated_sockets(s, fds_now, target);
    let tolerated = |f: &FdSnap| f.kind == FdKind::Socket && tolerated.contains(&f.ino);
    if let Some(f) = fds_now
        .iter()
        .chain(&target.fds)
        .find(|f| f.kind == FdKind::Socket && f.fd > 2 && !tolerated(f))
    {
        return Err(refuse(Unrecoverable::Socket { fd: f.fd }));
    }
    if let (Some(then), Ok(now)) = (target.signals, procfs::read_signal_dispositions(pid)) {
        if then != now {
            return Err(refuse(Unrecoverable::SignalHandlersChanged));
        }
    }
    if let (Some(then), Some(now)) = (&target.children, procfs::read_children(pid, &s.t.tids())) {
        let new: Vec<i32> = now.iter().filter(|p| !then.contains(p)).copied().collect();
        if !new.is_empty() {
            return Err(refuse(Unrecoverable::ChildrenForked { pids: new }));
        }
    }
    // Input read from a replay-tolerant socket may be lost by design; the
    // check is for every other input channel.
    let is_input = |f: &FdSnap| {
        f.readable()
            && matches!(f.kind, FdKind::Pipe | FdKind::Socket | FdKind::CharDevice)
            && !tolerated(f)
    };
    if fds_now.iter().chain(&target.fds).any(is_input) {
        if let (Some(then), Ok(now)) = (target.io, procfs::read_io(pid)) {
            let read = now.rchar.saturating_sub(then.rchar);
            let files: u64 = target
                .fds
                .iter()
                .filter(|f| f.kind == FdKind::File)
                .filter_map(|f| {
                    let n = fds_now.iter().find(|n| n.fd == f.fd && n.same_object(f))?;
                    Some(n.pos.saturating_sub(f.pos))
                })
                .sum();
            if read > files {
                return Err(refuse(Unrecoverable::ConsumedInput {
                    bytes: read - files,
                }));
            }
        }
    }
    for f in target.fds.iter().filter(|f| f.fd > 2) {
        let still = fds_now.iter().any(|n| n.fd == f.fd && n.same_object(f));
        let lost = match f.kind {
            FdKind::File => crate::files::is_deleted(f) && s.files.reopen_deleted(pid, f).is_none(),
            // A directory not read from (sqlite opens its database's
            // directory to fsync it) comes back by its name, if that is
            // still the same directory.
            FdKind::Dir => {
                use std::os::unix::fs::MetadataExt;
                f.pos != 0
                    || !std::fs::metadata(&f.target)
                        .is_ok_and(|m| m.is_dir() && m.ino() == f.ino && m.dev() == f.dev)
            }
            _ => true,
        };
        if !still && lost {
            return Err(refuse(Unrecoverable::FdLost {
                fd: f.fd,
                target: f.target.clone(),
            }));
        }
    }
    // Files of mappings to re-create must still be there.
    for op in layout::plan(maps, &target.layout, &keep) {
        if let LayoutOp::Map { like, .. } = op {
            if like.is_file() {
                use std::os::unix::fs::MetadataExt;
                let ok = std::fs::metadata(&like.path).is_ok_and(|m| m.ino() == like.inode);
                if !ok {
                    return Err(failed(format!(
                        "mapped file {} is gone or replaced",
                        like.path
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Inodes of the process's sockets bound to a path the embedder declared
/// replay-tolerant (empty when none is declared or none is open).
fn tolerated_sockets(s: &Session, now: &[FdSnap], target: &Checkpoint) -> Vec<u64> {
    let any_socket = now
        .iter()
        .chain(&target.fds)
        .any(|f| f.kind == FdKind::Socket);
    if s.replay_tolerant.is_empty() || !any_socket {
        return Vec::new();
    }
    let Ok(unix) = procfs::read_net_unix(s.t.pid) else {
        return Vec::new();
    };
    unix.into_iter()
        .filter(|(_, path)| {
            s.replay_tolerant
                .iter()
                .any(|p| p.as_os_str() == std::ffi::OsStr::new(path))
        })
        .map(|(ino, _)| ino)
        .collect()
}

impl Session {
    /// Rolls the stopped process back to `history[idx]`; newer checkpoints
    /// are discarded.
    pub fn rollback(
        &mut self,
        idx: usize,
        failure: &Failure,
        started: Instant,
    ) -> Result<RollbackReport, RollbackError> {
        let pid = self.t.pid;
        if self.t.leader_ended() {
            // Its /proc files (maps, fds) read empty: nothing to compare.
            return Err(refuse(Unrecoverable::ThreadsChanged {
                then: self.history[idx].threads.iter().map(|t| t.tid).collect(),
                now: self.t.tids(),
            }));
        }
        // Pre-copied pages hold state newer than any checkpoint; the pages
        // stay reported as written, so the restore below covers them.
        self.discard_staged();
        let maps = procfs::read_maps(pid).map_err(failed)?;
        let fds_now = fds::capture(pid, &[]).map_err(failed)?;
        check(self, &self.history[idx], &maps, &fds_now)?;
        // The system calls run inside threads from here take no signal
        // (see `remote::step_mask`): the queues read now stay as read.
        let signals = crate::signals::plan(&self.t, &self.history[idx].pending).map_err(refuse)?;
        // A thread resumed into an interrupted wait with a signal pending
        // that its wait's mask blocks would take it inside the wait (see
        // `waitmask`).
        let threads = self.history[idx].threads.iter();
        let waits = threads.map(|s| (s.tid, s.sigmask, s.wait_mask));
        if let Some(h) = crate::waitmask::after_rollback(waits, |tid| signals.pending_after(tid)) {
            return Err(refuse(Unrecoverable::PendingSignal {
                signal: h.signal,
                why: SignalRefusal::WaitMask { tid: h.tid },
            }));
        }
        let kernel = self.thread_kernel_states(idx)?;
        let target = &self.history[idx];
        self.files
            .check(target.id, pid, target.io, &fds_now)
            .map_err(refuse)?;
        {
            let t = &self.history[idx];
            let show = |v: &[Vma]| {
                v.iter()
                    .filter(|m| m.path.is_empty())
                    .map(|m| format!("{:x}-{:x}", m.start, m.end))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            debug(|| {
                format!(
                    "rollback to {} failure {failure:?}\n  target anon: {}\n  now anon:    {}",
                    t.id,
                    show(&t.layout),
                    show(&maps)
                )
            });
        }
        let depth = self.history.len() - 1 - idx;
        let age_ms = self.history[idx].taken_at.elapsed().as_millis() as u64;

        let lost_before = self.t.siginfo_lost.len();
        // From here on the process changes: any error leaves it broken.
        // No rseq registration may point into memory about to go away.
        for (tid, _, now) in &kernel {
            threads::release_rseq(&mut self.t, &self.remote, *tid, now)?;
        }
        // Files first: descriptors reopened below need their names back.
        let files = self
            .files
            .restore(self.history[idx].id)
            .map_err(|e| TraceError::Io {
                pid,
                what: "restore files changed since the checkpoint",
                source: e,
            })?;
        let mut touched = Vec::new();
        while self.history.len() > idx + 1 {
            let newest = self.history.pop_back().expect("len > idx + 1");
            newest.undo.release(&mut self.pool);
            let prev = self.history.back_mut().expect("idx entries remain");
            let undo = std::mem::take(&mut prev.undo);
            self.shadow.apply_undo(undo, &mut self.pool, &mut touched);
        }
        let target = self.history.back().expect("target kept");
        let target_brk = target.brk;
        let r = self
            .remote
            .syscall(&mut self.t, libc::SYS_brk, [target_brk, 0, 0, 0, 0, 0])?;
        if r != target_brk {
            return Err(RollbackError::Broken(TraceError::Remote {
                pid,
                nr: libc::SYS_brk,
                errno: libc::ENOMEM,
            }));
        }
        let layout_ops = self.restore_layout()?;
        let target = self.history.back().expect("target kept");
        let maps = procfs::read_maps(pid).map_err(|e| TraceError::Io {
            pid,
            what: "read /proc/PID/maps",
            source: e,
        })?;
        debug(|| {
            let left = layout::plan(&maps, &target.layout, considered(self.remote.scratch));
            format!("ops {layout_ops:x?}\n  left after restore {left:x?}")
        });
        let look = self.tracker.look(&self.t, &maps, self.remote.scratch)?;

        // Pages to write: written since the newest checkpoint, changed between
        // the target and the newest, and everything in re-created mappings.
        let mut want: BTreeSet<u64> = touched.into_iter().collect();
        for run in &look.runs {
            if run.kind == RunKind::Pristine {
                want.extend(self.shadow.addrs_in(run.start, run.end));
            } else {
                want.extend((run.start..run.end).step_by(PAGE));
            }
        }
        for op in &layout_ops {
            if let LayoutOp::Map { start, end, .. } = op {
                want.extend(self.shadow.addrs_in(*start, *end));
            }
        }
        let zero = [0u8; PAGE];
        let mut writes: Vec<(u64, &[u8; PAGE])> = Vec::new();
        let mut discard: Vec<u64> = Vec::new();
        for addr in want {
            if !target.tracked.contains(addr) {
                continue;
            }
            match self.shadow.get(addr) {
                Some(p) => writes.push((addr, p)),
                None => {
                    let vma = covering(&target.layout, addr);
                    if vma.is_some_and(|v| !v.is_file() && v.write) {
                        writes.push((addr, &zero));
                    } else {
                        discard.push(addr);
                    }
                }
            }
        }
        let pages_restored = (writes.len() + discard.len()) as u64;
        memio::write_pages(&self.t, &writes)?;
        drop(writes);
        for (s, e) in
            Ranges::from_unsorted(discard.iter().map(|&a| (a, a + PAGE as u64)).collect()).0
        {
            self.remote.syscall(
                &mut self.t,
                libc::SYS_madvise,
                [s, e - s, libc::MADV_DONTNEED as u64, 0, 0, 0],
            )?;
        }
        self.tracker.reprotect(&self.t, &maps)?;
        let fd_ops = self.restore_fds(&fds_now)?;
        let mut thread_ops = 0;
        for (tid, then, now) in &kernel {
            thread_ops +=
                threads::restore_kernel_state(&mut self.t, &self.remote, *tid, then, now)?;
        }
        // Reads since the target are undone (offsets rewound) but stay in the
        // cumulative rchar: move the kept checkpoints' baselines by that much
        // so a later rollback does not count them as consumed input.
        if let (Some(then), Ok(now)) =
            (self.history.back().and_then(|c| c.io), procfs::read_io(pid))
        {
            let (dr, dw) = (
                now.rchar.saturating_sub(then.rchar),
                now.wchar.saturating_sub(then.wchar),
            );
            for c in self.history.iter_mut() {
                if let Some(io) = c.io.as_mut() {
                    io.rchar += dr;
                    io.wchar += dw;
                }
            }
        }
        // Before the registers: the calls borrow them, and each thread's
        // mask comes back with them.
        let requeued = crate::signals::apply(&mut self.t, &mut self.remote, &signals)?;
        debug(|| format!("rollback: {requeued} signals queued or held again"));
        // A signal taken by one of our calls and re-sent without its
        // siginfo: not the checkpoint's state, so no rollback.
        if self.t.siginfo_lost.len() > lost_before {
            let lost = self.t.siginfo_lost.split_off(lost_before);
            return Err(RollbackError::Broken(lost.into_iter().next().expect("one")));
        }
        let target = self.history.back().expect("target kept");
        threads::restore(pid, &target.threads)?;
        let (tracked, id) = (target.tracked.clone(), target.id);
        self.after_rollback(tracked);
        // The program runs on from this state now: for the next failure's
        // "a checkpoint from before T" and for trimming old history, it is
        // as old as this moment, not as when it was first taken. (A VM
        // rolled back 8 s for a hang lost that checkpoint to the 10 s span
        // moments later, and a kernel panic right after found no
        // checkpoint from before it: HistoryExhausted.)
        // The older ones move forward with it: the time rolled back never
        // happened for the program, so they keep their ages relative to it
        // (else a fault seconds later finds them trimmed by the span).
        if let Some(then) = self.history.back().map(|c| c.taken_at) {
            let shift = Instant::now().saturating_duration_since(then);
            for c in self.history.iter_mut() {
                c.taken_at += shift;
            }
        }
        Ok(RollbackReport {
            failure: failure.clone(),
            checkpoint_id: id,
            checkpoint_age_ms: age_ms,
            depth,
            pages_restored,
            layout_ops: layout_ops.len(),
            fd_ops,
            thread_ops,
            signals_requeued: requeued,
            files_restored: files.files,
            file_bytes_restored: files.bytes,
            names_restored: files.names,
            duration_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Every thread's kernel state as of `history[idx]` and now (reads
    /// only); refused if either cannot be read.
    fn thread_kernel_states(
        &mut self,
        idx: usize,
    ) -> Result<Vec<(i32, KernelState, KernelState)>, RollbackError> {
        let mut out = Vec::new();
        for i in 0..self.history[idx].threads.len() {
            let (tid, then) = {
                let s = &self.history[idx].threads[i];
                (s.tid, s.kernel)
            };
            let now = match threads::kernel_state(&mut self.t, &self.remote, tid) {
                Ok(now) => now,
                // Failed inside the process, which is as it was.
                Err(e @ TraceError::Remote { .. }) => return Err(failed(e)),
                Err(e) => return Err(RollbackError::Broken(e)),
            };
            match (then, now) {
                (Some(then), Some(now)) => out.push((tid, then, now)),
                _ => return Err(refuse(Unrecoverable::ThreadStateUnknown { tid })),
            }
        }
        Ok(out)
    }

    fn restore_layout(&mut self) -> Result<Vec<LayoutOp>, TraceError> {
        let pid = self.t.pid;
        let maps = procfs::read_maps(pid).map_err(|e| TraceError::Io {
            pid,
            what: "read /proc/PID/maps",
            source: e,
        })?;
        let target = self.history.back().expect("target kept");
        let ops = layout::plan(&maps, &target.layout, considered(self.remote.scratch));
        let mut faulted = false;
        for op in &ops {
            // Mapped again writable, a run of anonymous mappings is one
            // mapping with no anon_vma yet. Split by the protects below
            // first, its pieces would each get their own on first touch
            // and never merge again when the program makes them writable
            // (a read-only tail between its mprotects); touched first,
            // they share the one they are split with. Each mapped range's
            // first page is written with its checkpoint content (written
            // again below with the rest).
            if matches!(op, LayoutOp::Protect { .. }) && !faulted {
                faulted = true;
                let zero = [0u8; PAGE];
                let target = self.history.back().expect("target kept");
                let firsts: Vec<(u64, &[u8; PAGE])> = ops
                    .iter()
                    .filter_map(|op| match op {
                        LayoutOp::Map { start, like, .. }
                            if like.write && !like.shared && !like.is_file() =>
                        {
                            Some((*start, self.shadow.get(*start).map_or(&zero, |p| &**p)))
                        }
                        _ => None,
                    })
                    .filter(|(a, _)| target.tracked.contains(*a))
                    .collect();
                memio::write_pages(&self.t, &firsts)?;
            }
            match op {
                LayoutOp::Unmap { start, end } => {
                    self.remote.syscall(
                        &mut self.t,
                        libc::SYS_munmap,
                        [*start, end - start, 0, 0, 0, 0],
                    )?;
                }
                LayoutOp::Protect { start, end, prot } => {
                    self.remote.syscall(
                        &mut self.t,
                        libc::SYS_mprotect,
                        [*start, end - start, *prot as u64, 0, 0, 0],
                    )?;
                }
                LayoutOp::Map {
                    start,
                    end,
                    like,
                    offset,
                } => {
                    let share = if like.shared {
                        libc::MAP_SHARED
                    } else {
                        libc::MAP_PRIVATE
                    };
                    let (fd, flags) = if like.is_file() {
                        let path = self.remote.put_cstr(&mut self.t, &like.path)?;
                        let mode = if like.shared && like.write {
                            libc::O_RDWR
                        } else {
                            libc::O_RDONLY
                        };
                        let fd = self.remote.syscall(
                            &mut self.t,
                            libc::SYS_openat,
                            [
                                libc::AT_FDCWD as u64,
                                path,
                                (mode | libc::O_CLOEXEC) as u64,
                                0,
                                0,
                                0,
                            ],
                        )?;
                        (fd, share | libc::MAP_FIXED)
                    } else {
                        (u64::MAX, share | libc::MAP_ANONYMOUS | libc::MAP_FIXED)
                    };
                    let r = self.remote.syscall(
                        &mut self.t,
                        libc::SYS_mmap,
                        [
                            *start,
                            end - start,
                            like.prot() as u64,
                            flags as u64,
                            fd,
                            *offset,
                        ],
                    );
                    if fd != u64::MAX {
                        self.remote
                            .syscall(&mut self.t, libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
                    }
                    r?;
                }
            }
        }
        Ok(ops)
    }

    fn restore_fds(&mut self, now: &[FdSnap]) -> Result<usize, TraceError> {
        let target_fds = self.history.back().expect("target kept").fds.clone();
        debug(|| {
            let show = |v: &[FdSnap]| {
                v.iter()
                    .map(|f| format!("{}:{}@{}", f.fd, f.target, f.pos))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!("fds then: {}\n  fds now:  {}", show(&target_fds), show(now))
        });
        let mut ops = 0;
        for f in &target_fds {
            // The standard streams may share their offset with the
            // supervisor (`selfheal run … < in > out`): repositioned when
            // they are regular files (reads rewound, writes undone above),
            // never reopened.
            if f.fd <= 2 {
                match now.iter().find(|n| n.fd == f.fd) {
                    Some(n) if n.same_object(f) && f.kind == FdKind::File && n.pos != f.pos => {
                        self.lseek(f.fd, f.pos)?;
                        ops += 1;
                    }
                    _ => {}
                }
                continue;
            }
            match now.iter().find(|n| n.fd == f.fd) {
                Some(n) if n.same_object(f) => {
                    if f.kind == FdKind::File && n.pos != f.pos {
                        self.lseek(f.fd, f.pos)?;
                        ops += 1;
                    }
                }
                _ => {
                    // A regular file or a directory (never read) closed or
                    // replaced since: open it again on the same number at
                    // the same offset (check() refused every other kind).
                    // A deleted file comes back through our descriptor on it.
                    let target = match crate::files::is_deleted(f) {
                        true => self
                            .files
                            .reopen_deleted(self.t.pid, f)
                            .unwrap_or_else(|| f.target.clone()),
                        false => f.target.clone(),
                    };
                    let path = self.remote.put_cstr(&mut self.t, &target)?;
                    let keep = f.flags
                        & !((libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_TMPFILE)
                            as u32);
                    let fd = self.remote.syscall(
                        &mut self.t,
                        libc::SYS_openat,
                        [libc::AT_FDCWD as u64, path, keep as u64, 0, 0, 0],
                    )?;
                    if fd != f.fd as u64 {
                        let cloexec = f.flags & libc::O_CLOEXEC as u32;
                        self.remote.syscall(
                            &mut self.t,
                            libc::SYS_dup3,
                            [fd, f.fd as u64, cloexec as u64, 0, 0, 0],
                        )?;
                        self.remote
                            .syscall(&mut self.t, libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
                    }
                    // (A directory comes back only at offset 0.)
                    if f.kind == FdKind::File {
                        self.lseek(f.fd, f.pos)?;
                    }
                    ops += 1;
                }
            }
        }
        // Descriptors opened since the checkpoint: the program will open
        // them again as it re-runs.
        for n in now
            .iter()
            .filter(|n| !target_fds.iter().any(|f| f.fd == n.fd))
        {
            self.remote
                .syscall(&mut self.t, libc::SYS_close, [n.fd as u64, 0, 0, 0, 0, 0])?;
            ops += 1;
        }
        Ok(ops)
    }

    fn lseek(&mut self, fd: i32, pos: u64) -> Result<(), TraceError> {
        self.remote
            .syscall(
                &mut self.t,
                libc::SYS_lseek,
                [fd as u64, pos, libc::SEEK_SET as u64, 0, 0, 0],
            )
            .map(drop)
    }
}

fn covering(v: &[Vma], addr: u64) -> Option<&Vma> {
    let i = v.partition_point(|m| m.start <= addr);
    (i > 0 && addr < v[i - 1].end).then(|| &v[i - 1])
}
