//! A one-line progress bar on stderr (plain lines when stderr is not a terminal).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Progress over a known number of steps, with an ETA from the mean step time.
pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    /// A bar over `total` steps.
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Shows that step `done + 1` (`label`) is running.
    pub fn start(&self, label: &str) {
        let line = self.line(label);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Marks a step finished, printing its one-line result.
    pub fn finish(&mut self, result: &str) {
        self.done += 1;
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "  {result}");
    }

    /// Prints a message above the bar.
    pub fn note(&self, msg: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{msg}");
    }

    fn line(&self, label: &str) -> String {
        const WIDTH: usize = 30;
        let filled = (self.done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let elapsed = self.started.elapsed().as_secs();
        let eta =
            (self.done > 0).then(|| elapsed * (self.total - self.done) as u64 / self.done as u64);
        format!(
            "[{}{}] {}/{} {label}  elapsed {}{}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.done + 1,
            self.total,
            fmt_secs(elapsed),
            eta.map_or(String::new(), |e| format!(", ~{} left", fmt_secs(e)))
        )
    }
}

/// `1m05s` style.
pub fn fmt_secs(s: u64) -> String {
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
