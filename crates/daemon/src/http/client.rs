//! A minimal HTTP/1.1 GET client for `selfheal status` and tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Body (lossy UTF-8).
    pub body: String,
}

/// The request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, or the connection broke.
    #[error("{addr}: {source}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's answer was not HTTP.
    #[error("{addr}: not an HTTP response")]
    Malformed {
        /// Where.
        addr: SocketAddr,
    },
}

/// GETs `path` from `addr` with an overall I/O `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<ClientResponse, ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: selfheal\r\n\r\n"
    )
    .map_err(io)?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(ClientError::Malformed { addr })?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(ClientError::Malformed { addr })?;
    Ok(ClientResponse {
        status,
        body: body.to_string(),
    })
}
