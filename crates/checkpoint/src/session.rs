//! One traced process with its checkpoint history: taking checkpoints.
//! (Rolling back is in `rollback.rs`.)

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::error::TraceError;
use crate::events::CheckpointStats;
use crate::fds::{self, FdSnap};
use crate::files::Files;
use crate::memio;
use crate::pages::{is_zero, Page, PagePool, Shadow, Undo, PAGE};
use crate::procfs::{self, IoCounters, SignalDispositions, Vma};
use crate::ranges::Ranges;
use crate::remote::Remote;
use crate::threads::{self, ThreadSnap};
use crate::tracee::Tracee;
use crate::tracker::{DirtyRun, RunKind, Tracker, Untracked};

/// True if `addr` lies in anonymous memory (where pristine means zero).
pub(crate) fn is_anon(maps: &[Vma], addr: u64) -> bool {
    let i = maps.partition_point(|m| m.start <= addr);
    i > 0 && addr < maps[i - 1].end && !maps[i - 1].is_file()
}

/// Everything needed to put the process back as it was.
pub(crate) struct Checkpoint {
    /// Sequence number.
    pub id: u64,
    /// When it was taken.
    pub taken_at: Instant,
    /// Every thread's CPU state.
    pub threads: Vec<ThreadSnap>,
    /// [`crate::tracee::Tracee::generation`] then.
    pub thread_generation: u64,
    /// Mapping layout.
    pub layout: Vec<Vma>,
    /// Ranges whose memory the shadow describes.
    pub tracked: Ranges,
    /// Program break.
    pub brk: u64,
    /// The file filter's count of calls that change kernel state
    /// ([`Files::kernel_changes`]) when this was taken; None without a
    /// filter.
    pub kernel_seen: Option<u64>,
    /// Descriptor table.
    pub fds: Vec<FdSnap>,
    /// Signal handlers installed.
    pub signals: Option<SignalDispositions>,
    /// I/O counters.
    pub io: Option<IoCounters>,
    /// Child processes (None if the kernel cannot list them).
    pub children: Option<Vec<i32>>,
    /// Writable memory we could not track.
    pub untracked: Vec<Untracked>,
    /// Signals on their way (queued, or held by us).
    pub pending: crate::signals::Pending,
    /// Pages to put back to return from the next checkpoint to this one.
    pub undo: Undo,
}

/// A traced process and its checkpoints.
pub(crate) struct Session {
    /// The process.
    pub t: Tracee,
    /// Remote system calls.
    pub remote: Remote,
    /// Written-page finder.
    pub tracker: Tracker,
    /// Page buffers.
    pub pool: PagePool,
    /// Memory as of the newest checkpoint.
    pub shadow: Shadow,
    /// Checkpoints, oldest first.
    pub history: VecDeque<Checkpoint>,
    /// Checkpoints to keep.
    pub keep: usize,
    /// Older checkpoints kept beyond `keep` (see `history.rs`).
    pub older: Option<crate::engine::Older>,
    /// Unix socket paths whose replay the embedder tolerates.
    pub replay_tolerant: Vec<std::path::PathBuf>,
    next_id: u64,
    /// Ranges the shadow describes (newest checkpoint).
    tracked: Ranges,
    /// Reused buffers.
    addrs: Vec<u64>,
    /// Pages read by pre-copies since the newest checkpoint, as of the
    /// pre-copy (the tracker reports the ones written again since).
    staged: BTreeMap<u64, Page>,
    /// Runs of mappings registered ahead of the pre-copy, for it to read.
    registered: Vec<DirtyRun>,
    /// Changes to files since each checkpoint.
    pub files: Files,
}

/// New mappings at least this large are registered in a short stop of
/// their own so the pre-copy can read them while the program runs (the
/// first copy of a large heap would otherwise be one long pause).
pub(crate) const PRECOPY_REGISTER_MIN_BYTES: u64 = 4 << 20;

/// What one pre-copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Precopy {
    /// Pages read while the process ran.
    pub pages: u64,
}

impl Session {
    /// Sets up tracking in the stopped process.
    /// On failure the tracee is handed back (to be killed and reaped).
    pub fn new(
        mut t: Tracee,
        keep: usize,
        force_full: bool,
    ) -> Result<Session, Box<(TraceError, Tracee)>> {
        let setup = |t: &mut Tracee| -> Result<(Remote, Tracker), TraceError> {
            let mut remote = Remote::locate(t)?;
            remote.scratch(t)?;
            let tracker = Tracker::setup(t, &remote, force_full)?;
            Ok((remote, tracker))
        };
        let (remote, tracker) = match setup(&mut t) {
            Ok(parts) => parts,
            Err(e) => return Err(Box::new((e, t))),
        };
        Ok(Session {
            t,
            remote,
            tracker,
            pool: PagePool::default(),
            shadow: Shadow::default(),
            history: VecDeque::new(),
            keep: keep.max(1),
            older: None,
            replay_tolerant: Vec::new(),
            next_id: 1,
            tracked: Ranges::default(),
            addrs: Vec::new(),
            staged: BTreeMap::new(),
            registered: Vec::new(),
            files: Files::off("not set up"),
        })
    }

    /// Bytes of page copies held.
    pub fn memory_bytes(&self) -> u64 {
        self.pool.live_bytes()
    }

    /// Forgets every checkpoint and the shadow (after exec). Tracking must
    /// be set up again by the caller.
    pub fn reset(&mut self) {
        while let Some(c) = self.history.pop_front() {
            c.undo.release(&mut self.pool);
        }
        self.shadow.clear(&mut self.pool);
        self.tracked = Ranges::default();
        self.discard_staged();
        self.tracker.forget_pending();
        self.files.reset();
    }

    /// Drops what pre-copies read (their pages stay "written" in the
    /// tracker, so nothing is lost: the next look reports them).
    pub fn discard_staged(&mut self) {
        for (_, p) in std::mem::take(&mut self.staged) {
            self.pool.put(p);
        }
        self.registered.clear();
    }

    fn maps(&self) -> Result<Vec<Vma>, TraceError> {
        let pid = self.t.pid;
        procfs::read_maps(pid).map_err(|e| TraceError::Io {
            pid,
            what: "read /proc/PID/maps",
            source: e,
        })
    }

    /// True if new mappings hold enough memory that registering them in a
    /// stop of their own (then pre-copying them) is worth it. The process
    /// may run meanwhile.
    pub fn wants_registration_stop(&mut self) -> Result<bool, TraceError> {
        let maps = self.maps()?;
        let bytes = self
            .tracker
            .unregistered_bytes(&self.t, &maps, self.remote.scratch)?;
        Ok(bytes >= PRECOPY_REGISTER_MIN_BYTES)
    }

    /// With the process stopped: registers its new mappings for the
    /// pre-copy that follows.
    pub fn register_new_mappings(&mut self) -> Result<(), TraceError> {
        let maps = self.maps()?;
        let runs = self
            .tracker
            .register_fresh(&self.t, &maps, self.remote.scratch)?;
        self.registered.extend(runs);
        Ok(())
    }

    /// Copies, while the process runs, the pages written since the last
    /// look, so the checkpoint that follows only copies what is written
    /// meanwhile. A page written during its read is reported again by the
    /// next look and read again then; a page that cannot be read now is
    /// simply read at the checkpoint.
    pub fn precopy(&mut self) -> Result<Precopy, TraceError> {
        let maps = self.maps()?;
        let mut found = std::mem::take(&mut self.registered);
        found.extend(self.tracker.precopy_scan(&self.t, &maps)?);
        self.addrs.clear();
        for run in &found {
            let pages = (run.start..run.end).step_by(PAGE);
            if run.kind == RunKind::Pristine {
                // Nothing to read; an older pre-copy's page there is stale.
                for addr in pages {
                    if let Some(old) = self.staged.remove(&addr) {
                        self.pool.put(old);
                    }
                }
            } else {
                self.addrs.extend(pages);
            }
        }
        self.addrs.sort_unstable();
        self.addrs.dedup();
        let mut read = Vec::with_capacity(self.addrs.len());
        memio::read_pages(&self.t, &mut self.pool, &self.addrs, &mut read)?;
        let mut pages = 0;
        for (addr, page) in read {
            if let Some(p) = page {
                pages += 1;
                if let Some(old) = self.staged.insert(addr, p) {
                    self.pool.put(old);
                }
            } else if let Some(old) = self.staged.remove(&addr) {
                self.pool.put(old);
            }
        }
        Ok(Precopy { pages })
    }

    /// Takes a checkpoint of the stopped process. If it fails after the
    /// written pages were re-protected, what they were is lost: the history
    /// is discarded and tracking starts over at the next checkpoint, so no
    /// later rollback can miss pages.
    pub fn checkpoint(&mut self, started: Instant) -> Result<CheckpointStats, TraceError> {
        let r = self.checkpoint_inner(started);
        if r.is_err() {
            if let Ok(maps) = procfs::read_maps(self.t.pid) {
                self.tracker.unregister_all(&maps);
            }
            self.reset();
            crate::debug(|| {
                format!(
                    "checkpoint failed, history discarded: {:?}",
                    r.as_ref().err()
                )
            });
        }
        r
    }

    fn checkpoint_inner(&mut self, started: Instant) -> Result<CheckpointStats, TraceError> {
        let cpu0 = selfheal_sys::cputime::thread_cputime().ok();
        let pid = self.t.pid;
        let io_err = |what: &'static str| {
            move |e| TraceError::Io {
                pid,
                what,
                source: e,
            }
        };
        let t_stop = started.elapsed();
        let maps = procfs::read_maps(pid).map_err(io_err("read /proc/PID/maps"))?;
        let t_maps = started.elapsed();
        let look = self.tracker.look(&self.t, &maps, self.remote.scratch)?;
        let t_look = started.elapsed();
        let mut undo = Undo::default();
        // Memory that went away since the previous checkpoint.
        for &(s, e) in &self.tracked.minus(&look.tracked).0 {
            self.shadow.clear_range(s, e, &mut undo);
        }
        let mut dirty = 0u64;
        self.addrs.clear();
        let mut unknown_from = usize::MAX;
        let mut precopied: Vec<(u64, Option<Page>)> = Vec::new();
        for run in &look.runs {
            dirty += (run.end - run.start) / PAGE as u64;
            match run.kind {
                RunKind::Pristine => self.shadow.clear_range(run.start, run.end, &mut undo),
                RunKind::Content => self.addrs.extend((run.start..run.end).step_by(PAGE)),
                RunKind::Unknown => {
                    unknown_from = unknown_from.min(self.addrs.len());
                    self.addrs.extend((run.start..run.end).step_by(PAGE));
                }
                RunKind::Precopied => {
                    unknown_from = unknown_from.min(self.addrs.len());
                    for addr in (run.start..run.end).step_by(PAGE) {
                        match self.staged.remove(&addr) {
                            Some(p) => precopied.push((addr, Some(p))),
                            None => self.addrs.push(addr),
                        }
                    }
                }
            }
        }
        // Fresh runs come first, then the fast scan's; both sorted within.
        let mut read = Vec::with_capacity(self.addrs.len() + precopied.len());
        memio::read_pages(&self.t, &mut self.pool, &self.addrs, &mut read)?;
        let from_precopy = precopied.len() as u64;
        // Pre-copied pages are like the fast scan's: may be all zero.
        unknown_from = unknown_from.min(read.len());
        read.append(&mut precopied);
        // Staged pages not reported (written again, or gone) are stale.
        self.discard_staged();
        let t_read = started.elapsed();
        let compares = self.tracker.compares();
        let mut copied = 0u64;
        for (i, (addr, page)) in read.into_iter().enumerate() {
            // An all-zero page of anonymous memory is pristine: no copy kept
            // (a hole read back, or memory cleared by the program).
            let may_be_zero = compares || i >= unknown_from;
            let new = match page {
                Some(p) if may_be_zero && is_zero(&p) && is_anon(&maps, addr) => {
                    self.pool.put(p);
                    None
                }
                other => other,
            };
            if compares {
                let same = match (self.shadow.get(addr), &new) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a[..] == b[..],
                    _ => false,
                };
                if same {
                    if let Some(p) = new {
                        self.pool.put(p);
                    }
                    continue;
                }
            }
            copied += new.is_some() as u64;
            self.shadow.set(addr, new, &mut undo);
        }
        if compares {
            dirty = undo.entries.len() as u64;
        }
        let t_store = started.elapsed();
        let tids = self.t.tids();
        // No call that changes the break, an alternate stack or a clear-tid
        // address ran since the previous checkpoint, and the threads are
        // the same ones: its values hold (no calls inside the program).
        let kernel_seen = self.files.kernel_changes();
        let unchanged = self.history.back().filter(|c| {
            kernel_seen.is_some()
                && c.kernel_seen == kernel_seen
                && c.thread_generation == self.t.generation
        });
        let known: Vec<_> = unchanged
            .map(|c| {
                c.threads
                    .iter()
                    .filter_map(|s| Some((s.tid, s.kernel?)))
                    .collect()
            })
            .unwrap_or_default();
        let known_brk = unchanged.map(|c| c.brk);
        // The oldest checkpoint is about to be dropped: reuse its buffers
        // (not with older history kept: it may stay).
        let reuse = if self.history.len() >= self.keep && self.older.is_none() {
            self.history
                .front_mut()
                .map(|c| std::mem::take(&mut c.threads))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let injected = self.t.injected;
        let thread_snaps = threads::capture(&mut self.t, &self.remote, &tids, reuse, &known)?;
        // The kernel disarms and re-arms such a stack around signal
        // handlers with no call the filter sees: never cache it.
        let autodisarm = crate::files::SS_AUTODISARM as i32;
        if thread_snaps
            .iter()
            .any(|s| s.kernel.is_some_and(|k| k.altstack.flags & autodisarm != 0))
        {
            self.files.forgo_kernel_cache();
        }
        // Asked unless the filter saw no `brk` since: no mapping tells the
        // break exactly. (Once the heap grew past its first mapping, the
        // first `[heap]` mapping's end stopped moving with it, and a
        // rollback then set a break from long ago: sort aborted with
        // "malloc(): corrupted top size".)
        let brk = match known_brk {
            Some(b) => b,
            None => self.remote.syscall(&mut self.t, libc::SYS_brk, [0; 6])?,
        };
        // Last of the thread state: the system calls above may have met
        // a signal (it is held since, see `remote`).
        let t_brk = started.elapsed();
        let pending = crate::signals::capture(&self.t)?;
        let injected = self.t.injected - injected;
        let t_regs = started.elapsed();
        let prev_fds = self.history.back().map_or(&[][..], |c| &c.fds[..]);
        let fds = fds::capture(pid, prev_fds).map_err(io_err("read /proc/PID/fd"))?;
        self.files.keep_deleted(&self.t.pidfd, &fds, self.next_id);
        let t_fds = started.elapsed();
        let checkpoint = Checkpoint {
            id: self.next_id,
            taken_at: Instant::now(),
            threads: thread_snaps,
            thread_generation: self.t.generation,
            layout: maps,
            tracked: look.tracked.clone(),
            brk,
            kernel_seen,
            fds,
            signals: procfs::read_signal_dispositions(pid).ok(),
            io: procfs::read_io(pid).ok(),
            children: procfs::read_children(pid, &tids),
            untracked: look.untracked,
            pending,
            undo: Undo::default(),
        };
        let t_misc = started.elapsed();
        crate::debug(|| {
            format!(
                "checkpoint {}: stop {t_stop:?} maps {:?} look {:?} read {:?} store {:?} regs+brk {:?} fds {:?} misc {:?} ({} pages; signals {:?} of regs+brk, {} threads)",
                self.next_id,
                t_maps - t_stop,
                t_look - t_maps,
                t_read - t_look,
                t_store - t_read,
                t_regs - t_store,
                t_fds - t_regs,
                t_misc - t_fds,
                self.addrs.len(),
                t_regs - t_brk,
                tids.len()
            )
        });
        self.next_id += 1;
        self.tracked = look.tracked;
        match self.history.back_mut() {
            Some(prev) => prev.undo = undo,
            None => undo.release(&mut self.pool),
        }
        // Changes to files from here on belong to this checkpoint.
        self.files.seal(self.next_id - 1);
        self.history.push_back(checkpoint);
        self.trim_history();
        if let Some(oldest) = self.history.front() {
            self.files.forget_before(oldest.id);
        }
        Ok(CheckpointStats {
            id: self.next_id - 1,
            pause_us: started.elapsed().as_micros() as u64,
            cpu_us: match (cpu0, selfheal_sys::cputime::thread_cputime()) {
                (Some(a), Ok(b)) => b.saturating_sub(a).as_micros() as u64,
                _ => 0,
            },
            pages_dirty: dirty,
            pages_copied: copied,
            precopy_pages: from_precopy,
            // Set by the caller, which ran the pre-copy.
            precopy_us: 0,
            registration_pause_us: 0,
            stopped_mono_us: [0, 0],
            registration_stopped_mono_us: None,
            held: self.history.len(),
            memory_bytes: self.memory_bytes(),
            threads: tids.len(),
            injected_calls: injected,
        })
    }

    /// Sets the state that must follow a rollback to the (now newest)
    /// checkpoint.
    pub fn after_rollback(&mut self, tracked: Ranges) {
        self.tracked = tracked;
    }
}
