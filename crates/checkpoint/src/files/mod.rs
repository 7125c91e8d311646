//! Files are part of the checkpoint.
//!
//! A seccomp filter injected into the program (`filter.rs`) sends every
//! system call that can change a file's contents or names, or write output
//! that cannot be taken back, to a listener we hold; the responder thread
//! (`responder.rs`) records what is needed to undo the call — old bytes of
//! the range a write overwrites, the file's size, a hard-linked stash of a
//! file about to be removed — then lets the call run unchanged. The
//! journal (`journal.rs`) holds those records per checkpoint; a rollback
//! checks them (`check`) and undoes them (`restore`), newest first.
//!
//! Refused instead: output to a pipe, socket, terminal or device since the
//! checkpoint, a changed file that another process has open (`shared.rs`),
//! files on filesystems where writes act beyond the file (`fs.rs`), shared
//! writable file mappings, asynchronous I/O, more old contents than the
//! budget.
//!
//! A filter cannot be removed and, without a listener, fails the calls it
//! asks about with ENOSYS; children inherit it. So the responder answers
//! for the program and every descendant until none is left, also after the
//! engine detached or ended.

mod filter;
mod fs;
mod journal;
mod kept;
mod names;
mod responder;
mod shared;

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use crate::error::TraceError;
use crate::events::{FileRefusal, FileTracking, Unrecoverable};
use crate::fds::{FdKind, FdSnap};
use crate::procfs::IoCounters;
use crate::remote::Remote;
use crate::tracee::Tracee;

use journal::{Epoch, Journal, Key};
pub(crate) use kept::is_deleted;
pub(crate) use responder::SS_AUTODISARM;
use responder::{Responder, Shared};

/// How files are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Follow changes to files (off: a rollback is refused once the
    /// program wrote anything since the checkpoint).
    pub track: bool,
    /// Most bytes of old file contents held for all kept checkpoints;
    /// a checkpoint whose changes would need more cannot be rolled back to.
    pub preimage_budget: u64,
    /// Lines written to stderr (when it is not a regular file) between a
    /// checkpoint and a rollback may appear twice; off: such a write makes
    /// the rollback impossible, like output to stdout or any other pipe.
    pub stderr_may_repeat: bool,
    /// Unix socket addresses (a path, or `@name` in the abstract
    /// namespace) whose datagrams are not output a rollback must refuse:
    /// the supervisor's notify socket, where a repeated heartbeat or status
    /// line does no harm.
    pub quiet_peers: Vec<String>,
    /// Unix sockets, by the path the program's end is bound to, whose peer
    /// tolerates replayed bytes (`Config::replay_tolerant_sockets`): writes
    /// to them are not output a rollback must refuse. Set by the engine.
    pub tolerant_sockets: Vec<String>,
}

impl Default for FilesConfig {
    fn default() -> FilesConfig {
        FilesConfig {
            track: true,
            preimage_budget: 256 << 20,
            stderr_may_repeat: true,
            quiet_peers: Vec::new(),
            tolerant_sockets: Vec::new(),
        }
    }
}

/// What undoing file changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Files whose contents or size were put back.
    pub files: usize,
    /// Bytes of old contents written back.
    pub bytes: u64,
    /// Name operations undone.
    pub names: usize,
}

/// Listeners installed by this process so far: each one's count of
/// kernel-state calls starts at its own multiple of 2^40, so a value
/// remembered from one never matches another's.
static LISTENERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// File tracking of one traced process.
#[derive(Debug)]
pub(crate) struct Files {
    shared: Option<Arc<Shared>>,
    mode: FileTracking,
    /// Deleted files the program had open at a kept checkpoint.
    kept: kept::Kept,
}

impl Files {
    /// Not tracking, for `reason`.
    pub fn off(reason: impl Into<String>) -> Files {
        Files {
            shared: None,
            mode: FileTracking::Off {
                reason: reason.into(),
            },
            kept: kept::Kept::default(),
        }
    }

    /// Installs the filter in the stopped tracee and starts the responder.
    pub fn install(
        t: &mut Tracee,
        r: &mut Remote,
        cfg: &FilesConfig,
        metrics: Arc<crate::events::Metrics>,
    ) -> Result<Files, TraceError> {
        if !cfg.track {
            return Ok(Files::off("turned off in the configuration"));
        }
        let shared = Arc::new(Shared {
            journal: Mutex::new(Journal::new(cfg.preimage_budget, t.pid.to_string())),
            metrics,
            kernel_changes: std::sync::atomic::AtomicU64::new(
                LISTENERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 40,
            ),
            no_kernel_cache: std::sync::atomic::AtomicBool::new(false),
        });
        // The thread first: a filter without anyone to answer it would fail
        // the program's writes with ENOSYS.
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::os::fd::OwnedFd>(1);
        let s = Arc::clone(&shared);
        let cfg2 = cfg.clone();
        let tracee = t.pid;
        let spawned = std::thread::Builder::new()
            .name("selfheal-files".into())
            .spawn(move || {
                if let Ok(listener) = rx.recv() {
                    Responder::new(listener, s, &cfg2, tracee).run();
                }
            });
        if let Err(e) = spawned {
            return Ok(Files::off(format!("cannot start the file thread: {e}")));
        }
        match filter::install(t, r)? {
            Ok(listener) => {
                if tx.send(listener).is_err() {
                    // Cannot happen (the thread waits for it); never leave
                    // a filter without a listener.
                    return Err(TraceError::Io {
                        pid: t.pid,
                        what: "hand the seccomp listener to the file thread",
                        source: std::io::Error::other("the file thread is gone"),
                    });
                }
                Ok(Files {
                    shared: Some(shared),
                    mode: FileTracking::Seccomp,
                    kept: kept::Kept::default(),
                })
            }
            Err(why) => Ok(Files::off(why.to_string())),
        }
    }

    /// How many calls that may change the kernel state a checkpoint keeps
    /// (the break, alternate stacks, clear-tid addresses) the filter has
    /// seen; None without a filter (then nothing says they did not run).
    /// Read with the process stopped, two equal values mean none ran in
    /// between: a call interrupted by the stop is asked about again.
    pub fn kernel_changes(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::SeqCst;
        self.shared
            .as_ref()
            .filter(|s| !s.no_kernel_cache.load(SeqCst))
            .map(|s| s.kernel_changes.load(SeqCst))
    }

    /// The program uses an auto-disarming alternate stack (seen by a
    /// checkpoint's own read): from now on every checkpoint reads the
    /// kernel state (see [`Files::kernel_changes`]).
    pub fn forgo_kernel_cache(&self) {
        if let Some(s) = &self.shared {
            s.no_kernel_cache
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// How files are followed.
    pub fn mode(&self) -> FileTracking {
        self.mode.clone()
    }

    /// Checkpoint `id` was taken (the process is stopped): changes from
    /// now on belong to it.
    pub fn seal(&self, id: u64) {
        if let Some(s) = &self.shared {
            s.lock().seal(id);
        }
    }

    /// Checkpoints older than `oldest` are gone.
    pub fn forget_before(&mut self, oldest: u64) {
        if let Some(s) = &self.shared {
            s.lock().forget_before(oldest);
        }
        self.kept.forget_before(oldest);
    }

    /// Every checkpoint is gone (exec, a failed checkpoint).
    pub fn reset(&mut self) {
        if let Some(s) = &self.shared {
            s.lock().clear();
        }
        self.kept.clear();
    }

    /// Stops recording for good (detach, end); calls are still answered.
    pub fn stop(&mut self) {
        if let Some(s) = &self.shared {
            let mut j = s.lock();
            j.clear();
            j.active = false;
        }
        self.kept.clear();
    }

    /// At checkpoint `id`: keeps deleted files the program holds open, so
    /// a rollback can give them back after it closed them.
    pub fn keep_deleted(&mut self, pidfd: &std::os::fd::OwnedFd, fds: &[FdSnap], id: u64) {
        self.kept.note(pidfd, fds, id);
    }

    /// Where the program can reopen deleted file `f` it had open at a
    /// checkpoint (None: it cannot, the rollback is impossible).
    pub fn reopen_deleted(&self, pid: i32, f: &FdSnap) -> Option<String> {
        let p = self.kept.path(f)?;
        kept::runs_as_root(pid).then_some(p)
    }

    /// Why file changes since checkpoint `target` cannot be undone, if so.
    /// `then_io`: the checkpoint's I/O counters; `fds_now`: the program's
    /// descriptors.
    pub fn check(
        &self,
        target: u64,
        pid: i32,
        then_io: Option<IoCounters>,
        fds_now: &[FdSnap],
    ) -> Result<(), Unrecoverable> {
        let Some(s) = &self.shared else {
            let FileTracking::Off { reason } = &self.mode else {
                return Ok(());
            };
            if let (Some(then), Ok(now)) = (then_io, crate::procfs::read_io(pid)) {
                let bytes = now.wchar.saturating_sub(then.wchar);
                if bytes > 0 {
                    return Err(Unrecoverable::UntrackedWrites {
                        bytes,
                        why: reason.clone(),
                    });
                }
            }
            return Ok(());
        };
        let (keys, names, own) = {
            let j = s.lock();
            let since = || j.epochs.iter().filter(|e| e.id >= target);
            for e in since() {
                if let Some((path, why)) = &e.taint {
                    return Err(Unrecoverable::FileChanged {
                        path: path.clone(),
                        why: why.clone(),
                    });
                }
                if let Some(sent) = &e.sent {
                    return Err(Unrecoverable::OutputSent {
                        fd: sent.fd,
                        kind: sent.kind,
                        pid: sent.pid,
                    });
                }
            }
            let keys: HashSet<Key> = since().flat_map(|e| e.files.keys().copied()).collect();
            let names: HashMap<Key, String> = keys
                .iter()
                .filter_map(|k| Some((*k, j.inodes.get(k)?.path.clone())))
                .collect();
            let own: HashSet<i32> = j
                .inodes
                .values()
                .map(|i| i.file.as_raw_fd())
                .chain(self.kept.raw_fds())
                .collect();
            (keys, names, own)
        };
        let tracee_fds: Vec<(i32, Key)> = fds_now
            .iter()
            .filter(|f| f.kind == FdKind::File)
            .map(|f| (f.fd, (f.dev, f.ino)))
            .collect();
        if let Some(h) = shared::other_holder(&keys, pid, &own, &tracee_fds) {
            return Err(Unrecoverable::FileChanged {
                path: names.get(&h.key).cloned().unwrap_or_default(),
                why: FileRefusal::SharedWithProcess {
                    pid: h.pid,
                    comm: h.comm,
                },
            });
        }
        Ok(())
    }

    /// Puts files back as they were at checkpoint `target` (the process is
    /// stopped and [`Files::check`] passed). An error leaves files half
    /// restored: the process must not run on.
    pub fn restore(&self, target: u64) -> std::io::Result<Restored> {
        let Some(s) = &self.shared else {
            return Ok(Restored::default());
        };
        let mut j = s.lock();
        let mut out = Restored::default();
        let mut files: HashSet<Key> = HashSet::new();
        let mut undone = names::Undone::default();
        for idx in (0..j.epochs.len()).rev() {
            if j.epochs[idx].id < target {
                break;
            }
            let e = &j.epochs[idx];
            crate::debug(|| {
                format!(
                    "files: undo epoch {} ({} files, {} names)",
                    e.id,
                    e.files.len(),
                    e.names.len()
                )
            });
            for (key, fe) in &e.files {
                let Some(inode) = j.inodes.get(key) else {
                    continue;
                };
                crate::debug(|| {
                    format!(
                        "files:   {} back to {} bytes, {} ranges",
                        inode.path,
                        fe.size,
                        fe.pre.len()
                    )
                });
                for (off, old) in &fe.pre {
                    inode.file.write_all_at(old, *off)?;
                    out.bytes += old.len() as u64;
                }
                inode.file.set_len(fe.size)?;
                files.insert(*key);
            }
            let ops = std::mem::take(&mut j.epochs[idx].names);
            for op in ops.iter().rev() {
                names::undo(&mut j, op, &mut undone)?;
            }
        }
        out.files = files.len();
        out.names = undone.ops;
        // Newer epochs are gone; the target's starts over from now.
        while j.epochs.back().is_some_and(|e| e.id > target) {
            let e = j.epochs.pop_back().expect("checked");
            j.release_epoch(e);
        }
        if let Some(back) = j.epochs.back_mut().filter(|e| e.id == target) {
            let e = std::mem::replace(
                back,
                Epoch {
                    id: target,
                    ..Epoch::default()
                },
            );
            j.release_epoch(e);
        }
        j.drop_unused_inodes();
        Ok(out)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        self.stop();
    }
}
