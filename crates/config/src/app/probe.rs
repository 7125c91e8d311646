//! `[[app.probe]]`: liveness probes with Kubernetes semantics.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::duration::HumanDuration;
use crate::invalid::{ProbeTargetError, SettingError, StatusRangeError};

use super::check_name;

/// An inclusive range of acceptable HTTP status codes, written `"200-399"`
/// or `"204"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusRange {
    /// Lowest acceptable status.
    pub low: u16,
    /// Highest acceptable status.
    pub high: u16,
}

impl StatusRange {
    /// True when `status` is in the range.
    pub fn contains(self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange {
            low: 200,
            high: 399,
        }
    }
}

impl std::str::FromStr for StatusRange {
    type Err = StatusRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StatusRangeError {
            input: s.to_string(),
        };
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let low: u16 = lo.parse().map_err(|_| bad())?;
        let high: u16 = hi.parse().map_err(|_| bad())?;
        if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
            return Err(bad());
        }
        Ok(StatusRange { low, high })
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeCheck {
    /// Runs a command; exit status 0 within the timeout is success.
    Exec {
        /// Program and arguments (no shell).
        command: Vec<String>,
    },
    /// Connects to a TCP address (`host:port`) within the timeout.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// HTTP/1.1 GET (plain HTTP, no TLS) expecting a status in a range.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// Acceptable statuses.
        expect_status: StatusRange,
    },
}

impl ProbeCheck {
    /// `exec`, `tcp` or `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeCheck::Exec { .. } => "exec",
            ProbeCheck::Tcp { .. } => "tcp",
            ProbeCheck::Http { .. } => "http",
        }
    }
}

/// A liveness probe with Kubernetes semantics: after `initial_delay`, run
/// every `period`; each run must succeed within `timeout`;
/// `failure_threshold` consecutive failures mean the program is hung.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Name used in events and metrics (default: the check kind).
    pub name: String,
    /// What to check.
    pub check: ProbeCheck,
    /// Wait this long after the program starts before the first probe.
    pub initial_delay: HumanDuration,
    /// Time from one probe's start to the next.
    pub period: HumanDuration,
    /// A probe that has not succeeded after this long has failed.
    pub timeout: HumanDuration,
    /// Consecutive failures that mean "hung".
    pub failure_threshold: u32,
    /// Consecutive successes that clear the failure count.
    pub success_threshold: u32,
}

impl ProbeConfig {
    /// A probe with the defaults: no initial delay, every 10 s, 1 s
    /// timeout, 3 failures, 1 success.
    pub fn new(check: ProbeCheck) -> ProbeConfig {
        ProbeConfig {
            name: check.kind().to_string(),
            check,
            initial_delay: HumanDuration::from_secs(0),
            period: HumanDuration::from_secs(10),
            timeout: HumanDuration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }

    /// Checks the period (at least 10 ms) and timeout (at least 1 ms); a
    /// zero timeout would fail every check and get a healthy program
    /// killed.
    pub fn check_timing(&self) -> Result<(), SettingError> {
        if self.period.get() < std::time::Duration::from_millis(10)
            || self.timeout.get() < std::time::Duration::from_millis(1)
        {
            return Err(SettingError::ProbeTiming {
                probe: self.name.clone(),
                period: self.period,
                timeout: self.timeout,
            });
        }
        Ok(())
    }
}

/// Checks an `http://host[:port]/path` URL (parsed by the `http` crate,
/// port 1 to 65535); the error names the URL and the fix.
pub fn check_http_url(url: &str) -> Result<(), ProbeTargetError> {
    let url_s = || url.to_string();
    if url.starts_with("https://") {
        return Err(ProbeTargetError::Https { url: url_s() });
    }
    if !url.starts_with("http://") {
        return Err(ProbeTargetError::NotHttp { url: url_s() });
    }
    let uri: http::Uri =
        url.parse()
            .map_err(|e: http::uri::InvalidUri| ProbeTargetError::Malformed {
                url: url_s(),
                reason: e.to_string(),
            })?;
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => a,
        _ => return Err(ProbeTargetError::NoHost { url: url_s() }),
    };
    // The text after the last ':' outside an IPv6 literal's brackets.
    let port = authority
        .as_str()
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.contains(']'));
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(ProbeTargetError::Port {
                url: url_s(),
                port: p.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks a `host:port` address.
pub fn check_tcp_address(address: &str) -> Result<(), ProbeTargetError> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(ProbeTargetError::TcpAddress {
            address: address.to_string(),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: Option<String>,
    exec: Option<Vec<String>>,
    tcp: Option<String>,
    http: Option<String>,
    expect_status: Option<String>,
    initial_delay: Option<HumanDuration>,
    period: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
}

impl<'de> Deserialize<'de> for ProbeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawProbe::deserialize(d)?;
        probe_from_raw(raw).map_err(de::Error::custom)
    }
}

fn probe_from_raw(raw: RawProbe) -> Result<ProbeConfig, SettingError> {
    let given = [raw.exec.is_some(), raw.tcp.is_some(), raw.http.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(SettingError::ProbeKind);
    }
    if raw.expect_status.is_some() && raw.http.is_none() {
        return Err(SettingError::ExpectStatusWithoutHttp);
    }
    let check = if let Some(command) = raw.exec {
        if command.is_empty() || command[0].is_empty() {
            return Err(SettingError::EmptyExecProbe);
        }
        ProbeCheck::Exec { command }
    } else if let Some(address) = raw.tcp {
        check_tcp_address(&address)?;
        ProbeCheck::Tcp { address }
    } else {
        let url = raw.http.unwrap_or_default();
        check_http_url(&url)?;
        let expect_status = match raw.expect_status {
            Some(s) => s.parse()?,
            None => StatusRange::default(),
        };
        ProbeCheck::Http { url, expect_status }
    };
    let mut p = ProbeConfig::new(check);
    if let Some(name) = raw.name {
        check_name(&name, "probe")?;
        p.name = name;
    }
    if let Some(v) = raw.initial_delay {
        p.initial_delay = v;
    }
    if let Some(v) = raw.period {
        p.period = v;
    }
    if let Some(v) = raw.timeout {
        p.timeout = v;
    }
    p.check_timing()?;
    if let Some(v) = raw.failure_threshold {
        p.failure_threshold = v;
    }
    if let Some(v) = raw.success_threshold {
        p.success_threshold = v;
    }
    if p.failure_threshold == 0 || p.success_threshold == 0 {
        return Err(SettingError::ZeroThreshold);
    }
    Ok(p)
}

impl Serialize for ProbeConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        match &self.check {
            ProbeCheck::Exec { command } => m.serialize_entry("exec", command)?,
            ProbeCheck::Tcp { address } => m.serialize_entry("tcp", address)?,
            ProbeCheck::Http { url, expect_status } => {
                m.serialize_entry("http", url)?;
                m.serialize_entry("expect_status", &expect_status.to_string())?;
            }
        }
        m.serialize_entry("initial_delay", &self.initial_delay)?;
        m.serialize_entry("period", &self.period)?;
        m.serialize_entry("timeout", &self.timeout)?;
        m.serialize_entry("failure_threshold", &self.failure_threshold)?;
        m.serialize_entry("success_threshold", &self.success_threshold)?;
        m.end()
    }
}
