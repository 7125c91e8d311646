//! The supervisor drives programs only through `Launcher` and
//! `ChildHandle`, so a launcher whose processes are reaped elsewhere (the
//! checkpoint engine's ptrace tracer) fits in. This fake records what the
//! supervisor asks of it and ends "programs" when the test says so.

mod common;

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use common::*;
use selfheal_config::AppConfig;
use selfheal_event::{EventKind, MemorySink};
use selfheal_supervise::{
    ChildError, ChildHandle, ExitStatus, LaunchError, LaunchSpec, Launcher, Options, SignalScope,
    Supervisor,
};

/// The test's side of one fake program.
#[derive(Clone)]
struct Control {
    pid: i32,
    status: Arc<Mutex<Option<ExitStatus>>>,
    bell: Arc<UnixStream>,
    signals: Arc<Mutex<Vec<(i32, SignalScope)>>>,
    argv: Vec<String>,
}

impl Control {
    fn end(&self, s: ExitStatus) {
        *self.status.lock().unwrap() = Some(s);
        let _ = (&*self.bell).write_all(b"x");
    }
}

struct FakeChild {
    c: Control,
    exit: UnixStream,
}

impl ChildHandle for FakeChild {
    fn pid(&self) -> i32 {
        self.c.pid
    }
    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.exit.as_fd()
    }
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, ChildError> {
        Ok(*self.c.status.lock().unwrap())
    }
    fn signal(&self, signal: i32, scope: SignalScope) -> Result<(), ChildError> {
        if self.c.status.lock().unwrap().is_some() {
            return Err(ChildError::Gone { pid: self.c.pid });
        }
        self.c.signals.lock().unwrap().push((signal, scope));
        if signal == libc::SIGTERM {
            self.c.end(ExitStatus::killed(signal, false));
        }
        Ok(())
    }
}

#[derive(Default)]
struct FakeLauncher {
    launched: Mutex<Vec<Control>>,
}

impl Launcher for FakeLauncher {
    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn ChildHandle>, LaunchError> {
        let (exit, bell) = UnixStream::pair().unwrap();
        let mut launched = self.launched.lock().unwrap();
        // Pids no real process has (above the kernel's pid_max ceiling).
        let c = Control {
            pid: 0x4000_0000 + launched.len() as i32,
            status: Arc::default(),
            bell: Arc::new(bell),
            signals: Arc::default(),
            argv: spec.program.argv.clone(),
        };
        launched.push(c.clone());
        Ok(Box::new(FakeChild { c, exit }))
    }
}

impl FakeLauncher {
    fn nth(&self, n: usize) -> Control {
        wait_until(|| self.launched.lock().unwrap().len() > n);
        self.launched.lock().unwrap()[n].clone()
    }
}

fn wait_until(f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + SOON;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn crash_restart_and_shutdown_through_the_traits_only() {
    let launcher = Arc::new(FakeLauncher::default());
    let options = Options {
        launcher: launcher.clone(),
        ..Options::default()
    };
    let sink = Arc::new(MemorySink::new());
    let a = AppConfig::new("fake", vec!["/not/run".into(), "--flag".into()]);
    let sup = Supervisor::start_with(vec![a], sink.clone() as _, options).unwrap();

    let first = launcher.nth(0);
    assert_eq!(first.argv, vec!["/not/run", "--flag"]);
    first.end(ExitStatus::exited(3));
    let events = wait_kind(&sink, EventKind::AppRestart, 1);
    let crash = &of(&events, EventKind::AppCrash)[0];
    assert_eq!(crash.details["exit_code"], 3);
    assert_eq!(pid_of(crash), first.pid);
    let second = launcher.nth(1);
    assert_eq!(pid_of(&of(&events, EventKind::AppRestart)[0]), second.pid);
    assert_eq!(sup.snapshot()[0].pid, Some(second.pid));

    let results = sup.shutdown();
    assert_eq!(
        *second.signals.lock().unwrap(),
        vec![(libc::SIGTERM, SignalScope::Group)]
    );
    assert!(first.signals.lock().unwrap().is_empty());
    assert_eq!(
        results[0].1.last_exit,
        Some(ExitStatus::killed(libc::SIGTERM, false))
    );
}
