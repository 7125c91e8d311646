//! Exec probes: run a command; exit status 0 within the timeout is
//! success. The command runs in its own process group, which is killed
//! whole when the timeout passes.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::time::Instant;

use selfheal_sys::child::{pipe_cloexec, set_nonblocking};
use selfheal_sys::poll::poll_readable;

use super::ProbeError;
use crate::child::{ChildHandle, LaunchSpec, ProcessChild, Program, SignalScope, StdioSpec};

/// Bytes of the command's stderr quoted in a failure.
const STDERR_QUOTE: usize = 512;

pub(crate) fn run(command: &[String], deadline: Instant) -> Result<String, ProbeError> {
    let (err_r, err_w) = pipe_cloexec()?;
    let spec = LaunchSpec {
        program: Program {
            argv: command.to_vec(),
            stdio: [StdioSpec::Null, StdioSpec::Null, StdioSpec::Fd(err_w)],
            new_process_group: true,
            ..Program::default()
        },
        kill_group_on_exit: true,
        parent_death_signal: Some(libc::SIGKILL),
    };
    let mut child = ProcessChild::spawn(spec)?;
    let ended = poll_readable(
        child.exit_fd(),
        Some(deadline.saturating_duration_since(Instant::now())),
    )?;
    if !ended {
        let _ = child.signal(libc::SIGKILL, SignalScope::Group);
        // Dropping the handle reaps it.
        return Err(ProbeError::ExecTimeout {
            program: command[0].clone(),
        });
    }
    let status = child.try_wait()?.ok_or(ProbeError::ExecUnknown)?;
    if status.success() {
        return Ok("exit status 0".to_string());
    }
    // Whatever it wrote before ending is in the pipe; a grandchild holding
    // the write end must not block us, hence non-blocking.
    let mut quote = Vec::new();
    let _ = set_nonblocking(err_r.as_fd(), true);
    let _ = File::from(err_r)
        .take(STDERR_QUOTE as u64)
        .read_to_end(&mut quote);
    let quote = String::from_utf8_lossy(&quote);
    Err(ProbeError::ExecFailed {
        status: status.describe(),
        stderr: quote.trim().to_string(),
    })
}
