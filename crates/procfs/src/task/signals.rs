//! Signal lines of /proc/PID/status and /proc/PID/task/TID/status.

/// Signal dispositions from `/proc/PID/status`: bit `sig-1` set per signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalDispositions {
    /// Signals with a handler installed (`SigCgt`).
    pub caught: u64,
    /// Ignored signals (`SigIgn`).
    pub ignored: u64,
}

impl SignalDispositions {
    /// True when the program installed its own handler for `sig`.
    pub fn catches(&self, sig: i32) -> bool {
        (1..=64).contains(&sig) && self.caught & (1u64 << (sig - 1)) != 0
    }
}

/// Parses `SigCgt`/`SigIgn` from `status` text. None if either is missing
/// or malformed.
pub fn parse_status_signals(text: &str) -> Option<SignalDispositions> {
    let mut d = SignalDispositions::default();
    let (mut c, mut i) = (false, false);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("SigCgt:") {
            d.caught = u64::from_str_radix(v.trim(), 16).ok()?;
            c = true;
        } else if let Some(v) = line.strip_prefix("SigIgn:") {
            d.ignored = u64::from_str_radix(v.trim(), 16).ok()?;
            i = true;
        }
    }
    (c && i).then_some(d)
}

/// Signals pending and not blocked for one thread, its own (`SigPnd`) and
/// the process's (`ShdPnd`) less those it blocks (`SigBlk`), from
/// `/proc/PID/task/TID/status` text: bit `sig-1` set per signal. None if a
/// line is missing or malformed.
pub fn parse_status_pending(text: &str) -> Option<u64> {
    let (mut thread, mut shared, mut blocked) = (None, None, None);
    for line in text.lines() {
        let hex = |v: &str| u64::from_str_radix(v.trim(), 16).ok();
        if let Some(v) = line.strip_prefix("SigPnd:") {
            thread = Some(hex(v)?);
        } else if let Some(v) = line.strip_prefix("ShdPnd:") {
            shared = Some(hex(v)?);
        } else if let Some(v) = line.strip_prefix("SigBlk:") {
            blocked = Some(hex(v)?);
        }
    }
    Some((thread? | shared?) & !blocked?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_from_captured_status() {
        let st = "Name:\tx\nSigQ:\t0/95000\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
                  SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000400\n";
        let d = parse_status_signals(st).unwrap();
        assert!(d.catches(libc::SIGSEGV));
        assert!(!d.catches(libc::SIGBUS));
        assert!(!d.catches(0) && !d.catches(65));
        assert_eq!(d.ignored, 1 << (libc::SIGPIPE - 1));
        assert_eq!(parse_status_signals("SigCgt:\t0\n"), None);
    }

    #[test]
    fn pending_signals_join_the_thread_and_the_process_queue() {
        let text = "Name:\tx\nSigQ:\t1/1000\nSigPnd:\t0000000000000001\nShdPnd:\t0000000000000402\nSigBlk:\t0000000000000002\n";
        // Signal 2 is pending but blocked: it would not be delivered now.
        assert_eq!(parse_status_pending(text), Some(0x401));
        assert_eq!(parse_status_pending("SigPnd:\t1\n"), None);
        assert_eq!(parse_status_pending("SigPnd:\tzz\nShdPnd:\t0\n"), None);
    }
}
