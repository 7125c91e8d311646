//! Speaks the systemd notify protocol through `$NOTIFY_SOCKET`:
//! `READY=1` after `--ready-after MS` (unless `--no-ready 1`), then
//! `WATCHDOG=1` every `--interval MS`, `--pings N` times (0: forever), then
//! goes silent but stays alive. `--status TEXT` sends `STATUS=`,
//! `--watchdog-usec N` sends `WATCHDOG_USEC=N`, `--stop-after-pings 1`
//! sends `STOPPING=1` and exits 0 instead of going silent.
//! `--extend-usec N` first sends `EXTEND_TIMEOUT_USEC=N` (more time to
//! start).

#![forbid(unsafe_code)]

use std::os::unix::net::UnixDatagram;

use selfheal_testprogs::{sleep_forever, stamp, Args};

fn send(sock: &UnixDatagram, target: &str, msg: &str) {
    let r = if let Some(abstract_name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), target)
    };
    if let Err(e) = r {
        eprintln!("tp-notify: sending {msg:?} to {target}: {e}");
    }
}

fn main() {
    let args = Args::from_env();
    let stamps = args.stamp_file();
    stamp(stamps.as_deref(), "start");
    let target = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is not set");
    let sock = UnixDatagram::unbound().expect("socket");
    println!(
        "tp-notify: pid {} started, WATCHDOG_USEC={:?}",
        std::process::id(),
        std::env::var("WATCHDOG_USEC").ok()
    );
    if let Some(usec) = args.get("extend-usec") {
        send(&sock, &target, &format!("EXTEND_TIMEOUT_USEC={usec}"));
    }
    std::thread::sleep(args.millis("ready-after", 0));
    if let Some(usec) = args.get("watchdog-usec") {
        send(&sock, &target, &format!("WATCHDOG_USEC={usec}"));
    }
    if args.num("no-ready", 0) == 0 {
        let status = args.get("status").unwrap_or("serving");
        send(&sock, &target, &format!("READY=1\nSTATUS={status}"));
        stamp(stamps.as_deref(), "ready");
    }
    let pings = args.num("pings", 0);
    let interval = args.millis("interval", 100);
    let mut sent = 0;
    while pings == 0 || sent < pings {
        send(&sock, &target, "WATCHDOG=1");
        stamp(stamps.as_deref(), "ping");
        sent += 1;
        std::thread::sleep(interval);
    }
    if args.num("stop-after-pings", 0) == 1 {
        send(&sock, &target, "STOPPING=1");
        std::process::exit(0);
    }
    eprintln!("tp-notify: stopped sending WATCHDOG=1 after {sent} pings");
    stamp(stamps.as_deref(), "silent");
    sleep_forever();
}
