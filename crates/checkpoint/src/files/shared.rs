//! Is a file the program changed also open in another process? Then that
//! process may have written it since the checkpoint (we do not see its
//! writes) and would see it change under it: the rollback is refused.
//!
//! Every process's descriptor table is looked at (`/proc/*/fd`), which
//! costs a few milliseconds, only at rollback and only when files were
//! changed. Our own process is skipped where its descriptor is the very
//! open file description the program inherited (the standard streams of
//! `selfheal run`) or our own restore handle; any other descriptor of ours
//! on the file (a log we append to) counts. Processes that wrote the file
//! and closed it again, and shared mappings without a descriptor, are not
//! seen: see the documented limits.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use super::journal::Key;

/// A process holding one of the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// Process.
    pub pid: i32,
    /// Its name.
    pub comm: String,
    /// The file.
    pub key: Key,
}

/// The first process other than `tracee` with one of `keys` open.
/// `own_skip`: our descriptors to ignore (restore handles); `tracee_fds`:
/// the program's descriptors on those files, to recognise shared
/// descriptions in our own table.
pub(crate) fn other_holder(
    keys: &HashSet<Key>,
    tracee: i32,
    own_skip: &HashSet<i32>,
    tracee_fds: &[(i32, Key)],
) -> Option<Holder> {
    if keys.is_empty() {
        return None;
    }
    let me = std::process::id() as i32;
    let procs = std::fs::read_dir("/proc").ok()?;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == tracee {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            let Ok(m) = std::fs::metadata(f.path()) else {
                continue;
            };
            let key = (m.dev(), m.ino());
            if !m.is_file() || !keys.contains(&key) {
                continue;
            }
            let fd: i32 = f
                .file_name()
                .to_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1);
            if pid == me {
                if own_skip.contains(&fd) {
                    continue;
                }
                let inherited = tracee_fds.iter().any(|(tfd, k)| {
                    *k == key
                        && selfheal_sys::fileops::kcmp_same_file(me, fd, tracee, *tfd)
                            .unwrap_or(false)
                });
                if inherited {
                    continue;
                }
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map_or_else(|_| "?".into(), |s| s.trim_end().to_string());
            return Some(Holder { pid, comm, key });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_another_process_with_the_file_open_and_skips_our_handles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        let keys: HashSet<Key> = [(m.dev(), m.ino())].into();
        assert_eq!(other_holder(&keys, -1, &HashSet::new(), &[]), None);
        let mine = std::fs::File::open(&p).unwrap();
        use std::os::fd::AsRawFd;
        let h = other_holder(&keys, -1, &HashSet::new(), &[]).expect("ours counts");
        assert_eq!(h.pid, std::process::id() as i32);
        let skip: HashSet<i32> = [mine.as_raw_fd()].into();
        assert_eq!(other_holder(&keys, -1, &skip, &[]), None);
        // Another process holding it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(&p).unwrap())
            .spawn()
            .unwrap();
        let h = other_holder(&keys, -1, &skip, &[]);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            h.map(|h| (h.pid, h.comm)),
            Some((child.id() as i32, "sleep".into()))
        );
    }
}
