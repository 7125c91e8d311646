//! Finding the pages a process wrote since the last look.
//!
//! Preferred: a userfaultfd created *inside* the tracee by an injected
//! system call (so it acts on the tracee's memory), pulled into the tracer
//! with `pidfd_getfd`, switched to async write-protect, and registered over
//! the tracee's private mappings from our side. `PAGEMAP_SCAN` then returns
//! the written pages and re-protects them in one walk. Mappings created
//! since the last look are not registered; a scan for "not wp-allowed"
//! ranges finds them, and registering them reports all their pages once.
//!
//! Fallback (kernel < 6.7, or no userfaultfd): every page of every tracked
//! mapping is read and compared with the shadow copy.

use std::fs::File;
use std::os::fd::OwnedFd;

use selfheal_sys::pagemap::{self as pm, PageRegion, ScanRequest};
use selfheal_sys::uffd;

use crate::error::TraceError;
use crate::procfs::Vma;
use crate::ranges::Ranges;
use crate::remote::{is_scratch, Remote};
use crate::tracee::Tracee;

/// How written pages are found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum TrackingMode {
    /// userfaultfd async write-protect + PAGEMAP_SCAN.
    UffdWp,
    /// Full copies compared page by page, and why.
    FullCopy {
        /// Why the fast mode is unavailable.
        reason: String,
    },
}

/// What is known about the pages of a written run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunKind {
    /// Private data worth copying.
    Content,
    /// Pristine: a hole, the zero page, or an untouched page of the file.
    Pristine,
    /// Written, details unknown (the fast scan): copy, and treat an
    /// all-zero page of anonymous memory as pristine.
    Unknown,
    /// Written before a pre-copy and not since: the pre-copy's content is
    /// current (if it has one; otherwise treat as `Unknown`).
    Precopied,
}

/// A run of written pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirtyRun {
    /// First byte.
    pub start: u64,
    /// One past the end.
    pub end: u64,
    /// What the pages hold.
    pub kind: RunKind,
}

/// A mapping we could not register for tracking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Untracked {
    /// Range.
    pub start: u64,
    /// End.
    pub end: u64,
    /// Why.
    pub reason: String,
}

/// What one look found.
#[derive(Default)]
pub(crate) struct Look {
    /// Written runs (uffd mode), or every tracked readable range (full mode).
    pub runs: Vec<DirtyRun>,
    /// Ranges whose memory is tracked after this look.
    pub tracked: Ranges,
    /// Mappings that could not be tracked.
    pub untracked: Vec<Untracked>,
}

pub(crate) struct UffdTracker {
    uffd: OwnedFd,
    pagemap: File,
    buf: Vec<PageRegion>,
    /// Pages a pre-copy found written (and re-protected) since the last
    /// look: still "written since the newest checkpoint", so the next look
    /// reports them whatever happens in between (checkpoint or rollback).
    /// One entry per scan, oldest first; a later scan's finding about a
    /// page overrides an earlier one's.
    pending: Vec<Vec<DirtyRun>>,
}

pub(crate) enum Tracker {
    Uffd(UffdTracker),
    Full { reason: String },
}

/// True for mappings whose memory belongs in a checkpoint.
pub(crate) fn trackable(v: &Vma, scratch: Option<u64>) -> bool {
    !v.shared
        && !v.is_special()
        && !is_scratch(v, scratch)
        && (!v.path.starts_with("/dev/") || v.path == "/dev/zero")
}

/// Bounds of the user address space worth scanning.
fn span(maps: &[Vma]) -> (u64, u64) {
    let user: Vec<&Vma> = maps.iter().filter(|v| !v.is_special()).collect();
    let lo = user.first().map_or(0, |v| v.start);
    let hi = user.last().map_or(0, |v| v.end);
    (lo, hi)
}

impl Tracker {
    /// Sets up uffd tracking in the stopped tracee, or explains why not.
    pub fn setup(t: &mut Tracee, r: &Remote, force_full: bool) -> Result<Tracker, TraceError> {
        if force_full {
            return Ok(Tracker::Full {
                reason: "full copies requested by configuration".into(),
            });
        }
        match UffdTracker::setup(t, r)? {
            Ok(u) => Ok(Tracker::Uffd(u)),
            Err(why) => Ok(Tracker::Full {
                reason: why.to_string(),
            }),
        }
    }

    /// The mode in effect.
    pub fn mode(&self) -> TrackingMode {
        match self {
            Tracker::Uffd(_) => TrackingMode::UffdWp,
            Tracker::Full { reason } => TrackingMode::FullCopy {
                reason: reason.clone(),
            },
        }
    }

    /// Finds the written pages (and newly tracked mappings) of the stopped
    /// tracee, re-protecting them for the next look.
    pub fn look(
        &mut self,
        t: &Tracee,
        maps: &[Vma],
        scratch: Option<u64>,
    ) -> Result<Look, TraceError> {
        match self {
            Tracker::Uffd(u) => u.look(t, maps, scratch),
            Tracker::Full { .. } => {
                let tracked = Ranges::from_unsorted(
                    maps.iter()
                        .filter(|v| trackable(v, scratch))
                        .map(|v| (v.start, v.end))
                        .collect(),
                );
                let runs = maps
                    .iter()
                    .filter(|v| trackable(v, scratch) && v.read)
                    .map(|v| DirtyRun {
                        start: v.start,
                        end: v.end,
                        kind: RunKind::Unknown,
                    })
                    .collect();
                Ok(Look {
                    runs,
                    tracked,
                    untracked: Vec::new(),
                })
            }
        }
    }

    /// Pre-copy, while the process runs: finds the pages of registered
    /// mappings written since the last look or pre-copy, re-protecting
    /// them so that a write from now on shows up again at the next look.
    /// They are remembered and reported by the next look (as
    /// [`RunKind::Precopied`]) unless written again. Empty in full-copy
    /// mode (nothing to gain there).
    pub fn precopy_scan(&mut self, t: &Tracee, maps: &[Vma]) -> Result<Vec<DirtyRun>, TraceError> {
        match self {
            Tracker::Uffd(u) => u.precopy_scan(t, maps),
            Tracker::Full { .. } => Ok(Vec::new()),
        }
    }

    /// Bytes of trackable memory in mappings not registered yet.
    pub fn unregistered_bytes(
        &mut self,
        t: &Tracee,
        maps: &[Vma],
        scratch: Option<u64>,
    ) -> Result<u64, TraceError> {
        match self {
            Tracker::Uffd(u) => u.unregistered_bytes(t, maps, scratch),
            Tracker::Full { .. } => Ok(0),
        }
    }

    /// With the program stopped, registers new mappings ahead of a
    /// pre-copy; returns their runs (`Content` ones are worth reading).
    pub fn register_fresh(
        &mut self,
        t: &Tracee,
        maps: &[Vma],
        scratch: Option<u64>,
    ) -> Result<Vec<DirtyRun>, TraceError> {
        match self {
            Tracker::Uffd(u) => u.register_fresh(t, maps, scratch),
            Tracker::Full { .. } => Ok(Vec::new()),
        }
    }

    /// Forgets what pre-copies found (tracking starts over).
    pub fn forget_pending(&mut self) {
        if let Tracker::Uffd(u) = self {
            u.pending.clear();
        }
    }

    /// Re-protects every page without collecting them (after a rollback
    /// wrote pages back).
    pub fn reprotect(&mut self, t: &Tracee, maps: &[Vma]) -> Result<(), TraceError> {
        if let Tracker::Uffd(u) = self {
            let (lo, hi) = span(maps);
            u.scan(t, lo, hi, &written_scan())?;
        }
        Ok(())
    }

    /// Undoes every registration (before detaching).
    pub fn unregister_all(&self, maps: &[Vma]) {
        if let Tracker::Uffd(u) = self {
            for v in maps.iter().filter(|v| !v.is_special()) {
                let _ = uffd::unregister(&u.uffd, v.start, v.len());
            }
        }
    }

    /// True if pages must be compared with the shadow to know they changed.
    pub fn compares(&self) -> bool {
        matches!(self, Tracker::Full { .. })
    }
}

/// Written pages, re-protected. Masks of exactly WRITTEN take the kernel's
/// fast path (only the pte's wp bit is looked at): ~20x faster than asking
/// for other categories, which costs a page lookup per pte.
fn written_scan() -> ScanRequest {
    ScanRequest {
        flags: pm::PM_SCAN_WP_MATCHING,
        inverted: 0,
        mask: pm::PAGE_IS_WRITTEN,
        anyof: 0,
        return_mask: pm::PAGE_IS_WRITTEN,
    }
}

/// Ranges not registered for write-protection (read-only).
fn not_wp_scan() -> ScanRequest {
    ScanRequest {
        flags: 0,
        inverted: pm::PAGE_IS_WPALLOWED,
        mask: pm::PAGE_IS_WPALLOWED,
        anyof: 0,
        return_mask: pm::PAGE_IS_WPALLOWED,
    }
}

/// Written pages with what they hold (slow path), re-protected: used once
/// on newly registered mappings, where most pages are holes or file pages
/// not worth copying.
fn classify_scan() -> ScanRequest {
    ScanRequest {
        flags: pm::PM_SCAN_WP_MATCHING,
        inverted: 0,
        mask: pm::PAGE_IS_WRITTEN,
        anyof: 0,
        return_mask: pm::PAGE_IS_PRESENT | pm::PAGE_IS_FILE | pm::PAGE_IS_PFNZERO,
    }
}

/// Why write tracking through userfaultfd is not available: the kernel
/// lacks something, and full copies are taken instead.
#[derive(Debug, thiserror::Error)]
enum NoUffd {
    #[error("userfaultfd() inside the process failed: {} (kernel without CONFIG_USERFAULTFD, or vm.unprivileged_userfaultfd=0 without privilege)", std::io::Error::from_raw_os_error(*.errno))]
    Create { errno: i32 },
    #[error("pidfd_getfd failed: {0} (Linux < 5.6?)")]
    GetFd(#[source] selfheal_sys::SysError),
    #[error("userfaultfd lacks async write-protect (features {0:#x}; needs Linux 6.7+)")]
    Features(u64),
    #[error("userfaultfd lacks async write-protect ({0}; needs Linux 6.7+)")]
    Api(#[source] selfheal_sys::SysError),
    #[error("cannot open {}: {source}", .path.display())]
    Pagemap {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("PAGEMAP_SCAN unavailable ({0}; needs Linux 6.7+)")]
    Scan(#[source] selfheal_sys::SysError),
}

impl UffdTracker {
    /// Creates the userfaultfd inside the tracee. `Ok(Err(why))` means
    /// the kernel lacks something and we must fall back.
    fn setup(t: &mut Tracee, r: &Remote) -> Result<Result<UffdTracker, NoUffd>, TraceError> {
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let created = match r.syscall(
            t,
            libc::SYS_userfaultfd,
            [flags | uffd::UFFD_USER_MODE_ONLY as u64, 0, 0, 0, 0, 0],
        ) {
            Err(TraceError::Remote {
                errno: libc::EINVAL,
                ..
            }) => r.syscall(t, libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0]),
            other => other,
        };
        let tfd = match created {
            Ok(fd) => fd as i32,
            Err(TraceError::Remote { errno, .. }) => return Ok(Err(NoUffd::Create { errno })),
            Err(e) => return Err(e),
        };
        let ours = selfheal_sys::ptrace::pidfd_getfd(&t.pidfd, tfd);
        // Leave no descriptor behind in the program.
        r.syscall(t, libc::SYS_close, [tfd as u64, 0, 0, 0, 0, 0])?;
        let uffd = match ours {
            Ok(fd) => fd,
            Err(e) => return Ok(Err(NoUffd::GetFd(e))),
        };
        let want = uffd::UFFD_FEATURE_WP_ASYNC | uffd::UFFD_FEATURE_WP_UNPOPULATED;
        match uffd::api(&uffd, want) {
            Ok(got) if got & want == want => {}
            Ok(got) => return Ok(Err(NoUffd::Features(got))),
            Err(e) => return Ok(Err(NoUffd::Api(e))),
        }
        let pagemap_path = crate::procfs::process(t.pid).path().join("pagemap");
        let pagemap = match File::open(&pagemap_path) {
            Ok(f) => f,
            Err(source) => {
                return Ok(Err(NoUffd::Pagemap {
                    path: pagemap_path,
                    source,
                }))
            }
        };
        let mut u = UffdTracker {
            uffd,
            pagemap,
            buf: Vec::with_capacity(4096),
            pending: Vec::new(),
        };
        if let Err(e) = pm::pagemap_scan(&u.pagemap, 0, 4096, &ScanRequest::default(), &mut u.buf) {
            return Ok(Err(NoUffd::Scan(e)));
        }
        Ok(Ok(u))
    }

    fn scan(&mut self, t: &Tracee, lo: u64, hi: u64, req: &ScanRequest) -> Result<(), TraceError> {
        pm::pagemap_scan(&self.pagemap, lo, hi, req, &mut self.buf)
            .map_err(|e| TraceError::sys(t.pid, e))
    }

    /// Registers the trackable mappings not registered yet (new since the
    /// last look or pre-copy). Returns what is tracked now, what cannot be,
    /// and the ranges registered just now.
    fn register_new(
        &mut self,
        t: &Tracee,
        maps: &[Vma],
        scratch: Option<u64>,
    ) -> Result<(Ranges, Vec<Untracked>, Ranges), TraceError> {
        let (lo, hi) = span(maps);
        self.scan(t, lo, hi, &not_wp_scan())?;
        let unregistered =
            Ranges::from_unsorted(self.buf.iter().map(|r| (r.start, r.end)).collect());
        let mut untracked = Vec::new();
        let mut still_unregistered = Vec::new();
        let mut fresh = Vec::new();
        for v in maps.iter().filter(|v| trackable(v, scratch)) {
            let part = Ranges(vec![(v.start, v.end)]).intersect(&unregistered);
            for &(s, e) in &part.0 {
                // A mapping nobody can touch holds nothing to track yet; when
                // it is made accessible it shows up here again.
                if v.prot() == 0 {
                    still_unregistered.push((s, e));
                    continue;
                }
                match uffd::register(&self.uffd, s, e - s, uffd::UFFDIO_REGISTER_MODE_WP) {
                    Ok(()) => fresh.push((s, e)),
                    Err(err) if err.errno.0 == libc::ENOMEM || err.is_gone() => {
                        return Err(TraceError::sys(t.pid, err))
                    }
                    Err(err) => {
                        still_unregistered.push((s, e));
                        if v.write {
                            let why = if err.errno.0 == libc::EBUSY {
                                " (the program uses userfaultfd itself)"
                            } else {
                                ""
                            };
                            untracked.push(Untracked {
                                start: s,
                                end: e,
                                reason: format!("{}: {err}{why}", v.path),
                            });
                        }
                    }
                }
            }
        }
        let all = Ranges::from_unsorted(
            maps.iter()
                .filter(|v| trackable(v, scratch))
                .map(|v| (v.start, v.end))
                .collect(),
        );
        let tracked = all.minus(&Ranges::from_unsorted(still_unregistered));
        Ok((tracked, untracked, Ranges::from_unsorted(fresh)))
    }

    /// Newly registered mappings report every page once: classifies them
    /// (holes and file pages are not worth copying) and protects them;
    /// then everything else written since, re-protected in the same walk
    /// (fast path).
    fn written_runs(
        &mut self,
        t: &Tracee,
        maps: &[Vma],
        fresh: &Ranges,
    ) -> Result<Vec<DirtyRun>, TraceError> {
        let mut runs = self.classify(t, fresh)?;
        let (lo, hi) = span(maps);
        self.scan(t, lo, hi, &written_scan())?;
        runs.extend(self.buf.iter().map(|r| DirtyRun {
            start: r.start,
            end: r.end,
            kind: RunKind::Unknown,
        }));
        Ok(runs)
    }

    /// Classifies the pages of newly registered mappings and protects them.
    fn classify(&mut self, t: &Tracee, fresh: &Ranges) -> Result<Vec<DirtyRun>, TraceError> {
        let mut runs = Vec::new();
        for &(s, e) in &fresh.0 {
            self.scan(t, s, e, &classify_scan())?;
            runs.extend(self.buf.iter().map(|r| DirtyRun {
                start: r.start,
                end: r.end,
                kind: if r.categories & pm::PAGE_IS_PRESENT != 0
                    && r.categories & (pm::PAGE_IS_FILE | pm::PAGE_IS_PFNZERO) == 0
                {
                    RunKind::Content
                } else {
                    RunKind::Pristine
                },
            }));
        }
        Ok(runs)
    }

    /// Bytes of trackable memory not registered yet (a read-only scan,
    /// fine while the program runs).
    fn unregistered_bytes(
        &mut self,
        t: &Tracee,
        maps: &[Vma],
        scratch: Option<u64>,
    ) -> Result<u64, TraceError> {
        let (lo, hi) = span(maps);
        self.scan(t, lo, hi, &not_wp_scan())?;
        let unregistered =
            Ranges::from_unsorted(self.buf.iter().map(|r| (r.start, r.end)).collect());
        let trackable = Ranges::from_unsorted(
            maps.iter()
                .filter(|v| trackable(v, scratch) && v.prot() != 0)
                .map(|v| (v.start, v.end))
                .collect(),
        );
        Ok(unregistered
            .intersect(&trackable)
            .0
            .iter()
            .map(|(s, e)| e - s)
            .sum())
    }

    /// With the program stopped: registers new mappings and classifies
    /// their pages, which the next pre-copy reads and the next look
    /// reports (registration failures are found again, and reported, there).
    fn register_fresh(
        &mut self,
        t: &Tracee,
        maps: &[Vma],
        scratch: Option<u64>,
    ) -> Result<Vec<DirtyRun>, TraceError> {
        let (_, _, fresh) = self.register_new(t, maps, scratch)?;
        let runs = self.classify(t, &fresh)?;
        self.pending.push(runs.clone());
        Ok(runs)
    }

    /// Registers nothing: registering while the program runs could split a
    /// mapping it is changing at that moment (and make its next mremap of
    /// the whole mapping fail). New mappings wait for the look.
    fn precopy_scan(&mut self, t: &Tracee, maps: &[Vma]) -> Result<Vec<DirtyRun>, TraceError> {
        let runs = self.written_runs(t, maps, &Ranges::default())?;
        self.pending.push(runs.clone());
        Ok(runs)
    }

    fn look(&mut self, t: &Tracee, maps: &[Vma], scratch: Option<u64>) -> Result<Look, TraceError> {
        let (tracked, untracked, fresh) = self.register_new(t, maps, scratch)?;
        let mut runs = self.written_runs(t, maps, &fresh)?;
        // What pre-copies found and nothing wrote since, newest pre-copy
        // first: still tracked, not reported above (written again) and not
        // in a mapping registered just now (a new mapping where the old one
        // was: the pre-copy read the old one).
        if !self.pending.is_empty() {
            let mut covered: Vec<(u64, u64)> = runs.iter().map(|r| (r.start, r.end)).collect();
            covered.extend_from_slice(&fresh.0);
            let mut covered = Ranges::from_unsorted(covered);
            // Set operations per scan, not per run: thousands of scattered
            // pages must not cost a quadratic merge inside the stop.
            for batch in std::mem::take(&mut self.pending).into_iter().rev() {
                let of = |pristine: bool| {
                    Ranges::from_unsorted(
                        batch
                            .iter()
                            .filter(|r| (r.kind == RunKind::Pristine) == pristine)
                            .map(|r| (r.start, r.end))
                            .collect(),
                    )
                };
                for (pristine, set) in [(false, of(false)), (true, of(true))] {
                    if set.0.is_empty() {
                        continue;
                    }
                    let part = set.intersect(&tracked).minus(&covered);
                    runs.extend(part.0.iter().map(|&(start, end)| DirtyRun {
                        start,
                        end,
                        kind: if pristine {
                            RunKind::Pristine
                        } else {
                            RunKind::Precopied
                        },
                    }));
                    covered = covered.union(&set);
                }
            }
        }
        Ok(Look {
            runs,
            tracked,
            untracked,
        })
    }
}
