//! A QMP client: QEMU's machine protocol is line-delimited JSON over a
//! unix socket (a greeting, `qmp_capabilities`, then commands with an `id`
//! answered by `{"return"|"error", "id"}`, and asynchronous events).
//!
//! Our own, on `serde_json`, rather than the `qapi` crates: we use six
//! commands and five events, and need what a generated, schema-pinned
//! client does not give: a blocking client with per-command timeouts and no
//! async runtime, that survives the VM being rolled back under it. After a
//! rollback QEMU may send a line twice, answer a command it no longer
//! remembers, or never answer one: answers are matched by id (unknown ids
//! are dropped), every command times out, and a line that does not parse
//! is skipped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// One command as sent: `{"arguments": …, "execute": …, "id": …}`, the
/// fields in the order the `json!` map it replaces wrote them.
#[derive(Debug, Serialize)]
struct Command<'a> {
    /// The command's arguments, when it takes any.
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<Value>,
    /// The command's name.
    execute: &'a str,
    /// Matches the answer to the command.
    id: u64,
}

/// Longest line accepted from QEMU.
const MAX_LINE: usize = 1 << 20;

/// A QMP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached in time.
    #[error("cannot connect to QMP at {path}: {source}; is QEMU running with this -qmp/-chardev socket?")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The last error.
        source: std::io::Error,
    },
    /// QEMU's greeting or capability negotiation was not as expected.
    #[error("QMP handshake at {path} failed: {detail}")]
    Handshake {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Reading or writing the socket failed, or it closed.
    #[error("QMP connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time (QEMU's main loop is busy or hung, or a rollback
    /// took the command back).
    #[error("QMP command {command} got no answer within {timeout:?}")]
    Timeout {
        /// The command.
        command: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// QEMU answered with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QMP error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// A QMP event, the ones `selfheal vm` acts on typed.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpEvent {
    /// The guest panicked (pvpanic, or a Hyper-V/s390 crash notifier).
    GuestPanicked {
        /// What QEMU did: `pause`, `poweroff`, `run`.
        action: String,
    },
    /// The VM stopped running (paused).
    Stop,
    /// The VM runs again.
    Resume,
    /// QEMU is shutting down.
    Shutdown {
        /// The guest asked for it.
        guest: bool,
        /// `guest-shutdown`, `guest-reset`, `guest-panic`, `host-qmp-quit`, …
        reason: String,
    },
    /// The machine was reset (a guest reboot without -no-reboot).
    Reset {
        /// The guest asked for it.
        guest: bool,
        /// Why.
        reason: String,
    },
    /// Any other event, by name.
    Other(String),
    /// The connection closed (QEMU exited, or the socket was closed).
    Closed,
}

impl QmpEvent {
    /// Types an event line's `event` and `data`.
    pub fn from_json(name: &str, data: &Value) -> QmpEvent {
        let s = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let b = |k: &str| data.get(k).and_then(Value::as_bool).unwrap_or(false);
        match name {
            "GUEST_PANICKED" => QmpEvent::GuestPanicked {
                action: s("action"),
            },
            "STOP" => QmpEvent::Stop,
            "RESUME" => QmpEvent::Resume,
            "SHUTDOWN" => QmpEvent::Shutdown {
                guest: b("guest"),
                reason: s("reason"),
            },
            "RESET" => QmpEvent::Reset {
                guest: b("guest"),
                reason: s("reason"),
            },
            other => QmpEvent::Other(other.to_string()),
        }
    }
}

/// What `query-status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    /// `running`, `paused`, `guest-panicked`, `inmigrate`, `shutdown`, …
    pub status: String,
    /// The vCPUs run.
    pub running: bool,
}

type Waiters = Arc<Mutex<HashMap<u64, Sender<Result<Value, QmpError>>>>>;

/// A connected QMP client. Events go to the sender given to
/// [`Qmp::connect`]; commands may be run from any thread.
pub struct Qmp {
    stream: Mutex<UnixStream>,
    waiters: Waiters,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects to `path` (retrying until `timeout`: QEMU creates it while
    /// starting), reads the greeting, negotiates capabilities and starts a
    /// reader thread that sends events to `events` (and [`QmpEvent::Closed`]
    /// at the end).
    pub fn connect(
        path: &Path,
        timeout: Duration,
        events: Sender<QmpEvent>,
    ) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let handshake = |detail: String| QmpError::Handshake {
            path: path.to_path_buf(),
            detail,
        };
        stream.set_read_timeout(Some(timeout.max(Duration::from_secs(1))))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let greeting = read_json(&mut reader)?;
        if greeting.get("QMP").is_none() {
            return Err(handshake(format!("expected a greeting, got {greeting}")));
        }
        let mut w = stream.try_clone()?;
        w.write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":0}\n")?;
        loop {
            let v = read_json(&mut reader)?;
            if v.get("event").is_some() {
                continue;
            }
            if v.get("return").is_some() {
                break;
            }
            return Err(handshake(format!("qmp_capabilities answered {v}")));
        }
        stream.set_read_timeout(None)?;
        let waiters: Waiters = Arc::default();
        let w2 = waiters.clone();
        std::thread::Builder::new()
            .name("selfheal-qmp".into())
            .spawn(move || read_loop(reader, w2, events))?;
        Ok(Qmp {
            stream: Mutex::new(stream),
            waiters,
            next_id: AtomicU64::new(1),
        })
    }

    /// Runs `command` with `args` and waits up to `timeout` for its answer.
    pub fn execute(
        &self,
        command: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = Command {
            arguments: args,
            execute: command,
            id,
        };
        let (tx, rx) = mpsc::channel();
        lock(&self.waiters).insert(id, tx);
        // Serialising a struct of a string, a number and a `Value` cannot fail.
        let mut line = serde_json::to_string(&msg).unwrap_or_default();
        line.push('\n');
        let sent = lock(&self.stream).write_all(line.as_bytes());
        if let Err(e) = sent {
            lock(&self.waiters).remove(&id);
            return Err(QmpError::Io(e));
        }
        let r = rx.recv_timeout(timeout);
        lock(&self.waiters).remove(&id);
        match r {
            Ok(answer) => answer.map_err(|e| match e {
                QmpError::Command { class, desc, .. } => QmpError::Command {
                    command: command.to_string(),
                    class,
                    desc,
                },
                other => other,
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(QmpError::Timeout {
                command: command.to_string(),
                timeout,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(QmpError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QMP socket closed",
            ))),
        }
    }

    /// `query-status`.
    pub fn query_status(&self, timeout: Duration) -> Result<RunState, QmpError> {
        let v = self.execute("query-status", None, timeout)?;
        Ok(RunState {
            status: v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            running: v.get("running").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The vCPU threads: (cpu index, host thread id), from `query-cpus-fast`.
    pub fn vcpu_threads(&self, timeout: Duration) -> Result<Vec<(u32, i32)>, QmpError> {
        let v = self.execute("query-cpus-fast", None, timeout)?;
        Ok(parse_cpus(&v))
    }

    /// Stops the guest's vCPUs (`stop`).
    pub fn stop(&self, timeout: Duration) -> Result<(), QmpError> {
        self.execute("stop", None, timeout).map(drop)
    }

    /// Resumes the guest's vCPUs (`cont`).
    pub fn cont(&self, timeout: Duration) -> Result<(), QmpError> {
        self.execute("cont", None, timeout).map(drop)
    }

    /// Asks QEMU to exit (`quit`); the answer may not come back.
    pub fn quit(&self) {
        let _ = self.execute("quit", None, Duration::from_millis(500));
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // Ends the reader thread (it holds a clone of the socket).
        let _ = lock(&self.stream).shutdown(std::net::Shutdown::Both);
    }
}

/// Parses the answer of `query-cpus-fast`.
pub fn parse_cpus(v: &Value) -> Vec<(u32, i32)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    let idx = c.get("cpu-index")?.as_u64()? as u32;
                    let tid = c.get("thread-id")?.as_i64()? as i32;
                    Some((idx, tid))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_json<R: BufRead>(r: &mut R) -> Result<Value, QmpError> {
    loop {
        let mut line = Vec::new();
        let n = std::io::Read::take(&mut *r, MAX_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(QmpError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QMP socket closed",
            )));
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&line) {
            return Ok(v);
        }
    }
}

/// One line from QEMU, classified.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    Event(QmpEvent),
    Answer(u64, Result<Value, (String, String)>),
    Ignored,
}

/// Classifies one line (pure, for tests and the reader).
pub(crate) fn classify(v: &Value) -> Line {
    if let Some(name) = v.get("event").and_then(Value::as_str) {
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        return Line::Event(QmpEvent::from_json(name, &data));
    }
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        return Line::Ignored;
    };
    if let Some(r) = v.get("return") {
        return Line::Answer(id, Ok(r.clone()));
    }
    if let Some(e) = v.get("error") {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Line::Answer(id, Err((s("class"), s("desc"))));
    }
    Line::Ignored
}

fn read_loop(mut reader: BufReader<UnixStream>, waiters: Waiters, events: Sender<QmpEvent>) {
    while let Ok(v) = read_json(&mut reader) {
        match classify(&v) {
            Line::Event(e) => {
                if events.send(e).is_err() {
                    break;
                }
            }
            Line::Answer(id, r) => {
                if let Some(tx) = lock(&waiters).remove(&id) {
                    let _ = tx.send(r.map_err(|(class, desc)| QmpError::Command {
                        command: String::new(),
                        class,
                        desc,
                    }));
                }
            }
            Line::Ignored => {}
        }
    }
    lock(&waiters).clear();
    let _ = events.send(QmpEvent::Closed);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A command's line is byte for byte what the `json!` map built.
    #[test]
    fn command_lines_match_the_old_json() {
        let bare = Command {
            arguments: None,
            execute: "query-status",
            id: 7,
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            json!({"execute": "query-status", "id": 7}).to_string()
        );
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"execute":"query-status","id":7}"#
        );
        let with = Command {
            arguments: Some(json!({"device": "virtio0", "b": [1]})),
            execute: "x",
            id: 8,
        };
        let mut old = json!({"execute": "x", "id": 8});
        old["arguments"] = json!({"device": "virtio0", "b": [1]});
        assert_eq!(serde_json::to_string(&with).unwrap(), old.to_string());
    }

    // Lines captured from QEMU 7.2 (Debian bookworm).
    #[test]
    fn classifies_real_qemu_lines() {
        let panic: Value = serde_json::from_str(
            r#"{"timestamp": {"seconds": 1796559350, "microseconds": 245646}, "event": "GUEST_PANICKED", "data": {"action": "pause"}}"#,
        )
        .unwrap();
        assert_eq!(
            classify(&panic),
            Line::Event(QmpEvent::GuestPanicked {
                action: "pause".into()
            })
        );
        let status: Value = serde_json::from_str(
            r#"{"return": {"status": "guest-panicked", "singlestep": false, "running": false}, "id": 4}"#,
        )
        .unwrap();
        assert!(matches!(classify(&status), Line::Answer(4, Ok(_))));
        let err: Value = serde_json::from_str(
            r#"{"id": 9, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#,
        )
        .unwrap();
        assert_eq!(
            classify(&err),
            Line::Answer(
                9,
                Err((
                    "CommandNotFound".into(),
                    "The command nope has not been found".into()
                ))
            )
        );
        let shutdown: Value = serde_json::from_str(
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
        )
        .unwrap();
        assert_eq!(
            classify(&shutdown),
            Line::Event(QmpEvent::Shutdown {
                guest: true,
                reason: "guest-shutdown".into()
            })
        );
        assert_eq!(classify(&json!({"QMP": {}})), Line::Ignored);
        assert_eq!(classify(&json!([1, 2])), Line::Ignored);
    }

    #[test]
    fn parses_query_cpus_fast() {
        let v: Value = serde_json::from_str(
            r#"[{"thread-id": 30618, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"}, {"thread-id": 30619, "props": {"core-id": 1, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[2]", "cpu-index": 1, "target": "x86_64"}]"#,
        )
        .unwrap();
        assert_eq!(parse_cpus(&v), vec![(0, 30618), (1, 30619)]);
        assert!(parse_cpus(&json!({"x": 1})).is_empty());
    }

    /// A fake QEMU on a socket pair: greeting, capabilities, then answers
    /// once, twice (a replay after rollback) and never.
    #[test]
    fn matches_answers_by_id_and_times_out_on_lost_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut line = String::new();
            for n in 0.. {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let v: Value = serde_json::from_str(&line).unwrap();
                let id = v["id"].as_u64().unwrap();
                let answer = format!("{{\"return\": {{\"status\": \"running\", \"running\": true}}, \"id\": {id}}}\n");
                match n {
                    // Capabilities; then a garbage line and an event.
                    0 => w
                        .write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\nnot json\n{{\"event\": \"RESUME\", \"data\": {{}}}}\n").as_bytes())
                        .unwrap(),
                    // Answered twice: the second is dropped.
                    1 => w.write_all(format!("{answer}{answer}").as_bytes()).unwrap(),
                    // Never answered.
                    2 => {}
                    _ => w.write_all(answer.as_bytes()).unwrap(),
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        let q = Qmp::connect(&path, Duration::from_secs(5), tx).unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            QmpEvent::Resume
        );
        let st = q.query_status(Duration::from_secs(5)).unwrap();
        assert!(st.running && st.status == "running");
        let lost = q.query_status(Duration::from_millis(300)).unwrap_err();
        assert!(matches!(lost, QmpError::Timeout { .. }), "{lost}");
        assert!(q.query_status(Duration::from_secs(5)).unwrap().running);
        drop(q);
        server.join().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            QmpEvent::Closed
        );
    }
}
