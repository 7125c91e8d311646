//! What changed in the files since each kept checkpoint, with what is needed
//! to undo it: per checkpoint an epoch holding, for every file changed in
//! it, its size when the epoch began and the old bytes of every range
//! overwritten (captured before the write ran), plus the name operations
//! (create, remove, rename) with hard-linked stashes of removed files.
//!
//! Rolling back to checkpoint `k` undoes the epochs from the newest down
//! to `k`: put the old bytes back, cut the file to its size at the epoch's
//! start, undo the name operations newest first.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::events::FileRefusal;
use crate::fds::FdKind;

/// A file: device and inode.
pub(crate) type Key = (u64, u64);

/// Our own handle on a file changed since a kept checkpoint.
#[derive(Debug)]
pub(crate) struct Inode {
    /// Opened read-write by us (restores go through it, whatever the
    /// program's descriptors are and even if every name is gone).
    pub file: File,
    /// Where it was when first seen (for messages).
    pub path: String,
}

/// One file's changes within one epoch.
#[derive(Debug, Default)]
pub(crate) struct FileEpoch {
    /// Size when the epoch began.
    pub size: u64,
    /// Old contents of the ranges below `size` overwritten since, by start
    /// offset; never overlapping.
    pub pre: BTreeMap<u64, Vec<u8>>,
}

impl FileEpoch {
    /// Sub-ranges of `[a, b)` (clipped to the old size) not captured yet.
    pub fn missing(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let b = b.min(self.size);
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        let mut at = a;
        // The range that starts before `a` may cover its beginning.
        if let Some((s, v)) = self.pre.range(..=a).next_back() {
            at = at.max(s + v.len() as u64);
        }
        for (s, v) in self.pre.range(a..b) {
            if *s > at {
                out.push((at, *s));
            }
            at = at.max(s + v.len() as u64);
            if at >= b {
                break;
            }
        }
        if at < b {
            out.push((at, b));
        }
        out
    }
}

/// A removed name's file, kept under a hidden name in the same directory
/// until no kept checkpoint needs it.
pub(crate) type StashId = u64;

/// What a replaced rename target was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replaced {
    /// A file, stashed.
    File(StashId),
    /// An empty directory with this mode.
    Dir(u32),
}

/// A change to names, as recorded before it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameOp {
    /// `path` did not exist (undo: remove it).
    Created { path: PathBuf },
    /// `path` was removed; its file is stashed (None: it was created in
    /// the same epoch, the `Created` undo covers it).
    Removed {
        path: PathBuf,
        stash: Option<StashId>,
    },
    /// An empty directory was removed (undo: make it again).
    DirRemoved { path: PathBuf, mode: u32 },
    /// `from` was renamed to `to`, replacing what `to` was.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<Replaced>,
    },
    /// `a` and `b` were exchanged (renameat2 RENAME_EXCHANGE).
    Exchanged { a: PathBuf, b: PathBuf },
    /// A stash was moved out of a directory about to be removed.
    StashMoved {
        id: StashId,
        from: PathBuf,
        to: PathBuf,
    },
}

/// Output that cannot be taken back, written since a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Writer (thread id).
    pub pid: i32,
    /// Descriptor.
    pub fd: i32,
    /// What it is.
    pub kind: FdKind,
}

/// Everything changed after one checkpoint, until the next.
#[derive(Debug, Default)]
pub(crate) struct Epoch {
    /// The checkpoint it follows.
    pub id: u64,
    /// Files changed.
    pub files: HashMap<Key, FileEpoch>,
    /// Name operations, in order.
    pub names: Vec<NameOp>,
    /// Paths created in this epoch and still there (their removal needs
    /// no stash).
    pub created: HashSet<PathBuf>,
    /// First output that cannot be taken back.
    pub sent: Option<Sent>,
    /// First change that cannot be undone.
    pub taint: Option<(String, FileRefusal)>,
}

/// The journal shared by the responder thread and the tracer thread.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Epochs, oldest first; the last is the open one.
    pub epochs: VecDeque<Epoch>,
    /// Handles on every file some epoch holds changes of.
    pub inodes: HashMap<Key, Inode>,
    /// Where each stash is now.
    pub stashes: HashMap<StashId, PathBuf>,
    next_stash: StashId,
    /// Bytes of old contents held.
    pub bytes: u64,
    /// Most bytes of old contents to hold; past it the epoch is tainted.
    pub budget: u64,
    /// False once the engine stopped tracking (detached or gone): calls
    /// are let through unrecorded.
    pub active: bool,
    /// Stash names: `.selfheal-stash-<this>-<n>`.
    pub stash_tag: String,
}

impl Journal {
    /// An empty journal holding at most `budget` bytes of old contents.
    pub fn new(budget: u64, stash_tag: String) -> Journal {
        Journal {
            budget,
            stash_tag,
            active: true,
            ..Journal::default()
        }
    }

    /// The open epoch (None before the first checkpoint).
    pub fn open(&mut self) -> Option<&mut Epoch> {
        if !self.active {
            return None;
        }
        self.epochs.back_mut()
    }

    /// Marks the open epoch as impossible to undo (first reason kept).
    pub fn taint(&mut self, path: &str, why: FileRefusal) {
        if let Some(e) = self.open() {
            if e.taint.is_none() {
                crate::debug(|| format!("files: taint {path}: {why:?}"));
                e.taint = Some((path.to_string(), why));
            }
        }
    }

    /// Notes output that cannot be taken back (first one kept).
    pub fn sent(&mut self, s: Sent) {
        if let Some(e) = self.open() {
            if e.sent.is_none() {
                e.sent = Some(s);
            }
        }
    }

    /// Starts the epoch after checkpoint `id` (the process is stopped).
    pub fn seal(&mut self, id: u64) {
        self.epochs.push_back(Epoch {
            id,
            ..Epoch::default()
        });
    }

    /// The file's entry in the open epoch, made with its current size
    /// `size_now` if it has none (no change to it in this epoch yet, so its
    /// size now is its size when the epoch began). `handle` gives our own
    /// read-write handle the first time the file is seen.
    pub fn touch(
        &mut self,
        key: Key,
        size_now: u64,
        handle: impl FnOnce() -> std::io::Result<Inode>,
    ) -> Result<(), FileRefusal> {
        if !self.active || self.epochs.is_empty() {
            return Ok(());
        }
        if let std::collections::hash_map::Entry::Vacant(v) = self.inodes.entry(key) {
            v.insert(handle().map_err(|e| FileRefusal::NoHandle {
                error: e.to_string(),
            })?);
        }
        let e = self.epochs.back_mut().expect("checked");
        e.files.entry(key).or_insert_with(|| FileEpoch {
            size: size_now,
            pre: BTreeMap::new(),
        });
        Ok(())
    }

    /// Captures the old bytes of `[a, b)` of a touched file before they are
    /// overwritten. Past the budget the epoch is tainted instead.
    pub fn capture(&mut self, key: Key, a: u64, b: u64) {
        let Some(epoch) = self.epochs.back_mut().filter(|_| self.active) else {
            return;
        };
        let (Some(fe), Some(inode)) = (epoch.files.get_mut(&key), self.inodes.get(&key)) else {
            return;
        };
        let missing = fe.missing(a, b);
        let want: u64 = missing.iter().map(|(s, e)| e - s).sum();
        if want == 0 {
            return;
        }
        if self.bytes + want > self.budget {
            let path = inode.path.clone();
            let budget = self.budget;
            self.taint(&path, FileRefusal::PreimageBudget { budget });
            return;
        }
        for (s, e) in missing {
            let mut buf = vec![0u8; (e - s) as usize];
            // A short read means the file is shorter than its recorded old
            // size only if someone we do not see cut it: keep zeros, which
            // is what a hole reads as; the sharing check refuses that case.
            let mut got = 0;
            while got < buf.len() {
                match inode.file.read_at(&mut buf[got..], s + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.bytes += buf.len() as u64;
            fe.pre.insert(s, buf);
        }
    }

    /// A fresh stash id and its path next to `path`.
    pub fn new_stash(&mut self, path: &Path) -> (StashId, PathBuf) {
        self.next_stash += 1;
        let id = self.next_stash;
        let dir = path.parent().unwrap_or(Path::new("/"));
        let p = dir.join(format!(".selfheal-stash-{}-{id}", self.stash_tag));
        (id, p)
    }

    /// Releases epochs older than checkpoint `oldest` (no longer kept):
    /// their old contents and stashes go.
    pub fn forget_before(&mut self, oldest: u64) {
        while self.epochs.front().is_some_and(|e| e.id < oldest) {
            let e = self.epochs.pop_front().expect("checked");
            self.release_epoch(e);
        }
        self.drop_unused_inodes();
    }

    /// Releases everything (checkpoints discarded, or the engine ends).
    pub fn clear(&mut self) {
        while let Some(e) = self.epochs.pop_front() {
            self.release_epoch(e);
        }
        for (_, p) in self.stashes.drain() {
            let _ = std::fs::remove_file(p);
        }
        self.inodes.clear();
        self.bytes = 0;
    }

    /// Releases an epoch's old contents and remaining stashes.
    pub fn release_epoch(&mut self, e: Epoch) {
        for fe in e.files.values() {
            self.bytes -= fe.pre.values().map(|v| v.len() as u64).sum::<u64>();
        }
        for op in &e.names {
            let id = match op {
                NameOp::Removed {
                    stash: Some(id), ..
                } => *id,
                NameOp::Renamed {
                    replaced: Some(Replaced::File(id)),
                    ..
                } => *id,
                _ => continue,
            };
            if let Some(p) = self.stashes.remove(&id) {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    pub(crate) fn drop_unused_inodes(&mut self) {
        let used: HashSet<Key> = self
            .epochs
            .iter()
            .flat_map(|e| e.files.keys().copied())
            .collect();
        self.inodes.retain(|k, _| used.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fe(size: u64, pre: &[(u64, usize)]) -> FileEpoch {
        FileEpoch {
            size,
            pre: pre.iter().map(|&(s, n)| (s, vec![0; n])).collect(),
        }
    }

    #[test]
    fn missing_ranges_skip_what_is_captured_and_stop_at_the_old_size() {
        let f = fe(100, &[(10, 10), (40, 5)]);
        assert_eq!(f.missing(0, 100), vec![(0, 10), (20, 40), (45, 100)]);
        assert_eq!(f.missing(12, 18), vec![]);
        assert_eq!(f.missing(15, 50), vec![(20, 40), (45, 50)]);
        assert_eq!(f.missing(90, 200), vec![(90, 100)]);
        assert_eq!(f.missing(100, 200), vec![]);
        assert_eq!(fe(0, &[]).missing(0, 10), vec![]);
    }

    #[test]
    fn capture_reads_old_bytes_once_and_respects_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut j = Journal::new(8, "t".into());
        j.seal(1);
        let open = || {
            Ok(Inode {
                file: std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)?,
                path: p.display().to_string(),
            })
        };
        j.touch((1, 1), 10, open).unwrap();
        j.capture((1, 1), 2, 5);
        std::fs::write(&p, b"01xxx56789").unwrap();
        // Overlapping capture keeps the first (older) bytes.
        j.capture((1, 1), 3, 7);
        let e = j.epochs.back().unwrap();
        let got: Vec<(u64, &[u8])> = e.files[&(1, 1)]
            .pre
            .iter()
            .map(|(s, v)| (*s, v.as_slice()))
            .collect();
        assert_eq!(got, vec![(2, &b"234"[..]), (5, &b"56"[..])]);
        assert_eq!(j.bytes, 5);
        j.capture((1, 1), 0, 2);
        let e = j.epochs.back().unwrap();
        assert!(e.taint.is_none(), "0..2 fit: {:?}", e.taint);
        assert_eq!(j.bytes, 7);
        // 7 held + 3 more > budget 8: tainted, nothing read.
        j.capture((1, 1), 7, 10);
        assert_eq!(j.bytes, 7);
        assert!(matches!(
            j.epochs.back().unwrap().taint,
            Some((_, FileRefusal::PreimageBudget { budget: 8 }))
        ));
        j.forget_before(2);
        assert_eq!(j.bytes, 0);
        assert!(j.inodes.is_empty());
    }
}
