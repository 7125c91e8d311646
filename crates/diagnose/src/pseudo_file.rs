//! Reading the small pseudo-files of procfs and cgroupfs cheaply.
//!
//! `std::fs::read_to_string` asks for the file's size first (a `statx` the
//! kernel answers with 0 for these files) and reads until it gets 0 back:
//! five system calls per file. The sweep reads a few hundred such files a
//! second's worth of work at a time, so it uses three: open, one read,
//! close. A file whose content fills half the buffer or more is read on
//! until the end (a generated file may come in several pieces).
//!
//! A file read on every sweep is better kept open ([`KeptFile`]): one
//! `pread` instead of open, read and close, and no path lookup, which on
//! cgroupfs is most of the cost (37 µs against 9–12 µs per file on the
//! development VM, `bench/daemon/results/idle-cost-2026-12-07-breakdown.txt`).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const CHUNK: usize = 4096;

/// The whole content of a small pseudo-file, or `None` if it cannot be
/// opened or read (gone, permission) or is not UTF-8.
pub fn read_small(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let mut buf = [0u8; CHUNK];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        out.extend_from_slice(&buf[..n]);
        // A short read of a small generated file is all of it.
        if n < CHUNK / 2 {
            break;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads all of `file` from offset 0 into `out` with `pread`.
fn pread_all(file: &File, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    let mut buf = [0u8; CHUNK];
    loop {
        let n = match file.read_at(&mut buf, out.len() as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&buf[..n]);
        if n < CHUNK / 2 {
            return Ok(());
        }
    }
}

/// A small pseudo-file read again and again: kept open and re-read from
/// offset 0 with `pread` (the kernel generates a seq_file's content anew
/// at offset 0, so each read is current).
///
/// A file whose cgroup was removed answers `ENODEV` on cgroupfs; any
/// failed read closes the descriptor and opens the path once more, so a
/// cgroup created again under the same path is read from then on and a
/// removed one reads as `None` (and costs one failed open per read until
/// the owner drops it). Not kept (see [`KeptFile::set_keep`]), it is
/// opened and closed on every read like [`read_small`]: for callers with
/// a descriptor budget.
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    file: Option<File>,
    keep: bool,
    buf: Vec<u8>,
    reopens: u64,
}

impl KeptFile {
    /// `path`, opened at the first read and kept open when `keep`.
    pub fn new(path: PathBuf, keep: bool) -> KeptFile {
        KeptFile {
            path,
            file: None,
            keep,
            buf: Vec::new(),
            reopens: 0,
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a descriptor is held now.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Keep the descriptor between reads, or not (closes it now).
    pub fn set_keep(&mut self, keep: bool) {
        self.keep = keep;
        if !keep {
            self.file = None;
        }
    }

    /// Times a kept descriptor failed and the path was opened again.
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    /// The whole content, or `None` if the file cannot be opened or read
    /// (gone, permission) or is not UTF-8.
    pub fn read(&mut self) -> Option<&str> {
        let mut fresh = false;
        if self.file.is_none() {
            self.file = Some(File::open(&self.path).ok()?);
            fresh = true;
        }
        let read = self
            .file
            .as_ref()
            .is_some_and(|f| pread_all(f, &mut self.buf).is_ok());
        if !read {
            self.file = None;
            if fresh {
                return None;
            }
            // The kept descriptor went stale (its cgroup was removed):
            // whatever now has this path, if anything.
            self.reopens += 1;
            let f = File::open(&self.path).ok()?;
            pread_all(&f, &mut self.buf).ok()?;
            self.file = Some(f);
        }
        if !self.keep {
            self.file = None;
        }
        std::str::from_utf8(&self.buf).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_and_large_files_whole() {
        let d = tempfile::tempdir().unwrap();
        let small = d.path().join("small");
        std::fs::write(&small, "4096\n").unwrap();
        assert_eq!(read_small(&small).as_deref(), Some("4096\n"));
        let big = d.path().join("big");
        let text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&big, &text).unwrap();
        assert_eq!(read_small(&big).as_deref(), Some(text.as_str()));
        assert_eq!(read_small(&d.path().join("missing")), None);
        // A real generated file.
        let stat = read_small(Path::new("/proc/self/stat")).unwrap();
        assert!(stat.starts_with(&std::process::id().to_string()));
    }

    #[test]
    fn a_kept_file_reads_current_content_and_follows_its_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pids.current");
        std::fs::write(&p, "3\n").unwrap();
        let mut k = KeptFile::new(p.clone(), true);
        assert_eq!(k.read(), Some("3\n"));
        assert!(k.is_open());
        std::fs::write(&p, "17\n").unwrap(); // same inode, rewritten
        assert_eq!(k.read(), Some("17\n"));
        let text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        assert_eq!(k.read(), Some(text.as_str()));
        k.set_keep(false);
        assert!(!k.is_open());
        std::fs::write(&p, "5\n").unwrap();
        assert_eq!(k.read(), Some("5\n"));
        assert!(!k.is_open(), "not kept: closed after the read");
        std::fs::remove_file(&p).unwrap();
        assert_eq!(k.read(), None);
        let mut missing = KeptFile::new(d.path().join("missing"), true);
        assert_eq!(missing.read(), None);
        assert!(!missing.is_open());
        // A real seq_file, re-read with pread: the same content each time
        // (its own pid), generated anew.
        let mut stat = KeptFile::new(PathBuf::from("/proc/self/stat"), true);
        let first = stat.read().unwrap().split(' ').next().unwrap().to_string();
        assert_eq!(first, std::process::id().to_string());
        assert!(stat.read().unwrap().starts_with(&first));
    }

    #[test]
    fn a_kept_file_whose_read_fails_is_opened_again() {
        // A directory opens but cannot be read (EISDIR), like a removed
        // cgroup's file answering ENODEV: the descriptor is dropped and
        // the path opened once more.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, "1\n").unwrap();
        let mut k = KeptFile::new(p.clone(), true);
        assert_eq!(k.read(), Some("1\n"));
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        // The old descriptor still reads the unlinked file; only a
        // failing read makes it reopen. Simulate the failure: replace the
        // descriptor with one on the directory.
        k.file = Some(File::open(&p).unwrap());
        assert_eq!(k.read(), None);
        assert_eq!(k.reopens(), 1);
        assert!(!k.is_open());
        std::fs::remove_dir(&p).unwrap();
        std::fs::write(&p, "2\n").unwrap();
        assert_eq!(k.read(), Some("2\n"), "a file created again under the path");
        assert!(k.is_open());
    }
}
