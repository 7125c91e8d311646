//! Resource limits.

use std::io;

/// Raises the soft limit on open files towards `want` (never above the
/// hard limit, never lowering it) and returns the soft limit in force.
/// systemd starts services with a soft limit of 1024, which a server
/// holding many connections would hit before its own connection limit.
pub fn raise_nofile_limit(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = want.min(lim.rlim_max);
    if target > lim.rlim_cur {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `new` is a valid, initialised rlimit for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(target);
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_lowers_the_limit() {
        let now = super::raise_nofile_limit(0).unwrap();
        assert!(now >= 3);
        assert!(super::raise_nofile_limit(now + 1).unwrap() >= now);
    }
}
