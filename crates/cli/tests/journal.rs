//! Logging to systemd's journal: `log_format = "auto"` picks the journal
//! only when systemd started the daemon, and the datagrams it sends are
//! journald's native protocol with structured fields.
//!
//! PID 1 on the test machine need not be systemd and journald need not run,
//! so the journal test binds its own datagram socket and mounts it over
//! /run/systemd/journal in a private mount namespace of the daemon (root
//! and unshare(1) needed; otherwise it says why it skips).

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, DaemonProc};

/// `auto` outside systemd: human lines on stderr, as before.
#[test]
fn auto_outside_systemd_logs_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let mut cmd_env = vec![];
    // A test run from a unit inherits these; the daemon must not.
    for k in ["JOURNAL_STREAM", "INVOCATION_ID"] {
        if std::env::var_os(k).is_some() {
            cmd_env.push(k);
        }
    }
    let mut d = DaemonProc::start_without_env(
        &[
            "--store",
            store.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "auto",
        ],
        &cmd_env,
    );
    d.wait_http(Duration::from_secs(30));
    assert!(d.terminate().success(), "{}", d.log_text());
    assert!(d.log_text().contains(" INFO "), "{}", d.log_text());
}

/// A bad --log-format value is a usage error naming the choices.
#[test]
fn bad_log_format_is_usage_error() {
    let (code, _, err) = common::run(&["watch", "--log-format", "xml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("journal") && err.contains("auto"), "{err}");
}

/// One journald native-protocol datagram: `KEY=VALUE\n`, or for values
/// with newlines `KEY\n` + 64-bit little-endian length + bytes + `\n`.
fn parse_datagram(mut b: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut fields = HashMap::new();
    while !b.is_empty() {
        let nl = b
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("field without newline")?;
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            let key = String::from_utf8(line[..eq].to_vec()).map_err(|e| e.to_string())?;
            let val = String::from_utf8_lossy(&line[eq + 1..]).into_owned();
            fields.insert(key, val);
            b = &b[nl + 1..];
        } else {
            let key = String::from_utf8(line.to_vec()).map_err(|e| e.to_string())?;
            let rest = &b[nl + 1..];
            if rest.len() < 8 {
                return Err(format!("{key}: truncated length"));
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let data = rest.get(8..8 + len).ok_or(format!("{key}: short value"))?;
            if rest.get(8 + len) != Some(&b'\n') {
                return Err(format!("{key}: value not followed by a newline"));
            }
            fields.insert(key, String::from_utf8_lossy(data).into_owned());
            b = &rest[8 + len + 1..];
        }
    }
    for k in fields.keys() {
        // journald drops fields whose names break its rules.
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(format!("field name {k:?} is not valid for journald"));
        }
    }
    Ok(fields)
}

#[test]
fn datagram_parser_checks_the_framing() {
    let mut d = b"MESSAGE\n".to_vec();
    d.extend_from_slice(&3u64.to_le_bytes());
    d.extend_from_slice(b"a\nb\nPRIORITY=5\n");
    let f = parse_datagram(&d).unwrap();
    assert_eq!(f["MESSAGE"], "a\nb");
    assert_eq!(f["PRIORITY"], "5");
    assert!(parse_datagram(b"lower=1\n").is_err());
    assert!(parse_datagram(b"X=1").is_err());
}

/// Under systemd (INVOCATION_ID set, journal socket present) `auto` sends
/// every log record to the journal socket, with structured fields.
#[test]
fn auto_under_systemd_logs_to_the_journal_socket() {
    if !selfheal_sys::process::is_root() {
        println!("SKIP journal socket test: needs root for a private mount namespace");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        println!("SKIP journal socket test: unshare(1) not installed (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    std::fs::create_dir(&jdir).unwrap();
    let sock = UnixDatagram::bind(jdir.join("socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let store = dir.path().join("s.db");
    // /run/systemd may be absent (no systemd here): cover /run then.
    let over = if std::path::Path::new("/run/systemd").is_dir() {
        "/run/systemd"
    } else {
        "/run"
    };
    let script = format!(
        "set -e; mount -t tmpfs selfheal-test {over}; mkdir -p /run/systemd/journal; \
         mount --bind \"$1\" /run/systemd/journal; shift; exec \"$@\""
    );
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(&jdir)
        .arg(bin())
        .args(["watch", "--listen", "127.0.0.1:0", "--store"])
        .arg(&store)
        .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let mut child = common::ChildGuard(child);

    let mut records = Vec::new();
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(n) = sock.recv(&mut buf) {
            let f = parse_datagram(&buf[..n])
                .unwrap_or_else(|e| panic!("malformed datagram ({e}): {:?}", &buf[..n]));
            let serving = f
                .get("MESSAGE")
                .is_some_and(|m| m.contains("serving http://"));
            records.push(f);
            if serving {
                break;
            }
        }
        if let Ok(Some(st)) = child.0.try_wait() {
            let mut err = String::new();
            let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("daemon exited with {st}: {err}");
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let status = child.0.wait().unwrap();
    let mut stderr = String::new();
    let _ = child.0.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(status.success(), "daemon failed: {status}: {stderr}");

    let serving = records
        .iter()
        .find(|f| {
            f.get("MESSAGE")
                .is_some_and(|m| m.contains("serving http://"))
        })
        .unwrap_or_else(|| {
            panic!("no 'serving' record in the journal: {records:?}\nstderr: {stderr}")
        });
    assert_eq!(serving["SYSLOG_IDENTIFIER"], "selfheal");
    assert_eq!(serving["PRIORITY"], "5", "info maps to notice: {serving:?}");
    assert!(serving.contains_key("CODE_FILE") && serving.contains_key("CODE_LINE"));
    // The structured field of the record, under the layer's prefix.
    let listen = &serving["F_LISTEN"];
    assert!(listen.starts_with("127.0.0.1:"), "{serving:?}");
    // Nothing was logged to stderr: the journal took it all.
    assert!(
        !stderr.contains(" INFO "),
        "log lines went to stderr too: {stderr}"
    );
}
