//! The daemon-wide sections: `[daemon]`, `[store]`, `[sampler]`, `[light]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::invalid::ListenError;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// The journal when started by systemd, human-readable lines otherwise.
    #[default]
    Auto,
    /// Human-readable lines on stderr.
    Human,
    /// One JSON object per line on stderr.
    Json,
    /// systemd's journal, with structured fields (native protocol).
    Journal,
}

/// `[daemon]`: where the daemon listens, stores and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// HTTP address for /metrics, /healthz and /api/events; `""` disables it.
    #[serde(deserialize_with = "de_listen", serialize_with = "ser_listen")]
    pub listen: Option<SocketAddr>,
    /// SQLite store path; unset means the default location.
    pub store: Option<PathBuf>,
    /// `auto`, `human`, `json` or `journal`.
    pub log_format: LogFormat,
    /// Also append every event as a JSON line to this file (`-` = stdout).
    pub event_log: Option<PathBuf>,
    /// Record what recovery would do, do nothing.
    pub dry_run: bool,
    /// The daemon's own OOM-killer adjustment (-1000 = never chosen), so it
    /// outlives the culprit of a memory or fork storm. Programs it starts are
    /// reset to 0.
    #[serde(deserialize_with = "de_oom_score_adj")]
    pub oom_score_adj: i32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9469))),
            store: None,
            log_format: LogFormat::Auto,
            event_log: None,
            dry_run: false,
            oom_score_adj: -1000,
        }
    }
}

fn de_oom_score_adj<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let v = i64::deserialize(d)?;
    if !(-1000..=1000).contains(&v) {
        return Err(de::Error::custom(format!(
            "oom_score_adj = {v} is out of range; use -1000 (never kill) to 1000"
        )));
    }
    Ok(v as i32)
}

/// Parses a listen address; `""` or `"off"` disables the HTTP server.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, ListenError> {
    let t = s.trim();
    if t.is_empty() || t == "off" {
        return Ok(None);
    }
    t.parse::<SocketAddr>()
        .map(Some)
        .map_err(|source| ListenError {
            input: s.to_string(),
            source,
        })
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(de::Error::custom)
}

fn ser_listen<S: serde::Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str(""),
    }
}

/// `[store]`: how much history to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Delete events older than this; `"0"` keeps them forever.
    pub max_age: HumanDuration,
    /// Keep at most this many events; 0 means no limit.
    pub max_count: u64,
    /// How often retention runs.
    pub retention_interval: HumanDuration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_age: HumanDuration::from_secs(30 * 24 * 3600),
            max_count: 1_000_000,
            retention_interval: HumanDuration::from_secs(600),
        }
    }
}

/// `[sampler]`: what is read and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Sampling period of the light detector.
    #[serde(deserialize_with = "de_period")]
    pub period: HumanDuration,
    /// Read /proc/vmstat and PSI every this many samples (twice as many
    /// while every CPU stays idle).
    #[serde(deserialize_with = "de_slow_every")]
    pub slow_every: u64,
    /// procfs mount point.
    pub proc_root: PathBuf,
    /// sysfs mount point.
    pub sys_root: PathBuf,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            period: HumanDuration::from_millis(100),
            slow_every: 5,
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

fn de_period<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let v = HumanDuration::deserialize(d)?;
    let ms = v.get().as_millis();
    if !(10..=60_000).contains(&ms) {
        return Err(de::Error::custom(format!(
            "sampling period {v} is out of range; use 10ms to 60s (default 100ms)"
        )));
    }
    Ok(v)
}

fn de_slow_every<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(1..=100).contains(&v) {
        return Err(de::Error::custom(format!(
            "slow_every = {v} is out of range; use 1 to 100 (default 5)"
        )));
    }
    Ok(v)
}

/// `[light]`: the light detector thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LightConfig {
    /// SCHED_FIFO priority 1..=99; 0 keeps normal scheduling.
    #[serde(deserialize_with = "de_priority")]
    pub realtime_priority: u8,
    /// Lock the daemon's memory (mlockall) so the detector is never paged out.
    pub mlock: bool,
    /// Per-CPU rules ignore a CPU whose steal is above this percentage: a VM
    /// starved by its hypervisor is not hung.
    #[serde(deserialize_with = "de_percent")]
    pub max_steal_percent: f64,
    /// Capacity of the alert queue to the heavy detector.
    #[serde(deserialize_with = "de_queue")]
    pub alert_queue: usize,
    /// While a rule keeps holding, raise its alert again this often; `"0"`
    /// raises it once per episode.
    pub repeat: HumanDuration,
    /// Start from the built-in rules (SHFH Table 4); `false` uses only the
    /// `[[rule]]` tables given.
    pub default_rules: bool,
}

impl Default for LightConfig {
    fn default() -> Self {
        LightConfig {
            realtime_priority: 50,
            mlock: true,
            max_steal_percent: 50.0,
            alert_queue: 256,
            repeat: HumanDuration::from_secs(30),
            default_rules: true,
        }
    }
}

fn de_priority<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = i64::deserialize(d)?;
    if !(0..=99).contains(&v) {
        return Err(de::Error::custom(format!(
            "realtime_priority = {v} is out of range; SCHED_FIFO priorities are 1 to 99, 0 disables"
        )));
    }
    Ok(v as u8)
}

fn de_percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(0.0..=100.0).contains(&v) {
        return Err(de::Error::custom(format!(
            "{v} is not a percentage; use 0 to 100"
        )));
    }
    Ok(v)
}

fn de_queue<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = i64::deserialize(d)?;
    if !(1..=65_536).contains(&v) {
        return Err(de::Error::custom(format!(
            "alert_queue = {v} is out of range; use 1 to 65536"
        )));
    }
    Ok(v as usize)
}
