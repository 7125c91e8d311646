//! Errors of single values, and of apps and VMs checked in code
//! (`validate`): each message names the value and says how to fix it.
//! Deserialization reports the same errors through `serde`'s custom error.

use std::path::PathBuf;

use crate::HumanDuration;

/// A duration that does not parse or is too long.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Not a number with a unit.
    #[error("invalid duration `{input}` ({source}); write a number with a unit, like \"100ms\", \"2s\" or \"5m\"")]
    Malformed {
        /// The text given.
        input: String,
        /// What humantime found wrong.
        #[source]
        source: humantime::DurationError,
    },
    /// Longer than [`MAX_DURATION`](crate::MAX_DURATION).
    #[error("duration `{input}` is too long; the longest accepted is 3650d (10 years)")]
    TooLong {
        /// The text given.
        input: String,
    },
}

/// An app, probe or VM name that is not a short plain word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name `{name}`; use 1 to 64 letters, digits, `_`, `-` or `.` (not starting with `.`)")]
pub struct NameError {
    /// `app`, `probe` or `vm`.
    pub what: &'static str,
    /// The name given.
    pub name: String,
}

/// What a probe should reach, written wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeTargetError {
    /// An `https://` URL (there is no TLS client).
    #[error("`{url}`: HTTPS probes are not supported (no TLS client); probe a plain-HTTP health port or use an exec probe with curl")]
    Https {
        /// The URL.
        url: String,
    },
    /// Not an `http://` URL.
    #[error("`{url}` is not an http:// URL; {LIKE_URL}")]
    NotHttp {
        /// The URL.
        url: String,
    },
    /// The `http` crate cannot parse it.
    #[error("`{url}` is not a valid URL ({reason}); {LIKE_URL}")]
    Malformed {
        /// The URL.
        url: String,
        /// What the parser said (`http::uri::InvalidUri` is neither
        /// `Clone` nor comparable, so its message is kept).
        reason: String,
    },
    /// No host, or user info before it.
    #[error("`{url}` has no host (or has user info); {LIKE_URL}")]
    NoHost {
        /// The URL.
        url: String,
    },
    /// A port outside 1 to 65535.
    #[error("`{url}`: port `{port}` is out of range; use a port from 1 to 65535")]
    Port {
        /// The URL.
        url: String,
        /// The port as written.
        port: String,
    },
    /// Not `HOST:PORT`.
    #[error("invalid TCP address `{address}`; write HOST:PORT like \"127.0.0.1:8080\" or \"[::1]:8080\"")]
    TcpAddress {
        /// The address.
        address: String,
    },
}

const LIKE_URL: &str = "write it like \"http://127.0.0.1:8080/healthz\"";

/// A listen address that is neither `IP:PORT` nor empty/`off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen address `{input}`; write IP:PORT like \"127.0.0.1:9469\" or \"[::1]:9469\", or \"\" to disable HTTP")]
pub struct ListenError {
    /// The text given.
    pub input: String,
    /// What the address parser found wrong.
    #[source]
    pub source: std::net::AddrParseError,
}

/// A `restart` policy that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown restart policy `{input}`; use never, on-failure or always")]
pub struct RestartPolicyError {
    /// The text given.
    pub input: String,
}

/// A `restart_output` mode that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown restart_output `{input}`; use truncate, keep or rotate")]
pub struct RestartOutputError {
    /// The text given.
    pub input: String,
}

/// An empty `stdout`/`stderr` (the only text that is not an output).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("empty output; use \"inherit\", \"null\" or the path of a log file")]
pub struct OutputError;

/// A signal that is neither a known name nor a number from 1 to 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown signal `{input}`; write a name like \"SIGTERM\" or \"SIGINT\", or a number 1 to 64"
)]
pub struct SignalError {
    /// The text given.
    pub input: String,
}

/// An `expect_status` that is not a range of HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid status range `{input}`; write \"200-399\" or a single status like \"204\" (100 to 599)")]
pub struct StatusRangeError {
    /// The text given.
    pub input: String,
}

/// A setting of an app, a probe or a VM that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A probe's URL or address.
    #[error(transparent)]
    ProbeTarget(#[from] ProbeTargetError),
    /// A probe's `expect_status`.
    #[error(transparent)]
    StatusRange(#[from] StatusRangeError),
    /// A number or duration outside what works.
    #[error("{setting} {value} is out of range; use {allowed}")]
    OutOfRange {
        /// The setting, as the message names it.
        setting: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        allowed: &'static str,
    },
    /// No program to run.
    #[error("the command is empty")]
    EmptyCommand,
    /// A probe needs one kind of check.
    #[error("a probe needs exactly one of `exec = [..]`, `tcp = \"HOST:PORT\"` or `http = \"http://HOST:PORT/PATH\"`")]
    ProbeKind,
    /// `expect_status` on a probe that is not HTTP.
    #[error("`expect_status` only applies to http probes")]
    ExpectStatusWithoutHttp,
    /// An exec probe without a program (in the file).
    #[error("exec probe command is empty; write it like [\"/usr/bin/check\", \"--quick\"]")]
    EmptyExecProbe,
    /// An exec probe without a program (built in code).
    #[error("probe `{probe}` has an empty command")]
    EmptyProbeCommand {
        /// The probe.
        probe: String,
    },
    /// A zero threshold (in the file).
    #[error("failure_threshold and success_threshold must be at least 1")]
    ZeroThreshold,
    /// A zero threshold (built in code).
    #[error("probe `{probe}` needs thresholds of at least 1")]
    ProbeThresholds {
        /// The probe.
        probe: String,
    },
    /// A probe period or timeout too short to be meaningful.
    #[error("probe `{probe}`: period {period} / timeout {timeout} too short; use a period of at least 10ms and a timeout of at least 1ms")]
    ProbeTiming {
        /// The probe.
        probe: String,
        /// Its period.
        period: HumanDuration,
        /// Its timeout.
        timeout: HumanDuration,
    },
    /// A VM's serial port name.
    #[error("port `{port}` is not a virtio-serial port name; use a name like \"org.selfheal.0\"")]
    VmPort {
        /// The name given.
        port: String,
    },
    /// Older checkpoints kept over a span shorter than their spacing.
    #[error("checkpoint older_span {span} is shorter than older_every {every}; make it longer or set older_every = \"0\"")]
    OlderSpan {
        /// `older_span`.
        span: HumanDuration,
        /// `older_every`.
        every: HumanDuration,
    },
    /// A relative path where an absolute one is needed.
    #[error("replay_tolerant_sockets entry {} is not an absolute path", .path.display())]
    RelativeSocket {
        /// The path.
        path: PathBuf,
    },
    /// A class in `rollback_on` that is not a fault.
    #[error("rollback_on lists `{class}`, which is not a fault")]
    NotAFault {
        /// The class.
        class: String,
    },
    /// Something wrong in one app. (`error` is context, not a source:
    /// the message already says it, and a chain would say it twice.)
    #[error("app `{app}`: {error}")]
    App {
        /// The app.
        app: String,
        /// What.
        error: Box<SettingError>,
    },
    /// Something wrong in one VM.
    #[error("vm `{vm}`: {error}")]
    Vm {
        /// The VM.
        vm: String,
        /// What.
        error: Box<SettingError>,
    },
}

impl SettingError {
    /// `self`, said of app `app`.
    pub fn in_app(self, app: &str) -> SettingError {
        SettingError::App {
            app: app.to_string(),
            error: Box::new(self),
        }
    }

    /// `self`, said of VM `vm`.
    pub fn in_vm(self, vm: &str) -> SettingError {
        SettingError::Vm {
            vm: vm.to_string(),
            error: Box::new(self),
        }
    }

    /// `setting value` is outside `allowed`.
    pub(crate) fn out_of_range(
        setting: &'static str,
        value: impl std::fmt::Display,
        allowed: &'static str,
    ) -> SettingError {
        SettingError::OutOfRange {
            setting,
            value: value.to_string(),
            allowed,
        }
    }
}
