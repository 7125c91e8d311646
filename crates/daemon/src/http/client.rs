//! The HTTP client `selfheal status` and the tests use: ureq, with one
//! overall deadline per request and no redirects.

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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("selfheal")
        .build()
        .into();
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
