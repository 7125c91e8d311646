//! FUSE connections: how many requests wait on one, and which process
//! serves it (the holder of a `/dev/fuse` descriptor whose `fdinfo` names
//! the connection, Linux 6.x; on older kernels the only holder, if one).

use std::path::Path;

use selfheal_procfs::task::list_pids;

use crate::pseudo_file::read_small;

pub use selfheal_sys::fuse::connection_number as connection_of;

/// Requests waiting on connection `conn` (`…/connections/N/waiting`),
/// when fusectl is mounted at `connections`.
pub fn waiting(connections: &Path, conn: u64) -> Option<u64> {
    read_small(&connections.join(conn.to_string()).join("waiting"))?
        .trim()
        .parse()
        .ok()
}

/// Which `/dev/fuse` descriptor serves which connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseServer {
    /// The process.
    pub pid: i32,
    /// How it was found: `fdinfo` (the kernel says so) or `only holder`.
    pub how: &'static str,
}

/// `fuse_connection:` of a `/dev/fuse` descriptor's `fdinfo`.
pub fn parse_fdinfo_connection(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("fuse_connection:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The process serving connection `conn`, looking at every process's
/// descriptors (only when a FUSE wait is being diagnosed).
pub fn server_of(proc_root: &Path, conn: u64) -> Option<FuseServer> {
    let mut holders: Vec<i32> = Vec::new();
    for pid in list_pids(proc_root).unwrap_or_default() {
        let fd_dir = proc_root.join(pid.to_string()).join("fd");
        let Ok(fds) = std::fs::read_dir(&fd_dir) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if link != Path::new("/dev/fuse") {
                continue;
            }
            let info = proc_root
                .join(pid.to_string())
                .join("fdinfo")
                .join(fd.file_name());
            match read_small(&info).and_then(|t| parse_fdinfo_connection(&t)) {
                Some(c) if c == conn => return Some(FuseServer { pid, how: "fdinfo" }),
                Some(_) => {}
                None => {
                    if !holders.contains(&pid) {
                        holders.push(pid);
                    }
                }
            }
        }
    }
    (holders.len() == 1).then(|| FuseServer {
        pid: holders[0],
        how: "only /dev/fuse holder",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_numbers_and_fdinfo() {
        // mountinfo `0:40` → /sys/fs/fuse/connections/40; fuseblk on 8:1.
        assert_eq!(connection_of(0, 40), 40);
        assert_eq!(connection_of(8, 1), 8_388_609);
        // Captured /proc/PID/fdinfo of a /dev/fuse descriptor (6.18).
        let info = "pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t89\nfuse_connection:\t40\n";
        assert_eq!(parse_fdinfo_connection(info), Some(40));
        assert_eq!(parse_fdinfo_connection("pos:\t0\n"), None);
    }
}
