//! The daemon-facing API: supervise many apps, each on its own thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use selfheal_config::AppConfig;
use selfheal_event::EventSink;
use selfheal_metrics::Collector;

use crate::child::{Launcher, ProcessLauncher};
use crate::mailbox::{mailbox, Msg, Waker};
use crate::notify::{runtime_dir, NotifySocket, NotifySocketError};
use crate::rollback::{AppCheckpoint, CheckpointMetrics, Collectors};
use crate::runner::{Finish, Runner, RunnerSetup};
use crate::state::{AppMetrics, AppState, AppStatus};
use crate::steps::{no_steps, StepFactory};

/// Supervision could not start.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// An app's configuration is invalid.
    #[error("invalid [[app]] configuration: {0}")]
    Config(selfheal_config::SettingError),
    /// Two apps share a name.
    #[error("app `{0}` is configured twice; app names must be unique")]
    Duplicate(String),
    /// A signal name could not be resolved.
    #[error("app `{app}`: unknown signal {signal}")]
    Signal {
        /// The app.
        app: String,
        /// The signal as written.
        signal: String,
    },
    /// The directory for notify sockets could not be created.
    #[error("cannot create a private directory for notify sockets: {0}; set a writable runtime directory")]
    RuntimeDir(#[source] std::io::Error),
    /// A notify socket could not be bound.
    #[error("app `{app}`: {source}")]
    Notify {
        /// The app.
        app: String,
        /// Why.
        #[source]
        source: NotifySocketError,
    },
    /// A supervision thread could not be started.
    #[error("app `{app}`: cannot start its supervision thread: {source}")]
    Thread {
        /// The app.
        app: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Knobs for embedding supervision; [`Options::default`] is what the
/// daemon uses. Apps with `[app.checkpoint]` on run under the checkpoint
/// engine ([`crate::rollback`]), with `launcher` as the fallback when the
/// engine cannot run, and a `rollback` step before `recovery`'s.
#[derive(Clone)]
pub struct Options {
    /// Starts the programs (the default forks and execs; the checkpoint
    /// engine can supply its own).
    pub launcher: Arc<dyn Launcher>,
    /// Builds each app's recovery steps (default: none).
    pub recovery: Arc<StepFactory>,
    /// Where notify sockets go (default: `/run/selfheal`,
    /// `$XDG_RUNTIME_DIR/selfheal` or the temp directory).
    pub runtime_dir: Option<PathBuf>,
    /// procfs mount point.
    pub proc_root: PathBuf,
    /// `cgroup.procs` files every program joins before it runs.
    pub cgroup_procs: Vec<PathBuf>,
    /// Programs share the supervisor's stdin (`selfheal run`); otherwise
    /// they read `/dev/null`.
    pub inherit_stdin: bool,
    /// Report hangs and what would be done about them, but leave hung
    /// programs running (the daemon's `dry_run`). Crashed programs are
    /// still restarted: they are no longer running either way.
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            launcher: Arc::new(ProcessLauncher),
            recovery: Arc::new(no_steps),
            runtime_dir: None,
            proc_root: PathBuf::from("/proc"),
            cgroup_procs: Vec::new(),
            inherit_stdin: false,
            dry_run: false,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("runtime_dir", &self.runtime_dir)
            .field("proc_root", &self.proc_root)
            .field("cgroup_procs", &self.cgroup_procs)
            .field("inherit_stdin", &self.inherit_stdin)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Checkpointing for `app` if it has it on: its launcher, its rollback
/// step before the factory's steps, and its metrics.
fn with_checkpoints(
    app: &AppConfig,
    sink: &Arc<dyn EventSink>,
    options: &Options,
    metrics: &mut Vec<(String, Arc<crate::rollback::CheckpointTotals>)>,
) -> (Arc<dyn Launcher>, Vec<Box<dyn crate::steps::RecoveryStep>>) {
    let steps = (options.recovery)(app);
    if !app.checkpoint.enabled() {
        return (Arc::clone(&options.launcher), steps);
    }
    let ck = AppCheckpoint::new(
        app,
        Arc::clone(sink),
        Arc::clone(&options.launcher),
        options.dry_run,
    );
    metrics.push((app.name.clone(), Arc::clone(ck.totals())));
    let mut all: Vec<Box<dyn crate::steps::RecoveryStep>> = vec![Box::new(ck.step())];
    all.extend(steps);
    (ck.launcher(), all)
}

struct AppHandle {
    state: Arc<AppState>,
    waker: Waker,
    thread: Option<JoinHandle<Finish>>,
}

/// Supervises apps until [`Supervisor::shutdown`].
pub struct Supervisor {
    apps: Vec<AppHandle>,
    metrics: Arc<dyn Collector>,
    // Removed (with the sockets in it) after the threads end.
    _runtime: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.apps.iter().map(|a| a.state.name()).collect();
        f.debug_struct("Supervisor").field("apps", &names).finish()
    }
}

/// A cloneable handle for other threads (a signal forwarder) to reach the
/// apps.
#[derive(Debug, Clone)]
pub struct SupervisorControl {
    wakers: Vec<(String, Waker)>,
}

impl SupervisorControl {
    /// Forwards `signal` to every app's program; `terminate` also ends
    /// supervision (no restart; SIGKILL after the grace period).
    pub fn forward(&self, signal: i32, terminate: bool) {
        for (_, w) in &self.wakers {
            w.send(Msg::Forward { signal, terminate });
        }
    }

    /// Asks every app to stop (stop signal, grace, SIGKILL) and end.
    pub fn shutdown(&self) {
        for (_, w) in &self.wakers {
            w.send(Msg::Shutdown);
        }
    }
}

fn resolve_signal(app: &str, name: &str) -> Result<i32, SuperviseError> {
    selfheal_sys::signal::signal_from_name(name).ok_or_else(|| SuperviseError::Signal {
        app: app.to_string(),
        signal: name.to_string(),
    })
}

impl Supervisor {
    /// Starts supervising `apps` with the default options, reporting to
    /// `sink`.
    pub fn start(
        apps: Vec<AppConfig>,
        sink: Arc<dyn EventSink>,
    ) -> Result<Supervisor, SuperviseError> {
        Supervisor::start_with(apps, sink, Options::default())
    }

    /// Starts supervising `apps` with `options`.
    pub fn start_with(
        apps: Vec<AppConfig>,
        sink: Arc<dyn EventSink>,
        options: Options,
    ) -> Result<Supervisor, SuperviseError> {
        for (i, a) in apps.iter().enumerate() {
            a.validate().map_err(SuperviseError::Config)?;
            if apps[..i].iter().any(|o| o.name == a.name) {
                return Err(SuperviseError::Duplicate(a.name.clone()));
            }
        }
        let runtime = if apps.iter().any(|a| a.notify.enabled) {
            Some(runtime_dir(options.runtime_dir.as_deref()).map_err(SuperviseError::RuntimeDir)?)
        } else {
            None
        };
        let mut setups = Vec::new();
        let mut checkpoint_metrics = Vec::new();
        for app in apps {
            let stop_signal = resolve_signal(&app.name, app.stop_signal.as_str())?;
            let death_signal = match &app.parent_death_signal {
                Some(s) => Some(resolve_signal(&app.name, s.as_str())?),
                None => None,
            };
            let notify = match (&runtime, app.notify.enabled) {
                (Some(dir), true) => {
                    Some(NotifySocket::bind(dir.path(), &app.name).map_err(|source| {
                        SuperviseError::Notify {
                            app: app.name.clone(),
                            source,
                        }
                    })?)
                }
                _ => None,
            };
            let (launcher, steps) =
                with_checkpoints(&app, &sink, &options, &mut checkpoint_metrics);
            let state = Arc::new(AppState::new(&app.name, &app.command));
            setups.push(RunnerSetup {
                state,
                sink: Arc::clone(&sink),
                launcher,
                steps,
                notify,
                proc_root: options.proc_root.clone(),
                cgroup_procs: options.cgroup_procs.clone(),
                inherit_stdin: options.inherit_stdin,
                dry_run: options.dry_run,
                stop_signal,
                death_signal,
                app,
            });
        }
        let mut handles: Vec<AppHandle> = Vec::new();
        for setup in setups {
            let name = setup.app.name.clone();
            let state = Arc::clone(&setup.state);
            let spawned = mailbox().and_then(|(mb, waker)| {
                let w = waker.clone();
                std::thread::Builder::new()
                    .name(format!("selfheal-app-{name}"))
                    .spawn(move || Runner::new(setup, mb, w).run())
                    .map(|t| (t, waker))
            });
            match spawned {
                Ok((thread, waker)) => handles.push(AppHandle {
                    state,
                    waker,
                    thread: Some(thread),
                }),
                Err(source) => {
                    // Stop what already runs before reporting.
                    let started = Supervisor {
                        apps: handles,
                        metrics: Arc::new(AppMetrics::new(Vec::new())),
                        _runtime: None,
                    };
                    started.shutdown();
                    return Err(SuperviseError::Thread { app: name, source });
                }
            }
        }
        let app_metrics: Arc<dyn Collector> = Arc::new(AppMetrics::new(
            handles.iter().map(|h| Arc::clone(&h.state)).collect(),
        ));
        let metrics: Arc<dyn Collector> = if checkpoint_metrics.is_empty() {
            app_metrics
        } else {
            Arc::new(Collectors(vec![
                app_metrics,
                Arc::new(CheckpointMetrics::new(checkpoint_metrics)),
            ]))
        };
        Ok(Supervisor {
            apps: handles,
            metrics,
            _runtime: runtime,
        })
    }

    /// The `selfheal_app_*` metrics, for the daemon's registry.
    pub fn collector(&self) -> Arc<dyn Collector> {
        Arc::clone(&self.metrics)
    }

    /// Every app's current status.
    pub fn snapshot(&self) -> Vec<AppStatus> {
        self.apps.iter().map(|a| a.state.status()).collect()
    }

    /// A handle other threads can use to forward signals or ask for shutdown.
    pub fn control(&self) -> SupervisorControl {
        SupervisorControl {
            wakers: self
                .apps
                .iter()
                .map(|a| (a.state.name().to_string(), a.waker.clone()))
                .collect(),
        }
    }

    /// Waits until supervision of every app has ended by itself (policy,
    /// crash-loop breaker, or a terminating signal forwarded through
    /// [`SupervisorControl`]); returns how each ended, by app name.
    pub fn wait(mut self) -> Vec<(String, Finish)> {
        self.join_all()
    }

    /// Stops every app (stop signal, grace period, SIGKILL) and waits for
    /// their supervision threads; returns how each ended.
    pub fn shutdown(mut self) -> Vec<(String, Finish)> {
        for a in &self.apps {
            a.waker.send(Msg::Shutdown);
        }
        self.join_all()
    }

    fn join_all(&mut self) -> Vec<(String, Finish)> {
        let mut out = Vec::new();
        for a in &mut self.apps {
            if let Some(t) = a.thread.take() {
                let finish = t.join().unwrap_or_else(|_| {
                    tracing::error!(app = %a.state.name(), "supervision thread panicked; please report this bug");
                    Finish {
                        last_exit: None,
                        launch_failure: None,
                        gave_up: false,
                    }
                });
                out.push((a.state.name().to_string(), finish));
            }
        }
        out
    }
}

impl Drop for Supervisor {
    /// Dropping without [`Supervisor::shutdown`] still stops every program:
    /// none is left running unsupervised.
    fn drop(&mut self) {
        if self.apps.iter().any(|a| a.thread.is_some()) {
            for a in &self.apps {
                a.waker.send(Msg::Shutdown);
            }
            self.join_all();
        }
    }
}
