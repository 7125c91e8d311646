//! Signals on their way at a checkpoint, put back exactly by a rollback.
//!
//! A checkpoint holds every queued signal with its whole `siginfo`
//! (`PTRACE_PEEKSIGINFO`: each thread's queue and the process's, every
//! instance of a real-time signal), and the signal a thread was held at in
//! a signal-delivery-stop. A rollback compares that with the queues now,
//! per queue and signal: instances taken since are queued again, in their
//! order and with their own `siginfo`; instances that came since from
//! outside stay, behind them; instances the program sent itself since are
//! part of the time rolled back and are taken out (it sends them again as
//! it re-runs). Queueing runs `rt_tgsigqueueinfo` / `rt_sigqueueinfo`
//! inside the receiving thread (the kernel lets a thread queue any
//! `siginfo` to itself, not another process), taking out runs
//! `rt_sigtimedwait` there (every call we run inside a thread runs with
//! the signals it could take blocked, see `remote::step_mask`).
//! A held signal is held again, its `siginfo` set with `PTRACE_SETSIGINFO`.
//! The queues are read back afterwards: anything but the plan fails the
//! rollback. What cannot be put back exactly refuses it
//! ([`SignalRefusal`]). Crash signals, SIGKILL and SIGSTOP are left alone:
//! a crash signal is the failure a rollback undoes.

use selfheal_sys::ptrace::{self as pt, RawSigInfo};

use crate::error::TraceError;
use crate::events::{SignalRefusal, Unrecoverable};
use crate::remote::Remote;
use crate::tracee::{ThreadState, Tracee};

const SI_USER: i32 = 0;
const SI_QUEUE: i32 = -1;
const SI_TIMER: i32 = -2;
const SI_TKILL: i32 = -6;

/// One queue: its entries in order, and signals pending in it without an
/// entry (bit n-1 for signal n: the siginfo was dropped when queued).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Queue {
    /// Queued instances, oldest first.
    pub entries: Vec<RawSigInfo>,
    /// Pending with no siginfo.
    pub lost: u64,
}

/// A thread's signals on their way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadPending {
    /// Thread.
    pub tid: i32,
    /// The signal it is held at in a signal-delivery-stop (delivered first
    /// on resume), with its siginfo.
    pub held: Option<RawSigInfo>,
    /// Its own queue.
    pub queue: Queue,
}

/// Every signal on its way in the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Per thread.
    pub threads: Vec<ThreadPending>,
    /// The process's queue.
    pub shared: Queue,
}

impl Pending {
    /// True if no signal is on its way.
    pub fn is_empty(&self) -> bool {
        self.shared == Queue::default()
            && self
                .threads
                .iter()
                .all(|t| t.held.is_none() && t.queue == Queue::default())
    }
}

fn bit(sig: i32) -> u64 {
    if (1..=64).contains(&sig) {
        1 << (sig - 1)
    } else {
        0
    }
}

/// Signals a rollback never touches.
fn left_alone(sig: i32) -> bool {
    crate::engine::CRASH_SIGNALS.contains(&sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP
}

fn io_err(pid: i32, what: &'static str) -> impl Fn(std::io::Error) -> TraceError {
    move |source| TraceError::Io { pid, what, source }
}

fn read_queue(pid: i32, tid: i32, bits: u64, shared: bool) -> Result<Queue, TraceError> {
    if bits == 0 {
        return Ok(Queue::default());
    }
    let entries = pt::peek_siginfo(tid, shared).map_err(|e| TraceError::sys(pid, e))?;
    let have = entries.iter().fold(0, |m, i| m | bit(i.signo()));
    Ok(Queue {
        entries,
        lost: bits & !have,
    })
}

/// Reads every signal on its way in the stopped process. Costs one
/// `status` read per thread; the queues are read only when not empty.
pub(crate) fn capture(t: &Tracee) -> Result<Pending, TraceError> {
    let pid = t.pid;
    let mut out = Pending::default();
    let mut shared_bits = 0;
    for (&tid, st) in &t.threads {
        let (queued, shared) = crate::procfs::read_queued_signals(pid, tid)
            .map_err(io_err(pid, "read /proc/PID/task/TID/status"))?;
        shared_bits |= shared;
        let held = match st {
            ThreadState::Stopped { pending } if *pending != 0 => {
                Some(pt::get_siginfo_raw(tid).map_err(|e| TraceError::sys(pid, e))?)
            }
            _ => None,
        };
        out.threads.push(ThreadPending {
            tid,
            held,
            queue: read_queue(pid, tid, queued, false)?,
        });
    }
    if shared_bits != 0 {
        let tid = out.threads.first().map_or(pid, |t| t.tid);
        out.shared = read_queue(pid, tid, shared_bits, true)?;
    }
    Ok(out)
}

/// What to do with one queue's instances of one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    /// As they should be.
    Keep,
    /// Queue these behind the ones there.
    Append(Vec<RawSigInfo>),
    /// Take every one out, then queue these.
    Rebuild(Vec<RawSigInfo>),
}

/// Sent by the program itself (to itself): `kill`, `tgkill`, `sigqueue`.
fn from_program(i: &RawSigInfo, pid: i32) -> bool {
    matches!(i.code(), SI_USER | SI_QUEUE | SI_TKILL) && i.pid() == pid
}

/// How one queue's instances of one signal go from `now` back to `then`
/// (both oldest first). The checkpoint's instances still queued are a
/// tail of `then` at the head of `now`; after them come those queued
/// since. When several readings fit (identical instances) they must agree.
fn reconcile(
    then: &[RawSigInfo],
    now: &[RawSigInfo],
    pid: i32,
    realtime: bool,
) -> Result<Fix, SignalRefusal> {
    let mut want: Option<Vec<RawSigInfo>> = None;
    for still in (0..=then.len().min(now.len())).rev() {
        if then[then.len() - still..] != now[..still] {
            continue;
        }
        let mut w: Vec<RawSigInfo> = then.to_vec();
        w.extend(now[still..].iter().filter(|i| !from_program(i, pid)));
        // A standard signal already queued is not queued again.
        if !realtime {
            w.truncate(1);
        }
        match &want {
            Some(prev) if *prev != w => return Err(SignalRefusal::Ambiguous),
            _ => want = Some(w),
        }
    }
    let want = want.expect("0 instances still queued always fits");
    Ok(if want == now {
        Fix::Keep
    } else if want.starts_with(now) {
        Fix::Append(want[now.len()..].to_vec())
    } else {
        Fix::Rebuild(want)
    })
}

/// One step of putting the signals back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Take `count` instances of `sig` out, in thread `tid` (its own queue
    /// first, then the process's).
    Drain { tid: i32, sig: i32, count: usize },
    /// Queue `info` to thread `tid`'s own queue (`shared`: to the process,
    /// from the main thread `tid`).
    Queue {
        tid: i32,
        info: RawSigInfo,
        shared: bool,
    },
    /// Hold thread `tid` at `info` again.
    Hold { tid: i32, info: RawSigInfo },
}

/// How to put the checkpoint's signals back, and what the queues must
/// hold afterwards.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    ops: Vec<Op>,
    /// Per queue (thread id, or None for the process's) and signal: the
    /// instances wanted, oldest first.
    want: Vec<(Option<i32>, i32, Vec<RawSigInfo>)>,
    /// Per queue: the signals pending in it once the plan is carried out
    /// (bit n-1 for signal n).
    after: Vec<(Option<i32>, u64)>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Signals pending for thread `tid` (its queue or the process's) once
    /// the plan is carried out.
    pub fn pending_after(&self, tid: i32) -> u64 {
        self.after
            .iter()
            .filter(|(q, _)| q.is_none_or(|q| q == tid))
            .fold(0, |m, (_, b)| m | b)
    }

    /// Instances queued again or held again.
    pub fn requeued(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| !matches!(o, Op::Drain { .. }))
            .count()
    }
}

fn refusal(sig: i32, why: SignalRefusal) -> Unrecoverable {
    Unrecoverable::PendingSignal { signal: sig, why }
}

/// The signals of one queue, `left_alone` ones out, by number.
fn by_signal(q: &Queue) -> std::collections::BTreeMap<i32, Vec<RawSigInfo>> {
    let mut m = std::collections::BTreeMap::<i32, Vec<RawSigInfo>>::new();
    for i in q.entries.iter().filter(|i| !left_alone(i.signo())) {
        m.entry(i.signo()).or_default().push(*i);
    }
    m
}

/// Plans the way from `now` back to `then` (same threads, in the same
/// order); refused if it cannot be exact.
fn plan_from(t: &Tracee, then: &Pending, now: &Pending) -> Result<Plan, Unrecoverable> {
    let pid = t.pid;
    // The kernel queues every instance from 32 on (glibc keeps two).
    let rt = |sig: i32| sig >= 32;
    let mut plan = Plan::default();
    let mut queues: Vec<(Option<i32>, &Queue, &Queue)> = then
        .threads
        .iter()
        .zip(&now.threads)
        .map(|(a, b)| (Some(a.tid), &a.queue, &b.queue))
        .collect();
    queues.push((None, &then.shared, &now.shared));
    let stopped = |tid: i32| matches!(t.threads.get(&tid), Some(ThreadState::Stopped { .. }));
    let mut drains = Vec::new();
    let mut queued = Vec::new();
    for (tid, a, b) in queues {
        // What the plan leaves alone stays: signals pending without an
        // entry, and those a rollback never touches.
        let untouched = b.entries.iter().filter(|i| left_alone(i.signo()));
        let kept = untouched.fold(b.lost, |m, i| m | bit(i.signo()));
        plan.after.push((tid, kept));
        let (ma, mb) = (by_signal(a), by_signal(b));
        let sigs: std::collections::BTreeSet<i32> = ma.keys().chain(mb.keys()).copied().collect();
        for sig in sigs {
            let none = Vec::new();
            let (x, y) = (ma.get(&sig).unwrap_or(&none), mb.get(&sig).unwrap_or(&none));
            let fix = reconcile(x, y, pid, rt(sig)).map_err(|w| refusal(sig, w))?;
            let add = match &fix {
                Fix::Keep => {
                    plan.want.push((tid, sig, y.clone()));
                    continue;
                }
                Fix::Append(add) => {
                    let mut w = y.clone();
                    w.extend(add);
                    plan.want.push((tid, sig, w));
                    add.clone()
                }
                Fix::Rebuild(w) => {
                    plan.want.push((tid, sig, w.clone()));
                    w.clone()
                }
            };
            if (a.lost | b.lost) & bit(sig) != 0 {
                return Err(refusal(sig, SignalRefusal::InfoLost));
            }
            let from = match tid {
                Some(tid) => tid,
                // The process's queue: from the main thread.
                None => pid,
            };
            if !stopped(from) {
                return Err(refusal(sig, SignalRefusal::NoThread { tid: from }));
            }
            if let Fix::Rebuild(_) = fix {
                let drain_in = match tid {
                    Some(tid) => Some(tid),
                    // A thread with no instance of its own left to take.
                    None => now.threads.iter().find_map(|p| {
                        let own = p.queue.entries.iter().any(|i| i.signo() == sig);
                        let emptied = drains.iter().any(
                            |o| matches!(o, Op::Drain { tid, sig: s, .. } if *tid == p.tid && *s == sig),
                        );
                        (stopped(p.tid) && (!own || emptied)).then_some(p.tid)
                    }),
                };
                let Some(d) = drain_in else {
                    return Err(refusal(sig, SignalRefusal::NoThread { tid: pid }));
                };
                drains.push(Op::Drain {
                    tid: d,
                    sig,
                    count: y.len(),
                });
            }
            for info in add {
                check_queueable(&info)?;
                queued.push(Op::Queue {
                    tid: from,
                    info,
                    shared: tid.is_none(),
                });
            }
        }
    }
    for (q, sig, want) in &plan.want {
        if !want.is_empty() {
            plan.after.push((*q, bit(*sig)));
        }
    }
    // The process's queue comes last: its drains find no instance of a
    // thread's own left.
    plan.ops.extend(drains);
    plan.ops.extend(queued);
    for (a, b) in then.threads.iter().zip(&now.threads) {
        let held_now = b.held.filter(|i| !left_alone(i.signo()));
        let held_then = a.held.filter(|i| !left_alone(i.signo()));
        match (held_then, held_now) {
            (x, y) if x == y => {}
            (_, Some(i)) => return Err(refusal(i.signo(), SignalRefusal::InFlight { tid: b.tid })),
            (Some(i), None) => {
                check_queueable(&i)?;
                if !stopped(a.tid) {
                    return Err(refusal(i.signo(), SignalRefusal::NoThread { tid: a.tid }));
                }
                plan.ops.push(Op::Hold {
                    tid: a.tid,
                    info: i,
                });
            }
            (None, None) => {}
        }
    }
    Ok(plan)
}

/// Refuses what cannot be queued again as it was.
fn check_queueable(i: &RawSigInfo) -> Result<(), Unrecoverable> {
    let sig = i.signo();
    if i.code() == SI_TIMER {
        // Its timer's overrun count is counted at delivery.
        return Err(refusal(sig, SignalRefusal::Timer));
    }
    // Queueing them stops or continues the process, and drops queued ones
    // of the other kind.
    if [libc::SIGCONT, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig) {
        return Err(refusal(sig, SignalRefusal::JobControl));
    }
    Ok(())
}

/// Plans putting `then` back in the stopped process (reads only). The
/// threads must be those of the checkpoint.
pub(crate) fn plan(t: &Tracee, then: &Pending) -> Result<Plan, Unrecoverable> {
    if then.is_empty() && nothing_queued(t) {
        return Ok(Plan::default());
    }
    let now = capture(t).map_err(|e| Unrecoverable::Failed {
        error: e.to_string(),
    })?;
    let tids_then: Vec<i32> = then.threads.iter().map(|p| p.tid).collect();
    let tids_now: Vec<i32> = now.threads.iter().map(|p| p.tid).collect();
    if tids_then != tids_now {
        return Err(Unrecoverable::ThreadsChanged {
            then: tids_then,
            now: tids_now,
        });
    }
    plan_from(t, then, &now)
}

/// No signal queued or held now (one `status` read per thread).
fn nothing_queued(t: &Tracee) -> bool {
    t.threads.iter().all(|(&tid, st)| {
        !matches!(st, ThreadState::Stopped { pending } if *pending != 0 && !left_alone(*pending))
            && crate::procfs::read_queued_signals(t.pid, tid).is_ok_and(|(a, b)| a == 0 && b == 0)
    })
}

/// Where in the scratch page the calls below keep their arguments.
const INFO_AT: u64 = 0;
const SET_AT: u64 = 128;
const TIMEOUT_AT: u64 = 144;

/// Carries out `plan` (every thread stopped; the calls run inside take no
/// signal, see `remote::step_mask`) and reads the queues back. Returns how many signals
/// were queued or held again.
pub(crate) fn apply(t: &mut Tracee, remote: &mut Remote, plan: &Plan) -> Result<usize, TraceError> {
    if plan.is_empty() {
        return Ok(0);
    }
    use std::os::unix::fs::FileExt;
    let pid = t.pid;
    let scratch = remote.scratch(t)?;
    let put = |t: &Tracee, at: u64, bytes: &[u8]| {
        t.mem
            .write_all_at(bytes, scratch + at)
            .map_err(io_err(pid, "write the scratch page"))
    };
    put(t, TIMEOUT_AT, &[0u8; 16])?;
    for op in &plan.ops {
        match *op {
            Op::Drain { tid, sig, count } => {
                put(t, SET_AT, &bit(sig).to_ne_bytes())?;
                for _ in 0..count {
                    let args = [scratch + SET_AT, 0, scratch + TIMEOUT_AT, 8, 0, 0];
                    let got = remote.syscall_on(t, tid, libc::SYS_rt_sigtimedwait, args, None)?;
                    if got != sig as u64 {
                        return Err(mismatch(pid, format!("took signal {got}, not {sig}")));
                    }
                }
            }
            Op::Queue { tid, info, shared } => {
                put(t, INFO_AT, &info.0)?;
                let sig = info.signo() as u64;
                let (nr, args) = if shared {
                    (
                        libc::SYS_rt_sigqueueinfo,
                        [pid as u64, sig, scratch + INFO_AT, 0, 0, 0],
                    )
                } else {
                    (
                        libc::SYS_rt_tgsigqueueinfo,
                        [pid as u64, tid as u64, sig, scratch + INFO_AT, 0, 0],
                    )
                };
                remote.syscall_on(t, tid, nr, args, None)?;
            }
            Op::Hold { tid, info } => {
                // Any call leaves the thread in the single-step trap's
                // signal-delivery-stop, where a signal can be injected.
                remote.syscall_on(t, tid, libc::SYS_getpid, [0; 6], None)?;
                pt::set_siginfo_raw(tid, &info).map_err(|e| TraceError::sys(pid, e))?;
                t.set_pending(tid, info.signo());
            }
        }
    }
    verify(t, plan)?;
    Ok(plan.requeued())
}

fn mismatch(pid: i32, what: String) -> TraceError {
    TraceError::Io {
        pid,
        what: "put back the signals queued at the checkpoint",
        source: std::io::Error::other(what),
    }
}

/// The queues hold what the plan wants, plus (at the tail) only signals
/// from outside that came meanwhile; held signals are the plan's.
fn verify(t: &Tracee, plan: &Plan) -> Result<(), TraceError> {
    let pid = t.pid;
    let now = capture(t)?;
    for (q, sig, want) in &plan.want {
        let queue = match q {
            Some(tid) => now.threads.iter().find(|p| p.tid == *tid).map(|p| &p.queue),
            None => Some(&now.shared),
        };
        let have: Vec<RawSigInfo> = queue
            .map(|q| {
                q.entries
                    .iter()
                    .filter(|i| i.signo() == *sig)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let ok = have.starts_with(want) && have[want.len()..].iter().all(|i| !from_program(i, pid));
        if !ok {
            return Err(mismatch(
                pid,
                format!("signal {sig} in queue {q:?}: want {want:?}, have {have:?}"),
            ));
        }
    }
    for op in &plan.ops {
        if let Op::Hold { tid, info } = op {
            let have = pt::get_siginfo_raw(*tid).map_err(|e| TraceError::sys(pid, e))?;
            if have != *info {
                return Err(mismatch(
                    pid,
                    format!("thread {tid} holds {have:?}, not {info:?}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i32 = 100;

    fn info(sig: i32, code: i32, from: i32, value: u64) -> RawSigInfo {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&sig.to_ne_bytes());
        b[8..12].copy_from_slice(&code.to_ne_bytes());
        b[16..20].copy_from_slice(&from.to_ne_bytes());
        b[24..32].copy_from_slice(&value.to_ne_bytes());
        RawSigInfo(b)
    }

    fn rt(v: u64) -> RawSigInfo {
        info(40, SI_QUEUE, PID, v)
    }

    #[test]
    fn instances_taken_since_come_back_in_their_order() {
        let then = [rt(1), rt(2), rt(3)];
        assert_eq!(
            reconcile(&then, &[], PID, true),
            Ok(Fix::Append(then.to_vec()))
        );
        assert_eq!(reconcile(&then, &then, PID, true), Ok(Fix::Keep));
        // Two taken, one left: the two must go before it.
        assert_eq!(
            reconcile(&then, &[rt(3)], PID, true),
            Ok(Fix::Rebuild(then.to_vec()))
        );
    }

    #[test]
    fn the_programs_own_since_go_and_outsiders_stay_behind() {
        let outside = info(40, SI_QUEUE, 7, 9);
        let then = [rt(1)];
        assert_eq!(
            reconcile(&then, &[outside], PID, true),
            Ok(Fix::Rebuild(vec![rt(1), outside]))
        );
        assert_eq!(
            reconcile(&then, &[rt(1), rt(5)], PID, true),
            Ok(Fix::Rebuild(vec![rt(1)]))
        );
        assert_eq!(
            reconcile(&then, &[rt(1), outside], PID, true),
            Ok(Fix::Keep)
        );
    }

    #[test]
    fn identical_instances_that_could_be_either_are_refused() {
        let outside = info(40, SI_QUEUE, 7, 9);
        // One outsider's instance now: still the checkpoint's, or taken
        // and sent again?
        assert_eq!(
            reconcile(&[outside], &[outside], PID, true),
            Err(SignalRefusal::Ambiguous)
        );
        // A standard signal does not queue twice: either reading agrees.
        let usr1 = info(libc::SIGUSR1, SI_USER, 7, 0);
        assert_eq!(reconcile(&[usr1], &[usr1], PID, false), Ok(Fix::Keep));
        assert_eq!(
            reconcile(&[usr1], &[], PID, false),
            Ok(Fix::Append(vec![usr1]))
        );
    }
}
