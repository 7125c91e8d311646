//! The consumer end of the light detector's alert queue: turns each alert
//! into a stored event with the metric snapshot as evidence.
//!
//! This thread is where the heavy detector plugs in (see `hang.rs` when the
//! heavy-detector pipeline is present): it runs off the real-time thread,
//! so it may allocate, read /proc at length and write the store.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use selfheal_config::Rule;
use selfheal_detect::Alert;
use selfheal_event::EventSink;
use selfheal_sampler::{Sample, SampleBoard};

/// A running alert recorder.
#[derive(Debug)]
pub struct AlertRecorder {
    handle: Option<JoinHandle<()>>,
}

impl AlertRecorder {
    /// Records every alert from `rx` into `sink` until the sending side is
    /// dropped (the light thread stopped).
    pub fn spawn(
        rx: Receiver<Alert>,
        rules: Vec<Rule>,
        board: Arc<SampleBoard>,
        cpus: usize,
        sink: Arc<dyn EventSink>,
    ) -> std::io::Result<AlertRecorder> {
        let handle = std::thread::Builder::new()
            .name("selfheal-alerts".into())
            .stack_size(512 * 1024)
            .spawn(move || {
                let mut snapshot = Sample::with_cpus(cpus);
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(alert) => {
                            let Some(rule) = rules.get(alert.rule_index as usize) else {
                                continue;
                            };
                            // The board holds the sample that raised the alert
                            // or, at worst, the next one.
                            let snap = board.read_into(&mut snapshot).then_some(&snapshot);
                            sink.emit(alert.to_event(rule, snap));
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        Ok(AlertRecorder {
            handle: Some(handle),
        })
    }

    /// Waits for the thread; call after the light thread has stopped.
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
