//! A program's stderr passes through the supervisor so that its last lines
//! can go into the crash event: a pump thread copies the pipe to the real
//! destination and keeps a ring of recent lines.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use selfheal_config::Output;
use selfheal_sys::child::{poll_readable_any, set_nonblocking};

use crate::child::StdioSpec;

/// Longest line kept; longer lines are cut (a binary blob on stderr must
/// not fill the event).
const MAX_LINE: usize = 1024;

/// The last lines written, including an unfinished last line.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    max_lines: usize,
}

impl Tail {
    /// Keeps up to `max_lines` lines.
    pub fn new(max_lines: usize) -> Tail {
        Tail {
            lines: VecDeque::with_capacity(max_lines.min(64)),
            partial: Vec::new(),
            max_lines,
        }
    }

    /// Adds bytes as they were written.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.max_lines == 0 {
            return;
        }
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.partial.len());
            let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            self.partial
                .extend_from_slice(&body[..body.len().min(room)]);
            if chunk.ends_with(b"\n") {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                if self.lines.len() == self.max_lines {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            }
        }
    }

    /// The kept lines, oldest first, with an unfinished last line.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            v.push(String::from_utf8_lossy(&self.partial).into_owned());
            if v.len() > self.max_lines {
                v.remove(0);
            }
        }
        v
    }
}

/// Opens where a stream goes for the program: the supervisor's own stream,
/// `/dev/null` or an appended log file.
pub fn open_output(out: &Output) -> io::Result<StdioSpec> {
    Ok(match out {
        Output::Inherit => StdioSpec::Inherit,
        Output::Null => StdioSpec::Null,
        Output::File(p) => StdioSpec::Fd(OwnedFd::from(open_log(p)?)),
    })
}

fn open_log(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open log file {}: {e}", p.display()),
            )
        })
}

/// Where the pump copies to.
enum Dest {
    Stderr,
    Null,
    File(File),
}

impl Dest {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Dest::Stderr => io::stderr().lock().write_all(bytes),
            Dest::Null => Ok(()),
            Dest::File(f) => f.write_all(bytes),
        }
    }
}

/// The pump thread for one run of a program.
#[derive(Debug)]
pub struct StderrPump {
    tail: Arc<Mutex<Tail>>,
    ctl: UnixStream,
    acks: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl StderrPump {
    /// Creates the pipe and the thread. Returns the pump and the write end
    /// for the program's stderr.
    pub fn start(out: &Output, tail_lines: usize, app: &str) -> io::Result<(StderrPump, OwnedFd)> {
        let mut dest = match out {
            Output::Inherit => Dest::Stderr,
            Output::Null => Dest::Null,
            Output::File(p) => Dest::File(open_log(p)?),
        };
        let (read, write) = selfheal_sys::child::pipe_cloexec()?;
        set_nonblocking(read.as_fd(), true)?;
        let (ctl, ctl_peer) = UnixStream::pair()?;
        ctl_peer.set_nonblocking(true)?;
        let tail = Arc::new(Mutex::new(Tail::new(tail_lines)));
        let (ack_tx, acks) = mpsc::sync_channel(4);
        let t = Arc::clone(&tail);
        let thread = std::thread::Builder::new()
            .name(format!("selfheal-err-{app}"))
            .spawn(move || pump(File::from(read), ctl_peer, &t, &mut dest, ack_tx))?;
        Ok((
            StderrPump {
                tail,
                ctl,
                acks,
                thread: Some(thread),
            },
            write,
        ))
    }

    /// Copies out everything the program has written so far (waiting at
    /// most `timeout` for the destination) and returns the last lines.
    pub fn drain(&mut self, timeout: Duration) -> Vec<String> {
        while self.acks.try_recv().is_ok() {}
        if self.ctl.write_all(b"d").is_ok() {
            let _ = self.acks.recv_timeout(timeout);
        }
        self.lines()
    }

    /// The last lines seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).lines()
    }
}

impl Drop for StderrPump {
    /// Tells the thread to copy what is queued and end; does not wait
    /// for it (a stalled destination must not stall the supervisor).
    fn drop(&mut self) {
        let _ = self.ctl.write_all(b"q");
        drop(self.thread.take());
    }
}

/// Copies what is readable now; false at end of file.
fn copy_available(read: &mut File, buf: &mut [u8], tail: &Mutex<Tail>, dest: &mut Dest) -> bool {
    loop {
        match read.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                tail.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(&buf[..n]);
                // A destination that fails (closed terminal, full disk) must
                // not stop the tail from being kept.
                let _ = dest.write(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

fn pump(
    mut read: File,
    mut ctl: UnixStream,
    tail: &Mutex<Tail>,
    dest: &mut Dest,
    acks: SyncSender<()>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut open = true;
    loop {
        let ready = if open {
            poll_readable_any(&[read.as_fd(), ctl.as_fd()], None).unwrap_or(0b10)
        } else {
            poll_readable_any(&[ctl.as_fd()], None)
                .map(|m| m << 1)
                .unwrap_or(0b10)
        };
        if ready & 1 != 0 && open {
            open = copy_available(&mut read, &mut buf, tail, dest);
        }
        if ready & 0b10 != 0 {
            let mut cmd = [0u8; 16];
            let n = match ctl.read(&mut cmd) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            };
            if open {
                open = copy_available(&mut read, &mut buf, tail, dest);
            }
            let _ = acks.try_send(());
            if cmd[..n].contains(&b'q') {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_and_partial() {
        let mut t = Tail::new(3);
        t.push(b"one\ntwo\nthr");
        t.push(b"ee\nfour\nfive");
        assert_eq!(t.lines(), vec!["three", "four", "five"]);
        t.push(b"\n");
        assert_eq!(t.lines(), vec!["three", "four", "five"]);
        let mut long = Tail::new(2);
        long.push(&vec![b'x'; 5000]);
        long.push(b"\n");
        assert_eq!(long.lines()[0].len(), MAX_LINE);
        let mut none = Tail::new(0);
        none.push(b"a\n");
        assert!(none.lines().is_empty());
    }

    #[test]
    fn pump_copies_to_a_file_and_keeps_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("err.log");
        let (mut pump, w) = StderrPump::start(&Output::File(log.clone()), 2, "t").unwrap();
        let mut w = File::from(w);
        w.write_all(b"a\nb\nc\nboom").unwrap();
        let lines = pump.drain(Duration::from_secs(5));
        assert_eq!(lines, vec!["c", "boom"]);
        drop(w);
        drop(pump);
        // The file gets everything, not just the tail.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&log).unwrap() != "a\nb\nc\nboom" {
            assert!(std::time::Instant::now() < deadline, "log incomplete");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
