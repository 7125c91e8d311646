//! The host's end of the guest link: a thread that connects to the unix
//! socket QEMU listens on for the guest's virtio-serial port, reads the
//! guest's lines and hands them on. The connection is re-made whenever it
//! ends (a rollback to a checkpoint from before it was accepted closes it;
//! QEMU accepts the next one). [`Link::send`] writes the host's messages
//! the other way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use selfheal_guestlink::{BadLine, GuestMessage, LineReader};

/// What the link thread reports.
#[derive(Debug)]
pub enum LinkInput {
    /// Connected to QEMU's end.
    Up,
    /// A message from the guest, read at host CLOCK_MONOTONIC `read_us`
    /// (µs: a heartbeat's arrival bounds the guest's clock offset).
    Message {
        /// The message.
        msg: GuestMessage,
        /// When the link thread read it.
        read_us: u64,
    },
    /// A line that was not one.
    Bad(BadLine),
    /// The connection ended.
    Down,
}

/// The running link thread.
pub struct Link {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<UnixStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Link {
    /// Starts connecting to `path`; every input goes through `wrap` to `tx`.
    pub fn spawn<T: Send + 'static>(
        path: PathBuf,
        tx: Sender<T>,
        wrap: fn(LinkInput) -> T,
    ) -> std::io::Result<Link> {
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<UnixStream>>> = Arc::default();
        let (s, c) = (stop.clone(), current.clone());
        let thread = std::thread::Builder::new()
            .name("selfheal-vm-link".into())
            .spawn(move || run(path, tx, wrap, s, c))?;
        Ok(Link {
            stop,
            current,
            thread: Some(thread),
        })
    }

    /// Writes one line to the guest. False when the link is down or the
    /// line did not go out within [`SEND_TIMEOUT`] (a guest that does not
    /// read its port fills QEMU's buffers; the host never blocks on it).
    pub fn send(&self, line: &[u8]) -> bool {
        let cur = lock(&self.current);
        let Some(s) = cur.as_ref() else {
            return false;
        };
        let mut s: &UnixStream = s;
        match s.write_all(line) {
            Ok(()) => true,
            Err(_) => {
                // Possibly cut short: end the line so the guest's reader
                // resynchronises.
                let _ = s.write(b"\n");
                false
            }
        }
    }
}

/// How long a write to the guest may block.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(100);

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = lock(&self.current).as_ref() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run<T>(
    path: PathBuf,
    tx: Sender<T>,
    wrap: fn(LinkInput) -> T,
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<UnixStream>>>,
) {
    let mut reader = LineReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = UnixStream::connect(&path) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
        if let Ok(c) = stream.try_clone() {
            *lock(&current) = Some(c);
        }
        // Checked again: a stop between the check above and now would
        // otherwise leave us blocked on a stream nobody shuts down.
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if tx.send(wrap(LinkInput::Up)).is_err() {
            return;
        }
        reader.reset();
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let read_us = selfheal_sys::bpf::monotonic_ns() / 1000;
                    for m in reader.push(&buf[..n]) {
                        let input = match m {
                            Ok(msg) => LinkInput::Message { msg, read_us },
                            Err(bad) => LinkInput::Bad(bad),
                        };
                        if tx.send(wrap(input)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        *lock(&current) = None;
        if tx.send(wrap(LinkInput::Down)).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    #[test]
    fn reads_lines_and_reconnects_after_the_peer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let link = Link::spawn(path, tx, |i| i).unwrap();
        let beat = |seq| {
            GuestMessage::Heartbeat {
                seq,
                mono_ms: 0,
                unix_ms: 0,
                healthy: true,
            }
            .to_line()
        };
        for round in 0..2u64 {
            let (mut s, _) = listener.accept().unwrap();
            let mut bytes = b"garbage\n".to_vec();
            bytes.extend(beat(round));
            s.write_all(&bytes).unwrap();
            drop(s);
            let got: Vec<LinkInput> = (0..4)
                .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
                .collect();
            assert!(matches!(got[0], LinkInput::Up), "{got:?}");
            assert!(matches!(got[1], LinkInput::Bad(_)), "{got:?}");
            assert!(
                matches!(&got[2], LinkInput::Message { msg: GuestMessage::Heartbeat { seq, .. }, read_us } if *seq == round && *read_us > 0),
                "{got:?}"
            );
            assert!(matches!(got[3], LinkInput::Down), "{got:?}");
        }
        drop(link);
    }

    #[test]
    fn host_messages_reach_the_peer_as_lines() {
        use selfheal_guestlink::HostMessage;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let link = Link::spawn(path, tx, |i| i).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            LinkInput::Up
        ));
        let m = HostMessage::Rollback {
            seq: 1,
            rolled_back_ms: 900,
            pause_ms: 12,
            trigger: "panic".into(),
        };
        assert!(link.send(&m.to_line()));
        let mut buf = vec![0u8; m.to_line().len()];
        s.read_exact(&mut buf).unwrap();
        let got = selfheal_guestlink::LineReader::<HostMessage>::of().push(&buf);
        assert_eq!(got, vec![Ok(m)]);
        drop(s);
        drop(link);
    }
}
