//! One program in the foreground (`selfheal run`): supervise it until
//! supervision ends, forwarding the terminal's signals to it, and return
//! its shell-style exit status.

use std::sync::Arc;

use selfheal_config::AppConfig;
use selfheal_event::EventSink;

use crate::supervisor::{Options, SuperviseError, Supervisor};

/// Supervising a program in the foreground failed before it ended.
#[derive(Debug, thiserror::Error)]
pub enum ForegroundError {
    /// The handlers that forward signals to the program could not be installed.
    #[error("cannot install signal handlers for forwarding")]
    Signals(#[source] std::io::Error),
    /// Supervision could not start.
    #[error(transparent)]
    Start(#[from] SuperviseError),
    /// The thread that forwards signals could not be started.
    #[error("cannot start the signal forwarding thread")]
    ForwarderThread(#[source] std::io::Error),
}

/// Supervises `app` until supervision ends (policy, crash-loop breaker,
/// or SIGTERM/SIGINT/SIGQUIT, which are forwarded) and returns its
/// shell-style exit status (128 + N when signal N killed it). SIGHUP,
/// SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the program without
/// ending supervision. Events go to `sink`; logging goes through
/// `tracing`, and the caller installs a subscriber.
pub fn run_foreground(
    app: AppConfig,
    sink: Arc<dyn EventSink>,
    options: Options,
) -> Result<i32, ForegroundError> {
    use signal_hook::consts::signal::*;
    let forwarded = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH];
    let mut signals =
        signal_hook::iterator::Signals::new(forwarded).map_err(ForegroundError::Signals)?;
    let supervisor = Supervisor::start_with(vec![app], sink, options)?;
    let control = supervisor.control();
    let handle = signals.handle();
    let forwarder = std::thread::Builder::new()
        .name("selfheal-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let terminate = matches!(sig, SIGTERM | SIGINT | SIGQUIT);
                tracing::debug!(signal = sig, terminate, "forwarding signal");
                control.forward(sig, terminate);
            }
        })
        .map_err(ForegroundError::ForwarderThread)?;
    let results = supervisor.wait();
    handle.close();
    let _ = forwarder.join();
    Ok(results.first().map_or(1, |(_, f)| f.shell_status()))
}
