//! systemd integration: the notify protocol as `Type=notify` with
//! `WatchdogSec=` sees it, against a socket of our own.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let store = dir.path().join("s.db");
    let mut d = DaemonProc::start(
        &["--listen", "", "--store", store.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
        None,
    );
    let mut buf = [0u8; 512];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notify message within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.starts_with("READY=1"), "{first}");
    assert!(first.contains("STATUS=watching"), "{first}");
    // Pings at half the 200 ms interval while the light detector is healthy.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        let m = recv();
        assert_eq!(m, "WATCHDOG=1");
        pings += 1;
    }
    let per_ping = start.elapsed() / pings;
    assert!(
        per_ping < Duration::from_millis(200),
        "pings every {per_ping:?}"
    );
    let _ = std::process::Command::new("kill")
        .arg(d.child.id().to_string())
        .status();
    let stopping = loop {
        let m = recv();
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert_eq!(stopping, "STOPPING=1");
    assert!(d.terminate().success());
}
