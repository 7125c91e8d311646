//! A minimal HTTP/1.1 GET over a plain TCP connection (no TLS), enough to
//! read a health endpoint's status code within a deadline.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Where an `http://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to.
    pub address: String,
    /// The `Host` header value (as written in the URL).
    pub host_header: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Splits `http://host[:port][/path]`; the port defaults to 80.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    selfheal_config::check_http_url(url)?;
    let rest = &url["http://".len()..];
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    // An IPv6 literal keeps its brackets; a port follows the last ':'
    // outside them.
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let address = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(HttpTarget {
        address,
        host_header: authority.to_string(),
        path,
    })
}

/// The status code of an `HTTP/1.x NNN reason` line.
pub fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

fn left(deadline: Instant) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err("timed out".to_string())
    } else {
        Ok(d)
    }
}

/// Sends the GET and reads the status line, all before `deadline`.
pub(crate) fn get_status(t: &HttpTarget, deadline: Instant) -> Result<u16, String> {
    let mut s = super::connect(&t.address, deadline)?;
    let timed_out = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("timed out waiting for {}", t.address)
        } else {
            format!("{}: {e}", t.address)
        }
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: selfheal-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        t.path, t.host_header
    );
    s.set_write_timeout(Some(left(deadline)?))
        .map_err(timed_out)?;
    s.write_all(req.as_bytes()).map_err(timed_out)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let d = left(deadline).map_err(|_| format!("timed out waiting for {}", t.address))?;
        s.set_read_timeout(Some(d)).map_err(timed_out)?;
        let n = s.read(&mut chunk).map_err(timed_out)?;
        if n == 0 {
            return Err(format!(
                "{} closed the connection without a complete status line",
                t.address
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            return parse_status_line(&line)
                .ok_or_else(|| format!("not an HTTP response from {}: {line:?}", t.address));
        }
        if buf.len() > 8192 {
            return Err(format!("no HTTP status line from {}", t.address));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_http_url("http://127.0.0.1:8080/healthz?x=1").unwrap();
        assert_eq!(t.address, "127.0.0.1:8080");
        assert_eq!(t.path, "/healthz?x=1");
        let t = parse_http_url("http://localhost").unwrap();
        assert_eq!((t.address.as_str(), t.path.as_str()), ("localhost:80", "/"));
        let t = parse_http_url("http://[::1]/x").unwrap();
        assert_eq!(
            (t.address.as_str(), t.host_header.as_str()),
            ("[::1]:80", "[::1]")
        );
        let t = parse_http_url("http://[::1]:81?q").unwrap();
        assert_eq!((t.address.as_str(), t.path.as_str()), ("[::1]:81", "/?q"));
        assert!(parse_http_url("https://x/").unwrap_err().contains("TLS"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 2000 OK"), None);
    }
}
