//! How other threads talk to an app's supervision thread: a channel plus a
//! socket pair that makes the channel pollable next to the program's exit
//! descriptor and notify socket, so every event wakes the thread at once.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use crate::probe::ProbeOutcome;
use crate::progress::ProgressReport;

/// A message for the supervision thread.
#[derive(Debug)]
pub enum Msg {
    /// Stop the program (stop signal, grace, SIGKILL) and end supervision.
    Shutdown,
    /// Pass a signal on to the program. `terminate`: the sender wants the
    /// program to end (SIGTERM/SIGINT/SIGQUIT to `selfheal run`), so no
    /// restart follows and SIGKILL follows after the grace period.
    Forward {
        /// The signal.
        signal: i32,
        /// Ends supervision.
        terminate: bool,
    },
    /// A probe finished.
    Probe {
        /// Which run of the program the probe was for.
        run: u64,
        /// What happened.
        outcome: ProbeOutcome,
    },
    /// The no-progress sampler found or cleared a suspicion.
    Progress {
        /// Which run of the program.
        run: u64,
        /// What it found.
        report: ProgressReport,
    },
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Waker {
    tx: Sender<(Instant, Msg)>,
    bell: Arc<UnixStream>,
}

impl Waker {
    /// Queues `msg` and wakes the thread. False when the thread is gone.
    pub fn send(&self, msg: Msg) -> bool {
        if self.tx.send((Instant::now(), msg)).is_err() {
            return false;
        }
        // A full socket buffer already holds a wake-up; nothing is lost.
        let _ = (&*self.bell).write(b"!");
        true
    }
}

/// The receiving side, owned by the supervision thread.
#[derive(Debug)]
pub struct Mailbox {
    rx: Receiver<(Instant, Msg)>,
    bell: UnixStream,
}

/// A new mailbox and its first waker.
pub fn mailbox() -> io::Result<(Mailbox, Waker)> {
    let (bell_rx, bell_tx) = UnixStream::pair()?;
    bell_rx.set_nonblocking(true)?;
    bell_tx.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel();
    Ok((
        Mailbox { rx, bell: bell_rx },
        Waker {
            tx,
            bell: Arc::new(bell_tx),
        },
    ))
}

impl Mailbox {
    /// Polled for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    /// Every queued message with the time it was sent, oldest first.
    pub fn drain(&mut self) -> Vec<(Instant, Msg)> {
        let mut buf = [0u8; 256];
        while matches!(self.bell.read(&mut buf), Ok(n) if n > 0) {}
        self.rx.try_iter().collect()
    }
}
