//! The HTTP client `selfheal status` and the tests use: the shared
//! [`selfheal_config::http_agent`] (one overall deadline per request, no
//! redirects, no proxy), plus a cap on the body read.

use std::net::SocketAddr;
use std::time::Duration;

/// Most of a response body read (the API caps its answers well below).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// A response as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Body (lossy UTF-8).
    pub body: String,
}

/// The request failed before a whole response arrived.
#[derive(Debug, thiserror::Error)]
#[error("{addr}: {source}")]
pub struct ClientError {
    /// Where.
    pub addr: SocketAddr,
    /// Why (connection refused, timed out, not HTTP, …).
    #[source]
    pub source: ureq::Error,
}

/// GETs `path` from `addr`, all within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<ClientResponse, ClientError> {
    let err = |source| ClientError { addr, source };
    let agent = selfheal_config::http_agent("selfheal", timeout);
    let mut resp = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .map_err(err)?;
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(err)?;
    Ok(ClientResponse {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
