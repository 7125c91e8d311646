//! Liveness probes with Kubernetes semantics: after `initial_delay`, one
//! check every `period`, each bounded by `timeout`. A thread per probe
//! runs the checks and reports every outcome; the supervision thread
//! counts consecutive failures against `failure_threshold`.

mod error;
mod exec;
mod http;

pub use error::ProbeError;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use selfheal_config::{ProbeCheck, ProbeConfig};

use crate::mailbox::{Msg, Waker};

/// The result of one check.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    /// Index of the probe in the app's list.
    pub probe: usize,
    /// Success.
    pub ok: bool,
    /// What was seen: `HTTP 200`, `connected`, `exit status 0`, or why it
    /// failed.
    pub detail: String,
    /// When the check started.
    pub started: Instant,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs one check now, bounded by `timeout`. `Ok` carries what was seen,
/// `Err` why it failed.
pub fn check_once(check: &ProbeCheck, timeout: Duration) -> Result<String, ProbeError> {
    let deadline = Instant::now() + timeout;
    match check {
        ProbeCheck::Tcp { address } => {
            let stream = connect(address, deadline)?;
            drop(stream);
            Ok(format!("connected to {address}"))
        }
        ProbeCheck::Http { url, expect_status } => {
            let status = http::get_status(url, deadline)?;
            if expect_status.contains(status) {
                Ok(format!("HTTP {status}"))
            } else {
                Err(ProbeError::Status {
                    status,
                    expected: *expect_status,
                })
            }
        }
        ProbeCheck::Exec { command } => exec::run(command, deadline),
    }
}

/// Connects to `address` (`host:port`), trying each resolved address, all
/// within `deadline`.
pub(crate) fn connect(address: &str, deadline: Instant) -> Result<TcpStream, ProbeError> {
    // Name resolution has no timeout of its own; probes normally name an
    // IP address or localhost.
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|source| ProbeError::Resolve {
            address: address.to_string(),
            source,
        })?
        .collect();
    let mut last = ProbeError::NoAddress {
        address: address.to_string(),
    };
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::ConnectTimeout {
                address: address.to_string(),
            });
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = ProbeError::ConnectTimeout {
                    address: a.to_string(),
                }
            }
            Err(source) => {
                last = ProbeError::Connect {
                    address: a.to_string(),
                    source,
                }
            }
        }
    }
    Err(last)
}

/// A running probe thread; dropping it asks the thread to stop after its
/// current check (which its timeout bounds).
#[derive(Debug)]
pub struct ProbeThread {
    stop: Sender<()>,
}

/// Starts the thread for probe `index` of a program started at `started`.
pub fn spawn(
    index: usize,
    app: &str,
    cfg: &ProbeConfig,
    started: Instant,
    run: u64,
    waker: Waker,
) -> std::io::Result<ProbeThread> {
    let (stop, stopped) = mpsc::channel::<()>();
    let cfg = cfg.clone();
    let app_name = app.to_string();
    std::thread::Builder::new()
        .name(format!("selfheal-probe-{app}"))
        .spawn(move || {
            let mut next = started + cfg.initial_delay.get();
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let t0 = Instant::now();
                let result = check_once(&cfg.check, cfg.timeout.get());
                let elapsed = t0.elapsed();
                // Not a verdict on the app: the machine refused the fork
                // (a fork bomb, or selfheal holding forks while it stops
                // one). Not counted either way; the next check decides.
                if let Err(e) = &result {
                    if e.is_transient_launch() {
                        tracing::warn!(
                            "{app_name}: probe {index} could not start its command ({e}); not counted"
                        );
                        next = (t0 + cfg.period.get()).max(Instant::now());
                        continue;
                    }
                }
                let (ok, detail) = match result {
                    Ok(d) => (true, d),
                    Err(e) => (false, e.to_string()),
                };
                let outcome = ProbeOutcome {
                    probe: index,
                    ok,
                    detail,
                    started: t0,
                    elapsed,
                };
                if !waker.send(Msg::Probe { run, outcome }) {
                    return;
                }
                // No burst to catch up after a slow check.
                next = (t0 + cfg.period.get()).max(Instant::now());
            }
        })?;
    Ok(ProbeThread { stop })
}

impl Drop for ProbeThread {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_config::StatusRange;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn tcp_probe_sees_a_listener_and_its_absence() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let check = ProbeCheck::Tcp {
            address: addr.clone(),
        };
        assert!(check_once(&check, Duration::from_secs(5)).is_ok());
        drop(l);
        let err = check_once(&check, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot connect"), "{err}");
    }

    #[test]
    fn http_probe_checks_status_and_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // First connection: 503. Second: accepted, never answered.
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            c.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            let (silent, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(600));
            drop(silent);
            req
        });
        let check = ProbeCheck::Http {
            url: format!("http://127.0.0.1:{port}/healthz"),
            expect_status: StatusRange::default(),
        };
        let err = check_once(&check, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP 503"), "{err}");
        let t0 = Instant::now();
        let err = check_once(&check, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(
            t0.elapsed() < Duration::from_millis(550),
            "{:?}",
            t0.elapsed()
        );
        let req = server.join().unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(
            req.to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
    }

    #[test]
    fn exec_probe_status_and_timeout() {
        let ok = ProbeCheck::Exec {
            command: vec!["true".into()],
        };
        assert!(check_once(&ok, Duration::from_secs(5)).is_ok());
        let fail = ProbeCheck::Exec {
            command: vec!["sh".into(), "-c".into(), "echo sick >&2; exit 2".into()],
        };
        let err = check_once(&fail, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("status 2") && err.contains("sick"), "{err}");
        let slow = ProbeCheck::Exec {
            command: vec!["sleep".into(), "30".into()],
        };
        let t0 = Instant::now();
        let err = check_once(&slow, Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
