//! The run's progress bar on stderr (indicatif), or plain lines when stderr
//! is not a terminal (CI logs, `2> file`), where a redrawn bar is noise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress over a known number of scenarios, with an ETA.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total` steps.
    pub fn new(total: usize) -> Progress {
        Progress::with_target(total, ProgressDrawTarget::stderr())
    }

    /// A bar drawing to `target` (hidden targets print plain lines).
    pub fn with_target(total: usize, target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            ProgressStyle::with_template(
                "[{bar:30}] {pos}/{len} {msg}  elapsed {elapsed}, ~{eta} left",
            )
            .expect("valid template")
            .progress_chars("#>."),
        );
        // Scenarios take minutes: redraw the clock once a second.
        bar.enable_steady_tick(Duration::from_secs(1));
        Progress { bar }
    }

    /// Shows that the next step (`label`) is running.
    pub fn start(&self, label: &str) {
        if self.bar.is_hidden() {
            eprintln!(
                "{}/{} {label}",
                self.bar.position() + 1,
                self.bar.length().unwrap_or(0)
            );
        }
        self.bar.set_message(label.to_string());
    }

    /// Marks a step finished, printing its one-line result above the bar.
    pub fn finish(&mut self, result: &str) {
        self.note(&format!("  {result}"));
        self.bar.inc(1);
        if self.bar.position() >= self.bar.length().unwrap_or(0) {
            self.bar.finish_and_clear();
        }
    }

    /// Prints a message above the bar.
    pub fn note(&self, msg: &str) {
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }

    /// Steps finished so far.
    pub fn done(&self) -> u64 {
        self.bar.position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_steps_and_finishes() {
        let mut p = Progress::with_target(2, ProgressDrawTarget::hidden());
        p.start("a");
        p.finish("a ok");
        assert_eq!(p.done(), 1);
        p.start("b");
        p.finish("b ok");
        assert_eq!(p.done(), 2);
        assert!(p.bar.is_finished());
    }
}
