//! QEMU as a process: under the checkpoint engine (checkpoints on), or a
//! plain child. Either way its end reaches the run loop as an input.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use selfheal_checkpoint::{self as ckpt, Engine, ExitInfo, LaunchSpec, Older, Target};
use selfheal_config::{Output, VmConfig};

use crate::qemu::Sockets;
use crate::run::Input;

/// QEMU could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The checkpoint engine could not start it.
    #[error("{0}; needs root (ptrace, userfaultfd), or set the checkpoint interval to \"0\"")]
    Engine(#[from] ckpt::StartError),
    /// fork/exec failed.
    #[error(
        "cannot start {program}: {source}; is QEMU installed (apt-get install qemu-system-x86)?"
    )]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A log file for QEMU's output could not be opened.
    #[error("cannot open {path} for QEMU's output: {source}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// A running QEMU.
#[derive(Debug)]
pub(crate) enum Process {
    /// Under the checkpoint engine (owned by a forwarding thread).
    Traced { control: ckpt::Control, pid: i32 },
    /// A plain child, reaped by a waiter thread.
    Plain { pid: i32 },
}

fn open_output(o: &Output) -> Result<Option<File>, ProcessError> {
    let err = |path: &str| {
        let path = path.to_string();
        move |source| ProcessError::Output { path, source }
    };
    match o {
        Output::Inherit => Ok(None),
        Output::Null => File::create("/dev/null")
            .map(Some)
            .map_err(err("/dev/null")),
        Output::File(p) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(Some)
            .map_err(err(&p.display().to_string())),
    }
}

impl Process {
    /// Starts `argv`; its end and (traced) the engine's events go to `tx`.
    pub(crate) fn start(
        cfg: &VmConfig,
        argv: Vec<String>,
        sockets: &Sockets,
        tx: Sender<Input>,
    ) -> Result<Process, ProcessError> {
        let stdout = open_output(&cfg.stdout)?;
        let stderr = open_output(&cfg.stderr)?;
        let c = &cfg.checkpoint;
        if c.enabled() {
            let null = File::open("/dev/null").map_err(|source| ProcessError::Output {
                path: "/dev/null".into(),
                source,
            })?;
            let spec = LaunchSpec {
                argv,
                stdio: [
                    Some(OwnedFd::from(null)),
                    stdout.map(OwnedFd::from),
                    stderr.map(OwnedFd::from),
                ],
                // Ctrl-C on a terminal reaches selfheal, which stops QEMU.
                new_process_group: true,
                ..LaunchSpec::default()
            };
            let config = ckpt::Config {
                interval: c.interval.get(),
                keep: c.keep,
                recurrence_window: c.recurrence_window.get(),
                report_checkpoints: true,
                older: (!c.older_every.get().is_zero()).then(|| Older {
                    every: c.older_every.get(),
                    span: c.older_span.get(),
                }),
                replay_tolerant_sockets: sockets
                    .all()
                    .into_iter()
                    .chain(cfg.replay_tolerant_sockets.iter().cloned())
                    .collect(),
                ..ckpt::Config::default()
            };
            let engine = Engine::start(Target::Launch(spec), config)?;
            let (pid, control) = (engine.pid(), engine.control());
            std::thread::Builder::new()
                .name("selfheal-vm-engine".into())
                .spawn(move || forward(engine, tx))
                .map_err(ProcessError::Thread)?;
            return Ok(Process::Traced { control, pid });
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        if let Some(f) = stdout {
            cmd.stdout(f);
        }
        if let Some(f) = stderr {
            cmd.stderr(f);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
        let pid = child.id() as i32;
        std::thread::Builder::new()
            .name("selfheal-vm-wait".into())
            .spawn(move || {
                use std::os::unix::process::ExitStatusExt;
                let info = match child.wait() {
                    Ok(st) => ExitInfo {
                        code: st.code(),
                        signal: st.signal(),
                        core_dumped: st.core_dumped(),
                    },
                    Err(_) => ExitInfo {
                        code: None,
                        signal: None,
                        core_dumped: false,
                    },
                };
                let _ = tx.send(Input::Exited(info));
            })
            .map_err(ProcessError::Thread)?;
        Ok(Process::Plain { pid })
    }

    pub(crate) fn pid(&self) -> i32 {
        match self {
            Process::Traced { pid, .. } | Process::Plain { pid } => *pid,
        }
    }

    pub(crate) fn is_traced(&self) -> bool {
        matches!(self, Process::Traced { .. })
    }

    /// Asks the engine to roll back to the newest checkpoint before `before`.
    pub(crate) fn request_rollback(&self, before: Instant) {
        if let Process::Traced { control, .. } = self {
            control.request_rollback(Some(before));
        }
    }

    /// Kills QEMU (its end still arrives as an input).
    pub(crate) fn kill(&self) {
        match self {
            Process::Traced { control, .. } => control.kill(),
            // Our unreaped child: the pid cannot have been reused.
            Process::Plain { pid } => {
                let _ = selfheal_sys::signal::kill_process(*pid, libc::SIGKILL);
            }
        }
    }

    /// Waits up to `grace` for QEMU to end, then kills it and waits again.
    pub(crate) fn wait_or_kill(&mut self, rx: &Receiver<Input>, grace: Duration) {
        for (limit, kill_first) in [(grace, false), (Duration::from_secs(10), true)] {
            if kill_first {
                self.kill();
            }
            let deadline = Instant::now() + limit;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Input::Exited(_) | Input::Engine(ckpt::Event::Exited(_))) => return,
                    Ok(_) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                }
            }
        }
    }
}

/// Owns the engine: forwards its events until the process is gone, then
/// drops it (which kills a process it launched, if still there).
fn forward(engine: Engine, tx: Sender<Input>) {
    while let Ok(ev) = engine.events().recv() {
        let end = matches!(ev, ckpt::Event::Exited(_) | ckpt::Event::Detached);
        if tx.send(Input::Engine(ev)).is_err() {
            engine.kill();
        }
        if end {
            break;
        }
    }
}
