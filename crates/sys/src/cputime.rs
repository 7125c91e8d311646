//! Precise CPU-time clocks (`clock_gettime(2)`), for measuring how much CPU
//! a short operation used; `getrusage` is only as fine as the scheduler tick.

use std::time::Duration;

use crate::error::{Result, SysError};

fn clock(id: libc::clockid_t, what: &str) -> Result<Duration> {
    // SAFETY: timespec is plain old data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a live out-pointer for the duration of the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Err(SysError::last(format!("clock_gettime({what})")));
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// CPU time used by the calling thread, to the nanosecond.
pub fn thread_cputime() -> Result<Duration> {
    clock(libc::CLOCK_THREAD_CPUTIME_ID, "CLOCK_THREAD_CPUTIME_ID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_clock_advances_with_work() {
        let a = thread_cputime().unwrap();
        let mut x = 1u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = thread_cputime().unwrap();
        assert!(b > a);
    }
}
