//! `[[app]]` tables: programs the daemon supervises (`selfheal run` builds
//! the same structure from its flags).
//!
//! Every value is checked while it is deserialized, so a bad value is
//! reported with the line and column of the offending text.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::duration::HumanDuration;
use crate::invalid::{
    NameError, OutputError, RestartOutputError, RestartPolicyError, SettingError, SignalError,
};

mod checkpoint;
mod probe;

pub use checkpoint::CheckpointConfig;
pub use probe::{check_http_url, check_tcp_address, ProbeCheck, ProbeConfig, StatusRange};

/// When a program that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: supervision ends with the program.
    Never,
    /// After a crash (non-zero exit, killed by a signal) or a hang.
    #[default]
    OnFailure,
    /// Whenever it ends, even with exit status 0.
    Always,
}

impl RestartPolicy {
    /// `never`, `on-failure` or `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = RestartPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => Err(RestartPolicyError {
                input: other.to_string(),
            }),
        }
    }
}

/// Which processes a stop signal reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KillMode {
    /// The program's whole process group (it is started as a group
    /// leader), so helpers it forked stop with it.
    #[default]
    Group,
    /// Only the program's main process.
    Process,
}

/// What happens to a program's redirected output when it is restarted
/// after a failure (crash, hang, a rollback that was impossible), so the
/// new run's output is not appended to the killed run's partial output.
/// It applies to stdout (and stderr, when it reaches the program directly)
/// when they are regular files: a shell's redirection that `selfheal run`
/// passes on and a `stdout = "/path"` log alike. stdin, when it is a
/// regular file, is rewound to where the killed run started reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RestartOutput {
    /// Cut the file back to its size when the killed run started.
    #[default]
    Truncate,
    /// Leave it: the new run appends to the killed run's output.
    Keep,
    /// Move what the killed run wrote to `FILE.failed-N` (N: the run
    /// number), then cut the file back.
    Rotate,
}

impl RestartOutput {
    /// `truncate`, `keep` or `rotate`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartOutput::Truncate => "truncate",
            RestartOutput::Keep => "keep",
            RestartOutput::Rotate => "rotate",
        }
    }
}

impl std::str::FromStr for RestartOutput {
    type Err = RestartOutputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "truncate" => Ok(RestartOutput::Truncate),
            "keep" => Ok(RestartOutput::Keep),
            "rotate" => Ok(RestartOutput::Rotate),
            other => Err(RestartOutputError {
                input: other.to_string(),
            }),
        }
    }
}

/// Where a program's stdout or stderr goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Output {
    /// The supervisor's own stdout/stderr (written as `"inherit"`).
    #[default]
    Inherit,
    /// Discarded (`"null"`).
    Null,
    /// Appended to this file, created if missing (any other string).
    File(PathBuf),
}

impl std::str::FromStr for Output {
    type Err = OutputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inherit" => Ok(Output::Inherit),
            "null" => Ok(Output::Null),
            "" => Err(OutputError),
            path => Ok(Output::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Inherit => f.write_str("inherit"),
            Output::Null => f.write_str("null"),
            Output::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Signal names accepted in the config, in signal-number order.
const SIGNAL_NAMES: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// A signal written by name (`"SIGTERM"`, `"TERM"`, `"term"`) or number
/// (`"15"`), kept in canonical form (`SIGTERM`, or the number).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignalName(String);

impl SignalName {
    /// The canonical text: `SIGTERM`, or a number for real-time signals.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `SIGTERM`.
    pub fn term() -> SignalName {
        SignalName("SIGTERM".into())
    }

    /// `SIGKILL`.
    pub fn kill() -> SignalName {
        SignalName("SIGKILL".into())
    }
}

impl std::str::FromStr for SignalName {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        if SIGNAL_NAMES.contains(&bare) {
            return Ok(SignalName(format!("SIG{bare}")));
        }
        match bare.parse::<u32>() {
            Ok(n) if (1..=64).contains(&n) => Ok(SignalName(n.to_string())),
            _ => Err(SignalError {
                input: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SignalName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

fn de_death_signal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SignalName>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() || s == "none" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(de::Error::custom)
}

fn ser_death_signal<S: Serializer>(v: &Option<SignalName>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(sig) => s.serialize_str(sig.as_str()),
        None => s.serialize_str("none"),
    }
}

/// Exponential delay between a failure and the restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// Delay before the first restart; `"0"` restarts at once.
    pub initial: HumanDuration,
    /// The delay never grows past this.
    pub max: HumanDuration,
    /// Each consecutive failure multiplies the delay by this (1 to 10).
    #[serde(deserialize_with = "de_multiplier")]
    pub multiplier: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: HumanDuration::from_millis(100),
            max: HumanDuration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

fn de_multiplier<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(1.0..=10.0).contains(&v) {
        return Err(de::Error::custom(format!(
            "backoff multiplier {v} is out of range; use 1.0 (constant delay) to 10.0 (default 2.0)"
        )));
    }
    Ok(v)
}

/// The crash-loop breaker: too many restarts in a window and supervision
/// gives up on the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashLoopConfig {
    /// Restarts allowed within `window`; one more and the supervisor gives
    /// up. 0 disables the breaker.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub window: HumanDuration,
    /// A program that stays up this long is healthy: its restart count and
    /// backoff are cleared.
    pub healthy_after: HumanDuration,
    /// After giving up, try again this much later; `"0"` stays stopped.
    pub retry_after: HumanDuration,
}

impl Default for CrashLoopConfig {
    fn default() -> Self {
        CrashLoopConfig {
            max_restarts: 5,
            window: HumanDuration::from_secs(60),
            healthy_after: HumanDuration::from_secs(60),
            retry_after: HumanDuration::from_secs(0),
        }
    }
}

/// Which senders the notify socket believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NotifyAccess {
    /// Only the main process (systemd's `NotifyAccess=main`).
    #[default]
    Main,
    /// Any process in the program's process group (`NotifyAccess=all`,
    /// needed when a helper such as `systemd-notify` sends the messages).
    All,
}

/// The systemd notify protocol (`sd_notify`): `NOTIFY_SOCKET` is set for
/// the program and `READY=1`, `WATCHDOG=1`, `WATCHDOG_USEC=`, `STATUS=`,
/// `EXTEND_TIMEOUT_USEC=` and `STOPPING=1` are honoured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Create the socket and set `NOTIFY_SOCKET` (`Type=notify`).
    pub enabled: bool,
    /// A program that has not sent `READY=1` this long after starting is
    /// hung (`TimeoutStartSec=`); `"0"` does not wait for readiness.
    pub ready_timeout: HumanDuration,
    /// A program that goes this long without `WATCHDOG=1` is hung
    /// (`WatchdogSec=`); `WATCHDOG_USEC` is set for it. `"0"`: off unless
    /// the program sends `WATCHDOG_USEC=` itself.
    pub watchdog: HumanDuration,
    /// `main` or `all`.
    pub access: NotifyAccess,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: false,
            ready_timeout: HumanDuration::from_secs(90),
            watchdog: HumanDuration::from_secs(0),
            access: NotifyAccess::Main,
        }
    }
}

/// Which blocked threads count towards a suspected deadlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BlockedWaits {
    /// Only threads waiting on a futex (a lock or condition variable): an
    /// idle server waiting in `accept` or `epoll_wait` is not deadlocked.
    #[default]
    Futex,
    /// Any sleeping thread (catches deadlocks over pipes or sockets, but
    /// also flags a program that is merely idle).
    Any,
}

/// No-progress heuristics: need nothing from the program. Findings are
/// "suspected" hangs, acted on only when a missed heartbeat or a failed
/// probe confirms them, or when `act_alone` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressConfig {
    /// A thread running on CPU in user mode without system calls or
    /// voluntary context switches for this long is suspected of an
    /// infinite loop; `"0"` turns the check off.
    pub spin: HumanDuration,
    /// All threads asleep without CPU time for this long is a suspected
    /// deadlock; `"0"` turns the check off.
    pub deadlock: HumanDuration,
    /// Which sleeping threads count for the deadlock check.
    pub blocked_waits: BlockedWaits,
    /// How often /proc is sampled (detection happens within one period
    /// after the bound).
    #[serde(deserialize_with = "de_progress_period")]
    pub period: HumanDuration,
    /// Act on a suspicion without confirmation.
    pub act_alone: bool,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        ProgressConfig {
            spin: HumanDuration::from_secs(0),
            deadlock: HumanDuration::from_secs(0),
            blocked_waits: BlockedWaits::Futex,
            period: HumanDuration::from_millis(500),
            act_alone: false,
        }
    }
}

impl ProgressConfig {
    /// True when at least one heuristic is on.
    pub fn enabled(&self) -> bool {
        !self.spin.get().is_zero() || !self.deadlock.get().is_zero()
    }
}

fn de_progress_period<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    let ms = v.get().as_millis();
    if !(20..=60_000).contains(&ms) {
        return Err(de::Error::custom(format!(
            "progress period {v} is out of range; use 20ms to 60s (default 500ms)"
        )));
    }
    Ok(v)
}

/// What runs before the supervisor acts on a hang (evidence capture).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    /// A command to run first (for example the program's own dump
    /// command). It gets `SELFHEAL_APP`, `SELFHEAL_PID` and
    /// `SELFHEAL_REASON` in its environment; its output goes into the
    /// action event. Empty: no command.
    pub command: Vec<String>,
    /// The command is killed after this long.
    pub timeout: HumanDuration,
    /// Record every thread's state, wait channel, system call and (as
    /// root) kernel stack from /proc in the hang event.
    pub thread_stacks: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            command: Vec::new(),
            timeout: HumanDuration::from_secs(10),
            thread_stacks: true,
        }
    }
}

/// One supervised program: `[[app]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Unique name: letters, digits, `_`, `-`, `.` (used in events,
    /// metrics labels and file names).
    #[serde(deserialize_with = "de_app_name")]
    pub name: String,
    /// Program and arguments (no shell; use `["sh", "-c", "…"]` for one).
    #[serde(deserialize_with = "de_command")]
    pub command: Vec<String>,
    /// Working directory (default: the supervisor's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Variables added to the supervisor's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `never`, `on-failure` or `always`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `"inherit"`, `"null"` or a log file path (appended).
    #[serde(default)]
    pub stdout: Output,
    /// Same as `stdout`; stderr always passes through the supervisor so
    /// its last lines can go into crash events.
    #[serde(default)]
    pub stderr: Output,
    /// `truncate`, `keep` or `rotate`: what a restart after a failure does
    /// to output files the killed run wrote (and to a stdin file it read).
    #[serde(default)]
    pub restart_output: RestartOutput,
    /// How many of the last stderr lines a crash event carries (0 to 1000).
    #[serde(default = "default_tail", deserialize_with = "de_tail")]
    pub stderr_tail_lines: usize,
    /// The signal that asks the program to stop.
    #[serde(default = "SignalName::term")]
    pub stop_signal: SignalName,
    /// Time between the stop signal and SIGKILL.
    #[serde(default = "default_grace")]
    pub stop_grace: HumanDuration,
    /// `group` or `process`.
    #[serde(default)]
    pub kill_mode: KillMode,
    /// Sent to the program if the supervisor dies (PR_SET_PDEATHSIG), so
    /// no unsupervised copy is left behind; `"none"` leaves it running.
    #[serde(
        default = "default_death_signal",
        deserialize_with = "de_death_signal",
        serialize_with = "ser_death_signal"
    )]
    pub parent_death_signal: Option<SignalName>,
    /// `[app.backoff]`.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// `[app.crash_loop]`.
    #[serde(default)]
    pub crash_loop: CrashLoopConfig,
    /// `[app.notify]`.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// `[[app.probe]]`.
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeConfig>,
    /// `[app.progress]`.
    #[serde(default)]
    pub progress: ProgressConfig,
    /// `[app.hook]`.
    #[serde(default)]
    pub hook: HookConfig,
    /// `[app.checkpoint]`.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

fn default_tail() -> usize {
    20
}

fn default_grace() -> HumanDuration {
    HumanDuration::from_secs(10)
}

fn default_death_signal() -> Option<SignalName> {
    Some(SignalName::kill())
}

impl AppConfig {
    /// An app with every optional setting at its default.
    pub fn new(name: &str, command: Vec<String>) -> AppConfig {
        AppConfig {
            name: name.to_string(),
            command,
            cwd: None,
            env: BTreeMap::new(),
            restart: RestartPolicy::default(),
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            restart_output: RestartOutput::default(),
            stderr_tail_lines: default_tail(),
            stop_signal: SignalName::term(),
            stop_grace: default_grace(),
            kill_mode: KillMode::Group,
            parent_death_signal: default_death_signal(),
            backoff: BackoffConfig::default(),
            crash_loop: CrashLoopConfig::default(),
            notify: NotifyConfig::default(),
            probes: Vec::new(),
            progress: ProgressConfig::default(),
            hook: HookConfig::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }

    /// Checks what deserialization checks, for apps built in code (the
    /// `selfheal run` flags); returns a message on error.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.validate_inner().map_err(|e| match e {
            // A bad name is said without the name it would be said of.
            SettingError::Name(_) => e,
            e => e.in_app(&self.name),
        })
    }

    fn validate_inner(&self) -> Result<(), SettingError> {
        check_name(&self.name, "app")?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(SettingError::EmptyCommand);
        }
        if self.stderr_tail_lines > 1000 {
            return Err(SettingError::out_of_range(
                "stderr_tail_lines =",
                self.stderr_tail_lines,
                "0 to 1000",
            ));
        }
        if !(1.0..=10.0).contains(&self.backoff.multiplier) {
            return Err(SettingError::out_of_range(
                "backoff multiplier",
                self.backoff.multiplier,
                "1.0 to 10.0",
            ));
        }
        for p in &self.probes {
            match &p.check {
                ProbeCheck::Http { url, .. } => check_http_url(url)?,
                ProbeCheck::Tcp { address } => check_tcp_address(address)?,
                ProbeCheck::Exec { command } if command.is_empty() => {
                    return Err(SettingError::EmptyProbeCommand {
                        probe: p.name.clone(),
                    })
                }
                ProbeCheck::Exec { .. } => {}
            }
            p.check_timing()?;
            if p.failure_threshold == 0 || p.success_threshold == 0 {
                return Err(SettingError::ProbeThresholds {
                    probe: p.name.clone(),
                });
            }
        }
        let period = self.progress.period.get().as_millis();
        if self.progress.enabled() && !(20..=60_000).contains(&period) {
            return Err(SettingError::out_of_range(
                "progress period",
                self.progress.period,
                "20ms to 60s",
            ));
        }
        self.checkpoint.validate()
    }
}

pub(crate) fn check_name(name: &str, what: &'static str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: name.to_string(),
        })
    }
}

fn de_app_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_name(&s, "app").map_err(de::Error::custom)?;
    Ok(s)
}

pub(crate) fn de_command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() || v[0].is_empty() {
        return Err(de::Error::custom(
            "the command is empty; write it like [\"/usr/bin/server\", \"--port\", \"8080\"]",
        ));
    }
    Ok(v)
}

fn de_tail<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = i64::deserialize(d)?;
    if !(0..=1000).contains(&v) {
        return Err(de::Error::custom(format!(
            "stderr_tail_lines = {v} is out of range; use 0 to 1000 (default 20)"
        )));
    }
    Ok(v as usize)
}

/// Deserializes the `[[app]]` list, refusing two apps with one name.
pub(crate) fn de_apps<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AppConfig>, D::Error> {
    let apps = Vec::<AppConfig>::deserialize(d)?;
    for (i, a) in apps.iter().enumerate() {
        if apps[..i].iter().any(|o| o.name == a.name) {
            return Err(de::Error::custom(format!(
                "app `{}` is defined twice; app names must be unique",
                a.name
            )));
        }
    }
    Ok(apps)
}

#[cfg(test)]
mod tests;
