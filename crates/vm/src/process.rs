//! QEMU as a process: under the checkpoint engine (checkpoints on), or a
//! plain child. Either way its end reaches the run loop as an input.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use selfheal_checkpoint::{
    self as ckpt, Engine, ExitInfo, LaunchSpec, Older, Program, StdioSpec, Target,
};
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
            let stream =
                |f: Option<File>| f.map_or(StdioSpec::Inherit, |f| StdioSpec::Fd(f.into()));
            let spec = LaunchSpec {
                program: Program {
                    argv,
                    stdio: [
                        StdioSpec::Fd(OwnedFd::from(null)),
                        stream(stdout),
                        stream(stderr),
                    ],
                    // Ctrl-C on a terminal reaches selfheal, which stops QEMU.
                    new_process_group: true,
                    ..Program::default()
                },
                ..LaunchSpec::default()
            };
            let config = engine_config(cfg, sockets);
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

/// The checkpoint engine's settings for a VM.
///
/// The engine's own recurrence watch is off (`recurrence_window` zero):
/// the VM policy keeps its own ([`crate::policy`]: a trigger within its
/// recurrence window rolls back further, by asking for a checkpoint from
/// before the first fault's onset minus a growing step), so the engine
/// need not hold back checkpoints after a rollback to keep the older
/// history. Holding them back for the policy's 5 s window, as it did,
/// left a VM that met a second, unrelated fault in that time with only
/// the checkpoint the first rollback restored, seconds old, and nothing
/// older to go to once that one did not clear it (`HistoryExhausted`).
/// The checkpoints from before the rollback stay in the history (one per
/// `older_every` back to `older_span`), older than any taken after it,
/// so a recurrence still reaches them.
pub(crate) fn engine_config(cfg: &VmConfig, sockets: &Sockets) -> ckpt::Config {
    let c = &cfg.checkpoint;
    ckpt::Config {
        interval: c.interval.get(),
        keep: c.keep,
        recurrence_window: Duration::ZERO,
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

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt::{Event, RollbackReport};

    fn next_rollback(engine: &Engine, checkpoints: &mut u32) -> RollbackReport {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match engine.events().recv_timeout(left) {
                Ok(Event::RolledBack(r)) => return r,
                Ok(Event::Checkpoint(_)) => *checkpoints += 1,
                Ok(Event::RollbackImpossible { why, .. }) => panic!("rollback refused: {why:?}"),
                Ok(Event::Exited(e)) => panic!("the program ended: {e:?}"),
                Ok(_) => {}
                Err(e) => panic!("no rollback within 30 s: {e}"),
            }
        }
    }

    /// Checkpoints taken until `until`.
    fn checkpoints_until(engine: &Engine, until: Instant) -> u32 {
        let mut n = 0;
        while let Ok(ev) = engine
            .events()
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            if let Event::Checkpoint(_) = ev {
                n += 1;
            }
        }
        n
    }

    /// The engine as a VM runs it, on a real program (a shell loop that
    /// keeps writing its memory): after a rollback, checkpoints resume at
    /// once, so a second fault soon after is rolled back to a checkpoint
    /// taken since the first rollback, not again to the one that rollback
    /// restored; and a recurrence (the policy asking for a checkpoint from
    /// before the first fault) still finds an older one.
    #[test]
    fn checkpoints_resume_after_a_rollback_and_older_history_stays() {
        if !selfheal_sys::process::is_root() {
            eprintln!("SKIPPED: needs root (ptrace, userfaultfd)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = VmConfig::new("t", vec!["sh".into()]);
        let config = engine_config(&cfg, &Sockets::in_dir(dir.path()));
        assert_eq!(config.interval, Duration::from_millis(50));
        let spec = LaunchSpec {
            program: Program {
                argv: ["sh", "-c", "i=0; while :; do i=$((i+1)); done"]
                    .map(String::from)
                    .to_vec(),
                ..Program::default()
            },
            ..LaunchSpec::default()
        };
        let engine = Engine::start(Target::Launch(spec), config).unwrap();
        let control = engine.control();
        let mut n = 0;
        // Longer than `older_every` (1 s): the history keeps one checkpoint
        // a second older than the newest 8, the first (taken before the
        // shell set its signal handlers, so not one to roll back to) and
        // one about a second later.
        checkpoints_until(&engine, Instant::now() + Duration::from_millis(1600));

        // The first fault, found at `fault1`.
        let fault1 = Instant::now();
        control.request_rollback(Some(fault1));
        let r1 = next_rollback(&engine, &mut n);
        let resumed = Instant::now();
        // Within the policy's 5 s recurrence window: checkpoints go on.
        let after = checkpoints_until(&engine, resumed + Duration::from_millis(1500));
        assert!(
            after >= 3,
            "only {after} checkpoints in the 1.5 s after a rollback"
        );

        // A second, unrelated fault: rolled back to a fresh checkpoint.
        control.request_rollback(Some(Instant::now()));
        let r2 = next_rollback(&engine, &mut n);
        assert!(
            r2.checkpoint_id > r1.checkpoint_id,
            "second rollback went to checkpoint {} (the first restored {})",
            r2.checkpoint_id,
            r1.checkpoint_id
        );
        assert!(r2.checkpoint_age_ms < 1000, "{r2:?}");

        // A recurrence of the first fault: the policy asks for a checkpoint
        // from before its onset minus a step; one from before the first
        // rollback's target is still there.
        control.request_rollback(Some(fault1 - Duration::from_millis(300)));
        let r3 = next_rollback(&engine, &mut n);
        assert!(
            r3.checkpoint_id < r1.checkpoint_id,
            "recurrence went to {} (first rollback: {})",
            r3.checkpoint_id,
            r1.checkpoint_id
        );
        engine.kill();
    }
}
