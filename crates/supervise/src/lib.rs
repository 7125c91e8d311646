//! Application supervision: start programs, detect their crashes and
//! hangs, recover them, and report it all.
//!
//! - **Crashes**: the exit code or terminating signal (through a pidfd),
//!   the core-dump flag and the last lines of stderr go into an
//!   `app_crash` event.
//! - **Hangs**, three detectors in any combination: the systemd notify
//!   protocol ([`notify`]: `READY=1`, `WATCHDOG=1`, …), Kubernetes-style
//!   probes ([`probe`]: exec, TCP, HTTP GET), and no-progress heuristics
//!   ([`progress`]: a thread spinning without system calls, every thread
//!   blocked on locks), which only raise suspicions unless confirmed.
//! - **Recovery**: evidence capture (thread states from /proc, a hook
//!   command), pluggable recovery [`steps`] (the checkpoint engine's
//!   rollback), then the stop signal, a grace period, SIGKILL and a restart
//!   governed by the restart policy, exponential backoff and a crash-loop
//!   breaker ([`respawn`]). A restart after a failure cuts output files the
//!   killed run wrote back to where it started (`restart_output`).
//! - **Checkpoints** ([`rollback`], `[app.checkpoint]`): the program
//!   runs under the μCheckpoint engine; a crash is rolled back in place
//!   instead of restarted, a hang is rolled back by a recovery step.
//! - **Observability**: `app_*` events to an [`selfheal_event::EventSink`],
//!   `selfheal_app_*` metrics ([`Supervisor::collector`]) and a status
//!   snapshot ([`Supervisor::snapshot`]); [`app_lifecycle`], [`app_hang`]
//!   and [`app_action`] read the stored events back typed.
//!
//! [`Supervisor`] runs many apps for the daemon (one thread each);
//! [`run_foreground`] supervises one in the foreground (`selfheal run`).
//! How a program is started and waited for is behind
//! [`Launcher`]/[`ChildHandle`], so a launcher whose process is reaped by
//! someone else (a ptrace tracer) fits in.
#![forbid(unsafe_code)]

pub mod app_action;
pub mod app_hang;
pub mod app_lifecycle;
pub mod child;
pub mod detector;
pub mod events;
pub mod evidence;
mod foreground;
mod mailbox;
pub mod notify;
pub mod output;
pub mod probe;
pub mod progress;
mod progress_thread;
pub mod respawn;
pub mod rollback;
mod runner;
pub mod state;
pub mod steps;
mod streams;
mod supervisor;

pub use child::{
    ChildError, ChildHandle, ExitStatus, LaunchError, LaunchSpec, Launcher, ProcessLauncher,
    Program, SignalScope, StdioSpec,
};
pub use detector::HangDetector;
pub use foreground::{run_foreground, ForegroundError};
pub use runner::Finish;
pub use state::{render_table, AppMetrics, AppState, AppStatus, Phase};
pub use steps::{RecoveryStep, StepContext, StepFactory, StepOutcome, Trouble};
pub use supervisor::{Options, SuperviseError, Supervisor, SupervisorControl};
