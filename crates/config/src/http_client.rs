//! The one way selfheal builds an HTTP client (ureq, plain HTTP): used by
//! `selfheal status` (the daemon's API) and by HTTP liveness probes.
//!
//! Every request selfheal makes is a single GET judged on what the target
//! itself answered, so the settings shared by every caller are:
//! - one overall deadline (`timeout_global`) covering connect, request and
//!   the whole response, so a slow or silent peer cannot hold a caller
//!   past its budget;
//! - no redirects: a 3xx is an answer to judge (a probe's `expect_status`,
//!   like Kubernetes' default range), never a hop to somewhere else;
//! - 4xx/5xx are responses, not errors, so callers see the status code;
//! - no proxy, even when `HTTP_PROXY`/`ALL_PROXY` are set: a probe or a
//!   status request through a proxy would judge the proxy, not the app or
//!   the daemon (Kubernetes' HTTP probes ignore proxies for the same
//!   reason).
//!
//! What differs per caller is a parameter: the `User-Agent`, and the
//! deadline (the caller's time left).

use std::time::Duration;

/// An HTTP client for one request (or a few) within `timeout`, sending
/// `User-Agent: {user_agent}`. The settings are in the module doc.
pub fn http_agent(user_agent: &str, timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(user_agent)
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::config::AutoHeaderValue;

    #[test]
    fn agent_settings_are_the_documented_ones() {
        let agent = http_agent("selfheal-test", Duration::from_millis(1500));
        let c = agent.config();
        assert_eq!(c.timeouts().global, Some(Duration::from_millis(1500)));
        assert_eq!(c.max_redirects(), 0);
        assert!(!c.http_status_as_error());
        assert!(c.proxy().is_none());
        match c.user_agent() {
            AutoHeaderValue::Provided(ua) => assert_eq!(ua.as_str(), "selfheal-test"),
            other => panic!("user agent not set: {other:?}"),
        }
    }
}
