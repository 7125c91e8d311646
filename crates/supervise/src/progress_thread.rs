//! The thread that samples a program's threads for the no-progress
//! heuristics and reports what the [`Analyzer`] finds.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Instant;

use selfheal_config::ProgressConfig;

use crate::mailbox::{Msg, Waker};
use crate::progress::{sample_threads, Analyzer};

/// Stops the sampler when dropped.
#[derive(Debug)]
pub struct ProgressThread {
    stop: Sender<()>,
}

impl Drop for ProgressThread {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Samples `pid` every `cfg.period` until stopped or the process ends.
pub fn spawn(
    app: &str,
    cfg: &ProgressConfig,
    proc_root: PathBuf,
    pid: i32,
    run: u64,
    waker: Waker,
) -> std::io::Result<ProgressThread> {
    let (stop, stopped) = mpsc::channel::<()>();
    let cfg = cfg.clone();
    let app_name = app.to_string();
    std::thread::Builder::new()
        .name(format!("selfheal-prog-{app}"))
        .spawn(move || {
            let mut analyzer = Analyzer::new(&cfg);
            let period = cfg.period.get();
            let mut next = Instant::now();
            loop {
                match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let now = Instant::now();
                match sample_threads(&proc_root, pid) {
                    Ok(threads) => {
                        for report in analyzer.observe(now, threads) {
                            if !waker.send(Msg::Progress { run, report }) {
                                return;
                            }
                        }
                    }
                    Err(e) if e.is_gone() => return,
                    Err(e) => {
                        tracing::warn!(app = %app_name, error = %e, "no-progress sampling failed; stopping it for this run");
                        return;
                    }
                }
                next = (next + period).max(Instant::now());
            }
        })?;
    Ok(ProgressThread { stop })
}
