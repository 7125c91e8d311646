//! HTTP probes through the shared [`selfheal_config::http_agent`] (plain
//! HTTP, no TLS, no proxy): one GET whose status code must arrive before
//! the deadline. Redirects are not followed (a 3xx is judged by
//! `expect_status`, like Kubernetes' default range).

use std::time::Instant;

use super::ProbeError;

#[cfg(test)]
use std::time::Duration;

/// GETs `url` and returns the response's status, all before `deadline`.
pub(crate) fn get_status(url: &str, deadline: Instant) -> Result<u16, ProbeError> {
    selfheal_config::check_http_url(url)?;
    let left = deadline.saturating_duration_since(Instant::now());
    let url_s = || url.to_string();
    if left.is_zero() {
        return Err(ProbeError::LateStart { url: url_s() });
    }
    let agent = selfheal_config::http_agent("selfheal-probe", left);
    match agent.get(url).header("Accept", "*/*").call() {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(ureq::Error::Timeout(_)) => Err(ProbeError::AnswerTimeout { url: url_s() }),
        Err(ureq::Error::Io(source)) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(ProbeError::Connect {
                address: url_s(),
                source,
            })
        }
        Err(e) => Err(ProbeError::Http {
            url: url_s(),
            source: Box::new(e),
        }),
    }
}

/// How long a probe may have taken before it counts as timed out (a
/// little slack for the scheduler).
#[cfg(test)]
const SLACK: Duration = Duration::from_millis(350);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn status_and_request() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap();
            c.write_all(b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let url = format!("http://127.0.0.1:{port}/healthz?x=1");
        assert_eq!(get_status(&url, deadline).unwrap(), 301);
        let req = server.join().unwrap();
        assert!(req.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"), "{req}");
    }

    #[test]
    fn garbage_answers_and_bad_urls_fail_with_a_reason() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = get_status(&format!("http://127.0.0.1:{port}/"), deadline)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&port.to_string()), "{err}");
        server.join().unwrap();
        let err = get_status("http://127.0.0.1:99999/", deadline)
            .unwrap_err()
            .to_string();
        assert!(err.contains("99999") && err.contains("65535"), "{err}");
        assert!(get_status("https://x/", deadline)
            .unwrap_err()
            .to_string()
            .contains("TLS"));
        let t0 = Instant::now();
        let late = get_status("http://127.0.0.1:1/", Instant::now())
            .unwrap_err()
            .to_string();
        assert!(late.contains("timed out"), "{late}");
        assert!(t0.elapsed() < SLACK);
    }
}
