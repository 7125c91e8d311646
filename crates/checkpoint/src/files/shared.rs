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
use std::path::Path;

use selfheal_procfs::task::list_pids;

use super::journal::Key;
use crate::procfs;

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
    let procs = list_pids(Path::new(procfs::ROOT)).ok()?;
    for pid in procs {
        if pid == tracee {
            continue;
        }
        let dir = procfs::process(pid);
        let Ok(fds) = dir.fds() else {
            continue;
        };
        for fd in fds {
            let Ok(m) = std::fs::metadata(dir.fd_path(fd)) else {
                continue;
            };
            let key = (m.dev(), m.ino());
            if !m.is_file() || !keys.contains(&key) {
                continue;
            }
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
            let comm = procfs::comm_or_unknown(pid);
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
